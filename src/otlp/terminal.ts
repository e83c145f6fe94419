/**
 * terminal.ts — the default view when no backend is configured: finished spans grouped into
 * trace trees on the terminal. A span with a parent is held until its trace's root (a span
 * without parent) finishes — children usually finish first — and `lingerMs` more: a child
 * can be reported after its root (a CLIENT's read of the response can return before the
 * SERVER's write on this node does). Then the whole tree is printed, indented by depth, each
 * line with start time, kind, service, request, status (ERROR marked) and duration. Spans
 * whose root never comes (the parent is in another process or node, or finished earlier)
 * are printed after `holdMs`, as a tree under a "(parent … not seen)" line. A trace of one
 * span prints as one line.
 *
 * Bounds, counted: traces held (`maxTraces`; past it the oldest is printed early) and spans
 * per trace (`maxSpansPerTrace`; past it spans print on their own at once). Single-threaded;
 * the flush timer is unref'd; stop() prints what is held.
 */
import type { SidelightSpan } from '../receiver/span.js';
import { formatSpanLine } from './sinks.js';

export interface TraceTreeOptions {
  /** how long spans wait for their root, ms */
  holdMs: number;
  /** how long a trace waits, once its root finished, for children reported after it, ms */
  lingerMs: number;
  /** traces held at once */
  maxTraces: number;
  /** spans held per trace */
  maxSpansPerTrace: number;
  /** where lines go (process.stdout by default) */
  write: (text: string) => void;
}

export interface TraceTreeStats {
  /** trees printed (including single spans) */
  printed: number;
  /** trees printed without their root, after holdMs */
  orphaned: number;
  /** traces printed early because maxTraces were held */
  evicted: number;
  /** spans printed alone because their trace held maxSpansPerTrace */
  overflowed: number;
}

interface Held {
  span: SidelightSpan;
  service: string;
}

interface Trace {
  spans: Held[];
  since: number;
  /** when its root arrived (then it prints lingerMs later), else undefined */
  rootAt: number | undefined;
}

export class TraceTreeView {
  private readonly opts: TraceTreeOptions;
  private readonly traces = new Map<string, Trace>();
  private timer: NodeJS.Timeout | undefined;
  readonly stats: TraceTreeStats = { printed: 0, orphaned: 0, evicted: 0, overflowed: 0 };

  constructor(opts: Partial<TraceTreeOptions> = {}) {
    this.opts = {
      holdMs: opts.holdMs ?? 2000,
      lingerMs: opts.lingerMs ?? 300,
      maxTraces: opts.maxTraces ?? 1000,
      maxSpansPerTrace: opts.maxSpansPerTrace ?? 256,
      write: opts.write ?? ((s) => void process.stdout.write(s)),
    };
  }

  get held(): number {
    return this.traces.size;
  }

  push(span: SidelightSpan, service: string): void {
    const id = span.traceId ?? '';
    const t = this.traces.get(id);
    if (!span.parentSpanId && this.opts.lingerMs <= 0) {
      this.traces.delete(id);
      this.print([...(t?.spans ?? []), { span, service }], false);
      return;
    }
    if (t) {
      if (t.spans.length >= this.opts.maxSpansPerTrace) {
        this.stats.overflowed++;
        this.print([{ span, service }], span.parentSpanId !== undefined);
        return;
      }
      if (!span.parentSpanId) t.rootAt ??= Date.now();
      t.spans.push({ span, service });
      return;
    }
    if (this.traces.size >= this.opts.maxTraces) {
      const [oldId, old] = this.traces.entries().next().value!;
      this.traces.delete(oldId);
      this.stats.evicted++;
      this.print(old.spans, old.rootAt === undefined);
    }
    const now = Date.now();
    this.traces.set(id, { spans: [{ span, service }], since: now, rootAt: span.parentSpanId ? undefined : now });
    this.arm();
  }

  private arm(): void {
    if (this.timer) return;
    const every = Math.min(this.opts.holdMs, this.opts.lingerMs > 0 ? this.opts.lingerMs : Infinity) / 4;
    this.timer = setInterval(() => this.sweep(Date.now()), Math.max(20, Math.min(100, Math.floor(every))));
    this.timer.unref();
  }

  /** Print traces whose root came lingerMs ago, and those held longer than holdMs without it. */
  sweep(now: number): void {
    for (const [id, t] of this.traces) {
      const rooted = t.rootAt !== undefined;
      if (rooted ? now - t.rootAt! < this.opts.lingerMs : now - t.since < this.opts.holdMs) continue;
      this.traces.delete(id);
      this.print(t.spans, !rooted);
    }
    if (this.traces.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  /** Print everything held (shutdown). */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    for (const t of this.traces.values()) this.print(t.spans, t.rootAt === undefined);
    this.traces.clear();
  }

  private print(spans: Held[], orphaned: boolean): void {
    this.stats.printed++;
    if (orphaned) this.stats.orphaned++;
    this.opts.write(renderTree(spans, orphaned));
  }
}

function ms(ns: bigint): string {
  const v = Number(ns) / 1e6;
  return v >= 100 ? `${v.toFixed(0)}ms` : `${v.toFixed(2)}ms`;
}

/**
 * The text of one trace: a single span is its one line; several get a header line and the
 * tree, children under parents ordered by start time, box-drawing indentation.
 */
export function renderTree(spans: Held[], orphaned: boolean): string {
  if (spans.length === 1 && !orphaned) return `${formatSpanLine(spans[0]!.span, spans[0]!.service)}\n`;
  const ids = new Set(spans.map((h) => h.span.spanId));
  const children = new Map<string, Held[]>();
  const roots: Held[] = [];
  for (const h of spans) {
    const p = h.span.parentSpanId;
    if (p && ids.has(p) && p !== h.span.spanId) {
      let c = children.get(p);
      if (!c) children.set(p, (c = []));
      c.push(h);
    } else roots.push(h);
  }
  const byStart = (a: Held, b: Held): number => (a.span.startUnixNs < b.span.startUnixNs ? -1 : a.span.startUnixNs > b.span.startUnixNs ? 1 : 0);
  roots.sort(byStart);
  let start = spans[0]!.span.startUnixNs;
  let end = spans[0]!.span.endUnixNs;
  let errors = 0;
  for (const h of spans) {
    if (h.span.startUnixNs < start) start = h.span.startUnixNs;
    if (h.span.endUnixNs > end) end = h.span.endUnixNs;
    if (h.span.status.code === 'error') errors++;
  }
  const traceId = spans[0]!.span.traceId ?? '-';
  let out = `trace ${traceId} ${spans.length} spans ${ms(end - start)}${errors ? ` ${errors} ERROR` : ''}${orphaned ? ' (root not seen)' : ''}\n`;
  const seen = new Set<Held>();
  const walk = (h: Held, prefix: string, last: boolean, top: boolean): void => {
    if (seen.has(h)) return; // a parent cycle in bad input: print each span once
    seen.add(h);
    const branch = top ? '' : last ? '└─ ' : '├─ ';
    const orphanNote = top && h.span.parentSpanId ? ` (parent ${h.span.parentSpanId} not seen)` : '';
    out += `${prefix}${branch}${formatSpanLine(h.span, h.service)}${orphanNote}\n`;
    const kids = (children.get(h.span.spanId ?? '') ?? []).sort(byStart);
    const next = top ? prefix : `${prefix}${last ? '   ' : '│  '}`;
    kids.forEach((k, i) => walk(k, next, i === kids.length - 1, false));
  };
  for (const r of roots) walk(r, '  ', true, true);
  for (const h of spans) if (!seen.has(h)) walk(h, '  ', true, true);
  return out;
}
