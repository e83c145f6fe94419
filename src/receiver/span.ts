/**
 * span.ts — the neutral span model the receiver produces and the exporters consume.
 *
 * Protocol-specific code (http.ts, later http2/grpc/dns) fills these; enrichment adds the
 * resource from `process`; src/otlp turns them into OTLP. Plain data, no behaviour.
 */
export type SpanKindName = 'server' | 'client' | 'internal';

export type AttrValue = string | number | boolean | string[];

export interface ProcessRef {
  tgid: number;
  /** thread that did the I/O */
  tid: number;
  comm: string;
  cgroupId: bigint;
}

export interface SidelightSpan {
  kind: SpanKindName;
  name: string;
  /** Unix epoch nanoseconds */
  startUnixNs: bigint;
  endUnixNs: bigint;
  attributes: Record<string, AttrValue>;
  status: { code: 'unset' | 'error'; message?: string };
  process: ProcessRef;
  /** W3C ids as lowercase hex; filled by the receiver or at export */
  traceId?: string;
  spanId?: string;
  parentSpanId?: string;
  /** W3C trace flags (0x01 sampled, 0x02 random trace id) */
  traceFlags?: number;
  /** W3C tracestate carried from the incoming request */
  traceState?: string;
  /** HTTP body octets (request / response), when the message was seen to its end: feeds the body-size metrics */
  bodySize?: { request?: number; response?: number };
  /**
   * Scratch the OTLP encoder keeps per source of spans (one connection end): spans of one
   * source mostly repeat their attributes. Opaque here; one object per source, never shared.
   */
  encodeMemo?: object;
}
