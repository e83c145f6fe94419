#!/usr/bin/env bash
# Run every test (after `make setup` and `make collector`): typecheck, then ava.
# Prints a closing line "N passed, N failed, N skipped". Under CI=true a skipped test is
# a failure (kernel, Collector and peer tests included).
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/node/bin:$PATH"

echo "== typecheck"
npx --no-install tsc -p test/tsconfig.json --noEmit || { echo "0 passed, 1 failed"; exit 1; }

log=$(mktemp)
trap 'rm -f "$log"' EXIT
if [ $# -gt 0 ]; then
  echo "== ava $*"
  npx --no-install ava "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
else
  # The tests that load the machine on purpose (the benchmark smoke test, the overload and
  # outage tests) run alone, one after another, after everything else: their load would
  # otherwise reach the agents of the tests running beside them.
  alone=(test/e2e/reliability-outage.test.ts test/bench.test.ts)
  echo "== ava (all but: ${alone[*]})"
  npx --no-install ava 'test/**/*.test.ts' "${alone[@]/#/!}" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  for f in "${alone[@]}"; do
    [ -f "$f" ] || continue
    echo "== ava $f (alone)"
    npx --no-install ava "$f" 2>&1 | tee -a "$log"
    [ "${PIPESTATUS[0]}" -ne 0 ] && rc=1
  done
fi

# count ava's per-test lines: "✔ name", "✘ [fail]: name", "- [skip] name"; tests that
# could not run here log "SKIPPED: reason" and pass vacuously: they count as skipped.
ok=$(grep -cE '^\s*✔ ' "$log")
failed=$(grep -E '^\s*✘ \[fail\]' "$log" | sort -u | wc -l)
avaskipped=$(grep -cE '^\s*- \[skip\]' "$log")
skipped=$(grep -c 'SKIPPED:' "$log")
hung=$(grep -cE '^\s*✘ Timed out while running tests|^\s*[0-9]+ (uncaught exceptions?|unhandled rejections?)$|^\s*✘ .*exited with a non-zero exit code' "$log")
failed=$(( failed + hung ))
passed=$(( ok - skipped )); [ "$passed" -lt 0 ] && passed=0
skipped=$(( skipped + avaskipped ))
if [ "${CI:-}" = "true" ] && [ "$skipped" -gt 0 ]; then
  echo "CI: $skipped test(s) skipped; under CI nothing may skip"
  failed=$(( failed + skipped ))
  rc=1
fi
[ "$rc" -ne 0 ] && [ "$failed" -eq 0 ] && failed=1
# CI shows only the end of this output: name each failure again, with the first lines ava
# printed under its heading, right above the closing line.
if [ "$failed" -gt 0 ]; then
  echo "== failures"
  grep -E '^\s*✘ |SKIPPED:' "$log" | sort -u | head -20
  awk '/✘ \[fail\]/{f=1} f&&/^  ─$/{p=1; next} /^  [0-9]+ tests? failed/{p=0; f=0} p' "$log" \
    | grep -v '^\s*$' | head -60
fi
echo "$passed passed, $failed failed, $skipped skipped"
exit "$rc"
