/**
 * rpcstatus.ts — reads the one piece of gRPC error detail the OTLP retry rules need: the
 * `google.rpc.RetryInfo.retry_delay` inside a `google.rpc.Status` (trailer
 * `grpc-status-details-bin`, or an OTLP/HTTP error body), as milliseconds.
 *
 * A minimal protobuf wire reader (varint and length-delimited fields only, everything else
 * skipped) instead of a full protobuf runtime: the three messages involved have four scalar
 * fields between them. Pure functions; malformed input yields undefined, never a throw.
 *
 *   google.rpc.Status   { int32 code = 1; string message = 2; repeated google.protobuf.Any details = 3; }
 *   google.protobuf.Any { string type_url = 1; bytes value = 2; }
 *   google.rpc.RetryInfo{ google.protobuf.Duration retry_delay = 1; }
 *   google.protobuf.Duration { int64 seconds = 1; int32 nanos = 2; }
 */

export const RETRY_INFO_TYPE = 'type.googleapis.com/google.rpc.RetryInfo';

interface Field {
  no: number;
  /** varint value (wire type 0) */
  int?: bigint;
  /** bytes (wire type 2) */
  bytes?: Uint8Array;
}

class Malformed extends Error {}

function varint(b: Uint8Array, at: { i: number }): bigint {
  let v = 0n;
  for (let shift = 0n; shift < 70n; shift += 7n) {
    if (at.i >= b.length) throw new Malformed('truncated varint');
    const x = b[at.i++]!;
    v |= BigInt(x & 0x7f) << shift;
    if ((x & 0x80) === 0) return v;
  }
  throw new Malformed('varint too long');
}

/** Top-level fields of one message, in order. Throws Malformed on bad wire data. */
function fields(b: Uint8Array): Field[] {
  const out: Field[] = [];
  const at = { i: 0 };
  while (at.i < b.length) {
    const tag = varint(b, at);
    const no = Number(tag >> 3n);
    const wt = Number(tag & 7n);
    if (wt === 0) out.push({ no, int: varint(b, at) });
    else if (wt === 2) {
      const len = Number(varint(b, at));
      if (at.i + len > b.length) throw new Malformed('truncated field');
      out.push({ no, bytes: b.subarray(at.i, at.i + len) });
      at.i += len;
    } else if (wt === 1) at.i += 8;
    else if (wt === 5) at.i += 4;
    else throw new Malformed(`wire type ${wt}`);
  }
  if (at.i > b.length) throw new Malformed('truncated fixed field');
  return out;
}

/** RetryInfo.retry_delay in ms from a serialized google.rpc.Status; undefined when absent or malformed. */
export function retryDelayFromStatus(status: Uint8Array): number | undefined {
  try {
    for (const f of fields(status)) {
      if (f.no !== 3 || !f.bytes) continue;
      const any = fields(f.bytes);
      const type = any.find((x) => x.no === 1 && x.bytes);
      const value = any.find((x) => x.no === 2 && x.bytes);
      if (!type || !value || Buffer.from(type.bytes!).toString('utf8') !== RETRY_INFO_TYPE) continue;
      const delay = fields(value.bytes!).find((x) => x.no === 1 && x.bytes);
      if (!delay) return undefined;
      let seconds = 0n;
      let nanos = 0n;
      for (const d of fields(delay.bytes!)) {
        if (d.no === 1 && d.int !== undefined) seconds = BigInt.asIntN(64, d.int);
        if (d.no === 2 && d.int !== undefined) nanos = BigInt.asIntN(32, d.int);
      }
      const ms = Number(seconds) * 1000 + Number(nanos) / 1e6;
      return Number.isFinite(ms) && ms >= 0 ? ms : undefined;
    }
  } catch (e) {
    if (e instanceof Malformed) return undefined;
    throw e;
  }
  return undefined;
}

/** google.rpc.Status.message from a serialized Status; undefined when absent or malformed. */
export function messageFromStatus(status: Uint8Array): string | undefined {
  try {
    const m = fields(status).find((f) => f.no === 2 && f.bytes);
    return m ? Buffer.from(m.bytes!).toString('utf8') : undefined;
  } catch (e) {
    if (e instanceof Malformed) return undefined;
    throw e;
  }
}

/**
 * HTTP `Retry-After` (delay-seconds or an HTTP-date) in ms from `now`; undefined when absent
 * or unparsable. A date in the past means "now" (0).
 */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const t = Date.parse(v);
  if (Number.isNaN(t)) return undefined;
  return Math.max(0, t - now);
}
