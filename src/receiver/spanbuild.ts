/**
 * spanbuild.ts — the pieces every protocol's span assembly shares: HTTP method
 * normalisation (semconv known methods, `_OTHER`), the network.* attributes of a
 * connection, and the trace ids resolved from a request's TraceCtx. Pure functions.
 */
import {
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_REQUEST_METHOD_ORIGINAL,
  ATTR_NETWORK_LOCAL_ADDRESS,
  ATTR_NETWORK_LOCAL_PORT,
  ATTR_NETWORK_PEER_ADDRESS,
  ATTR_NETWORK_PEER_PORT,
  ATTR_NETWORK_TRANSPORT,
  ATTR_NETWORK_TYPE,
} from '@opentelemetry/semantic-conventions';
import type { ConnInfo } from './decode.js';
import type { AttrValue, SidelightSpan } from './span.js';
import type { TraceCtx } from './trace.js';

/** RFC 9110 methods plus PATCH: anything else is exported as `_OTHER`. */
const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH']);

/** Sets http.request.method (and _original for unknown ones); returns the span name. */
export function setMethod(attrs: Record<string, AttrValue>, raw: string): string {
  if (KNOWN_METHODS.has(raw)) {
    attrs[ATTR_HTTP_REQUEST_METHOD] = raw;
    return raw;
  }
  attrs[ATTR_HTTP_REQUEST_METHOD] = '_OTHER';
  attrs[ATTR_HTTP_REQUEST_METHOD_ORIGINAL] = raw;
  return 'HTTP';
}

/** network.transport/type and the peer and local endpoints of a connection. */
export function connAttributes(info: ConnInfo, transport: 'tcp' | 'udp' = 'tcp'): Record<string, AttrValue> {
  return addConnAttributes({}, info, transport);
}

/** connAttributes() written into `attrs` (same keys, same order), without a temporary object. */
export function addConnAttributes(attrs: Record<string, AttrValue>, info: ConnInfo, transport: 'tcp' | 'udp' = 'tcp'): Record<string, AttrValue> {
  attrs[ATTR_NETWORK_TRANSPORT] = transport;
  attrs[ATTR_NETWORK_TYPE] = info.family === 4 ? 'ipv4' : 'ipv6';
  attrs[ATTR_NETWORK_PEER_ADDRESS] = info.remote.address;
  attrs[ATTR_NETWORK_PEER_PORT] = info.remote.port;
  attrs[ATTR_NETWORK_LOCAL_ADDRESS] = info.local.address;
  attrs[ATTR_NETWORK_LOCAL_PORT] = info.local.port;
  return attrs;
}

/**
 * `span` with its trace fields, resolved now (see trace.ts), set in place (no object or spread
 * per span). `startMono`: the request's start (CLOCK_MONOTONIC ns), see TraceCtx.resolve.
 */
export function withIds(span: SidelightSpan, ctx: TraceCtx, startMono?: bigint): SidelightSpan {
  const ids = ctx.resolve(startMono);
  span.traceId = ids.traceId;
  span.spanId = ids.spanId;
  if (ids.parentSpanId) span.parentSpanId = ids.parentSpanId;
  span.traceFlags = ids.flags;
  if (ids.tracestate !== undefined) span.traceState = ids.tracestate;
  return span;
}

/**
 * The query string to export (url.query, and in url.full), or undefined when it is not
 * captured: off unless `captureQuery`; the values of `redactKeys` (lowercased names) become
 * REDACTED, as the semantic conventions ask for sensitive query parameters.
 */
export function exportedQuery(query: string | undefined, captureQuery: boolean, redactKeys: ReadonlySet<string> | undefined): string | undefined {
  if (!captureQuery || query === undefined) return undefined;
  if (!redactKeys || redactKeys.size === 0) return query;
  return query
    .split('&')
    .map((part) => {
      const eq = part.indexOf('=');
      const raw = eq < 0 ? part : part.slice(0, eq);
      let name = raw;
      try {
        name = decodeURIComponent(raw.replace(/\+/g, ' '));
      } catch {
        /* a malformed escape: match the raw name */
      }
      return redactKeys.has(name.toLowerCase()) ? `${raw}=REDACTED` : part;
    })
    .join('&');
}
