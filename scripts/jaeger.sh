#!/usr/bin/env bash
# Build (once) Jaeger v2 (`cmd/jaeger`, a Collector distribution with an OTLP receiver, an
# in-memory trace store and the query API/UI on :16686) from the Go module proxy, and link it
# at .tools/jaeger, for test/e2e/jaeger.test.ts and `make jaeger-screenshot`.
#
# Cached, shared by clones, at
#   $CACHE/jaeger-<version>/jaeger   with CACHE=${SIDELIGHT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sidelight}
# A second run only relinks. Jaeger's go.mod has a replace directive (Shopify/sarama), so
# `go install pkg@version` refuses it: the build happens in a throwaway module (in a temp dir
# inside $CACHE) that repeats the replace, adds Jaeger as a tool dependency and builds it; the
# finished directory is renamed into place, so an interrupted build never leaves a binary at
# the cached path. The first build takes several minutes (module downloads + compiling).
#
# The Go module's UI is a placeholder page (the real UI assets are built by npm in Jaeger's
# release pipeline, not shipped in the module); the query HTTP API is complete.
#
# Needs Go (on PATH or at /usr/local/go/bin) and the Go module proxy. Non-interactive; build
# logs go to stderr only on failure. stdout: one line, the absolute path of the binary.
set -euo pipefail

VERSION=v1.76.0
PKG=github.com/jaegertracing/jaeger/cmd/jaeger

die() { echo "jaeger.sh: $*" >&2; exit 1; }

link() { # $1: binary; replace .tools/jaeger atomically (symlink + rename)
  ln -sfn "$1" ".tools/.jaeger.$$"
  mv -fT ".tools/.jaeger.$$" .tools/jaeger
  echo "$1"
}

# Everything runs inside main, which bash parses whole before running (safe against edits of
# this file during a minutes-long build).
main() {
  cd "$(dirname "$0")/.."
  CACHE="${SIDELIGHT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sidelight}"
  mkdir -p .tools "$CACHE"
  CACHE=$(cd "$CACHE" && pwd -P)
  dest="$CACHE/jaeger-$VERSION"
  bin="$dest/jaeger"

  if [ -x "$bin" ]; then
    link "$bin"
    exit 0
  fi

  # Serialize concurrent builds (two clones or CI jobs on one machine).
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE/.jaeger.lock"
    flock 9
    if [ -x "$bin" ]; then
      link "$bin"
      exit 0
    fi
    rm -rf "$CACHE"/.jaeger-build.* # left over from an interrupted run
  fi

  if ! command -v go >/dev/null 2>&1; then
    [ -x /usr/local/go/bin/go ] || die "Go is needed to build Jaeger (put 'go' on PATH)"
    PATH="/usr/local/go/bin:$PATH"
  fi
  export PATH

  tmp=$(mktemp -d "$CACHE/.jaeger-build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  log="$tmp/build.log"
  echo "jaeger.sh: building jaeger $VERSION (first build takes minutes)..." >&2
  start=$SECONDS
  mkdir "$tmp/mod"
  if ! (
    cd "$tmp/mod"
    go mod init sidelight.local/jaeger-build
    # the replace of Jaeger's own go.mod (a main module's replaces do not apply to dependents)
    go mod edit -replace github.com/Shopify/sarama=github.com/Shopify/sarama@v1.33.0
    GOFLAGS=-mod=mod go get -tool "$PKG@$VERSION"
    CGO_ENABLED=0 go build -o "$tmp/out/jaeger" "$PKG"
  ) </dev/null >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    die "building $PKG@$VERSION failed (last 60 lines of the log above)"
  fi
  "$tmp/out/jaeger" version >/dev/null 2>&1 || die "built jaeger does not run"
  cp "$log" "$tmp/out/"
  # Atomic publish: a rename of the complete directory. If another build won the race, keep its.
  if ! mv -T "$tmp/out" "$dest" 2>/dev/null; then
    if [ ! -x "$bin" ]; then
      rm -rf "$dest"
      mv -T "$tmp/out" "$dest"
    fi
  fi
  echo "jaeger.sh: built in $((SECONDS - start))s" >&2
  link "$bin"
}

main "$@"; exit
