#!/usr/bin/env bash
# Builds the addon with cmake-js (primary) or node-gyp ("gyp"). Both produce
# build/Release/tproxy_native.node. Node's headers come from npm's nodedir when set, else from
# the system's /usr/include/node, so no download is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${npm_config_nodedir:-}" ] && [ -f /usr/include/node/node_api.h ]; then
  export npm_config_nodedir=/usr
fi
case "${1:-cmake}" in
  cmake) exec npx --no-install cmake-js compile --directory native --out build ;;
  gyp) exec npx --no-install node-gyp rebuild ${npm_config_nodedir:+--nodedir="$npm_config_nodedir"} ;;
  *) echo "usage: build-native.sh [cmake|gyp]" >&2; exit 2 ;;
esac
