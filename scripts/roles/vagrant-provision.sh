#!/usr/bin/env bash
# Provisions one lab VM with the same role scripts the namespace lab uses. Interfaces are found
# by the MAC addresses the Vagrantfile gives them, whatever the box names them.
# usage: vagrant-provision.sh client MAC | backend MAC | gateway CLIENT_MAC BACKEND_MAC
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
iface_of() {
  local mac; mac="$(echo "$1" | sed 's/../&:/g; s/:$//' | tr 'A-F' 'a-f')"
  ip -o link | awk -v m="$mac" '$0 ~ m { sub(":", "", $2); sub("@.*", "", $2); print $2 }'
}
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq nftables iproute2 nodejs npm >/dev/null
case "$1" in
  client) bash "$here/client.sh" "$(iface_of "$2")" ;;
  backend) bash "$here/backend.sh" "$(iface_of "$2")" ;;
  gateway)
    bash "$here/gateway.sh" "$(iface_of "$2")" "$(iface_of "$3")"
    apt-get install -y -qq build-essential cmake python3 >/dev/null
    cd /vagrant && npm ci
    ;;
  *) echo "usage: vagrant-provision.sh client|backend|gateway MAC..." >&2; exit 2 ;;
esac
