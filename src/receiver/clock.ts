/**
 * clock.ts — converts kernel timestamps (bpf_ktime_get_ns: CLOCK_MONOTONIC, ns since boot)
 * to wall-clock Unix nanoseconds.
 *
 * process.hrtime.bigint() reads the same CLOCK_MONOTONIC on Linux, so the offset between
 * the two clocks is measured in-process: realtime (performance.timeOrigin + now) minus
 * monotonic. The offset is re-measured at most every `refreshMs` so NTP slews are
 * followed. Single-threaded; one instance per agent.
 */
import { performance } from 'node:perf_hooks';

export class MonotonicClock {
  private offsetNs = 0n;
  private measuredAt = 0;
  private readonly refreshMs: number;

  constructor(refreshMs = 60_000) {
    this.refreshMs = refreshMs;
    this.measure();
  }

  /** Re-measure the offset: the smallest of a few samples bounds the read skew. */
  measure(): void {
    let best: bigint | undefined;
    for (let i = 0; i < 5; i++) {
      const mono = process.hrtime.bigint();
      const wallNs = BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
      const mono2 = process.hrtime.bigint();
      const off = wallNs - (mono + mono2) / 2n;
      if (best === undefined || off < best) best = off;
    }
    this.offsetNs = best ?? 0n;
    this.measuredAt = Date.now();
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
