#!/usr/bin/env bash
# Backend role. Its replies to clients must go back through the gateway (the interceptor host):
# that is what lets the gateway's `socket transparent` rule catch them for the spoofed connection.
# usage: backend.sh IFACE [--default-route]
set -euo pipefail
. "$(dirname "$0")/common.sh"
ip link set lo up
addr "$1" "$LAB_BACKEND_IP/24" "$LAB_BACKEND_IP6/64"
if [ "${2:-}" = --default-route ]; then
  ip route replace default via "$LAB_GW_BACKEND_IP"
  ip -6 route replace default via "$LAB_GW_BACKEND_IP6"
else
  ip route replace 198.18.0.0/15 via "$LAB_GW_BACKEND_IP"
  ip -6 route replace fd00:18::/32 via "$LAB_GW_BACKEND_IP6"
fi
