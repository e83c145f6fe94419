#!/usr/bin/env bash
# Regenerate docs/img/jaeger-trace.png, the README's picture of a multi-hop trace (`make
# trace-screenshot`). Runs the direct-to-Jaeger case of test/e2e/jaeger.test.ts (real agent,
# real Jaeger, curl → frontend (node) → inventory (python)) with SIDELIGHT_TRACE_JSON set, so
# the trace is written exactly as Jaeger's API returned it; renders it with
# scripts/trace-view.mjs (the Go-module Jaeger serves only a placeholder UI) and takes a
# screenshot with headless Chromium (Debian's `chromium`, installed here if missing; it is
# not needed by any test). Needs root (eBPF) and a built tree (`make setup collector jaeger`).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/node/bin:$PATH"
OUT=${1:-docs/img/jaeger-trace.png}

if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
SIDELIGHT_TRACE_JSON="$tmp/trace.json" npx --no-install ava test/e2e/jaeger.test.ts --match 'Jaeger, straight*' >&2
[ -s "$tmp/trace.json" ] || { echo "trace-screenshot.sh: the test wrote no trace (skipped? see above)" >&2; exit 1; }
node scripts/trace-view.mjs "$tmp/trace.json" "Jaeger v1.76.0 (GET /api/traces/<id>)" >"$tmp/trace.html"
mkdir -p "$(dirname "$OUT")"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --force-device-scale-factor=1 \
  --window-size=1280,300 --screenshot="$tmp/shot.png" "file://$tmp/trace.html" >/dev/null 2>&1
mv "$tmp/shot.png" "$OUT"
echo "$OUT"
