# Lab addressing (198.18.0.0/15 and fd00::/8 only). Sourced by the role scripts.
LAB_CLIENT_NET=198.18.1.0/24
LAB_CLIENT_IP=198.18.1.2
LAB_GW_CLIENT_IP=198.18.1.1
LAB_BACKEND_NET=198.18.2.0/24
LAB_BACKEND_IP=198.18.2.2
LAB_GW_BACKEND_IP=198.18.2.1
LAB_CLIENT_IP6=fd00:18:1::2
LAB_GW_CLIENT_IP6=fd00:18:1::1
LAB_BACKEND_IP6=fd00:18:2::2
LAB_GW_BACKEND_IP6=fd00:18:2::1

addr() { # iface cidr4 cidr6
  ip link set dev "$1" up
  ip addr replace "$2" dev "$1"
  ip -6 addr replace "$3" dev "$1" nodad
}

# An end host (client or backend): one interface, routes to the other lab network via the gateway.
# usage: end_host IFACE IP IP6 GATEWAY GATEWAY6 [--default-route]
end_host() {
  ip link set lo up
  addr "$1" "$2/24" "$3/64"
  if [ "${6:-}" = --default-route ]; then
    ip route replace default via "$4"
    ip -6 route replace default via "$5"
  else
    ip route replace 198.18.0.0/15 via "$4"
    ip -6 route replace fd00:18::/32 via "$5"
  fi
}
