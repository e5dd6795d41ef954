#!/usr/bin/env bash
# Installs the Debian packages the daemon, its build, the lab, the tests and the benchmark use,
# when missing. Node.js 20 is not among them: Debian 12's own nodejs is 18 (see the README).
set -euo pipefail
# build: the addon (cmake-js or node-gyp); run: nftables, iproute2; doctor reads iptables rules;
# registry: etcd-server (the cluster tests start their own etcd); tests: util-linux (setpriv),
# openssl, the peers; bench: iperf3, wrk.
pkgs=(cmake g++ make python3 nftables iproute2 iptables util-linux haproxy nginx libnginx-mod-stream iperf3 wrk procps etcd-server openssl)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The packaged services are not wanted running: tests start their own instances.
for s in nginx haproxy etcd; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$s" 2>/dev/null; then
    systemctl stop "$s" || true
  fi
done
