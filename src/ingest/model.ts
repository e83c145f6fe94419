/**
 * model.ts — what the receiver does to a decoded OTLP request: count its items, take out
 * the items no backend can use (spans/log records with ids of the wrong length: a partial
 * success), read and add resource attributes without overwriting any the sender set.
 *
 * Pure functions over protobufjs-decoded messages (plain property bags); they mutate the
 * message they are given. Main thread.
 */
import { SIGNAL_INFO, type OtlpMessage, type Signal } from './codec.js';

type Bag = Record<string, unknown>;

const arr = (v: unknown): Bag[] => (Array.isArray(v) ? (v as Bag[]) : []);

/** Data points of one Metric, whatever its type. */
function dataPoints(metric: Bag): number {
  for (const k of ['gauge', 'sum', 'histogram', 'exponentialHistogram', 'summary']) {
    const d = metric[k] as Bag | undefined;
    if (d) return arr(d['dataPoints']).length;
  }
  return 0;
}

/** Spans, data points or log records in a request. */
export function countItems(signal: Signal, msg: OtlpMessage): number {
  const info = SIGNAL_INFO[signal];
  let n = 0;
  for (const rs of arr(msg[info.resourceKey])) {
    for (const ss of arr(rs[info.scopeKey])) {
      const items = arr(ss[info.itemKey]);
      n += signal === 'metrics' ? items.reduce((a, m) => a + dataPoints(m), 0) : items.length;
    }
  }
  return n;
}

function idLen(v: unknown): number {
  return v instanceof Uint8Array ? v.length : 0;
}

function allZero(v: unknown): boolean {
  return v instanceof Uint8Array && v.every((b) => b === 0);
}

/** Why an item is unusable, or undefined. Spans need 16/8-byte non-zero ids; log ids are optional. */
function invalid(signal: Signal, item: Bag): string | undefined {
  if (signal === 'traces') {
    if (idLen(item['traceId']) !== 16) return `trace id must be 16 bytes, got ${idLen(item['traceId'])}`;
    if (allZero(item['traceId'])) return 'trace id is all zero (invalid)';
    if (idLen(item['spanId']) !== 8) return `span id must be 8 bytes, got ${idLen(item['spanId'])}`;
    if (allZero(item['spanId'])) return 'span id is all zero (invalid)';
    const p = idLen(item['parentSpanId']);
    if (p !== 0 && p !== 8) return `parent span id must be empty or 8 bytes, got ${p}`;
  } else if (signal === 'logs') {
    const t = idLen(item['traceId']);
    const s = idLen(item['spanId']);
    if (t !== 0 && t !== 16) return `trace id must be empty or 16 bytes, got ${t}`;
    if (s !== 0 && s !== 8) return `span id must be empty or 8 bytes, got ${s}`;
  }
  return undefined;
}

/**
 * Removes unusable items in place. Returns how many were removed and the first reason, for
 * the partial-success answer (`rejected_spans` / `rejected_log_records`, `error_message`).
 */
export function rejectInvalid(signal: Signal, msg: OtlpMessage): { rejected: number; message: string } {
  if (signal === 'metrics') return { rejected: 0, message: '' };
  const info = SIGNAL_INFO[signal];
  let rejected = 0;
  let message = '';
  arr(msg[info.resourceKey]).forEach((rs, i) => {
    arr(rs[info.scopeKey]).forEach((ss, j) => {
      const items = arr(ss[info.itemKey]);
      const keep = items.filter((it, k) => {
        const why = invalid(signal, it);
        if (!why) return true;
        rejected++;
        if (message === '') message = `${info.resourceKey}[${i}].${info.scopeKey}[${j}].${info.itemKey}[${k}]: ${why}`;
        return false;
      });
      if (keep.length !== items.length) ss[info.itemKey] = keep;
    });
  });
  if (rejected > 1) message += ` (and ${rejected - 1} more ${info.itemName} rejected)`;
  return { rejected, message };
}

/** Every Resource of a request (created empty where the sender sent none). */
export function resources(signal: Signal, msg: OtlpMessage): Bag[] {
  return arr(msg[SIGNAL_INFO[signal].resourceKey]).map((rs) => {
    let r = rs['resource'] as Bag | undefined;
    if (!r) rs['resource'] = r = { attributes: [] };
    if (!Array.isArray(r['attributes'])) r['attributes'] = [];
    return r;
  });
}

/** A string attribute of a resource, if set. */
export function stringAttribute(resource: Bag, key: string): string | undefined {
  for (const kv of arr(resource['attributes'])) {
    if (kv['key'] !== key) continue;
    const v = (kv['value'] as Bag | undefined)?.['stringValue'];
    return typeof v === 'string' ? v : undefined;
  }
  return undefined;
}

/** Adds each attribute the resource does not have yet; returns how many were added. */
export function addAbsent(resource: Bag, attrs: Record<string, string | number | boolean>): number {
  const list = arr(resource['attributes']);
  const have = new Set(list.map((kv) => kv['key']));
  let added = 0;
  for (const [key, v] of Object.entries(attrs)) {
    if (have.has(key)) continue;
    const value = typeof v === 'string' ? { stringValue: v } : typeof v === 'boolean' ? { boolValue: v } : Number.isInteger(v) ? { intValue: v } : { doubleValue: v };
    list.push({ key, value });
    added++;
  }
  resource['attributes'] = list;
  return added;
}

/** SERVER (2) or CLIENT (3) spans in a traces request: the hops Sidelight would also see. */
export function hasHopSpans(msg: OtlpMessage): boolean {
  for (const rs of arr(msg['resourceSpans'])) {
    for (const ss of arr(rs['scopeSpans'])) for (const s of arr(ss['spans'])) if (s['kind'] === 2 || s['kind'] === 3) return true;
  }
  return false;
}
