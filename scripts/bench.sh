#!/usr/bin/env bash
# `npm run bench`: direct routing, HAProxy, nginx and this project side by side in one
# network-namespace lab (see scripts/bench/run.mjs; `npm run bench -- --help` for the options).
# Needs root. Everything it creates lives in namespaces named tpibench*, removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
for a in "$@"; do
  case "$a" in -h|--help) exec node scripts/bench/run.mjs --help ;; esac
done
if [ "$(id -u)" != 0 ]; then echo "bench: run as root (it creates network namespaces and nftables rules inside them)" >&2; exit 1; fi
missing=()
for tool in ip nft ss haproxy nginx iperf3 wrk node; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then echo "bench: missing ${missing[*]}: run scripts/install-deps.sh" >&2; exit 1; fi
if [ ! -f dist/cli.js ] || [ ! -f build/Release/tproxy_native.node ]; then
  echo "bench: building the daemon (npm run build)" >&2
  npm run build >&2 || echo "bench: the build failed; the tpi paths will report it" >&2
fi
# 10k idle connections through a proxy take 20k+ descriptors in it: inherited by everything below.
ulimit -Hn 262144 2>/dev/null || true
ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true

# The runner cleans up after itself (also on Ctrl-C); this is the net under it if it is killed.
export TPIBENCH_PREFIX="tpibench$(printf '%x' $$)"
trap 'bash scripts/lab.sh down "$TPIBENCH_PREFIX" >/dev/null 2>&1 || true' EXIT
trap 'exit 130' INT TERM HUP
# Its exit code is the script's (set -e keeps it; the EXIT trap does not change it).
node scripts/bench/run.mjs "$@"
