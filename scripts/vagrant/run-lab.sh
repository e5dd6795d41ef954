#!/usr/bin/env bash
# The whole Vagrant lab, start to end, with the libvirt provider: `vagrant up` (client, gateway
# and backend VMs), then for each firewall backend the interceptor on the gateway, a client
# connection over IPv4 and IPv6, and the address the backend printed, then `vagrant destroy`.
# Too slow for CI (minutes); prints a transcript with timings.
#
# usage (root): scripts/vagrant/run-lab.sh [BACKEND...]     default: nftables iptables-nft iptables-legacy
#   TPI_LAB_KEEP=1   leave the VMs (and the libvirtd this script started) running at the end
#
# Where no libvirtd answers on qemu:///system (a machine without systemd, like this one), the
# script starts its own, in a network namespace of its own (tpi-vlab), and runs vagrant there too:
# the lab's management network, bridge and firewall rules then never touch the host's namespace.
# It stops that libvirtd again at the end. The box is built first if it is missing
# (scripts/vagrant/build-box.sh). Vagrant's state goes to /var/tmp/tpi-vagrant-lab, not the checkout.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
backends=("$@")
[ ${#backends[@]} -gt 0 ] || backends=(nftables iptables-nft iptables-legacy)
box="${TPI_BOX:-tproxy-interceptor/debian12}"
ns=tpi-vlab
state=/var/tmp/tpi-vagrant-lab
export VAGRANT_DEFAULT_PROVIDER=libvirt VAGRANT_DOTFILE_PATH="$state/.vagrant" TPI_BOX="$box"
t0=$SECONDS

say() { printf '[%4ds] %s\n' $((SECONDS - t0)) "$*"; }
run() { say "\$ $*"; "$@"; }
in_lab() { if [ -n "$own_libvirtd" ]; then ip netns exec "$ns" "$@"; else "$@"; fi; }
vagrant_() { (cd "$root" && in_lab vagrant "$@"); }

if [ "$(id -u)" != 0 ]; then echo "run-lab.sh: run as root" >&2; exit 2; fi
[ -e /dev/kvm ] || { echo "run-lab.sh: /dev/kvm is missing: the VMs need KVM" >&2; exit 2; }
for f in dist/cli.js build/Release/tproxy_native.node node_modules/pino; do
  [ -e "$root/$f" ] || { echo "run-lab.sh: $root/$f is missing: run \`npm ci && npm run build\` first" >&2; exit 2; }
done
for tool in vagrant virsh libvirtd qemu-system-x86_64; do
  command -v "$tool" >/dev/null || { echo "run-lab.sh: $tool not found: apt-get install vagrant vagrant-libvirt libvirt-daemon-system qemu-system-x86" >&2; exit 2; }
done
# Without udev, /dev/kvm stays root-only; qemu runs as libvirt-qemu (group kvm), as udev would allow.
if [ "$(stat -c %G /dev/kvm)" != kvm ]; then chgrp kvm /dev/kvm && chmod 0660 /dev/kvm; fi
# KVM proper needs kvm_intel or kvm_amd. A /dev/kvm from kvm_pvm (nested PVM, as on this project's
# machines) runs only paravirtualised guest kernels: a Debian VM stops in its boot loader with
# "KVM internal error ... emulation failure". Then the VMs run under qemu's emulator (TCG).
if [ -z "${TPI_LIBVIRT_DRIVER:-}" ]; then
  if [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; then TPI_LIBVIRT_DRIVER=kvm; else TPI_LIBVIRT_DRIVER=qemu; fi
fi
export TPI_LIBVIRT_DRIVER

own_libvirtd=""
cleanup() {
  local rc=$?
  if [ -z "${TPI_LAB_KEEP:-}" ]; then
    [ -d "$state/.vagrant" ] && vagrant_ destroy -f >/dev/null 2>&1 || true
    if [ -n "$own_libvirtd" ]; then
      for pidfile in "$state/libvirtd.pid" "$state/virtlogd.pid"; do
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
      done
      sleep 1
      ip netns del "$ns" 2>/dev/null || true
    fi
  fi
  say "exit $rc"
}
trap cleanup EXIT
mkdir -p "$state"

if virsh -c qemu:///system uri >/dev/null 2>&1; then
  say "libvirtd: using the one already running"
else
  own_libvirtd=1
  say "libvirtd: none running; starting one in network namespace $ns"
  ip netns add "$ns" 2>/dev/null || true
  ip -n "$ns" link set lo up
  # `ip netns exec` gives the daemon a /sys of the namespace (libvirt reads its bridges there),
  # which hides the host's cgroup mounts: mount the same hierarchies again under it.
  cgroups="$(awk '$2 ~ "^/sys/fs/cgroup(/|$)" && ($3 == "cgroup" || $3 == "cgroup2") { print $3, $2, $4 }' /proc/mounts)"
  ip netns exec "$ns" bash -ec '
    if ! grep -q "^cgroup2 /sys/fs/cgroup " <<< "$2"; then mount -t tmpfs cgroup /sys/fs/cgroup; fi
    while read -r type dir opts; do
      [ -n "$type" ] || continue
      mkdir -p "$dir" && mount -t "$type" -o "$opts" "$type" "$dir"
    done <<< "$2"
    virtlogd --daemon --pid-file "$1/virtlogd.pid"
    libvirtd --daemon --pid-file "$1/libvirtd.pid"
  ' bash "$state" "$cgroups"
  for _ in $(seq 50); do virsh -c qemu:///system uri >/dev/null 2>&1 && break; sleep 0.2; done
  virsh -c qemu:///system uri >/dev/null
fi

if ! vagrant box list 2>/dev/null | grep -q "^$box "; then
  run bash "$here/build-box.sh"
fi
run vagrant --version
run vagrant box list
say "libvirt domain type: $TPI_LIBVIRT_DRIVER ($(ls -d /sys/module/kvm_* 2>/dev/null | xargs -rn1 basename | tr '\n' ' '))"

say "== vagrant up (client, gateway, backend; TPI_BACKEND=${backends[0]})"
up0=$SECONDS
if ! TPI_BACKEND="${backends[0]}" vagrant_ up --provider libvirt --no-parallel 2>&1 | tr '\r' '\n' | grep -v 'Progress: ' | sed 's/^/    /'; then
  say "vagrant up failed"
  exit 1
fi
say "vagrant up took $((SECONDS - up0)) s"
vagrant_ status 2>&1 | sed 's/^/    /'

client_ip6=fd00:18:1::2
for backend in "${backends[@]}"; do
  say "== backend $backend"
  t=$SECONDS
  if ! TPI_BACKEND="$backend" vagrant_ provision gateway --provision-with firewall 2>&1 | sed 's/^/    /'; then
    say "provisioning $backend failed"
    exit 1
  fi
  case "$backend" in
    nftables) show='sudo nft list table inet tproxy_interceptor' ;;
    iptables-nft) show='sudo iptables-nft -t mangle -S tproxy_interceptor; sudo ip6tables-nft -t mangle -S PREROUTING' ;;
    iptables-legacy) show='sudo iptables-legacy -t mangle -S tproxy_interceptor; sudo ip6tables-legacy -t mangle -S PREROUTING' ;;
  esac
  say "gateway\$ $show"
  vagrant_ ssh gateway -c "$show" 2>/dev/null | sed 's/^/    /'
  for dst in 198.18.2.2 fd00:18:2::2; do
    say "client\$ node /opt/tproxy-interceptor/scripts/peers/client.mjs $dst 8080"
    out="$(vagrant_ ssh client -c "node /opt/tproxy-interceptor/scripts/peers/client.mjs $dst 8080" 2>/dev/null | tail -1)"
    echo "    $out"
  done
  say "backend\$ journalctl -u tpi-lab-whoami -o cat -n 2"
  printed="$(vagrant_ ssh backend -c 'sudo journalctl -u tpi-lab-whoami -o cat -n 2' 2>/dev/null)"
  echo "$printed" | sed 's/^/    /'
  if [[ $printed == *"connection from 198.18.1.2:"* && $printed == *"connection from $client_ip6:"* ]]; then
    say "backend $backend: the backend saw the client's own addresses (198.18.1.2, $client_ip6) [$((SECONDS - t)) s]"
  else
    say "backend $backend: FAILED: the backend did not see the client's addresses"
    exit 1
  fi
done

say "== gateway: stop the interceptor; nothing of it is left"
vagrant_ ssh gateway -c 'sudo systemctl stop tproxy-interceptor; sudo nft list tables; sudo iptables-legacy-save -t mangle | grep -c tproxy_interceptor; sudo iptables-nft-save -t mangle | grep -c tproxy_interceptor; ip rule' 2>/dev/null | sed 's/^/    /' || true
if [ -z "${TPI_LAB_KEEP:-}" ]; then
  say "== vagrant destroy"
  d0=$SECONDS
  vagrant_ destroy -f 2>&1 | sed 's/^/    /'
  say "vagrant destroy took $((SECONDS - d0)) s"
fi
say "lab done in $((SECONDS - t0)) s"
