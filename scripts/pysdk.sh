#!/usr/bin/env bash
# Install (once) the OpenTelemetry Python SDK and OTLP exporters that test/e2e/ingest.test.ts
# runs as a real sender, into a venv cached, shared by clones, at
#   $CACHE/pysdk-<first 12 hex of sha256(requirements)>/  (link: .tools/pysdk)
# with CACHE=${SIDELIGHT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sidelight}; the venv is
# marked done (.done) only after pip succeeded, so an interrupted install is redone.
# Needs python3 with venv and PyPI. stdout: the venv's python.
set -euo pipefail

REQS="opentelemetry-sdk==1.45.2 opentelemetry-exporter-otlp-proto-grpc==1.45.2 opentelemetry-exporter-otlp-proto-http==1.45.2"

main() {
  cd "$(dirname "$0")/.."
  CACHE="${SIDELIGHT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sidelight}"
  mkdir -p .tools "$CACHE"
  CACHE=$(cd "$CACHE" && pwd -P)
  hash=$(echo "$REQS $(python3 --version 2>&1)" | sha256sum | cut -c1-12)
  dest="$CACHE/pysdk-$hash"
  if [ ! -f "$dest/.done" ]; then
    exec 9>"$CACHE/.pysdk.lock"
    flock 9
    if [ ! -f "$dest/.done" ]; then
      tmp=$(mktemp -d "$CACHE/.pysdk-build.XXXXXX")
      log="$tmp.log"
      # the venv's scripts hold its path: build it where it will live, then mark it done
      rm -rf "$dest"
      if ! (python3 -m venv "$dest" && "$dest/bin/pip" install --disable-pip-version-check -q $REQS) >"$log" 2>&1; then
        cat "$log" >&2
        rm -rf "$dest" "$tmp" "$log"
        echo "pysdk.sh: pip install failed" >&2
        exit 1
      fi
      rm -rf "$tmp" "$log"
      touch "$dest/.done"
    fi
  fi
  ln -sfn "$dest" ".tools/.pysdk.$$"
  mv -fT ".tools/.pysdk.$$" .tools/pysdk
  echo "$dest/bin/python"
}
main "$@"
