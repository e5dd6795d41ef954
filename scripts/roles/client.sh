#!/usr/bin/env bash
# Client role: one interface towards the gateway.
# usage: client.sh IFACE [--default-route]   (without it only the lab's 198.18.0.0/15 goes via the gateway)
set -euo pipefail
. "$(dirname "$0")/common.sh"
end_host "$1" "$LAB_CLIENT_IP" "$LAB_CLIENT_IP6" "$LAB_GW_CLIENT_IP" "$LAB_GW_CLIENT_IP6" "${2:-}"
