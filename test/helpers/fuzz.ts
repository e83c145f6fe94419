/**
 * fuzz.ts (test helper) — how many generated/mutated inputs a parser fuzz test runs: its CI
 * size by default, one million with SIDELIGHT_FUZZ_FULL=1 (`make fuzz`), or exactly
 * SIDELIGHT_FUZZ_N when set. Pure.
 */
export function fuzzIterations(ciSize: number): number {
  const n = Number(process.env.SIDELIGHT_FUZZ_N);
  if (Number.isInteger(n) && n > 0) return n;
  return process.env.SIDELIGHT_FUZZ_FULL === '1' ? 1_000_000 : ciSize;
}
