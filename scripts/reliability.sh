#!/usr/bin/env bash
# `make reliability`: the reliability tests at full size (SIDELIGHT_RELIABILITY_FULL=1), one
# file after another, verbose (each test logs its figures), recorded in
# bench/results/reliability.txt with the date, kernel and commit.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/node/bin:$PATH"
out=bench/results/reliability.txt
mkdir -p bench/results
{
  echo "# make reliability — $(date -u +%FT%TZ), $(uname -r), $(nproc) CPUs, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  rc=0
  for f in test/e2e/privilege.test.ts test/e2e/reliability-*.test.ts; do
    echo "== $f"
    SIDELIGHT_RELIABILITY_FULL=1 npx --no-install ava --verbose --timeout=40m "$f" 2>&1 || rc=1
  done
  echo "== exit $rc"
  exit $rc
} 2>&1 | tee "$out"
exit "${PIPESTATUS[0]}"
