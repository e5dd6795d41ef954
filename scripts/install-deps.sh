#!/usr/bin/env bash
# Installs the Debian packages the daemon, the lab, the tests and the benchmark use, when missing.
set -euo pipefail
pkgs=(nftables iptables iproute2 haproxy nginx libnginx-mod-stream iperf3 wrk procps)
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
for s in nginx haproxy; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$s" 2>/dev/null; then
    systemctl stop "$s" || true
  fi
done
