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
 * Single-threaded; one instance per agent; a measurement spins for ~5 ms (up to ~15 ms when
 * preemption widened every bracket, see measure()).
 */
import { performance } from 'node:perf_hooks';

/** Millisecond edges sampled per measurement (each costs up to 1 ms of spinning). */
const EDGES = 5;
/** ... and more, up to MAX_EDGES, while the narrowest bracket is wider than GOOD_BRACKET_NS
 * (on a loaded machine every one of the first EDGES can be preempted) */
const MAX_EDGES = 15;
const GOOD_BRACKET_NS = 100_000n;

export class MonotonicClock {
  private offsetNs = 0n;
  private measuredAt = 0;
  private readonly refreshMs: number;
  /** CLOCK_MONOTONIC ns after which toUnixNs re-measures (compared with its argument: no clock read per call) */
  private refreshAtMono = 0n;

  constructor(refreshMs = 60_000) {
    this.refreshMs = refreshMs;
    this.measure();
  }

  /**
   * Re-measure the offset at millisecond edges of the realtime clock. Each read of Date.now()
   * is bracketed by two monotonic reads, so the tick to a new millisecond lies between the
   * first monotonic read before the last old value and the one after the first new value.
   * A pause in between (preemption, GC, a cold JIT) widens that bracket: of several edges,
   * the narrowest bracket gives the offset (its midpoint), not the median of skewed ones; when
   * even that is wider than GOOD_BRACKET_NS, more edges are sampled (up to MAX_EDGES).
   */
  measure(): void {
    let best = -1n;
    let bestOffset = 0n;
    let at = 0;
    for (let i = 0; i < MAX_EDGES && (i < EDGES || best > GOOD_BRACKET_NS); i++) {
      let prevBefore = process.hrtime.bigint();
      const start = Date.now();
      let now = start;
      let before = prevBefore;
      let after = prevBefore;
      const deadline = performance.now() + 5; // never spin long, even on a stalled clock
      while (performance.now() < deadline) {
        before = process.hrtime.bigint();
        now = Date.now();
        after = process.hrtime.bigint();
        if (now !== start) break;
        prevBefore = before;
      }
      if (now === start) continue; // no edge within the deadline
      const width = after - prevBefore;
      if (best < 0n || width < best) {
        best = width;
        bestOffset = BigInt(now) * 1_000_000n - (prevBefore + after) / 2n;
      }
      at = now;
    }
    if (best >= 0n) this.offsetNs = bestOffset;
    else if (this.measuredAt === 0) this.offsetNs = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();
    this.measuredAt = at || Date.now();
    this.refreshAtMono = process.hrtime.bigint() + BigInt(this.refreshMs) * 1_000_000n;
  }

  /**
   * Unix epoch nanoseconds for a CLOCK_MONOTONIC nanosecond timestamp. Re-measures first when
   * the timestamp is more than refreshMs past the last measurement (timestamps are recent: the
   * kernel's, of what just happened), without reading a clock on every call.
   */
  toUnixNs(monoNs: bigint): bigint {
    if (monoNs > this.refreshAtMono) this.measure();
    return monoNs + this.offsetNs;
  }

  /** Current CLOCK_MONOTONIC in ns (same clock as the kernel's timestamps). */
  nowMono(): bigint {
    return process.hrtime.bigint();
  }
}
