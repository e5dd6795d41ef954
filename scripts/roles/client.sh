#!/usr/bin/env bash
# Client role: one interface towards the gateway.
# usage: client.sh IFACE [--default-route]   (without it only the lab's 198.18.0.0/15 goes via the gateway)
set -euo pipefail
. "$(dirname "$0")/common.sh"
ip link set lo up
addr "$1" "$LAB_CLIENT_IP/24" "$LAB_CLIENT_IP6/64"
if [ "${2:-}" = --default-route ]; then
  ip route replace default via "$LAB_GW_CLIENT_IP"
  ip -6 route replace default via "$LAB_GW_CLIENT_IP6"
else
  ip route replace 198.18.0.0/15 via "$LAB_GW_CLIENT_IP"
  ip -6 route replace fd00:18::/32 via "$LAB_GW_CLIENT_IP6"
fi
