/**
 * clock.ts — converts kernel timestamps (bpf_ktime_get_ns: CLOCK_MONOTONIC, ns since boot)
 * to wall-clock Unix nanoseconds.
 *
 * process.hrtime.bigint() reads the same CLOCK_MONOTONIC on Linux, so the offset between
 * the two clocks is measured in-process: at the instant Date.now() (the system realtime
 * clock) ticks to a new millisecond, realtime is exactly that millisecond, and the
 * monotonic clock read at that instant gives the offset to within the read time (µs).
 * The offset is re-measured at most every `refreshMs`, so NTP slews and clock steps are
 * followed (performance.timeOrigin would not: it is fixed at process start).
 * Single-threaded; one instance per agent; a measurement spins for at most ~5 ms.
 */
import { performance } from 'node:perf_hooks';

/** Millisecond edges sampled per measurement (each costs up to 1 ms of spinning). */
const EDGES = 5;

export class MonotonicClock {
  private offsetNs = 0n;
  private measuredAt = 0;
  private readonly refreshMs: number;

  constructor(refreshMs = 60_000) {
    this.refreshMs = refreshMs;
    this.measure();
  }

  /**
   * Re-measure the offset at millisecond edges of the realtime clock. A pause between the
   * two reads (preemption, GC, a cold JIT) skews one sample either way: the median of a
   * few edges is the true one.
   */
  measure(): void {
    const offsets: bigint[] = [];
    let at = 0;
    for (let i = 0; i < EDGES; i++) {
      const start = Date.now();
      let now = start;
      let mono = process.hrtime.bigint();
      const deadline = performance.now() + 5; // never spin long, even on a stalled clock
      while (now === start && performance.now() < deadline) {
        mono = process.hrtime.bigint();
        now = Date.now();
      }
      offsets.push(BigInt(now) * 1_000_000n - mono);
      at = now;
    }
    offsets.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    this.offsetNs = offsets[EDGES >> 1] ?? 0n;
    this.measuredAt = at;
  }

  /** Unix epoch nanoseconds for a CLOCK_MONOTONIC nanosecond timestamp. */
  toUnixNs(monoNs: bigint): bigint {
    if (Date.now() - this.measuredAt > this.refreshMs) this.measure();
    return monoNs + this.offsetNs;
  }

  /** Current CLOCK_MONOTONIC in ns (same clock as the kernel's timestamps). */
  nowMono(): bigint {
    return process.hrtime.bigint();
  }
}
