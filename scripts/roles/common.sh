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
