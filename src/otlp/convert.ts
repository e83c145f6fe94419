/**
 * convert.ts — SidelightSpan → the ReadableSpan shape the OpenTelemetry JS exporters
 * serialise. Ids are generated here when the receiver did not set them (random, never all
 * zero); timestamps go from Unix ns to HrTime. The Resource comes from the caller, one
 * object per process, so the OTLP transformer groups spans per process.
 * Pure apart from the random-id pool; main thread only.
 */
import { randomFillSync } from 'node:crypto';
import { SpanKind, SpanStatusCode, TraceFlags, type HrTime, type SpanContext } from '@opentelemetry/api';
import { TraceState } from '@opentelemetry/core';
import type { Resource } from '@opentelemetry/resources';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import type { SidelightSpan } from '../receiver/span.js';
import { AGENT_NAME, AGENT_VERSION } from '../version.js';

const pool = Buffer.alloc(8192);
let poolOff = pool.length;

function randomHex(bytes: number): string {
  for (;;) {
    if (poolOff + bytes > pool.length) {
      randomFillSync(pool);
      poolOff = 0;
    }
    const slice = pool.subarray(poolOff, poolOff + bytes);
    poolOff += bytes;
    if (slice.some((b) => b !== 0)) return slice.toString('hex');
  }
}

export function newTraceId(): string {
  return randomHex(16);
}

export function newSpanId(): string {
  return randomHex(8);
}

export function hrTime(unixNs: bigint): HrTime {
  return [Number(unixNs / 1_000_000_000n), Number(unixNs % 1_000_000_000n)];
}

const KIND = { server: SpanKind.SERVER, client: SpanKind.CLIENT, internal: SpanKind.INTERNAL } as const;
/** The agent's one instrumentation scope (encode.ts writes the same). */
export const SCOPE = { name: AGENT_NAME, version: AGENT_VERSION };

/** Fill missing ids in place (so console output and export agree). */
export function ensureIds(s: SidelightSpan): void {
  s.traceId ??= newTraceId();
  s.spanId ??= newSpanId();
  s.traceFlags ??= TraceFlags.SAMPLED;
}

export function toReadableSpan(s: SidelightSpan, resource: Resource): ReadableSpan {
  ensureIds(s);
  const traceState = s.traceState !== undefined ? new TraceState(s.traceState) : undefined;
  const ctx: SpanContext = { traceId: s.traceId!, spanId: s.spanId!, traceFlags: s.traceFlags!, ...(traceState ? { traceState } : {}) };
  const parent: SpanContext | undefined = s.parentSpanId
    ? { traceId: s.traceId!, spanId: s.parentSpanId, traceFlags: s.traceFlags!, isRemote: true }
    : undefined;
  const end = s.endUnixNs >= s.startUnixNs ? s.endUnixNs : s.startUnixNs;
  return {
    name: s.name,
    kind: KIND[s.kind],
    spanContext: () => ctx,
    ...(parent ? { parentSpanContext: parent } : {}),
    startTime: hrTime(s.startUnixNs),
    endTime: hrTime(end),
    duration: hrTime(end - s.startUnixNs),
    status:
      s.status.code === 'error'
        ? { code: SpanStatusCode.ERROR, ...(s.status.message ? { message: s.status.message } : {}) }
        : { code: SpanStatusCode.UNSET },
    attributes: s.attributes,
    links: [],
    events: [],
    ended: true,
    resource,
    instrumentationScope: SCOPE,
    droppedAttributesCount: 0,
    droppedEventsCount: 0,
    droppedLinksCount: 0,
  };
}
