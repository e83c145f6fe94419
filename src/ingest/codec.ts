/**
 * codec.ts — the OTLP messages the receiver takes in and sends on: decoding and encoding of
 * ExportTrace/Metrics/LogsServiceRequest and their responses in protobuf and in OTLP/JSON
 * (hex trace/span ids, enums as integers, lowerCamelCase keys, 64-bit integers as strings),
 * plus google.rpc.Status / RetryInfo for error answers.
 *
 * Owns the protobufjs Root built once, lazily, from the vendored official .proto files in
 * proto/ (see proto/README.md). 64-bit integers are Long objects, so timestamps round-trip
 * exactly. Pure functions over that Root; main thread.
 */
import { join } from 'node:path';
import protobuf from 'protobufjs';
import { repoRoot } from '../paths.js';

export type Signal = 'traces' | 'metrics' | 'logs';
export const SIGNALS: readonly Signal[] = ['traces', 'metrics', 'logs'];

/** Per-signal names: protobuf types, gRPC method, HTTP path, and the request's nesting. */
export interface SignalInfo {
  request: string;
  response: string;
  grpcPath: string;
  httpPath: string;
  /** resourceSpans / resourceMetrics / resourceLogs */
  resourceKey: string;
  scopeKey: string;
  itemKey: string;
  /** field of ExportXPartialSuccess counting rejected items */
  rejectedKey: string;
  itemName: string;
}

const PKG = 'opentelemetry.proto.collector';
export const SIGNAL_INFO: Record<Signal, SignalInfo> = {
  traces: {
    request: `${PKG}.trace.v1.ExportTraceServiceRequest`,
    response: `${PKG}.trace.v1.ExportTraceServiceResponse`,
    grpcPath: `/${PKG}.trace.v1.TraceService/Export`,
    httpPath: '/v1/traces',
    resourceKey: 'resourceSpans',
    scopeKey: 'scopeSpans',
    itemKey: 'spans',
    rejectedKey: 'rejectedSpans',
    itemName: 'spans',
  },
  metrics: {
    request: `${PKG}.metrics.v1.ExportMetricsServiceRequest`,
    response: `${PKG}.metrics.v1.ExportMetricsServiceResponse`,
    grpcPath: `/${PKG}.metrics.v1.MetricsService/Export`,
    httpPath: '/v1/metrics',
    resourceKey: 'resourceMetrics',
    scopeKey: 'scopeMetrics',
    itemKey: 'metrics',
    rejectedKey: 'rejectedDataPoints',
    itemName: 'data points',
  },
  logs: {
    request: `${PKG}.logs.v1.ExportLogsServiceRequest`,
    response: `${PKG}.logs.v1.ExportLogsServiceResponse`,
    grpcPath: `/${PKG}.logs.v1.LogsService/Export`,
    httpPath: '/v1/logs',
    resourceKey: 'resourceLogs',
    scopeKey: 'scopeLogs',
    itemKey: 'logRecords',
    rejectedKey: 'rejectedLogRecords',
    itemName: 'log records',
  },
};

const PROTO_FILES = [
  'opentelemetry/proto/collector/trace/v1/trace_service.proto',
  'opentelemetry/proto/collector/metrics/v1/metrics_service.proto',
  'opentelemetry/proto/collector/logs/v1/logs_service.proto',
];

/** google.rpc.Status, google.rpc.RetryInfo and their dependencies (field ids are the wire contract). */
const RPC_JSON = {
  nested: {
    google: {
      nested: {
        protobuf: {
          nested: {
            Any: { fields: { typeUrl: { type: 'string', id: 1 }, value: { type: 'bytes', id: 2 } } },
            Duration: { fields: { seconds: { type: 'int64', id: 1 }, nanos: { type: 'int32', id: 2 } } },
          },
        },
        rpc: {
          nested: {
            Status: {
              fields: {
                code: { type: 'int32', id: 1 },
                message: { type: 'string', id: 2 },
                details: { rule: 'repeated', type: 'google.protobuf.Any', id: 3 },
              },
            },
            RetryInfo: { fields: { retryDelay: { type: 'google.protobuf.Duration', id: 1 } } },
          },
        },
      },
    },
  },
};

let root: protobuf.Root | undefined;
let rpcRoot: protobuf.Root | undefined;

function otlpRoot(): protobuf.Root {
  if (root) return root;
  const r = new protobuf.Root();
  const dir = join(repoRoot(), 'proto');
  r.resolvePath = (_origin, target) => join(dir, target);
  r.loadSync(PROTO_FILES);
  r.resolveAll();
  return (root = r);
}

export function messageType(name: string): protobuf.Type {
  return otlpRoot().lookupType(name);
}

/** An OTLP message as protobufjs decodes it (plain property bag). */
export type OtlpMessage = protobuf.Message & Record<string, unknown>;

/** A request that cannot be decoded: the receiver answers InvalidArgument / 400 with this. */
export class InvalidRequestError extends Error {}

export function decodeProto(signal: Signal, bytes: Uint8Array): OtlpMessage {
  try {
    return messageType(SIGNAL_INFO[signal].request).decode(bytes) as OtlpMessage;
  } catch (e) {
    throw new InvalidRequestError(`${SIGNAL_INFO[signal].request}: undecodable protobuf: ${(e as Error).message}`);
  }
}

export function encodeProto(signal: Signal, msg: OtlpMessage | Record<string, unknown>): Uint8Array {
  return messageType(SIGNAL_INFO[signal].request).encode(msg).finish();
}

const ID_KEYS = new Set(['traceId', 'spanId', 'parentSpanId']);

/** OTLP/JSON: walk the parsed object, turning hex ids into bytes (at their path, for errors). */
function idsFromHex(v: unknown, where: string): unknown {
  if (Array.isArray(v)) return v.map((x, i) => idsFromHex(x, `${where}[${i}]`));
  if (v === null || typeof v !== 'object') return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
    if (ID_KEYS.has(k) && typeof x === 'string') {
      if (!/^([0-9a-fA-F]{2})*$/.test(x)) throw new InvalidRequestError(`${where}.${k}: ${JSON.stringify(x.slice(0, 40))} is not a hex string`);
      out[k] = Buffer.from(x, 'hex');
    } else out[k] = idsFromHex(x, where === '' ? k : `${where}.${k}`);
  }
  return out;
}

function idsToHex(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(idsToHex);
  if (v === null || typeof v !== 'object') return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
    out[k] = ID_KEYS.has(k) && typeof x === 'string' ? Buffer.from(x, 'base64').toString('hex') : idsToHex(x);
  }
  return out;
}

export function decodeJson(signal: Signal, text: string): OtlpMessage {
  const t = messageType(SIGNAL_INFO[signal].request);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new InvalidRequestError(`${SIGNAL_INFO[signal].request}: invalid JSON: ${(e as Error).message}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new InvalidRequestError(`${SIGNAL_INFO[signal].request}: JSON body must be an object`);
  }
  try {
    const msg = t.fromObject(idsFromHex(parsed, '') as Record<string, unknown>) as OtlpMessage;
    const bad = t.verify(msg);
    if (bad) throw new Error(bad);
    return msg;
  } catch (e) {
    if (e instanceof InvalidRequestError) throw e;
    throw new InvalidRequestError(`${SIGNAL_INFO[signal].request}: ${(e as Error).message}`);
  }
}

const JSON_OPTS: protobuf.IConversionOptions = { longs: String, enums: Number, bytes: String };

/** OTLP/JSON text of a decoded message (request or response type `typeName`). */
export function toJson(typeName: string, msg: protobuf.Message | Record<string, unknown>): string {
  const t = messageType(typeName);
  const m = msg instanceof protobuf.Message ? msg : t.fromObject(msg);
  return JSON.stringify(idsToHex(t.toObject(m, JSON_OPTS)));
}

/** ExportXServiceResponse: empty on full success, partialSuccess when items were rejected. */
export function responseObject(signal: Signal, rejected: number, message: string): Record<string, unknown> {
  if (rejected === 0 && message === '') return {};
  return { partialSuccess: { [SIGNAL_INFO[signal].rejectedKey]: rejected, errorMessage: message } };
}

export function encodeResponse(signal: Signal, rejected: number, message: string, json: boolean): Uint8Array {
  const name = SIGNAL_INFO[signal].response;
  const obj = responseObject(signal, rejected, message);
  if (json) return Buffer.from(toJson(name, obj));
  const t = messageType(name);
  return t.encode(t.fromObject(obj)).finish();
}

/** Decodes an ExportXServiceResponse (from a downstream endpoint) to its rejected count and message. */
export function decodeResponse(signal: Signal, bytes: Uint8Array, json: boolean): { rejected: number; message: string } {
  const info = SIGNAL_INFO[signal];
  const t = messageType(info.response);
  const m = (json ? t.fromObject(JSON.parse(Buffer.from(bytes).toString('utf8') || '{}') as Record<string, unknown>) : t.decode(bytes)) as OtlpMessage;
  const ps = m['partialSuccess'] as Record<string, unknown> | undefined;
  return { rejected: Number(ps?.[info.rejectedKey] ?? 0), message: String(ps?.['errorMessage'] ?? '') };
}

function rpc(): protobuf.Root {
  return (rpcRoot ??= protobuf.Root.fromJSON(RPC_JSON));
}

/** google.rpc.Status bytes (or OTLP/JSON text), with a RetryInfo detail when retryAfterMs is given. */
export function encodeStatus(code: number, message: string, retryAfterMs?: number, json = false): Uint8Array {
  const r = rpc();
  const details: Record<string, unknown>[] = [];
  if (retryAfterMs !== undefined) {
    const ri = r.lookupType('google.rpc.RetryInfo');
    const delay = { seconds: Math.floor(retryAfterMs / 1000), nanos: (retryAfterMs % 1000) * 1e6 };
    details.push({ typeUrl: 'type.googleapis.com/google.rpc.RetryInfo', value: ri.encode(ri.fromObject({ retryDelay: delay })).finish() });
  }
  const st = r.lookupType('google.rpc.Status');
  if (json) {
    return Buffer.from(
      JSON.stringify({
        code,
        message,
        ...(retryAfterMs !== undefined
          ? { details: [{ '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: `${(retryAfterMs / 1000).toFixed(3)}s` }] }
          : {}),
      }),
    );
  }
  return st.encode(st.fromObject({ code, message, details })).finish();
}

/** The RetryInfo delay in a google.rpc.Status, ms; undefined when there is none. */
export function retryDelayMs(statusBytes: Uint8Array): number | undefined {
  const r = rpc();
  try {
    const st = r.lookupType('google.rpc.Status').decode(statusBytes) as OtlpMessage;
    for (const d of (st['details'] as { typeUrl: string; value: Uint8Array }[] | undefined) ?? []) {
      if (d.typeUrl !== 'type.googleapis.com/google.rpc.RetryInfo') continue;
      const ri = r.lookupType('google.rpc.RetryInfo').decode(d.value) as OtlpMessage;
      const dur = ri['retryDelay'] as { seconds?: unknown; nanos?: unknown } | undefined;
      if (dur) return Number(dur.seconds ?? 0) * 1000 + Math.round(Number(dur.nanos ?? 0) / 1e6);
    }
  } catch {
    /* not a Status */
  }
  return undefined;
}
