/**
 * sdkdetect.ts — which processes report their own hops through an OpenTelemetry SDK, so the
 * agent can drop its SERVER/CLIENT spans of those processes (one span per hop; `sdk.dedup`).
 *
 * Two sources mark a process:
 *  - traffic: a CLIENT span of the process that is an OTLP trace export — `POST …/v1/traces`
 *    (OTLP/HTTP, HTTP/1 or HTTP/2) or the gRPC call
 *    `opentelemetry.proto.collector.trace.v1.TraceService/Export`, plaintext or TLS. This is
 *    an SDK exporting straight to a Collector. The agent's own exports never get here (the
 *    connection table drops the agent's own traffic), so only the agent is exempt;
 *  - the agent's OTLP receiver: a sender whose trace exports carry SERVER/CLIENT spans
 *    (src/ingest/senders.ts keeps that table; it is asked on lookup through `receiverLookup`
 *    and a hit is recorded here).
 * A process is only known after its first export is seen (the SDK's batch delay, 5 s by
 * default): its spans that end before then are exported as usual.
 *
 * Owns one table tgid → when last marked and by which source, bounded by `maxProcesses`
 * (least recently marked evicted, counted). An entry lapses `ttlMs` after it was last marked
 * (lazily on lookup, and in sweep()); a pid reused by another program is thus forgotten
 * after one TTL. Lifetime: the agent's. Main thread only, no timers of its own.
 */
import type { SidelightSpan } from './span.js';

export type SdkSource = 'traffic' | 'receiver';

export interface SdkDetectOptions {
  /** processes remembered at once; the least recently marked is evicted beyond */
  maxProcesses: number;
  /** a process is forgotten this long after its last export was seen */
  ttlMs: number;
  /** the OTLP receiver's own record of SDK senders (absent when the receiver is off or receiver.dedup is false) */
  receiverLookup?: (tgid: number, now: number) => boolean;
}

export interface SdkDetectStats {
  /** processes currently marked */
  processes: number;
  /** OTLP trace exports seen in traffic (CLIENT spans) */
  exportsSeen: number;
  /** processes newly marked, by source */
  markedTraffic: number;
  markedReceiver: number;
  /** entries dropped because the table was full */
  evicted: number;
  /** entries that lapsed after ttlMs */
  expired: number;
  /** Sidelight SERVER/CLIENT spans dropped because their process exports its own */
  deduplicated: number;
}

/** The gRPC method of an OTLP trace export (rpc.method as h2spans.ts writes it). */
export const OTLP_TRACE_EXPORT_METHOD = 'opentelemetry.proto.collector.trace.v1.TraceService/Export';

/** Path of a URL or a bare path, without query or fragment. */
function pathOf(s: string): string {
  const m = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i.exec(s);
  const rest = m ? s.slice(m[0].length) : s;
  const cut = rest.search(/[?#]/);
  return cut < 0 ? rest : rest.slice(0, cut);
}

/** True when `s` is a CLIENT span of an OTLP trace export (HTTP `POST …/v1/traces` or the gRPC TraceService/Export). */
export function isTraceExport(s: SidelightSpan): boolean {
  if (s.kind !== 'client') return false;
  const a = s.attributes;
  if (a['rpc.method'] === OTLP_TRACE_EXPORT_METHOD) return true;
  if (a['http.request.method'] !== 'POST') return false;
  const target = typeof a['url.path'] === 'string' ? a['url.path'] : typeof a['url.full'] === 'string' ? a['url.full'] : undefined;
  if (target === undefined) return false;
  return /\/v1\/traces\/?$/.test(pathOf(target));
}

/** True for the spans an SDK's HTTP/gRPC instrumentation also makes: SERVER and CLIENT, never DNS lookups. */
export function isHopSpan(s: SidelightSpan): boolean {
  return (s.kind === 'server' || s.kind === 'client') && s.attributes['dns.question.name'] === undefined && !s.name.startsWith('DNS ');
}

interface Entry {
  at: number;
  source: SdkSource;
}

export class SdkProcesses {
  private readonly opts: SdkDetectOptions;
  private readonly table = new Map<number, Entry>();
  readonly stats: SdkDetectStats = { processes: 0, exportsSeen: 0, markedTraffic: 0, markedReceiver: 0, evicted: 0, expired: 0, deduplicated: 0 };

  constructor(opts: SdkDetectOptions) {
    if (!(opts.maxProcesses >= 1)) throw new Error(`sdk.maxProcesses: ${opts.maxProcesses}: must be at least 1`);
    if (!(opts.ttlMs >= 1)) throw new Error(`sdk.ttlMs: ${opts.ttlMs}: must be at least 1`);
    this.opts = opts;
  }

  get size(): number {
    return this.table.size;
  }

  /** Marks `tgid` as exporting its own spans (refreshes its TTL). */
  note(tgid: number, source: SdkSource, now = Date.now()): void {
    const had = this.table.get(tgid);
    if (had && now - had.at <= this.opts.ttlMs) {
      this.table.delete(tgid); // re-insert: the Map's order is the eviction order
    } else {
      if (had) {
        this.table.delete(tgid);
        this.stats.expired++;
      } else if (this.table.size >= this.opts.maxProcesses) {
        const oldest = this.table.keys().next();
        if (!oldest.done) {
          this.table.delete(oldest.value);
          this.stats.evicted++;
        }
      }
      if (source === 'traffic') this.stats.markedTraffic++;
      else this.stats.markedReceiver++;
    }
    this.table.set(tgid, { at: now, source });
    this.stats.processes = this.table.size;
  }

  /** Looks at a finished span: an OTLP trace export marks its process. Returns whether it was one. */
  observe(s: SidelightSpan, now = Date.now()): boolean {
    if (!isTraceExport(s)) return false;
    this.stats.exportsSeen++;
    this.note(s.process.tgid, 'traffic', now);
    return true;
  }

  /** Whether `tgid` exports its own spans (traffic seen within ttlMs, or the receiver says so). */
  isSdk(tgid: number, at?: number): boolean {
    const e = this.table.get(tgid);
    const lookup = this.opts.receiverLookup;
    if (e === undefined && lookup === undefined) return false; // the common case: no clock read
    const now = at ?? Date.now();
    if (e) {
      if (now - e.at <= this.opts.ttlMs) return true;
      this.table.delete(tgid);
      this.stats.expired++;
      this.stats.processes = this.table.size;
    }
    if (lookup?.(tgid, now)) {
      this.note(tgid, 'receiver', now);
      return true;
    }
    return false;
  }

  /** Whether to drop `s`: a SERVER/CLIENT (not DNS) span of a process that exports its own. Counted. */
  suppress(s: SidelightSpan, now?: number): boolean {
    if (!isHopSpan(s) || !this.isSdk(s.process.tgid, now)) return false;
    this.stats.deduplicated++;
    return true;
  }

  /** Drops lapsed entries (the agent calls this from its sweep timer). */
  sweep(now = Date.now()): void {
    for (const [tgid, e] of this.table) {
      if (now - e.at > this.opts.ttlMs) {
        this.table.delete(tgid);
        this.stats.expired++;
      }
    }
    this.stats.processes = this.table.size;
  }
}
