#!/usr/bin/env bash
# Build (once) the Go test peers in test/peers/go — h2cserver (net/http + x/net h2c) and
# greeter (gRPC helloworld server and client) — from the Go module proxy, and link them at
# .tools/peers/. Cached, shared by clones, at
#   $CACHE/go-peers-<first 12 hex of sha256(sources)>/{h2cserver,greeter}
# with CACHE=${SIDELIGHT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sidelight}: changed sources
# change the key, unchanged ones only relink. Builds in a temp dir renamed into place, so an
# interrupted build never leaves binaries at the cached path.
# Needs Go (on PATH or at /usr/local/go/bin). stdout: the directory of the binaries.
set -euo pipefail

die() { echo "peers.sh: $*" >&2; exit 1; }

main() {
  cd "$(dirname "$0")/.."
  export PATH="$PATH:/usr/local/go/bin"
  command -v go >/dev/null || die "go not found (install Go >= 1.26)"
  CACHE="${SIDELIGHT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sidelight}"
  mkdir -p .tools "$CACHE"
  CACHE=$(cd "$CACHE" && pwd -P)
  src=test/peers/go
  hash=$(cd "$src" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-12)
  dest="$CACHE/go-peers-$hash"
  if [ ! -x "$dest/greeter" ] || [ ! -x "$dest/h2cserver" ]; then
    exec 9>"$CACHE/.go-peers.lock"
    flock 9
    if [ ! -x "$dest/greeter" ] || [ ! -x "$dest/h2cserver" ]; then
      tmp=$(mktemp -d "$CACHE/.go-peers-build.XXXXXX")
      log="$tmp/build.log"
      if ! (cd "$src" && go build -mod=mod -o "$tmp/h2cserver" ./h2cserver && go build -mod=mod -o "$tmp/greeter" ./greeter) >"$log" 2>&1; then
        cat "$log" >&2
        rm -rf "$tmp"
        die "go build failed"
      fi
      rm -f "$log"
      rm -rf "$dest"
      mv "$tmp" "$dest"
    fi
  fi
  ln -sfn "$dest" ".tools/.peers.$$"
  mv -fT ".tools/.peers.$$" .tools/peers
  echo "$dest"
}

main "$@"
