#!/usr/bin/env bash
# Backend role. Its replies to clients must go back through the gateway (the interceptor host):
# that is what lets the gateway's `socket transparent` rule catch them for the spoofed connection.
# usage: backend.sh IFACE [--default-route]
set -euo pipefail
. "$(dirname "$0")/common.sh"
end_host "$1" "$LAB_BACKEND_IP" "$LAB_BACKEND_IP6" "$LAB_GW_BACKEND_IP" "$LAB_GW_BACKEND_IP6" "${2:-}"
