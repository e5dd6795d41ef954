#!/usr/bin/env bash
# Gateway role: the interceptor host, routing between the client and backend links.
# usage: gateway.sh CLIENT_IFACE BACKEND_IFACE
set -euo pipefail
. "$(dirname "$0")/common.sh"
ip link set lo up
addr "$1" "$LAB_GW_CLIENT_IP/24" "$LAB_GW_CLIENT_IP6/64"
addr "$2" "$LAB_GW_BACKEND_IP/24" "$LAB_GW_BACKEND_IP6/64"
# Forwarding stays on: the direct-routing baseline uses it, and the fail-closed rule is what must
# stop target traffic from being forwarded raw while the interceptor is down.
sysctl -qw net.ipv4.ip_forward=1
sysctl -qw net.ipv6.conf.all.forwarding=1
# Loose reverse-path filtering would drop the spoofed-source replies on some distributions.
sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
for i in "$1" "$2"; do sysctl -qw "net.ipv4.conf.$i.rp_filter=0"; done
