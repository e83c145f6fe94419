#!/usr/bin/env bash
# Build (once) the OpenTelemetry Collector used by the tests and link it at .tools/otelcol.
#
# The binary is produced by the Collector builder (ocb) from test/collector/builder-config.yaml
# and cached, shared by clones, at
#   $CACHE/otelcol-<first 12 hex of sha256(manifest)>/otelcol-sidelight
# with CACHE=${SIDELIGHT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sidelight}; the builder itself
# is installed into $CACHE/go-bin. Editing the manifest changes the key, so the next run
# rebuilds; an unchanged manifest only relinks (well under a second). The build happens in a
# temp dir inside $CACHE and the finished directory is renamed into place, so an interrupted
# build never leaves a binary at the cached path. The first build takes several minutes
# (module downloads + compiling the collector).
#
# Needs Go (>= the go directive of the components; on PATH or at /usr/local/go/bin) and the
# Go module proxy. Non-interactive; build logs go to stderr only on failure.
# stdout: one line, the absolute path of the collector binary.
set -euo pipefail

MANIFEST=test/collector/builder-config.yaml
DIST_NAME=otelcol-sidelight

die() { echo "collector.sh: $*" >&2; exit 1; }

link() { # $1: binary; replace .tools/otelcol atomically (symlink + rename)
  ln -sfn "$1" ".tools/.otelcol.$$"
  mv -fT ".tools/.otelcol.$$" .tools/otelcol
  echo "$1"
}

# Everything runs inside main, which bash parses whole before running: editing this file while
# a (minutes-long) build is in progress cannot make the running script read a half-edited line.
main() {
  cd "$(dirname "$0")/.."
  CACHE="${SIDELIGHT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sidelight}"
  [ -f "$MANIFEST" ] || die "missing $MANIFEST"
  mkdir -p .tools "$CACHE"
  CACHE=$(cd "$CACHE" && pwd -P)

  hash=$(sha256sum "$MANIFEST" | cut -c1-12)
  dest="$CACHE/otelcol-$hash"
  bin="$dest/$DIST_NAME"

  # Fast path: already built for this exact manifest.
  if [ -x "$bin" ]; then
    link "$bin"
    exit 0
  fi

  # Serialize concurrent builds of the same manifest (e.g. two clones or CI jobs on one machine).
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE/.otelcol.lock"
    flock 9
    if [ -x "$bin" ]; then
      link "$bin"
      exit 0
    fi
    # Holding the lock, any other build dir is left over from an interrupted run.
    rm -rf "$CACHE"/.otelcol-build.*
  fi

  # Go toolchain.
  if ! command -v go >/dev/null 2>&1; then
    [ -x /usr/local/go/bin/go ] || die "Go is needed to build the collector (put 'go' on PATH)"
    PATH="/usr/local/go/bin:$PATH"
  fi
  export PATH

  tmp=$(mktemp -d "$CACHE/.otelcol-build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  # Build from a snapshot of the manifest, and key the result by the snapshot's hash, so an edit
  # made during the build cannot end up under the wrong key.
  cp "$MANIFEST" "$tmp/builder-config.yaml"
  hash=$(sha256sum "$tmp/builder-config.yaml" | cut -c1-12)
  dest="$CACHE/otelcol-$hash"
  bin="$dest/$DIST_NAME"

  # Builder version: the '# ocb-version: vX.Y.Z' line of the manifest (so it is part of the key).
  OCB_VERSION=$(sed -n 's/^#[[:space:]]*ocb-version:[[:space:]]*\(v[0-9][0-9.]*[^[:space:]]*\).*/\1/p' "$tmp/builder-config.yaml" | head -n1)
  [ -n "$OCB_VERSION" ] || die "no '# ocb-version: vX.Y.Z' line in $MANIFEST"

  GOBIN_DIR="$CACHE/go-bin"
  builder="$GOBIN_DIR/builder"
  if ! { [ -x "$builder" ] && "$builder" version 2>&1 | grep -Eq "(^|[[:space:]])${OCB_VERSION//./\\.}\$"; }; then
    echo "collector.sh: installing builder $OCB_VERSION into $GOBIN_DIR" >&2
    mkdir -p "$GOBIN_DIR"
    GOBIN="$GOBIN_DIR" go install "go.opentelemetry.io/collector/cmd/builder@$OCB_VERSION" </dev/null >&2 \
      || die "go install go.opentelemetry.io/collector/cmd/builder@$OCB_VERSION failed"
  fi

  echo "collector.sh: building $DIST_NAME with ocb $OCB_VERSION (first build takes minutes)..." >&2
  start=$SECONDS
  # dist.output_path (./build) is relative to the builder's working directory.
  # GOFLAGS -e: ocb runs `go mod tidy`, which also loads the *tests* of the components, and the
  # Go module proxy refuses the zip of one test-only dependency of fileexporter v0.165.0
  # (contrib extension/encoding/otlpencodingextension: "403 ... This module version is not
  # available"). -e lets tidy finish; `go build` needs only non-test packages, so a genuinely
  # missing module still fails the build below. (GOFLAGS entries unknown to a go subcommand,
  # like -e for `go build`, are ignored by go.)
  goflags="$(go env GOFLAGS) -e"
  if ! (cd "$tmp" && GOFLAGS="${goflags# }" "$builder" --config "$tmp/builder-config.yaml") </dev/null >"$tmp/build.log" 2>&1; then
    tail -n 100 "$tmp/build.log" >&2
    die "ocb build failed (last 100 lines of the log above)"
  fi
  [ -x "$tmp/build/$DIST_NAME" ] || { tail -n 100 "$tmp/build.log" >&2; die "ocb did not produce build/$DIST_NAME"; }
  "$tmp/build/$DIST_NAME" --version >/dev/null 2>&1 || die "built $DIST_NAME does not run"

  mkdir "$tmp/out"
  mv "$tmp/build/$DIST_NAME" "$tmp/out/$DIST_NAME"
  cp "$tmp/builder-config.yaml" "$tmp/build.log" "$tmp/out/"
  # Atomic publish: a rename of the complete directory. If another build won the race, keep its.
  if ! mv -T "$tmp/out" "$dest" 2>/dev/null; then
    if [ ! -x "$bin" ]; then # a stray non-empty directory that is not ours
      rm -rf "$dest"
      mv -T "$tmp/out" "$dest"
    fi
  fi
  echo "collector.sh: built in $((SECONDS - start))s" >&2
  link "$bin"
}

main "$@"; exit
