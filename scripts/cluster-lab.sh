#!/usr/bin/env bash
# Several interceptor nodes on one etcd: links gateway namespaces (built by lab.sh) to one more
# namespace, ETCD_NS, where etcd runs. Gateway number i (1-based, in the order given) reaches etcd
# at 198.19.i.2 from 198.19.i.1 over its interface `etcd0`.
# usage: cluster-lab.sh up ETCD_NS GATEWAY_NS... | cluster-lab.sh down ETCD_NS
# Everything lives inside the namespaces; the root namespace is never changed.
set -euo pipefail
cmd="${1:-}"; ens="${2:-}"
if [ -z "$cmd" ] || [ -z "$ens" ]; then echo "usage: cluster-lab.sh up ETCD_NS GATEWAY_NS... | down ETCD_NS" >&2; exit 2; fi

down() {
  if ip netns list | grep -qw "^$ens"; then
    pids="$(ip netns pids "$ens" 2>/dev/null || true)"
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
    # The veth pairs go with it: their gateway ends disappear too.
    ip netns del "$ens" 2>/dev/null || true
  fi
}

case "$cmd" in
  up)
    shift 2
    if [ $# -eq 0 ] || [ $# -gt 250 ]; then echo "cluster-lab.sh up: give 1..250 gateway namespaces" >&2; exit 2; fi
    down
    trap 'down' ERR
    ip netns add "$ens"
    ip -n "$ens" link set lo up
    i=0
    for gw in "$@"; do
      i=$((i + 1))
      ip -n "$gw" link add etcd0 type veth peer name "gw$i" netns "$ens"
      ip -n "$gw" addr add "198.19.$i.1/24" dev etcd0
      ip -n "$gw" link set etcd0 up
      ip -n "$ens" addr add "198.19.$i.2/24" dev "gw$i"
      ip -n "$ens" link set "gw$i" up
    done
    ;;
  down) down ;;
  *) echo "usage: cluster-lab.sh up ETCD_NS GATEWAY_NS... | down ETCD_NS" >&2; exit 2 ;;
esac
