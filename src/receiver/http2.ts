/**
 * http2.ts — incremental HTTP/2 (RFC 9113) connection parser for syscall-captured TCP bytes.
 *
 * Turns the captured chunks of both directions of one connection (the Chunk model of
 * http1.ts: the first N captured bytes of a syscall plus its true length; bytes in
 * [data.length, length) are an uncaptured gap) into stream-level events: request / response /
 * trailers header lists (HPACK-decoded, one decoder per direction), DATA byte counts,
 * END_STREAM, RST_STREAM and GOAWAY. It checks the client connection preface and the server's
 * first SETTINGS frame, reassembles frames split anywhere across chunks (and many per chunk),
 * assembles HEADERS/PUSH_PROMISE + CONTINUATION header blocks, strips padding and priority
 * fields, applies SETTINGS_HEADER_TABLE_SIZE and supports h2c (HTTP/1.1 Upgrade) connections.
 *
 * Capture gaps (the rules the pairing layer relies on):
 *  - a gap inside a DATA payload is harmless: the frame header gave the length, which is what
 *    'data' reports. A gap over the pad-length octet of a PADDED DATA frame makes the padding
 *    unknown: the payload length minus the pad-length octet is reported.
 *  - a gap inside the header block fragment of HEADERS / PUSH_PROMISE / CONTINUATION (or over
 *    the pad-length octet that locates it) makes the block undecodable. HPACK state is then
 *    unknown, so the direction becomes `desynced` (counted once, one 'error' event): it emits
 *    no more request/response/trailers events, but frame boundaries are still known, so it
 *    keeps emitting 'data', 'end', 'reset' and 'goaway'. A desynced direction recovers only if
 *    a later complete block starts with a dynamic table size update to 0 (table emptied: its
 *    state is known again). A block larger than maxHeaderBlockBytes is treated the same way.
 *  - a gap over any octet of a frame header (or where a frame header should start) loses
 *    framing (counted in framingLost, one 'error' event): that direction skips chunks until
 *    one (a syscall's bytes) starts with a plausible frame header (resync(): a known type,
 *    its flags, stream and length rules, length within SETTINGS_MAX_FRAME_SIZE, and the next
 *    header, when captured, plausible too; counted in framingResyncs). Frames hidden in the gap
 *    may have changed the HPACK table, so after a resync only header blocks that reference
 *    no dynamic entry older than the resync are decoded; any other block desyncs the
 *    direction (see above).
 *    Gaps in padding, priority fields, PING, WINDOW_UPDATE, PRIORITY and unknown frames are
 *    harmless; a gap over the fields of RST_STREAM / GOAWAY reports the unknown field as -1.
 *  - a connection not seen from its start (client bytes are not the preface, or the server's
 *    first frame is not a SETTINGS frame, or the first byte of a direction was not captured) is
 *    `midstream`: counted, and both directions are ignored from then on. Nothing is guessed:
 *    server events are HELD until the client preface has been verified (a server direction
 *    caught mid-connection may start with a later SETTINGS frame) and are then returned, in
 *    order, ahead of the events of the pushClient call that completed the preface; they are
 *    dropped if the connection turns out to be midstream (or after 1024 held events). With
 *    real ordering this holds nothing (servers answer requests that follow the preface); it
 *    matters when a capture misses the client's first syscall. h2c connections hold nothing.
 * Protocol violations that make the framing untrustworthy (wrong fixed frame lengths, frames
 * interleaved into a header block, ...) stop that direction (counted in protocolErrors).
 *
 * Events and timestamps: events come back from pushClient / pushServer in wire order for that
 * direction (server events held for the preface aside, see above). A header event's `ts` is the tsEnd of the chunk that completed its header block;
 * a request's `tsStart` is the tsStart of the chunk holding the first octet of its HEADERS
 * frame. Other events carry the tsEnd of the chunk that completed their frame. Every
 * END_STREAM produces exactly one 'end' event, emitted right after the 'request' / 'response'
 * / 'trailers' / 'data' event of the same frame (or alone when a desynced direction cannot
 * decode the headers): 'end' is the authoritative signal; `endStream` fields are informative.
 * Header blocks from the client carrying `:method` are 'request', other client blocks are
 * 'trailers'; server blocks carrying `:status` are 'response' (informational when 1xx), other
 * server blocks are 'trailers'. PUSH_PROMISE blocks are decoded to keep the HPACK table in
 * sync but produce no event (the pushed response appears as a 'response' on an even stream).
 *
 * h2c upgrade (RFC 7540 §3.2): call h2cUpgrade(requestHead, responseHead) with the HTTP/1
 * heads of the request (Upgrade: h2c + HTTP2-Settings) and its 101 response. If it returns an
 * H2cUpgrade, create `new Http2Connection({ upgrade })` and feed it every later client chunk
 * (the client sends the connection preface after the 101) and, on the server side, the chunk
 * that carried the 101 response (a leading HTTP/1 response head is skipped) and everything
 * after. Stream 1 is the upgraded request: it is pre-registered as opened and half-closed by
 * the client (no 'request' event; the caller already has the HTTP/1 head, and
 * `upgrade.requestHeaders` gives it in HTTP/2 form); its 'response' / 'data' / 'trailers' /
 * 'end' events come from the server side as usual. The HTTP2-Settings header's
 * HEADER_TABLE_SIZE applies to the decoder of server header blocks.
 *
 * Owns: the parse state of BOTH directions of ONE connection: per direction a 9-octet frame
 * header buffer, the payload bytes of the frame in progress when they are needed (header block
 * fragments up to maxHeaderBlockBytes, at most 384 octets of SETTINGS, 8 of RST_STREAM /
 * GOAWAY, 1 of DATA — DATA content is never kept), an HPACK decoder (dynamic table bounded by
 * maxTableSize), a table of at most maxStreams open streams (overflow counted; events for
 * untracked streams are still emitted) and at most 1024 held server events (see above).
 * Lifetime: one instance per connection, created when the connection is recognised as HTTP/2
 * (looksLikeHttp2Preface on the first client chunk, or h2cUpgrade) and dropped with it.
 * Single-threaded, no I/O, no timers; never throws (an internal fault is reported as an
 * 'error' event and stops that direction).
 */
import { Buffer } from 'node:buffer';
import { HpackDecoder, HpackError } from './hpack.js';
import type { Chunk, HttpHead } from './http1.js';

export type H2Side = 'client' | 'server';

export type H2Event =
  | { type: 'request'; streamId: number; headers: Array<[string, string]>; ts: bigint; tsStart: bigint; endStream: boolean }
  | { type: 'response'; streamId: number; headers: Array<[string, string]>; ts: bigint; endStream: boolean; informational: boolean }
  | { type: 'trailers'; streamId: number; from: H2Side; headers: Array<[string, string]>; ts: bigint }
  | { type: 'data'; streamId: number; from: H2Side; bytes: number; ts: bigint; endStream: boolean }
  | { type: 'end'; streamId: number; from: H2Side; ts: bigint }
  | { type: 'reset'; streamId: number; from: H2Side; code: number; ts: bigint }
  | { type: 'goaway'; from: H2Side; lastStreamId: number; code: number; ts: bigint }
  | { type: 'error'; from: H2Side; reason: string };

export interface Http2Stats {
  /** frame headers parsed (both directions) */
  frames: number;
  /** streams seen: new client stream ids, promised streams, the h2c upgrade stream */
  streams: number;
  /** directions whose HPACK state was lost (gap in a header block, HPACK error, oversized block) */
  desyncs: number;
  /** desynced directions that recovered through a size update to 0 */
  resyncs: number;
  /** 1 when the connection was ignored because it was not seen from its start */
  midstream: number;
  /** HPACK decoding errors (including oversized header lists) */
  hpackErrors: number;
  /** streams not tracked because maxStreams were open */
  overflow: number;
  /** directions that lost framing because a capture gap hid a frame header */
  framingLost: number;
  /** of those, the times framing was found again at the start of a later chunk */
  framingResyncs: number;
  /** directions stopped because of a protocol violation */
  protocolErrors: number;
  /** 'error' events emitted */
  errors: number;
  /** bytes not parsed: ignored connection, stopped directions */
  skippedBytes: number;
}

export interface H2cUpgrade {
  /** SETTINGS carried by the request's HTTP2-Settings header, [id, value] in order */
  settings: Array<[number, number]>;
  /** the upgraded request (stream 1) in HTTP/2 form: pseudo-headers, then the request's headers minus connection-specific ones */
  requestHeaders: Array<[string, string]>;
}

export interface Http2Options {
  /** open streams tracked at once; default 1000 (more are counted in overflow, events still flow) */
  maxStreams?: number;
  /** largest header block (all fragments) buffered for decoding; default 262144 */
  maxHeaderBlockBytes?: number;
  /** bound on one decoded header list, see HpackDecoder; default 65536 */
  maxHeaderListBytes?: number;
  /** cap on the HPACK dynamic table size whatever SETTINGS announce; default 65536 */
  maxTableSize?: number;
  /** start as an h2c-upgraded connection (see the header comment) */
  upgrade?: H2cUpgrade;
}

// frame types (RFC 9113 §6)
const DATA = 0x0;
const HEADERS = 0x1;
const PRIORITY = 0x2;
const RST_STREAM = 0x3;
const SETTINGS = 0x4;
const PUSH_PROMISE = 0x5;
const PING = 0x6;
const GOAWAY = 0x7;
const WINDOW_UPDATE = 0x8;
const CONTINUATION = 0x9;

// flags
const F_END_STREAM = 0x1;
const F_ACK = 0x1;
const F_END_HEADERS = 0x4;
const F_PADDED = 0x8;
const F_PRIORITY = 0x20;

const SETTINGS_HEADER_TABLE_SIZE = 0x1;
const SETTINGS_MAX_FRAME_SIZE = 0x5;
const DEFAULT_MAX_FRAME = 16384;
const MAX_MAX_FRAME = 16777215;
/** flags each frame type may carry (RFC 9113 §6), by type */
const ALLOWED_FLAGS = [0x09, 0x2d, 0x00, 0x00, 0x01, 0x0c, 0x01, 0x00, 0x00, 0x04];

const DEFAULT_MAX_STREAMS = 1000;
const DEFAULT_MAX_BLOCK = 262144;
const DEFAULT_TABLE_CEILING = 65536;
const DEFAULT_TABLE_SIZE = 4096;
/** SETTINGS entries looked at per frame */
const MAX_SETTINGS_BYTES = 6 * 64;
/** longest HTTP/1 response head skipped before the server preface of an h2c connection */
const MAX_UPGRADE_HEAD = 16384;
/** server events held while the client preface is outstanding; more → midstream */
const MAX_HELD_EVENTS = 1024;
/** preface octets that must be captured before a gap over the rest is tolerated */
const MIN_PREFACE_SEEN = 8;

/** "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" */
const PREFACE = new Uint8Array(Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'));
const PREFACE_FIRST_LINE = 16; // "PRI * HTTP/2.0\r\n"

const EMPTY = new Uint8Array(0);

/**
 * Does `data` begin with the HTTP/2 client connection preface? At least its first line
 * ("PRI * HTTP/2.0\r\n", 16 octets) must be present; all present octets up to 24 must match.
 */
export function looksLikeHttp2Preface(data: Uint8Array): boolean {
  if (!(data instanceof Uint8Array) || data.length < PREFACE_FIRST_LINE) return false;
  const n = Math.min(data.length, PREFACE.length);
  for (let i = 0; i < n; i++) if (data[i] !== PREFACE[i]) return false;
  return true;
}

// ---- h2c upgrade --------------------------------------------------------------------------

function headerValues(headers: Array<[string, string]>, name: string): string[] {
  const out: string[] = [];
  for (const [n, v] of headers) if (n.toLowerCase() === name) out.push(v);
  return out;
}

function tokens(values: string[]): string[] {
  const out: string[] = [];
  for (const v of values) {
    for (const part of v.split(',')) {
      const t = part.trim().toLowerCase();
      if (t.length > 0) out.push(t);
    }
  }
  return out;
}

/** RFC 7540 §3.2.1: base64url SETTINGS payload (padding optional) → [id, value] pairs */
function decodeHttp2Settings(value: string): Array<[number, number]> | undefined {
  const v = value.trim();
  if (!/^[A-Za-z0-9_-]*={0,2}$/.test(v)) return undefined;
  const raw = Buffer.from(v.replace(/=+$/, ''), 'base64url');
  if (raw.length % 6 !== 0) return undefined;
  const out: Array<[number, number]> = [];
  for (let i = 0; i < raw.length; i += 6) out.push([raw.readUInt16BE(i), raw.readUInt32BE(i + 2)]);
  return out;
}

/** request headers that do not exist in HTTP/2 (RFC 9113 §8.2.2) or are consumed by the upgrade */
const H2C_DROP = new Set(['connection', 'upgrade', 'http2-settings', 'host', 'keep-alive', 'proxy-connection', 'transfer-encoding']);

/**
 * Recognise an accepted h2c upgrade: `request` carries `Upgrade: h2c` and exactly one valid
 * `HTTP2-Settings` header, `response` is 101 and (if it names protocols) upgrades to h2c.
 * Returns undefined otherwise (no Http2Connection should be started).
 */
export function h2cUpgrade(request: HttpHead, response: HttpHead): H2cUpgrade | undefined {
  if (request?.kind !== 'request' || response?.kind !== 'response' || response.status !== 101) return undefined;
  if (!Array.isArray(request.headers) || !Array.isArray(response.headers)) return undefined;
  const reqProtocols = tokens(headerValues(request.headers, 'upgrade'));
  if (!reqProtocols.includes('h2c')) return undefined;
  const respProtocols = tokens(headerValues(response.headers, 'upgrade'));
  if (respProtocols.length > 0 ? !respProtocols.includes('h2c') : reqProtocols.length !== 1) return undefined;
  const settingsValues = headerValues(request.headers, 'http2-settings');
  if (settingsValues.length !== 1) return undefined;
  const settings = decodeHttp2Settings(settingsValues[0]!);
  if (settings === undefined) return undefined;
  const requestHeaders: Array<[string, string]> = [[':method', request.method ?? '']];
  requestHeaders.push([':scheme', 'http']);
  const host = headerValues(request.headers, 'host')[0];
  if (host !== undefined) requestHeaders.push([':authority', host]);
  requestHeaders.push([':path', request.target ?? '']);
  for (const [n, v] of request.headers) {
    const name = n.toLowerCase();
    if (H2C_DROP.has(name)) continue;
    if (name === 'te' && v.trim().toLowerCase() !== 'trailers') continue;
    requestHeaders.push([name, v]);
  }
  return { settings, requestHeaders };
}

// ---- connection parser --------------------------------------------------------------------

type Phase =
  | 'preface' // client: verifying the connection preface
  | 'upgradeHead' // server of an h2c connection: skipping the HTTP/1 101 head
  | 'header' // reading a 9-octet frame header
  | 'payload' // inside a frame payload
  | 'resync' // framing lost: skip to a chunk that starts with a plausible frame header
  | 'stopped'; // protocol error / internal fault: ignore the rest

interface Block {
  kind: 'headers' | 'push';
  streamId: number;
  endStream: boolean;
  tsStart: bigint;
  parts: Uint8Array[];
  bytes: number;
  /** a gap hid part of the block */
  corrupt: boolean;
  /** the block outgrew maxHeaderBlockBytes */
  tooBig: boolean;
}

class Side {
  readonly name: H2Side;
  phase: Phase;
  decoder: HpackDecoder;
  /** highest SETTINGS_HEADER_TABLE_SIZE applied to `decoder` (only ever raised, see applyTableSize) */
  tableLimit = DEFAULT_TABLE_SIZE;
  desynced = false;
  firstFrame = true;
  /** largest frame this side may send (the peer's SETTINGS_MAX_FRAME_SIZE) */
  maxFrame = DEFAULT_MAX_FRAME;
  /** after a framing resync: dynamic table entries inserted since (undefined: table state exact) */
  trusted: number | undefined;

  prefacePos = 0;
  /** upgradeHead: octets skipped, and how much of "\r\n\r\n" was just seen */
  headSkipped = 0;
  headCrlf = 0;

  hdr = new Uint8Array(9);
  hdrLen = 0;
  hdrTsStart = 0n;

  // frame in progress
  fType = 0;
  fFlags = 0;
  fStream = 0;
  fLen = 0;
  fRemaining = 0;
  fTsStart = 0n;
  /** collected payload prefix (the octets this frame type needs) */
  buf: Uint8Array = EMPTY;
  want = 0;
  /** gap octets inside [0, want): first offset and end offset (exclusive), -1 when none */
  gapFirst = -1;
  gapEnd = -1;

  block: Block | undefined;

  constructor(name: H2Side, decoder: HpackDecoder, phase: Phase) {
    this.name = name;
    this.decoder = decoder;
    this.phase = phase;
  }
}

interface StreamState {
  clientEnd: boolean;
  serverEnd: boolean;
}

function sanitize(v: number | undefined, dflt: number, min: number): number {
  return v !== undefined && Number.isSafeInteger(v) && v >= min ? v : dflt;
}

function u32(b: Uint8Array, off: number): number {
  return ((b[off]! << 24) >>> 0) + (b[off + 1]! << 16) + (b[off + 2]! << 8) + b[off + 3]!;
}

function concat(parts: Uint8Array[], total: number): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(total);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** value of the first pseudo-header `name` among the leading pseudo-headers, if any */
function pseudo(headers: Array<[string, string]>, name: string): string | undefined {
  for (const [n, v] of headers) {
    if (!n.startsWith(':')) return undefined;
    if (n === name) return v;
  }
  return undefined;
}

export class Http2Connection {
  private readonly maxStreams: number;
  private readonly maxBlock: number;
  private readonly maxListBytes: number;
  private readonly tableCeiling: number;
  private readonly client: Side;
  private readonly server: Side;
  private readonly streamTable = new Map<number, StreamState>();
  private highestClientStream = 0;
  private highestPushedStream = 0;
  private ignored = false;
  /**
   * Server events held until the client preface is verified (undefined once it was, or for
   * h2c upgrades whose start the HTTP/1 exchange proved): a server direction alone can start
   * with a mid-connection SETTINGS frame and would be decoded with the wrong HPACK state.
   */
  private held: H2Event[] | undefined = [];
  private readonly counters: Http2Stats = {
    frames: 0,
    streams: 0,
    desyncs: 0,
    resyncs: 0,
    midstream: 0,
    hpackErrors: 0,
    overflow: 0,
    framingLost: 0,
    framingResyncs: 0,
    protocolErrors: 0,
    errors: 0,
    skippedBytes: 0,
  };

  constructor(opts: Http2Options = {}) {
    this.maxStreams = sanitize(opts.maxStreams, DEFAULT_MAX_STREAMS, 0);
    this.maxBlock = sanitize(opts.maxHeaderBlockBytes, DEFAULT_MAX_BLOCK, 1);
    this.maxListBytes = sanitize(opts.maxHeaderListBytes, 65536, 0);
    this.tableCeiling = sanitize(opts.maxTableSize, DEFAULT_TABLE_CEILING, 0);
    const up = opts.upgrade;
    this.client = new Side('client', this.newDecoder(DEFAULT_TABLE_SIZE), 'preface');
    this.server = new Side('server', this.newDecoder(DEFAULT_TABLE_SIZE), up !== undefined ? 'upgradeHead' : 'header');
    if (up !== undefined) {
      this.held = undefined;
      if (Array.isArray(up.settings)) {
        for (const s of up.settings) {
          // the client's settings: its HEADER_TABLE_SIZE bounds the server's encoder
          if (Array.isArray(s) && s[0] === SETTINGS_HEADER_TABLE_SIZE && typeof s[1] === 'number') this.applyTableSize(this.server, s[1]);
        }
      }
      this.highestClientStream = 1;
      this.counters.streams++;
      this.trackStream(1, { clientEnd: true, serverEnd: false });
    }
  }

  /** counters (a snapshot) */
  get stats(): Http2Stats {
    return { ...this.counters };
  }

  /** true once the connection was classified as seen from its middle (everything ignored) */
  get midstream(): boolean {
    return this.ignored;
  }

  /** has this direction lost its HPACK state? */
  desynced(from: H2Side): boolean {
    return (from === 'client' ? this.client : this.server).desynced;
  }

  /** has this direction stopped parsing (framing lost and not found again, protocol error, midstream)? */
  stopped(from: H2Side): boolean {
    const phase = (from === 'client' ? this.client : this.server).phase;
    return this.ignored || phase === 'stopped' || phase === 'resync';
  }

  /** HPACK table of the decoder for header blocks sent by `from` */
  tableState(from: H2Side): { size: number; entries: number; maxSize: number; limit: number } {
    const d = (from === 'client' ? this.client : this.server).decoder;
    return { size: d.tableSize, entries: d.entries, maxSize: d.maxTableSize, limit: d.tableSizeLimit };
  }

  /** number of tracked open streams */
  get openStreams(): number {
    return this.streamTable.size;
  }

  /** ids of tracked streams not yet ended in both directions nor reset (e.g. to close spans on connection close) */
  openStreamIds(): number[] {
    return [...this.streamTable.keys()];
  }

  /** diagnostic: payload and header block octets currently held */
  get bufferedBytes(): number {
    let n = 0;
    for (const s of [this.client, this.server]) {
      n += s.buf.length;
      if (s.block !== undefined) n += s.block.bytes;
    }
    return n;
  }

  /** bytes the client sent */
  pushClient(chunk: Chunk): H2Event[] {
    return this.push(this.client, chunk);
  }

  /** bytes the server sent */
  pushServer(chunk: Chunk): H2Event[] {
    return this.push(this.server, chunk);
  }

  // ---- driver ----

  private push(side: Side, chunk: Chunk): H2Event[] {
    let out: H2Event[] = [];
    try {
      this.process(side, chunk, out);
    } catch {
      side.phase = 'stopped';
      side.block = undefined;
      side.buf = EMPTY;
      this.error(side, out, 'internal parser error');
    }
    if (this.held !== undefined) {
      if (this.ignored) {
        this.held = undefined;
        return [];
      }
      if (side === this.server) {
        // the connection start is not proven until the client preface was seen: hold
        for (const e of out) this.held.push(e);
        if (this.held.length > MAX_HELD_EVENTS) {
          this.markMidstream();
          this.held = undefined;
        }
        return [];
      }
      if (this.client.prefacePos === PREFACE.length) {
        out = this.held.length > 0 ? [...this.held, ...out] : out;
        this.held = undefined;
      }
    }
    // counted when emitted: held server events dropped with a midstream connection never are
    for (const e of out) if (e.type === 'error') this.counters.errors++;
    return out;
  }

  private process(side: Side, chunk: Chunk, out: H2Event[]): void {
    const data = chunk?.data instanceof Uint8Array ? chunk.data : EMPTY;
    const cap = data.length;
    const len = chunk?.length;
    const total = typeof len === 'number' && Number.isSafeInteger(len) && len > cap ? len : cap;
    if (total === 0) return;
    if (this.ignored || side.phase === 'stopped') {
      this.counters.skippedBytes += total;
      return;
    }
    const tsStart = typeof chunk.tsStart === 'bigint' ? chunk.tsStart : 0n;
    const tsEnd = typeof chunk.tsEnd === 'bigint' ? chunk.tsEnd : tsStart;
    if (side.phase === 'resync') {
      // writers start a syscall at a frame boundary often enough: look for one here
      if (!this.plausibleAt(side, data, 0, 2)) {
        this.counters.skippedBytes += total;
        return;
      }
      side.phase = 'header';
      side.hdrLen = 0;
      side.trusted ??= 0;
      this.counters.framingResyncs++;
    }
    let pos = 0;
    while (pos < total) {
      switch (side.phase as Phase) { // handlers change it; defeat narrowing
        case 'preface':
          pos = this.onPreface(side, data, pos, total);
          break;
        case 'upgradeHead':
          pos = this.onUpgradeHead(side, data, pos, total, out);
          break;
        case 'header':
          pos = this.onHeader(side, data, pos, total, tsStart, tsEnd, out);
          break;
        case 'payload':
          pos = this.onPayload(side, data, pos, total, tsEnd, out);
          break;
        case 'resync':
        case 'stopped':
          this.counters.skippedBytes += total - pos;
          pos = total;
          break;
      }
      if (this.ignored) {
        this.counters.skippedBytes += total - pos;
        return;
      }
    }
  }

  private onPreface(side: Side, data: Uint8Array, pos: number, total: number): number {
    const cap = data.length;
    while (pos < total && side.prefacePos < PREFACE.length) {
      if (pos >= cap) {
        // gap: the preface length is fixed, so framing survives if enough of it was verified
        if (side.prefacePos < MIN_PREFACE_SEEN) {
          this.markMidstream();
          return pos;
        }
        const k = Math.min(PREFACE.length - side.prefacePos, total - pos);
        side.prefacePos += k;
        pos += k;
        continue;
      }
      if (data[pos] !== PREFACE[side.prefacePos]) {
        this.markMidstream();
        return pos;
      }
      pos++;
      side.prefacePos++;
    }
    if (side.prefacePos === PREFACE.length) side.phase = 'header';
    return pos;
  }

  /** h2c: skip the HTTP/1 response head (up to CRLFCRLF) that precedes the server preface */
  private onUpgradeHead(side: Side, data: Uint8Array, pos: number, total: number, out: H2Event[]): number {
    const cap = data.length;
    if (side.headSkipped === 0) {
      if (pos >= cap) {
        this.markMidstream();
        return pos;
      }
      // a frame header starts with the length's high octet: 'H' would mean a >= 4.5 MiB SETTINGS frame
      if (data[pos] !== 0x48) {
        side.phase = 'header';
        return pos;
      }
    }
    while (pos < total) {
      if (pos >= cap) return this.loseFraming(side, out, 'capture gap in the HTTP/1 head before the h2c preface', total - pos, total);
      const b = data[pos++]!;
      side.headSkipped++;
      if ((b === 0x0d && (side.headCrlf === 0 || side.headCrlf === 2)) || (b === 0x0a && (side.headCrlf === 1 || side.headCrlf === 3))) {
        side.headCrlf++;
      } else {
        side.headCrlf = b === 0x0d ? 1 : 0;
      }
      if (side.headCrlf === 4) {
        side.phase = 'header';
        return pos;
      }
      if (side.headSkipped > MAX_UPGRADE_HEAD) {
        side.phase = 'stopped';
        this.counters.protocolErrors++;
        this.error(side, out, 'HTTP/1 head before the h2c preface too long');
        this.counters.skippedBytes += total - pos;
        return total;
      }
    }
    return pos;
  }

  private onHeader(side: Side, data: Uint8Array, pos: number, total: number, tsStart: bigint, tsEnd: bigint, out: H2Event[]): number {
    const cap = data.length;
    if (pos >= cap) {
      if (side.name === 'server' && side.firstFrame && side.hdrLen === 0 && side.headSkipped === 0) {
        // the first server octet was not captured: cannot tell where its frames start
        this.markMidstream();
        return pos;
      }
      return this.loseFraming(side, out, 'capture gap over a frame header', total - pos, total);
    }
    if (side.hdrLen === 0) side.hdrTsStart = tsStart;
    const k = Math.min(9 - side.hdrLen, cap - pos);
    side.hdr.set(data.subarray(pos, pos + k), side.hdrLen);
    side.hdrLen += k;
    pos += k;
    if (side.hdrLen === 9) {
      side.hdrLen = 0;
      this.startFrame(side, tsEnd, out);
      if (this.ignored) return pos;
      if (side.phase === 'stopped') {
        this.counters.skippedBytes += total - pos;
        return total;
      }
    }
    return pos;
  }

  /** a frame header is complete; `tsEnd` is that of the chunk holding its last octet */
  private startFrame(side: Side, tsEnd: bigint, out: H2Event[]): void {
    const h = side.hdr;
    const len = (h[0]! << 16) | (h[1]! << 8) | h[2]!;
    const type = h[3]!;
    const flags = h[4]!;
    const sid = u32(h, 5) & 0x7fffffff;
    side.fType = type;
    side.fFlags = flags;
    side.fStream = sid;
    side.fLen = len;
    side.fRemaining = len;
    side.fTsStart = side.hdrTsStart;
    this.counters.frames++;

    if (side.firstFrame) {
      side.firstFrame = false;
      if (type !== SETTINGS || (flags & F_ACK) !== 0 || sid !== 0 || len % 6 !== 0) {
        if (side.name === 'server') {
          this.markMidstream();
          return;
        }
        this.protocolError(side, out, 'connection preface not followed by SETTINGS');
        return;
      }
    }

    const violation = this.checkFrame(side, type, flags, sid, len);
    if (violation !== undefined) {
      this.protocolError(side, out, violation);
      return;
    }

    let want = 0;
    switch (type) {
      case DATA:
        want = (flags & F_PADDED) !== 0 ? 1 : 0;
        break;
      case HEADERS:
      case PUSH_PROMISE:
        side.block = {
          kind: type === HEADERS ? 'headers' : 'push',
          streamId: sid,
          endStream: type === HEADERS && (flags & F_END_STREAM) !== 0,
          tsStart: side.fTsStart,
          parts: [],
          bytes: 0,
          corrupt: false,
          tooBig: false,
        };
        want = this.blockWant(side.block, len);
        break;
      case CONTINUATION:
        want = side.block !== undefined ? this.blockWant(side.block, len) : 0;
        break;
      case SETTINGS:
        want = (flags & F_ACK) !== 0 ? 0 : Math.min(len, MAX_SETTINGS_BYTES);
        break;
      case RST_STREAM:
        want = 4;
        break;
      case GOAWAY:
        want = 8;
        break;
      default:
        want = 0; // PRIORITY, PING, WINDOW_UPDATE, unknown: content not needed
    }
    side.want = want;
    side.buf = want > 0 ? new Uint8Array(want) : EMPTY;
    side.gapFirst = -1;
    side.gapEnd = -1;
    if (len === 0) this.frameDone(side, tsEnd, out);
    else side.phase = 'payload';
  }

  /** the payload octets of a header block frame to keep; 0 (and tooBig) past maxHeaderBlockBytes */
  private blockWant(block: Block, len: number): number {
    if (block.tooBig) return 0;
    if (block.bytes + len > this.maxBlock) {
      block.tooBig = true;
      block.parts = [];
      block.bytes = 0;
      return 0;
    }
    return len;
  }

  /** RFC 9113 §6 constraints that, when broken, make the frame layer untrustworthy */
  private checkFrame(side: Side, type: number, flags: number, sid: number, len: number): string | undefined {
    const block = side.block;
    if (block !== undefined && (type !== CONTINUATION || sid !== block.streamId)) {
      return 'frame interleaved into a header block';
    }
    switch (type) {
      case DATA:
      case HEADERS:
        return sid === 0 ? 'DATA/HEADERS on stream 0' : undefined;
      case PRIORITY:
        return sid === 0 || len !== 5 ? 'malformed PRIORITY' : undefined;
      case RST_STREAM:
        return sid === 0 || len !== 4 ? 'malformed RST_STREAM' : undefined;
      case SETTINGS:
        if (sid !== 0) return 'SETTINGS on a stream';
        if ((flags & F_ACK) !== 0) return len === 0 ? undefined : 'SETTINGS ACK with payload';
        return len % 6 === 0 ? undefined : 'SETTINGS length not a multiple of 6';
      case PUSH_PROMISE:
        if (side.name === 'client') return 'PUSH_PROMISE from the client';
        return sid === 0 || len < 4 ? 'malformed PUSH_PROMISE' : undefined;
      case PING:
        return sid !== 0 || len !== 8 ? 'malformed PING' : undefined;
      case GOAWAY:
        return sid !== 0 || len < 8 ? 'malformed GOAWAY' : undefined;
      case WINDOW_UPDATE:
        return len !== 4 ? 'malformed WINDOW_UPDATE' : undefined;
      case CONTINUATION:
        return block === undefined ? 'CONTINUATION without a header block' : undefined;
      default:
        return undefined;
    }
  }

  private onPayload(side: Side, data: Uint8Array, pos: number, total: number, tsEnd: bigint, out: H2Event[]): number {
    const n = Math.min(side.fRemaining, total - pos);
    const off = side.fLen - side.fRemaining;
    if (off < side.want) {
      const end = Math.min(side.want, off + n);
      const captured = Math.max(0, Math.min(end - off, data.length - pos));
      if (captured > 0) side.buf.set(data.subarray(pos, pos + captured), off);
      if (off + captured < end) {
        if (side.gapFirst < 0) side.gapFirst = off + captured;
        side.gapEnd = end;
      }
    }
    pos += n;
    side.fRemaining -= n;
    if (side.fRemaining === 0) {
      side.phase = 'header';
      this.frameDone(side, tsEnd, out);
    }
    return pos;
  }

  /** does a gap overlap payload octets [a, b)? */
  private static gapIn(side: Side, a: number, b: number): boolean {
    return side.gapFirst >= 0 && side.gapFirst < b && side.gapEnd > a;
  }

  private frameDone(side: Side, ts: bigint, out: H2Event[]): void {
    const sid = side.fStream;
    const flags = side.fFlags;
    const len = side.fLen;
    const buf = side.buf;
    switch (side.fType) {
      case DATA: {
        let bytes = len;
        if ((flags & F_PADDED) !== 0) {
          if (len === 0) return this.protocolError(side, out, 'PADDED DATA without pad length');
          if (Http2Connection.gapIn(side, 0, 1)) bytes = len - 1;
          else {
            const pad = buf[0]!;
            if (pad >= len) return this.protocolError(side, out, 'DATA padding exceeds payload');
            bytes = len - 1 - pad;
          }
        }
        const endStream = (flags & F_END_STREAM) !== 0;
        out.push({ type: 'data', streamId: sid, from: side.name, bytes, ts, endStream });
        if (endStream) this.endStream(side, sid, ts, out);
        break;
      }
      case HEADERS:
      case PUSH_PROMISE: {
        const block = side.block!;
        let start = 0;
        let padLen = 0;
        if ((flags & F_PADDED) !== 0) {
          start = 1;
          if (len === 0) return this.protocolError(side, out, 'PADDED header frame without pad length');
          if (!block.tooBig && Http2Connection.gapIn(side, 0, 1)) {
            block.corrupt = true;
          } else if (!block.tooBig) {
            padLen = buf[0]!;
          }
        }
        if (side.fType === HEADERS && (flags & F_PRIORITY) !== 0) start += 5;
        if (side.fType === PUSH_PROMISE) {
          if (!block.tooBig && !Http2Connection.gapIn(side, start, start + 4)) this.notePromised(u32(buf, start) & 0x7fffffff);
          start += 4;
        }
        if (start + padLen > len) return this.protocolError(side, out, 'header frame padding exceeds payload');
        this.addFragment(side, block, start, len - padLen);
        if ((flags & F_END_HEADERS) !== 0) this.finishBlock(side, ts, out);
        break;
      }
      case CONTINUATION: {
        const block = side.block!;
        this.addFragment(side, block, 0, len);
        if ((flags & F_END_HEADERS) !== 0) this.finishBlock(side, ts, out);
        break;
      }
      case SETTINGS:
        if ((flags & F_ACK) === 0) {
          for (let o = 0; o + 6 <= side.want; o += 6) {
            if (Http2Connection.gapIn(side, o, o + 6)) continue;
            const id = (buf[o]! << 8) | buf[o + 1]!;
            if (id === SETTINGS_HEADER_TABLE_SIZE) {
              // this side's decoder limit bounds the PEER's encoder
              this.applyTableSize(side === this.client ? this.server : this.client, u32(buf, o + 2));
            } else if (id === SETTINGS_MAX_FRAME_SIZE) {
              const v = u32(buf, o + 2);
              if (v >= DEFAULT_MAX_FRAME && v <= MAX_MAX_FRAME) (side === this.client ? this.server : this.client).maxFrame = v;
            }
          }
        }
        break;
      case RST_STREAM: {
        const code = Http2Connection.gapIn(side, 0, 4) ? -1 : u32(buf, 0);
        out.push({ type: 'reset', streamId: sid, from: side.name, code, ts });
        this.streamTable.delete(sid);
        break;
      }
      case GOAWAY: {
        const last = Http2Connection.gapIn(side, 0, 4) ? -1 : u32(buf, 0) & 0x7fffffff;
        const code = Http2Connection.gapIn(side, 4, 8) ? -1 : u32(buf, 4);
        out.push({ type: 'goaway', from: side.name, lastStreamId: last, code, ts });
        break;
      }
      default:
        break;
    }
    side.buf = EMPTY;
    side.want = 0;
  }

  private addFragment(side: Side, block: Block, a: number, b: number): void {
    if (block.tooBig || block.corrupt || b <= a) return;
    if (Http2Connection.gapIn(side, a, b)) {
      block.corrupt = true;
      block.parts = [];
      block.bytes = 0;
      return;
    }
    block.parts.push(side.buf.subarray(a, b));
    block.bytes += b - a;
  }

  private finishBlock(side: Side, ts: bigint, out: H2Event[]): void {
    const block = side.block!;
    side.block = undefined;
    const isClient = side === this.client;
    if (block.kind === 'headers' && isClient) this.noteClientStream(block.streamId);

    let headers: Array<[string, string]> | undefined;
    if (block.corrupt || block.tooBig) {
      this.desync(side, out, block.corrupt ? 'capture gap in a header block: HPACK state lost' : 'header block too large: HPACK state lost');
    } else {
      const bytes = concat(block.parts, block.bytes);
      if (!side.desynced && side.trusted !== undefined && !this.blockTrusted(side, bytes)) {
        this.desync(side, out, 'header block refers to HPACK entries a framing gap may have changed');
      }
      if (side.desynced && bytes.length > 0 && bytes[0] === 0x20) {
        // starts with a dynamic table size update to 0: the table is empty, its state known again
        const limit = side.decoder.tableSizeLimit;
        side.decoder = this.newDecoder(limit);
        side.desynced = false;
        side.trusted = undefined;
        this.counters.resyncs++;
      }
      if (!side.desynced) {
        try {
          headers = side.decoder.decode(bytes);
        } catch (e) {
          this.counters.hpackErrors++;
          const msg = e instanceof HpackError ? e.message : 'decoder failure';
          if (e instanceof HpackError && e.tableIntact) this.error(side, out, `HPACK: ${msg}`);
          else this.desync(side, out, `HPACK: ${msg}`);
        }
      }
    }
    if (block.kind === 'push') return;
    const sid = block.streamId;
    if (headers !== undefined) {
      if (isClient) {
        if (pseudo(headers, ':method') !== undefined) {
          out.push({ type: 'request', streamId: sid, headers, ts, tsStart: block.tsStart, endStream: block.endStream });
        } else {
          out.push({ type: 'trailers', streamId: sid, from: 'client', headers, ts });
        }
      } else {
        const status = pseudo(headers, ':status');
        if (status !== undefined) {
          const code = /^[0-9]{3}$/.test(status) ? Number(status) : 0;
          out.push({ type: 'response', streamId: sid, headers, ts, endStream: block.endStream, informational: code >= 100 && code < 200 });
        } else {
          out.push({ type: 'trailers', streamId: sid, from: 'server', headers, ts });
        }
      }
    }
    if (block.endStream) this.endStream(side, sid, ts, out);
  }

  // ---- streams ----

  private noteClientStream(sid: number): void {
    if (sid <= this.highestClientStream) return;
    this.highestClientStream = sid;
    this.counters.streams++;
    this.trackStream(sid, { clientEnd: false, serverEnd: false });
  }

  private notePromised(sid: number): void {
    if (sid === 0 || sid <= this.highestPushedStream) return;
    this.highestPushedStream = sid;
    this.counters.streams++;
    // a pushed stream is half-closed (remote) for the client from the start
    this.trackStream(sid, { clientEnd: true, serverEnd: false });
  }

  private trackStream(sid: number, st: StreamState): void {
    if (this.streamTable.size >= this.maxStreams) {
      this.counters.overflow++;
      return;
    }
    this.streamTable.set(sid, st);
  }

  private endStream(side: Side, sid: number, ts: bigint, out: H2Event[]): void {
    out.push({ type: 'end', streamId: sid, from: side.name, ts });
    const st = this.streamTable.get(sid);
    if (st === undefined) return;
    if (side === this.client) st.clientEnd = true;
    else st.serverEnd = true;
    if (st.clientEnd && st.serverEnd) this.streamTable.delete(sid);
  }

  // ---- state changes ----

  private newDecoder(limit: number): HpackDecoder {
    return new HpackDecoder({ maxTableSize: limit, tableSizeCeiling: this.tableCeiling, maxHeaderListBytes: this.maxListBytes });
  }

  /**
   * SETTINGS_HEADER_TABLE_SIZE announced for the decoder of `side`'s header blocks. The limit
   * is only ever raised: a passive observer cannot tell when the encoder saw a lowered value
   * (requests race the server's SETTINGS), and an encoder that shrinks its table must say so
   * with a size update anyway, which the decoder applies.
   */
  private applyTableSize(side: Side, value: number): void {
    if (value <= side.tableLimit) return;
    side.tableLimit = value;
    side.decoder.setTableSizeLimit(value);
  }

  private desync(side: Side, out: H2Event[], reason: string): void {
    if (side.desynced) return;
    side.desynced = true;
    this.counters.desyncs++;
    this.error(side, out, reason);
  }

  /**
   * Could a frame header start at data[pos] in a chunk of `side`? Checks the captured header
   * against RFC 9113 §6 (type known, no reserved bit, flags of its type, stream and length
   * rules, length within the peer's SETTINGS_MAX_FRAME_SIZE); when the header after it is
   * captured too, it must be plausible as well (`depth` headers in all).
   */
  private plausibleAt(side: Side, data: Uint8Array, pos: number, depth: number): boolean {
    if (pos + 9 > data.length) return false;
    const len = (data[pos]! << 16) | (data[pos + 1]! << 8) | data[pos + 2]!;
    const type = data[pos + 3]!;
    const flags = data[pos + 4]!;
    if ((data[pos + 5]! & 0x80) !== 0) return false;
    const sid = u32(data, pos + 5) & 0x7fffffff;
    if (type > WINDOW_UPDATE || (flags & ~ALLOWED_FLAGS[type]!) !== 0 || len > side.maxFrame) return false;
    switch (type) {
      case DATA:
      case HEADERS:
        // a stream this connection opened: client streams are odd; pushed ones even
        if (sid === 0 || (sid % 2 === 1 ? sid > this.highestClientStream + (side.name === 'client' ? 200 : 0) : sid > this.highestPushedStream)) return false;
        break;
      case PRIORITY:
        if (sid === 0 || len !== 5) return false;
        break;
      case RST_STREAM:
        if (sid === 0 || len !== 4) return false;
        break;
      case SETTINGS:
        if (sid !== 0 || ((flags & F_ACK) !== 0 ? len !== 0 : len % 6 !== 0)) return false;
        break;
      case PUSH_PROMISE:
        if (side.name === 'client' || sid === 0 || len < 4) return false;
        break;
      case PING:
        if (sid !== 0 || len !== 8) return false;
        break;
      case GOAWAY:
        if (sid !== 0 || len < 8) return false;
        break;
      case WINDOW_UPDATE:
        if (len !== 4) return false;
        break;
    }
    const next = pos + 9 + len;
    return depth <= 1 || next + 9 > data.length || this.plausibleAt(side, data, next, depth - 1);
  }

  /**
   * After a framing resync: may this header block be decoded with the table as we have it?
   * Only if every dynamic-table reference is to an entry inserted since the resync (frames
   * hidden in the gap may have inserted others). Counts the block's own insertions.
   */
  private blockTrusted(side: Side, b: Uint8Array): boolean {
    let trusted = side.trusted ?? 0;
    let o = 0;
    const int = (prefix: number): number => {
      const mask = (1 << prefix) - 1;
      let v = b[o++]! & mask;
      if (v < mask) return v;
      let m = 0;
      for (;;) {
        if (o >= b.length || m > 28) return -1;
        const c = b[o++]!;
        v += (c & 0x7f) * 2 ** m;
        m += 7;
        if ((c & 0x80) === 0) return v;
      }
    };
    const skipString = (): boolean => {
      if (o >= b.length) return false;
      const n = int(7);
      if (n < 0 || o + n > b.length) return false;
      o += n;
      return true;
    };
    const refOk = (index: number): boolean => index >= 0 && (index <= 61 || index - 62 < trusted);
    while (o < b.length) {
      const c = b[o]!;
      if ((c & 0x80) !== 0) {
        if (!refOk(int(7))) return false;
      } else if ((c & 0xc0) === 0x40) {
        const name = int(6);
        if (name < 0 || (name > 0 && !refOk(name)) || (name === 0 && !skipString()) || !skipString()) return false;
        trusted++;
      } else if ((c & 0xe0) === 0x20) {
        const size = int(5);
        if (size < 0) return false;
        if (size === 0) trusted = 0; // emptied: nothing older can be referenced any more
      } else {
        const name = int(4);
        if (name < 0 || (name > 0 && !refOk(name)) || (name === 0 && !skipString()) || !skipString()) return false;
      }
    }
    side.trusted = trusted;
    return true;
  }

  private loseFraming(side: Side, out: H2Event[], reason: string, skipped: number, total: number): number {
    side.phase = 'resync';
    side.block = undefined;
    side.buf = EMPTY;
    this.counters.framingLost++;
    this.counters.skippedBytes += skipped;
    this.error(side, out, reason);
    return total;
  }

  private protocolError(side: Side, out: H2Event[], reason: string): void {
    side.phase = 'stopped';
    side.block = undefined;
    side.buf = EMPTY;
    this.counters.protocolErrors++;
    this.error(side, out, `protocol error: ${reason}`);
  }

  private markMidstream(): void {
    if (this.ignored) return;
    this.ignored = true;
    this.counters.midstream = 1;
    for (const s of [this.client, this.server]) {
      s.phase = 'stopped';
      s.block = undefined;
      s.buf = EMPTY;
    }
    this.streamTable.clear();
  }

  private error(side: Side, out: H2Event[], reason: string): void {
    out.push({ type: 'error', from: side.name, reason });
  }
}
