#!/usr/bin/env bash
# `npm run soak`: the daemon under load, faults and hostile input in its own network-namespace lab
# (see scripts/soak/run.mjs; `npm run soak -- --help` for the options). Needs root. Everything it
# creates lives in namespaces named tpisoak*, removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
for a in "$@"; do
  case "$a" in -h|--help) exec node scripts/soak/run.mjs --help ;; esac
done
if [ "$(id -u)" != 0 ]; then echo "soak: run as root (it creates network namespaces and nftables rules inside them)" >&2; exit 4; fi
missing=()
for tool in ip nft ss node; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then echo "soak: missing ${missing[*]}: run scripts/install-deps.sh" >&2; exit 4; fi
if [ ! -f dist/cli.js ]; then
  echo "soak: building the daemon (npm run build)" >&2
  npm run build >&2
fi
# Thousands of connections take thousands of descriptors in every process: inherited by all below.
ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true

# The runner cleans up after itself (also on Ctrl-C); this is the net under it if it is killed.
export TPISOAK_PREFIX="tpisoak$(printf '%x' $$)"
trap 'bash scripts/lab.sh down "$TPISOAK_PREFIX" >/dev/null 2>&1 || true' EXIT
trap 'exit 130' INT TERM HUP
# Its exit code is the script's (set -e keeps it; the EXIT trap does not change it).
node scripts/soak/run.mjs "$@"
