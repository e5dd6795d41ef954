#!/usr/bin/env bash
# The lab as network namespaces: PREFIX-c (client) -- PREFIX-g (gateway) -- PREFIX-b (backend).
# usage: lab.sh up PREFIX | lab.sh down PREFIX
# Everything lives inside the three namespaces; the root namespace is never changed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cmd="${1:-}"; prefix="${2:-}"
if [ -z "$cmd" ] || [ -z "$prefix" ]; then echo "usage: lab.sh up|down PREFIX" >&2; exit 2; fi
c="$prefix-c"; g="$prefix-g"; b="$prefix-b"

down() {
  for ns in "$c" "$g" "$b"; do
    if ip netns list | grep -qw "^$ns"; then
      pids="$(ip netns pids "$ns" 2>/dev/null || true)"
      [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
      ip netns del "$ns" 2>/dev/null || true
    fi
  done
}

case "$cmd" in
  up)
    down
    trap 'down' ERR
    for ns in "$c" "$g" "$b"; do
      ip netns add "$ns"
      # No duplicate address detection on the lab's links: while a link-local address is still
      # tentative (about a second), the first IPv6 neighbour solicitation, and with it the first
      # SYN, is lost, and a connect right after `up` waits for a retransmission.
      ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.all.accept_dad=0
    done
    ip -n "$g" link add eth0 type veth peer name eth0 netns "$c"
    ip -n "$g" link add eth1 type veth peer name eth0 netns "$b"
    ip netns exec "$c" bash "$here/roles/client.sh" eth0 --default-route
    ip netns exec "$b" bash "$here/roles/backend.sh" eth0 --default-route
    ip netns exec "$g" bash "$here/roles/gateway.sh" eth0 eth1
    ;;
  down) down ;;
  *) echo "usage: lab.sh up|down PREFIX" >&2; exit 2 ;;
esac
