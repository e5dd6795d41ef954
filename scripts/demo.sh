#!/usr/bin/env bash
# The demo: builds the three-host lab in network namespaces, starts the interceptor on the
# gateway, a backend that answers with the address it sees, connects from the client, prints what
# the backend saw, and removes everything again. Needs root (namespaces, nftables).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "demo: run as root (it creates network namespaces and nftables rules)" >&2; exit 1; fi
[ -f dist/cli.js ] && [ -f build/Release/tproxy_native.node ] || npm run build
. scripts/roles/common.sh
prefix="tpidemo$$"
work="$(mktemp -d)"
cleanup() {
  [ -n "${daemon_pid:-}" ] && kill -TERM "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
  bash scripts/lab.sh down "$prefix"
  rm -rf "$work"
}
trap cleanup EXIT

bash scripts/lab.sh up "$prefix"
cat > "$work/config.toml" <<TOML
[listen]
address = "127.0.0.1"
port = 15001
address6 = "::1"

[[intercept.targets]]
cidr = "$LAB_BACKEND_NET"
ports = [8080]

[registry]
path = "$work/registry"
admin_socket = "$work/admin.sock"

[log]
level = "warn"
TOML

echo "lab: client $LAB_CLIENT_IP  ->  gateway $LAB_GW_CLIENT_IP / $LAB_GW_BACKEND_IP  ->  backend $LAB_BACKEND_IP:8080"
ip netns exec "$prefix-b" node scripts/peers/whoami-server.mjs 8080 > "$work/backend.log" 2>&1 &
disown
ip netns exec "$prefix-g" node dist/cli.js run --config "$work/config.toml" > "$work/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 1 100); do
  if grep -q ready "$work/backend.log" && ip netns exec "$prefix-g" nft list table inet tproxy_interceptor >/dev/null 2>&1; then break; fi
  if ! kill -0 "$daemon_pid" 2>/dev/null; then echo "demo: the interceptor exited:" >&2; cat "$work/daemon.log" >&2; exit 1; fi
  sleep 0.1
done
result="$(ip netns exec "$prefix-c" node scripts/peers/client.mjs "$LAB_BACKEND_IP" 8080)"
seen="$(node -e 'const r=JSON.parse(process.argv[1]); if(!r.saw||!r.saw.remote){console.error("no answer: "+process.argv[1]);process.exit(1)} console.log(r.saw.remote)' "$result")"
echo "backend saw the connection coming from: $seen"
case "$seen" in
  "$LAB_CLIENT_IP":*) echo "OK: that is the client's own address (the gateway is $LAB_GW_BACKEND_IP), with no header to parse." ;;
  *) echo "demo: expected the client's address $LAB_CLIENT_IP" >&2; exit 1 ;;
esac
