/**
 * grpc.ts — gRPC semantics over HTTP/2 stream events (see http2.ts): recognising gRPC
 * requests, splitting `:path` into service and method, reading `grpc-status` from trailers or
 * from a Trailers-Only response, and the OpenTelemetry rule for which status codes are errors.
 *
 * Pure functions over header lists (Array<[name, value]>, names lower-case as HTTP/2 requires;
 * lookups here are case-insensitive anyway). Owns no state; safe to call from anywhere.
 * Follows the gRPC over HTTP/2 protocol (PROTOCOL-HTTP2.md: content-type, path, status,
 * Trailers-Only, HTTP and RST_STREAM mappings) and the OTel RPC semantic conventions for gRPC
 * (error status per span kind). Message framing/counting is intentionally not handled.
 */

export type Headers = ReadonlyArray<readonly [string, string]>;

export interface GrpcMethod {
  /** fully qualified service, e.g. 'pkg.Service' */
  service: string;
  /** method name, e.g. 'Method' */
  method: string;
  /** 'pkg.Service/Method' (no leading slash) — the OTel `rpc.method` form */
  rpcMethod: string;
}

export interface GrpcStatus {
  code: number;
  /** canonical name ('OK', 'CANCELLED', …); the decimal code for codes outside 0..16 */
  name: string;
}

/** canonical status code names, index = code (grpc/status.proto) */
export const GRPC_STATUS_NAMES: readonly string[] = [
  'OK',
  'CANCELLED',
  'UNKNOWN',
  'INVALID_ARGUMENT',
  'DEADLINE_EXCEEDED',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'PERMISSION_DENIED',
  'RESOURCE_EXHAUSTED',
  'FAILED_PRECONDITION',
  'ABORTED',
  'OUT_OF_RANGE',
  'UNIMPLEMENTED',
  'INTERNAL',
  'UNAVAILABLE',
  'DATA_LOSS',
  'UNAUTHENTICATED',
];

export const GRPC_OK = 0;
export const GRPC_CANCELLED = 1;
export const GRPC_UNKNOWN = 2;
export const GRPC_DEADLINE_EXCEEDED = 4;
export const GRPC_PERMISSION_DENIED = 7;
export const GRPC_RESOURCE_EXHAUSTED = 8;
export const GRPC_UNIMPLEMENTED = 12;
export const GRPC_INTERNAL = 13;
export const GRPC_UNAVAILABLE = 14;
export const GRPC_DATA_LOSS = 15;
export const GRPC_UNAUTHENTICATED = 16;

/** OTel semconv: status codes that make a SERVER span an error */
const SERVER_ERRORS: ReadonlySet<number> = new Set([
  GRPC_UNKNOWN,
  GRPC_DEADLINE_EXCEEDED,
  GRPC_UNIMPLEMENTED,
  GRPC_INTERNAL,
  GRPC_UNAVAILABLE,
  GRPC_DATA_LOSS,
]);

/** first value of header `name` (case-insensitive), or undefined */
function header(headers: Headers, name: string): string | undefined {
  if (!Array.isArray(headers)) return undefined;
  for (const h of headers) {
    if (!Array.isArray(h) || typeof h[0] !== 'string' || typeof h[1] !== 'string') continue;
    if (h[0].toLowerCase() === name) return h[1];
  }
  return undefined;
}

/**
 * Is this a gRPC request/response? content-type `application/grpc` exactly, or followed by
 * `+format` (application/grpc+proto) or `;params` (case-insensitive, surrounding space allowed).
 */
export function isGrpc(headers: Headers): boolean {
  const ct = header(headers, 'content-type');
  if (ct === undefined) return false;
  const v = ct.trim().toLowerCase();
  if (!v.startsWith('application/grpc')) return false;
  const rest = v.slice('application/grpc'.length);
  return rest.length === 0 || rest[0] === '+' || rest[0] === ';' || rest[0] === ' ';
}

const IDENT = /^[A-Za-z0-9_.$-]+$/;

/**
 * Split a gRPC `:path` ('/pkg.Service/Method') into service and method. Undefined for
 * anything else: missing leading slash, not exactly two non-empty segments, a query string or
 * characters outside [A-Za-z0-9_.$-], or a service with empty dot-separated parts.
 */
export function grpcMethod(path: string): GrpcMethod | undefined {
  if (typeof path !== 'string' || path.length < 4 || path.length > 1024 || path[0] !== '/') return undefined;
  const parts = path.slice(1).split('/');
  if (parts.length !== 2) return undefined;
  const [service, method] = parts as [string, string];
  if (!IDENT.test(service) || !IDENT.test(method)) return undefined;
  if (service.split('.').some((p) => p.length === 0)) return undefined;
  return { service, method, rpcMethod: `${service}/${method}` };
}

/** name of a status code: canonical for 0..16, the decimal code otherwise */
export function grpcStatusName(code: number): string {
  return GRPC_STATUS_NAMES[code] ?? String(code);
}

/**
 * The `grpc-status` of a trailers block (or of a Trailers-Only response's headers): a decimal
 * non-negative integer (at most 10 digits, <= 2^31-1). Undefined when absent or malformed.
 */
export function grpcStatus(headersOrTrailers: Headers): GrpcStatus | undefined {
  const v = header(headersOrTrailers, 'grpc-status');
  if (v === undefined) return undefined;
  const s = v.trim();
  if (!/^[0-9]{1,10}$/.test(s)) return undefined;
  const code = Number(s);
  if (code > 0x7fffffff) return undefined;
  return { code, name: grpcStatusName(code) };
}

/** `grpc-message`, percent-decoded (invalid escapes are kept as they are); undefined when absent */
export function grpcMessage(headersOrTrailers: Headers): string | undefined {
  const v = header(headersOrTrailers, 'grpc-message');
  if (v === undefined) return undefined;
  if (!v.includes('%')) return v;
  const bytes: number[] = [];
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c === 0x25 && i + 2 < v.length && /^[0-9A-Fa-f]{2}$/.test(v.slice(i + 1, i + 3))) {
      bytes.push(parseInt(v.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      bytes.push(c & 0xff);
    }
  }
  return new TextDecoder('utf-8').decode(new Uint8Array(bytes));
}

/**
 * A Trailers-Only response: the response HEADERS carried END_STREAM and a `grpc-status`
 * (the call ended without messages; the status is in the headers).
 */
export function isTrailersOnly(responseHeaders: Headers, endStream: boolean): boolean {
  return endStream === true && grpcStatus(responseHeaders) !== undefined;
}

/**
 * Final status of a call: from the trailers when there are any, else from a Trailers-Only
 * response; otherwise (no status seen) undefined — see grpcStatusFromHttp / grpcStatusFromReset.
 */
export function grpcCallStatus(responseHeaders: Headers | undefined, responseEndStream: boolean, trailers: Headers | undefined): GrpcStatus | undefined {
  if (trailers !== undefined) return grpcStatus(trailers);
  if (responseHeaders !== undefined && isTrailersOnly(responseHeaders, responseEndStream)) return grpcStatus(responseHeaders);
  return undefined;
}

/** PROTOCOL-HTTP2.md: status a client derives from a non-200 HTTP status without grpc-status */
export function grpcStatusFromHttp(httpStatus: number): GrpcStatus {
  let code: number;
  switch (httpStatus) {
    case 400:
      code = GRPC_INTERNAL;
      break;
    case 401:
      code = GRPC_UNAUTHENTICATED;
      break;
    case 403:
      code = GRPC_PERMISSION_DENIED;
      break;
    case 404:
      code = GRPC_UNIMPLEMENTED;
      break;
    case 429:
    case 502:
    case 503:
    case 504:
      code = GRPC_UNAVAILABLE;
      break;
    default:
      code = GRPC_UNKNOWN;
  }
  return { code, name: grpcStatusName(code) };
}

/** PROTOCOL-HTTP2.md: status for a stream reset with an HTTP/2 error code (RST_STREAM) */
export function grpcStatusFromReset(h2ErrorCode: number): GrpcStatus {
  let code: number;
  switch (h2ErrorCode) {
    case 0x7: // REFUSED_STREAM
      code = GRPC_UNAVAILABLE;
      break;
    case 0x8: // CANCEL
      code = GRPC_CANCELLED;
      break;
    case 0xb: // ENHANCE_YOUR_CALM
      code = GRPC_RESOURCE_EXHAUSTED;
      break;
    case 0xc: // INADEQUATE_SECURITY
      code = GRPC_PERMISSION_DENIED;
      break;
    default: // NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, ... (and unknown)
      code = GRPC_INTERNAL;
  }
  return { code, name: grpcStatusName(code) };
}

/**
 * OTel semconv (RPC spans, gRPC): a CLIENT span is an error for every status except OK; a
 * SERVER span only for UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE and
 * DATA_LOSS. Codes outside 0..16 count as errors on the client only.
 */
export function isGrpcError(code: number, kind: 'client' | 'server'): boolean {
  if (kind === 'client') return code !== GRPC_OK;
  return SERVER_ERRORS.has(code);
}

/** PROTOCOL-HTTP2.md Timeout: `grpc-timeout` ("1-8 digits" + H|M|S|m|u|n) in ns; undefined when malformed */
export function grpcTimeoutNs(value: string | undefined): bigint | undefined {
  const m = value === undefined ? null : /^(\d{1,8})([HMSmun])$/.exec(value.trim());
  if (!m) return undefined;
  const unit: Record<string, bigint> = { H: 3_600_000_000_000n, M: 60_000_000_000n, S: 1_000_000_000n, m: 1_000_000n, u: 1_000n, n: 1n };
  return BigInt(m[1]!) * unit[m[2]!]!;
}
