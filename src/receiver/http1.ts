/**
 * http1.ts — incremental HTTP/1.x message framer for syscall-captured TCP bytes.
 *
 * Turns a stream of captured chunks (one read/write syscall each: the first N captured bytes
 * plus the true byte count, so bytes in [data.length, length) are an uncaptured gap) into
 * 'head' / 'end' / 'error' events. It knows RFC 9112 framing: Content-Length, chunked
 * transfer coding (extensions, trailers), close-delimited bodies, no-body responses (HEAD,
 * 1xx, 204, 304), 101 / CONNECT-2xx tunnels, pipelining and messages split at any byte.
 * Capture gaps are counted through where framing allows (Content-Length bodies, chunk data)
 * and otherwise make the message open-ended until the caller calls finish().
 *
 * Owns: the parse state of ONE direction of ONE connection — a partial-line buffer of at most
 * `maxHeadBytes` bytes, at most `maxHeaders` parsed headers of the message in progress, and
 * counters; all parsers share one bounded table of interned short strings (header names and
 * values, methods, reasons; see "interned short strings") and one bounded table of whole heads
 * with their parse (the same bytes are not parsed twice; see "parsed heads"). Lifetime: one instance per connection direction, created when the connection is
 * first seen and dropped with it. Single-threaded, no I/O, no timers; never throws (any
 * internal fault is reported as an 'error' event and the parser resynchronises).
 *
 * Contract notes for the caller (pairing layer):
 *  - Every 'head' is followed by exactly one 'end' (from push() or finish()) before the next
 *    'head'. An 'error' raised while a message is in progress is preceded by its 'end'
 *    (framing 'unknown').
 *  - Response parsers call `requestMethod` exactly once per response head that is not an
 *    interim 1xx (100, 102, 103, …, and also 101). A 1xx response is a message of its own
 *    (head + end, no body); the final response of the same request follows on the same parser
 *    and is the one that triggers the `requestMethod` call. A truncated head whose status code
 *    was not captured counts as final.
 *  - After 101 or a 2xx answer to CONNECT the response parser sets `upgraded` and ignores all
 *    further bytes. A request parser cannot know whether an upgrade/tunnel was accepted, so
 *    after a CONNECT request or a request carrying `Connection: upgrade` + `Upgrade` it goes to
 *    resync mode (silently skips chunks until one starts with a request line).
 *  - finish() ends any message in progress (call it when `openEnded`, or on close); the parser
 *    then resyncs: the next chunk that *starts* with a valid start line begins a new message.
 */
import { Buffer } from 'node:buffer';

export interface Chunk {
  data: Uint8Array;
  /** true byte count of the syscall; >= data.length (bytes past data.length were not captured) */
  length: number;
  tsStart: bigint;
  tsEnd: bigint;
}

export interface HttpHead {
  kind: 'request' | 'response';
  /** request: as sent (case preserved); absent if the start line was cut before it */
  method?: string;
  /** request-target as sent; may be a prefix when the head is truncated */
  target?: string;
  /** response status code; absent if cut by a capture gap */
  status?: number;
  /** response reason phrase ('' when none was sent) */
  reason?: string;
  /** '1.0' | '1.1' (from HTTP/1.x); '' when the start line was cut before the version */
  version: string;
  /** names lower-cased, values trimmed, in order; bounded by maxHeaders / maxHeadBytes */
  headers: Array<[string, string]>;
  /** the head was cut by a capture gap or a limit (some headers may be missing) */
  headTruncated: boolean;
}

export type Http1Framing = 'none' | 'length' | 'chunked' | 'close' | 'unknown';

export type Http1Event =
  | { type: 'head'; head: HttpHead; ts: bigint; tsStart: bigint }
  | { type: 'end'; ts: bigint; bodyBytes: number; framing: Http1Framing }
  | { type: 'error'; reason: string };

export interface Http1ParserOptions {
  kind: 'request' | 'response';
  /** default 16384: a head larger than this is parsed as far as it goes and marked headTruncated */
  maxHeadBytes?: number;
  /** default 100 */
  maxHeaders?: number;
  /**
   * Response parsers: method of the request this response answers (HEAD → no body; CONNECT
   * 2xx → tunnel). Called exactly once per response head that is NOT an interim 1xx response
   * (1xx heads, including 101, never call it). Exceptions thrown by it are treated as undefined.
   */
  requestMethod?: () => string | undefined;
}

export interface Http1Stats {
  /** heads emitted */
  messages: number;
  /** 'error' events emitted */
  errors: number;
  /** bytes not attributed to any message (out of sync, failed messages, after upgrade) */
  skippedBytes: number;
  /** heads emitted with headTruncated */
  truncatedHeads: number;
}

const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const HTAB = 0x09;
const COLON = 0x3a;
const SEMI = 0x3b;

const DEFAULT_MAX_HEAD_BYTES = 16384;
const DEFAULT_MAX_HEADERS = 100;
/** longest accepted method token */
const MAX_METHOD_LEN = 64;
/** longest chunk-size line (size + extensions) */
const MAX_CHUNK_LINE = 4096;
/** 13 significant hex digits < 2^53 */
const MAX_CHUNK_SIZE_DIGITS = 13;
/** looksLikeHttp1 looks at most this many bytes */
const SNIFF_LIMIT = 16384;
/** line buffers larger than this are released when a message ends */
const KEEP_LINE_BUFFER = 1024;

const EMPTY = new Uint8Array(0);
const HTTP_1 = [0x48, 0x54, 0x54, 0x50, 0x2f, 0x31, 0x2e]; // "HTTP/1."

/** RFC 9110 tchar */
const TCHAR: Uint8Array = (() => {
  const t = new Uint8Array(256);
  for (const c of "!#$%&'*+-.^_`|~") t[c.charCodeAt(0)] = 1;
  for (let c = 0x30; c <= 0x39; c++) t[c] = 1;
  for (let c = 0x41; c <= 0x5a; c++) {
    t[c] = 1;
    t[c + 0x20] = 1;
  }
  return t;
})();

function isDigit(b: number): boolean {
  return b >= 0x30 && b <= 0x39;
}

function isAlnum(b: number): boolean {
  return isDigit(b) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a);
}

/** first byte of a request-target: origin-form '/', asterisk-form '*', absolute/authority-form */
function isTargetStart(b: number): boolean {
  return b === 0x2f || b === 0x2a || b === 0x5b || isAlnum(b);
}

/** request-target byte: visible ASCII or obs-text (lenient about raw UTF-8), no SP/CTL */
function isTargetByte(b: number): boolean {
  return (b > 0x20 && b < 0x7f) || b >= 0x80;
}

function hexVal(b: number): number {
  if (b >= 0x30 && b <= 0x39) return b - 0x30;
  if (b >= 0x61 && b <= 0x66) return b - 0x57;
  if (b >= 0x41 && b <= 0x46) return b - 0x37;
  return -1;
}

/** Bytes as a latin1 string. Short slices (methods, header names and values) by
 * String.fromCharCode: about twice as fast as a Buffer view + toString, which dominated the
 * receiver's profile. */
function latin1(buf: Uint8Array, start: number, end: number): string {
  if (end <= start) return '';
  if (end - start <= 128) return String.fromCharCode.apply(null, buf.subarray(start, end) as unknown as number[]);
  return Buffer.from(buf.buffer, buf.byteOffset + start, end - start).toString('latin1');
}

// ---- interned short strings ------------------------------------------------------------
// Header names, most header values, methods and reasons repeat from message to message; making
// a new string of each (and lower-casing each name) was the receiver's largest cost and much of
// its garbage. A direct-mapped table (INTERN_SLOTS slots of at most INTERN_MAX bytes, slot by a
// hash of the bytes; a colliding string replaces the old one) gives back the string made last
// time when the bytes are the same, compared byte for byte: the result is exactly what latin1()
// (and toLowerCase(), for names) would give. Values of credential headers are never kept here.
// Shared by all parsers (module state, main thread); bounded by construction.

const INTERN_SLOTS = 1024;
const INTERN_MAX = 48;
const internBytes = new Uint8Array(INTERN_SLOTS * INTERN_MAX);
/** stored length + 1 per slot (0: empty); the table of names and the table of other strings differ by `lower` */
const internLen = new Uint8Array(INTERN_SLOTS);
const internLower = new Uint8Array(INTERN_SLOTS);
const internStr: string[] = new Array<string>(INTERN_SLOTS).fill('');

/** hits and misses of the string table (tests, benchmarks) */
export const internStats = { hits: 0, misses: 0 };

/** latin1(buf, start, end), lower-cased when `lower`, from the table when seen before */
function interned(buf: Uint8Array, start: number, end: number, lower: boolean): string {
  const n = end - start;
  if (n <= 0) return '';
  if (n > INTERN_MAX) {
    const s = latin1(buf, start, end);
    return lower ? s.toLowerCase() : s;
  }
  let h = lower ? 0x2f : 0x11;
  for (let i = start; i < end; i++) h = Math.imul(h ^ buf[i]!, 0x01000193);
  const slot = (h ^ (h >>> 13)) & (INTERN_SLOTS - 1);
  const at = slot * INTERN_MAX;
  if (internLen[slot] === n + 1 && internLower[slot] === (lower ? 1 : 0)) {
    let i = 0;
    while (i < n && internBytes[at + i] === buf[start + i]) i++;
    if (i === n) {
      internStats.hits++;
      return internStr[slot]!;
    }
  }
  internStats.misses++;
  const s = lower ? latin1(buf, start, end).toLowerCase() : latin1(buf, start, end);
  internBytes.set(buf.subarray(start, end), at);
  internLen[slot] = n + 1;
  internLower[slot] = lower ? 1 : 0;
  internStr[slot] = s;
  return s;
}

/** header values that must not be kept in the string table */
const SECRET_HEADERS = new Set(['authorization', 'proxy-authorization', 'cookie', 'set-cookie']);

// ---- parsed heads, by their bytes ------------------------------------------------------
// The same head bytes are parsed again and again: both ends of a connection on this node see
// the same request and the same response, and a client repeats its requests. A head that
// arrived whole in one chunk and parsed cleanly is kept with its parse (a direct-mapped table:
// HEAD_SLOTS slots, slot by the chunk's length and first bytes, a colliding head replaces the
// old one); the next head with exactly these bytes (compared byte for byte) at the start of a
// chunk of the same length takes that parse instead of
// being parsed again: the same fields, the same events. Heads that carry a credential header
// (SECRET_HEADERS) or that hit a limit are never kept. Shared by all parsers with the default
// limits (module state, main thread); bounded: at most HEAD_SLOTS heads of HEAD_MAX bytes.

const HEAD_SLOTS = 256;
const HEAD_MAX = 2048;

interface CachedHead {
  request: boolean;
  /** bytes of the chunk from the head's start (the head and what followed it in the chunk) */
  rest: number;
  bytes: Uint8Array;
  method: string | undefined;
  target: string | undefined;
  status: number | undefined;
  reason: string | undefined;
  version: string;
  headers: Array<[string, string]>;
  headerChars: number;
  contentLength: number;
  teSeen: boolean;
  teChunkedLast: boolean;
  connUpgrade: boolean;
  upgradeHeader: boolean;
}

const headTable: Array<CachedHead | undefined> = new Array<CachedHead | undefined>(HEAD_SLOTS).fill(undefined);

/** heads taken from the table (hits), looked up and not found (misses), kept (stores) */
export const headCacheStats = { hits: 0, misses: 0, stores: 0 };

/**
 * Slot of a head starting at `from` of a chunk of `cap` bytes: a hash of the chunk's length from
 * there and its first bytes (a head's end is only known by reading all of it; the full compare
 * decides). Both ends of a connection usually get the same bytes in the same chunks.
 */
function headSlot(data: Uint8Array, from: number, cap: number, seed: number): number {
  const end = Math.min(cap, from + 24);
  let h = Math.imul(seed ^ (cap - from), 0x01000193);
  for (let i = from; i < end; i++) h = Math.imul(h ^ data[i]!, 0x01000193);
  return (h ^ (h >>> 15)) & (HEAD_SLOTS - 1);
}

/** Content-Length value: 1*DIGIT, or a list of identical ones ("5, 5"). -1 when invalid. */
function parseContentLength(value: string): number {
  const n = value.length;
  if (n > 0 && n <= 15 && value.indexOf(',') < 0) {
    // the usual case, digits only: no split (15 digits stay below MAX_SAFE_INTEGER)
    let v = 0;
    let i = 0;
    for (; i < n; i++) {
      const c = value.charCodeAt(i);
      if (!isDigit(c)) break;
      v = v * 10 + (c - 0x30);
    }
    if (i === n) return v;
  }
  let result = -1;
  for (const part of value.split(',')) {
    const p = part.trim();
    if (p.length === 0) return -1;
    let v = 0;
    for (let i = 0; i < p.length; i++) {
      const c = p.charCodeAt(i);
      if (!isDigit(c)) return -1;
      v = v * 10 + (c - 0x30);
      if (v > Number.MAX_SAFE_INTEGER) return -1;
    }
    if (result >= 0 && result !== v) return -1;
    result = v;
  }
  return result;
}

/** last transfer coding of a Transfer-Encoding value (lower-cased, parameters dropped) */
function lastCoding(value: string): string | undefined {
  let last: string | undefined;
  for (const part of value.split(',')) {
    const coding = (part.split(';')[0] ?? '').trim().toLowerCase();
    if (coding.length > 0) last = coding;
  }
  return last;
}

function hasToken(value: string, token: string): boolean {
  if (value.indexOf(',') < 0) {
    // one element (the usual case): no split
    const v = value.trim();
    return v.length === token.length && v.toLowerCase() === token;
  }
  for (const part of value.split(',')) if (part.trim().toLowerCase() === token) return true;
  return false;
}

// ---- start-line scanner ------------------------------------------------------------------
// Byte-at-a-time validator for a request line or status line; it keeps no bytes itself
// (the parser buffers the line), only the offsets needed to cut the fields out.

const P_METHOD = 0;
const P_TARGET0 = 1;
const P_TARGET = 2;
const P_VERSION = 3;
const P_VDIGIT = 4;
const P_EOL = 5;
const P_LF = 6;
const P_SP = 7;
const P_STATUS = 8;
const P_AFTER_STATUS = 9;
const P_REASON = 10;
const P_DONE = 11;

class StartLineScanner {
  readonly request: boolean;
  phase = P_METHOD;
  idx = 0;
  /** bytes stepped so far */
  n = 0;
  /** offset of the SP after the method (request) */
  sp1 = -1;
  /** offset of the SP after the target (request) */
  sp2 = -1;
  versionDigit = -1;
  status = 0;
  statusDone = false;
  reasonStart = -1;

  constructor(kind: 'request' | 'response') {
    this.request = kind === 'request';
    this.reset();
  }

  reset(): void {
    this.phase = this.request ? P_METHOD : P_VERSION;
    this.idx = 0;
    this.n = 0;
    this.sp1 = -1;
    this.sp2 = -1;
    this.versionDigit = -1;
    this.status = 0;
    this.statusDone = false;
    this.reasonStart = -1;
  }

  get done(): boolean {
    return this.phase === P_DONE;
  }

  /** -1: not a valid start line; 0: consumed, continue; 1: the line ended (LF consumed) */
  step(b: number): number {
    const n = this.n++;
    switch (this.phase) {
      case P_METHOD:
        if (TCHAR[b] === 1) return ++this.idx > MAX_METHOD_LEN ? -1 : 0;
        if (b === SP && this.idx > 0) {
          this.sp1 = n;
          this.phase = P_TARGET0;
          return 0;
        }
        return -1;
      case P_TARGET0:
        if (!isTargetStart(b)) return -1;
        this.phase = P_TARGET;
        return 0;
      case P_TARGET:
        if (b === SP) {
          this.sp2 = n;
          this.phase = P_VERSION;
          this.idx = 0;
          return 0;
        }
        return isTargetByte(b) ? 0 : -1;
      case P_VERSION:
        if (b !== HTTP_1[this.idx]) return -1;
        if (++this.idx === HTTP_1.length) this.phase = P_VDIGIT;
        return 0;
      case P_VDIGIT:
        if (!isDigit(b)) return -1;
        this.versionDigit = b - 0x30;
        this.phase = this.request ? P_EOL : P_SP;
        return 0;
      case P_SP:
        if (b !== SP) return -1;
        this.phase = P_STATUS;
        this.idx = 0;
        return 0;
      case P_STATUS:
        if (!isDigit(b) || (this.idx === 0 && b === 0x30)) return -1;
        this.status = this.status * 10 + (b - 0x30);
        if (++this.idx === 3) {
          this.statusDone = true;
          this.phase = P_AFTER_STATUS;
        }
        return 0;
      case P_AFTER_STATUS:
        if (b === SP) {
          this.reasonStart = n + 1;
          this.phase = P_REASON;
          return 0;
        }
        return this.eol(b);
      case P_REASON:
        if (b === CR || b === LF) return this.eol(b);
        return b === HTAB || (b >= 0x20 && b !== 0x7f) ? 0 : -1;
      case P_EOL:
        return this.eol(b);
      case P_LF:
        if (b !== LF) return -1;
        this.phase = P_DONE;
        return 1;
      default:
        return -1;
    }
  }

  private eol(b: number): number {
    if (b === CR) {
      this.phase = P_LF;
      return 0;
    }
    if (b === LF) {
      this.phase = P_DONE;
      return 1;
    }
    return -1;
  }

  /** enough of a start line was seen to believe it (used by looksLikeHttp1 on short data) */
  get plausible(): boolean {
    return this.request ? this.sp1 >= 0 && this.phase !== P_TARGET0 : this.versionDigit >= 0;
  }
}

/**
 * Cheap sniff: does `data` begin with an HTTP/1.x request line (kind 'request') or status line
 * (kind 'response')? A line that ends inside `data` must be fully valid; a line cut by the end
 * of `data` must be a valid prefix showing at least `METHOD SP x` / `HTTP/1.x`.
 */
export function looksLikeHttp1(data: Uint8Array, kind: 'request' | 'response'): boolean {
  if (!(data instanceof Uint8Array) || data.length === 0) return false;
  const s = new StartLineScanner(kind);
  const n = Math.min(data.length, SNIFF_LIMIT);
  for (let i = 0; i < n; i++) {
    const r = s.step(data[i]!);
    if (r < 0) return false;
    if (r > 0) return true;
  }
  return s.plausible;
}

// ---- parser ------------------------------------------------------------------------------

type State =
  | 'start' // in sync, the next byte begins a message (leading CR/LF tolerated)
  | 'head' // inside a head (start line + header lines)
  | 'body' // Content-Length body, `remaining` bytes to go
  | 'chunkSize' // chunk-size line (+ extensions)
  | 'chunkData' // chunk data, `remaining` bytes to go
  | 'chunkDataEnd' // CRLF after chunk data
  | 'trailers' // trailer section after the last chunk
  | 'open' // message without determinable end: swallow until finish()
  | 'sync' // out of sync: skip chunks until one starts with a valid start line
  | 'upgraded'; // after 101 / CONNECT 2xx: not HTTP any more, ignore everything

const CS_SIZE = 0;
const CS_WS = 1;
const CS_EXT = 2;
const CS_CR = 3;

export class Http1Parser {
  private readonly kind: 'request' | 'response';
  private readonly maxHeadBytes: number;
  private readonly maxHeaders: number;
  private readonly requestMethodFn: (() => string | undefined) | undefined;
  private readonly scanner: StartLineScanner;
  private readonly counters: Http1Stats = { messages: 0, errors: 0, skippedBytes: 0, truncatedHeads: 0 };

  private state: State = 'start';
  private inMsg = false;
  private isUpgraded = false;

  // message in progress
  private msgTsStart = 0n;
  private msgTsEnd = 0n;
  private lastTs = 0n;
  private bodyBytes = 0;
  private remaining = 0;
  private openFraming: Http1Framing = 'unknown';

  // head
  private line: Uint8Array = EMPTY;
  /** bytes of the current line held in `line` (<= maxHeadBytes) */
  private lineStored = 0;
  /** logical length of the current line (may exceed lineStored) */
  private lineLen = 0;
  /** bytes of the head so far (start line, header lines, terminators) */
  private headBytes = 0;
  /** bytes of this message consumed while in 'head' (for skippedBytes on failure) */
  private headConsumed = 0;
  /** false once the head exceeded maxHeadBytes: lines are only scanned for framing */
  private storing = true;
  private startLineDone = false;
  private headersDropped = false;
  private lastStored = false;
  private lastWasFraming = false;
  private method: string | undefined;
  private target: string | undefined;
  private status: number | undefined;
  private reason: string | undefined;
  private version = '';
  private headers: Array<[string, string]> = [];
  private headerChars = 0;
  /** the chunk and offset where the head in progress began (the head table keeps heads that arrived whole) */
  private headChunk: Chunk | undefined;
  private headStart = 0;
  /** the head in progress carried a credential header: never kept in the head table */
  private sawSecret = false;
  /** default limits: this parser shares the head table */
  private readonly sharesHeads: boolean;

  // framing facts from the head
  private contentLength = -1;
  private teSeen = false;
  private teChunkedLast = false;
  private framingLost = false;
  private connUpgrade = false;
  private upgradeHeader = false;
  private reqMethod: string | undefined;
  private methodResolved = false;

  // chunked decoding
  private csPhase = CS_SIZE;
  private csSize = 0;
  private csAny = false;
  private csSig = 0;
  private csLineLen = 0;
  private crSeen = false;
  private trailerLineLen = 0;
  private trailerBytes = 0;

  constructor(opts: Http1ParserOptions) {
    this.kind = opts.kind === 'response' ? 'response' : 'request';
    const mhb = opts.maxHeadBytes;
    this.maxHeadBytes = mhb !== undefined && Number.isSafeInteger(mhb) && mhb >= 1 ? mhb : DEFAULT_MAX_HEAD_BYTES;
    const mh = opts.maxHeaders;
    this.maxHeaders = mh !== undefined && Number.isSafeInteger(mh) && mh >= 0 ? mh : DEFAULT_MAX_HEADERS;
    this.requestMethodFn = typeof opts.requestMethod === 'function' ? opts.requestMethod : undefined;
    this.scanner = new StartLineScanner(this.kind);
    this.sharesHeads = this.maxHeadBytes === DEFAULT_MAX_HEAD_BYTES && this.maxHeaders === DEFAULT_MAX_HEADERS;
  }

  /** true while a message is in progress (head seen, end not yet). */
  get inMessage(): boolean {
    return this.inMsg;
  }

  /** true when the message in progress has no determinable end and needs finish(). */
  get openEnded(): boolean {
    return this.state === 'open';
  }

  /** true after a 101 response or a 2xx answer to CONNECT: the stream is no longer HTTP. */
  get upgraded(): boolean {
    return this.isUpgraded;
  }

  /** counters (a snapshot) */
  get stats(): Http1Stats {
    return { ...this.counters };
  }

  /** diagnostic: bytes currently held (line buffer capacity + stored header text) */
  get bufferedBytes(): number {
    return this.line.length + this.headerChars;
  }

  push(chunk: Chunk): Http1Event[] {
    const out: Http1Event[] = [];
    try {
      this.process(chunk, out);
    } catch {
      this.internalFault(out);
    }
    return out;
  }

  /**
   * The message in progress has no known end (close-delimited body or framing lost to a gap):
   * end it now. Returns the 'end' event, or [] if no message is in progress. reason 'peer' =
   * the other direction started a new message; 'close' = connection closed. `ts` defaults to
   * the tsEnd of the last chunk that carried bytes of the message. Afterwards the parser
   * resyncs (the next chunk that starts with a valid start line begins a new message).
   * finish('close') without a message in progress drops a partial head (counted as skipped);
   * finish('peer') without one changes nothing.
   */
  finish(reason: 'peer' | 'close', ts?: bigint): Http1Event[] {
    const out: Http1Event[] = [];
    try {
      if (this.inMsg) {
        let framing: Http1Framing;
        switch (this.state) {
          case 'open':
            framing = this.openFraming;
            break;
          case 'body':
            framing = 'length';
            break;
          case 'chunkSize':
          case 'chunkData':
          case 'chunkDataEnd':
          case 'trailers':
            framing = 'chunked';
            break;
          default:
            framing = 'unknown';
        }
        this.endMessage(out, framing, typeof ts === 'bigint' ? ts : this.lastTs);
        this.state = 'sync';
      } else if (reason === 'close' && this.state === 'head') {
        this.counters.skippedBytes += this.headConsumed;
        this.state = 'sync';
        this.releaseLine();
      }
    } catch {
      this.internalFault(out);
    }
    return out;
  }

  // ---- driver ----

  private process(chunk: Chunk, out: Http1Event[]): void {
    const data = chunk.data instanceof Uint8Array ? chunk.data : EMPTY;
    const cap = data.length;
    const len = chunk.length;
    const total = typeof len === 'number' && Number.isSafeInteger(len) && len > cap ? len : cap;
    if (total === 0) return;
    if (this.state === 'sync') {
      if (cap > 0 && looksLikeHttp1(data, this.kind)) {
        this.state = 'start';
      } else {
        this.counters.skippedBytes += total;
        return;
      }
    }
    let pos = 0;
    while (pos < total) {
      const state: State = this.state as State; // handlers change it; defeat narrowing
      switch (state) {
        case 'start':
          pos = this.onStart(chunk, data, pos, total, out);
          break;
        case 'head':
          pos = this.onHead(chunk, data, pos, total, out);
          break;
        case 'body':
          pos = this.onBody(chunk, pos, total, out);
          break;
        case 'chunkSize':
          pos = this.onChunkSize(chunk, data, pos, total, out);
          break;
        case 'chunkData':
          pos = this.onChunkData(chunk, pos, total);
          break;
        case 'chunkDataEnd':
          pos = this.onChunkDataEnd(chunk, data, pos, total, out);
          break;
        case 'trailers':
          pos = this.onTrailers(chunk, data, pos, total, out);
          break;
        case 'open':
          if (this.openFraming === 'close') this.bodyBytes += total - pos;
          this.lastTs = chunk.tsEnd;
          pos = total;
          break;
        case 'sync':
        case 'upgraded':
          this.counters.skippedBytes += total - pos;
          pos = total;
          break;
      }
    }
  }

  private onStart(chunk: Chunk, data: Uint8Array, pos: number, total: number, out: Http1Event[]): number {
    if (pos >= data.length) {
      // a gap where the next message would start: nothing is known about it
      this.counters.skippedBytes += total - pos;
      this.state = 'sync';
      return total;
    }
    const b = data[pos]!;
    if (b === CR || b === LF) return pos + 1; // RFC 9112 §2.2: empty lines before a message
    this.resetMessage();
    this.msgTsStart = chunk.tsStart;
    this.msgTsEnd = chunk.tsEnd;
    this.lastTs = chunk.tsEnd;
    this.state = 'head';
    this.headChunk = chunk;
    this.headStart = pos;
    return this.sharesHeads ? this.knownHead(chunk, data, pos, out) : pos;
  }

  /**
   * A head whose bytes are in the head table: take its parse and end the head (as headEnd
   * after parsing it would). Returns the offset after it, or `pos` (to parse as usual).
   */
  private knownHead(chunk: Chunk, data: Uint8Array, pos: number, out: Http1Event[]): number {
    const request = this.kind === 'request';
    const cap = data.length;
    const e = headTable[headSlot(data, pos, cap, request ? 0x51 : 0x52)];
    if (e === undefined || e.request !== request || e.rest !== cap - pos) {
      headCacheStats.misses++;
      return pos;
    }
    const b = e.bytes;
    const n = b.length;
    for (let i = 0; i < n; i++) {
      if (b[i] !== data[pos + i]) {
        headCacheStats.misses++;
        return pos;
      }
    }
    headCacheStats.hits++;
    this.method = e.method;
    this.target = e.target;
    this.status = e.status;
    this.reason = e.reason;
    this.version = e.version;
    this.headers = e.headers;
    this.headerChars = e.headerChars;
    this.contentLength = e.contentLength;
    this.teSeen = e.teSeen;
    this.teChunkedLast = e.teChunkedLast;
    this.connUpgrade = e.connUpgrade;
    this.upgradeHeader = e.upgradeHeader;
    this.startLineDone = true;
    this.headConsumed = n;
    this.headBytes = n;
    this.headEnd(out, chunk); // a kept head ended cleanly: no error here either
    return pos + n;
  }

  /** the head that just ended at `end` of `data` parsed cleanly: keep it when it came whole */
  private keepHead(chunk: Chunk, data: Uint8Array, end: number): void {
    const from = this.headStart;
    if (!this.sharesHeads || this.headChunk !== chunk || this.sawSecret || this.headersDropped || !this.storing || this.framingLost || end - from > HEAD_MAX) return;
    const request = this.kind === 'request';
    headTable[headSlot(data, from, data.length, request ? 0x51 : 0x52)] = {
      request,
      rest: data.length - from,
      bytes: data.slice(from, end),
      method: this.method,
      target: this.target,
      status: this.status,
      reason: this.reason,
      version: this.version,
      headers: this.headers,
      headerChars: this.headerChars,
      contentLength: this.contentLength,
      teSeen: this.teSeen,
      teChunkedLast: this.teChunkedLast,
      connUpgrade: this.connUpgrade,
      upgradeHeader: this.upgradeHeader,
    };
    headCacheStats.stores++;
  }

  private onHead(chunk: Chunk, data: Uint8Array, pos: number, total: number, out: Http1Event[]): number {
    const cap = data.length;
    while (pos < cap) {
      if (!this.startLineDone) {
        // fast path: run the scanner over as many bytes as fit under maxHeadBytes, account for them at once
        const room = this.maxHeadBytes - this.headBytes;
        if (room > 0) {
          const sc = this.scanner;
          const limit = Math.min(cap, pos + room);
          const from = pos;
          let r = 0;
          while (pos < limit && (r = sc.step(data[pos]!)) === 0) pos++;
          if (pos > from) {
            this.lastTs = chunk.tsEnd;
            this.headConsumed += pos - from;
            this.headBytes += pos - from;
            this.storeBytes(data, from, pos);
          }
          if (r < 0) return this.fail(out, 'invalid start line', pos, total);
          if (r === 1) {
            this.lastTs = chunk.tsEnd;
            pos++;
            this.headConsumed++;
            this.headBytes++;
            this.extractStartLine();
            this.startLineDone = true;
            this.resetLine();
            if (this.storing && this.headBytes > this.maxHeadBytes) this.hitLimit(out);
            continue;
          }
          if (pos >= cap) continue;
        }
        // one byte at a time where the limit is reached (truncated-head handling)
        const b = data[pos]!;
        const r = this.scanner.step(b);
        if (r < 0) return this.fail(out, 'invalid start line', pos, total);
        this.lastTs = chunk.tsEnd;
        pos++;
        this.headConsumed++;
        this.headBytes++;
        if (r === 0) {
          this.storeByte(b);
        } else {
          this.extractStartLine();
          this.startLineDone = true;
          this.resetLine();
        }
        if (this.storing && this.headBytes > this.maxHeadBytes) this.hitLimit(out);
        continue;
      }
      // a plain loop: about twice as fast as TypedArray indexOf over header-line distances
      let end = pos;
      while (end < cap && data[end] !== LF) end++;
      const lf = end < cap ? end : -1;
      this.lastTs = chunk.tsEnd;
      if (lf >= 0 && this.lineLen === 0 && lf - pos <= this.maxHeadBytes) {
        // the whole line is in this chunk and nothing of it is buffered: parse it where it is
        // (the same steps as below, without copying it into the line buffer)
        const from = pos;
        const n = end - pos;
        this.headConsumed += n + 1;
        this.headBytes += n;
        if (n > 0 && this.storing && this.headBytes > this.maxHeadBytes) this.hitLimit(out);
        this.headBytes++;
        pos = end + 1;
        if (this.storing && this.headBytes > this.maxHeadBytes) this.hitLimit(out);
        let len = n;
        if (len > 0 && data[from + len - 1] === CR) len--;
        if (len === 0) {
          const err = this.headEnd(out, chunk);
          if (err !== undefined) return this.fail(out, err, pos, total);
          this.keepHead(chunk, data, pos);
          return pos;
        }
        const err = this.headerLine(data, from, len);
        if (err !== undefined) return this.fail(out, err, pos, total);
        if (this.state !== 'head') return pos;
        continue;
      }
      if (end > pos) {
        this.storeBytes(data, pos, end);
        this.headConsumed += end - pos;
        this.headBytes += end - pos;
        pos = end;
        if (this.storing && this.headBytes > this.maxHeadBytes) this.hitLimit(out);
      }
      if (lf >= 0) {
        pos++;
        this.headConsumed++;
        this.headBytes++;
        if (this.storing && this.headBytes > this.maxHeadBytes) this.hitLimit(out);
        const err = this.completeHeaderLine(out, chunk);
        if (err !== undefined) return this.fail(out, err, pos, total);
        if (this.state !== 'head') return pos;
      }
    }
    if (pos < total && this.state === 'head') this.gapInHead(out);
    return pos;
  }

  private onBody(chunk: Chunk, pos: number, total: number, out: Http1Event[]): number {
    const n = Math.min(this.remaining, total - pos);
    this.remaining -= n;
    this.bodyBytes += n;
    this.lastTs = chunk.tsEnd;
    pos += n;
    if (this.remaining === 0) this.endMessage(out, 'length', chunk.tsEnd);
    return pos;
  }

  private onChunkSize(chunk: Chunk, data: Uint8Array, pos: number, total: number, out: Http1Event[]): number {
    const cap = data.length;
    if (pos >= cap) {
      this.setOpen('unknown'); // the gap hides the chunk framing
      return pos;
    }
    while (pos < cap) {
      const b = data[pos]!;
      if (++this.csLineLen > MAX_CHUNK_LINE) return this.fail(out, 'chunk-size line too long', pos, total);
      switch (this.csPhase) {
        case CS_SIZE: {
          const h = hexVal(b);
          if (h >= 0) {
            this.csAny = true;
            if (this.csSig > 0 || h > 0) {
              if (++this.csSig > MAX_CHUNK_SIZE_DIGITS) return this.fail(out, 'chunk size too large', pos, total);
            }
            this.csSize = this.csSize * 16 + h;
            break;
          }
          if (!this.csAny) return this.fail(out, 'invalid chunk size', pos, total);
          if (b === SEMI) this.csPhase = CS_EXT;
          else if (b === SP || b === HTAB) this.csPhase = CS_WS;
          else if (b === CR) this.csPhase = CS_CR;
          else if (b === LF) return this.chunkSizeDone(chunk, pos + 1);
          else return this.fail(out, 'invalid chunk size', pos, total);
          break;
        }
        case CS_WS:
          if (b === SEMI) this.csPhase = CS_EXT;
          else if (b === CR) this.csPhase = CS_CR;
          else if (b === LF) return this.chunkSizeDone(chunk, pos + 1);
          else if (b !== SP && b !== HTAB) return this.fail(out, 'invalid chunk size', pos, total);
          break;
        case CS_EXT:
          if (b === CR) this.csPhase = CS_CR;
          else if (b === LF) return this.chunkSizeDone(chunk, pos + 1);
          break;
        default: // CS_CR
          if (b !== LF) return this.fail(out, 'invalid chunk-size line ending', pos, total);
          return this.chunkSizeDone(chunk, pos + 1);
      }
      this.lastTs = chunk.tsEnd;
      pos++;
    }
    return pos;
  }

  private chunkSizeDone(chunk: Chunk, pos: number): number {
    this.lastTs = chunk.tsEnd;
    const size = this.csSize;
    this.resetChunkSize();
    if (size === 0) {
      this.trailerLineLen = 0;
      this.trailerBytes = 0;
      this.state = 'trailers';
    } else {
      this.remaining = size;
      this.state = 'chunkData';
    }
    return pos;
  }

  private onChunkData(chunk: Chunk, pos: number, total: number): number {
    // gap bytes inside chunk data are fine: the size says how many there are
    const n = Math.min(this.remaining, total - pos);
    this.remaining -= n;
    this.bodyBytes += n;
    this.lastTs = chunk.tsEnd;
    pos += n;
    if (this.remaining === 0) {
      this.crSeen = false;
      this.state = 'chunkDataEnd';
    }
    return pos;
  }

  private onChunkDataEnd(chunk: Chunk, data: Uint8Array, pos: number, total: number, out: Http1Event[]): number {
    if (pos >= data.length) {
      this.setOpen('unknown');
      return pos;
    }
    const b = data[pos]!;
    if (b === CR && !this.crSeen) {
      this.crSeen = true;
      this.lastTs = chunk.tsEnd;
      return pos + 1;
    }
    if (b === LF) {
      this.lastTs = chunk.tsEnd;
      this.resetChunkSize();
      this.state = 'chunkSize';
      return pos + 1;
    }
    return this.fail(out, 'missing CRLF after chunk data', pos, total);
  }

  private onTrailers(chunk: Chunk, data: Uint8Array, pos: number, total: number, out: Http1Event[]): number {
    const cap = data.length;
    if (pos >= cap) {
      this.setOpen('unknown');
      return pos;
    }
    while (pos < cap) {
      const b = data[pos]!;
      if (++this.trailerBytes > this.maxHeadBytes) return this.fail(out, 'trailer section too large', pos, total);
      this.lastTs = chunk.tsEnd;
      pos++;
      if (b === LF) {
        if (this.trailerLineLen === 0) {
          this.endMessage(out, 'chunked', chunk.tsEnd);
          return pos;
        }
        this.trailerLineLen = 0;
      } else if (b !== CR) {
        this.trailerLineLen++;
      }
    }
    return pos;
  }

  // ---- head helpers ----

  private storeByte(b: number): void {
    if (this.lineStored < this.maxHeadBytes) {
      this.ensureLine(this.lineStored + 1);
      this.line[this.lineStored++] = b;
    }
    this.lineLen++;
  }

  private storeBytes(data: Uint8Array, from: number, to: number): void {
    const n = to - from;
    const k = Math.min(n, this.maxHeadBytes - this.lineStored);
    if (k > 0) {
      this.ensureLine(this.lineStored + k);
      const line = this.line;
      if (k <= 64) {
        let o = this.lineStored;
        for (let i = from; i < from + k; i++) line[o++] = data[i]!;
      } else {
        line.set(data.subarray(from, from + k), this.lineStored);
      }
      this.lineStored += k;
    }
    this.lineLen += n;
  }

  private ensureLine(need: number): void {
    if (this.line.length >= need) return;
    let size = Math.max(64, this.line.length * 2);
    while (size < need) size *= 2;
    const next = new Uint8Array(Math.min(size, this.maxHeadBytes));
    next.set(this.line.subarray(0, this.lineStored));
    this.line = next;
  }

  private resetLine(): void {
    this.lineStored = 0;
    this.lineLen = 0;
  }

  private releaseLine(): void {
    this.resetLine();
    if (this.line.length > KEEP_LINE_BUFFER) this.line = EMPTY;
  }

  /** cut method/target/version or version/status/reason out of the (possibly partial) line */
  private extractStartLine(): void {
    const s = this.scanner;
    const buf = this.line;
    const stored = this.lineStored;
    if (s.versionDigit >= 0) this.version = `1.${s.versionDigit}`;
    if (s.request) {
      if (s.sp1 >= 0) {
        this.method = interned(buf, 0, Math.min(s.sp1, stored), false);
        const tEnd = Math.min(s.sp2 >= 0 ? s.sp2 : stored, stored);
        if (tEnd > s.sp1 + 1) this.target = latin1(buf, s.sp1 + 1, tEnd);
      }
    } else {
      if (s.statusDone) this.status = s.status;
      if (s.done) {
        if (s.reasonStart >= 0) {
          let end = stored;
          if (end > 0 && buf[end - 1] === CR) end--;
          this.reason = interned(buf, Math.min(s.reasonStart, end), end, false);
        } else {
          this.reason = '';
        }
      }
    }
  }

  /** the head went past maxHeadBytes: emit what we have, keep scanning lines for framing only */
  private hitLimit(out: Http1Event[]): void {
    this.storing = false;
    this.headersDropped = true;
    this.lastStored = false;
    if (!this.inMsg) {
      if (!this.startLineDone) this.extractStartLine();
      this.emitHead(out, true);
    }
  }

  /** a capture gap inside the head: emit it truncated; the end can no longer be found */
  private gapInHead(out: Http1Event[]): void {
    if (!this.inMsg) {
      if (!this.startLineDone) this.extractStartLine();
      this.emitHead(out, true);
    }
    const st = this.status;
    if (this.kind === 'response' && st !== undefined && (st === 101 || (this.reqMethod === 'CONNECT' && st >= 200 && st < 300))) {
      this.isUpgraded = true;
      this.endMessage(out, 'none', this.lastTs);
      return;
    }
    this.setOpen('unknown');
  }

  /** returns an error reason, or undefined */
  private completeHeaderLine(out: Http1Event[], chunk: Chunk): string | undefined {
    const overflow = this.lineLen > this.lineStored;
    let len = this.lineStored;
    if (!overflow && len > 0 && this.line[len - 1] === CR) len--;
    let err: string | undefined;
    if (overflow) {
      this.overflowLine();
    } else if (len === 0) {
      this.resetLine();
      return this.headEnd(out, chunk);
    } else {
      err = this.headerLine(this.line, 0, len);
    }
    this.resetLine();
    return err;
  }

  /** a header line longer than the buffer (only after maxHeadBytes): was it a framing header? */
  private overflowLine(): void {
    const buf = this.line;
    const stored = this.lineStored;
    const colon = buf.subarray(0, stored).indexOf(COLON);
    const nameEnd = colon < 0 ? stored : colon;
    const name = latin1(buf, 0, nameEnd).toLowerCase();
    const framing = colon >= 0
      ? name === 'content-length' || name === 'transfer-encoding'
      : 'content-length'.startsWith(name) || 'transfer-encoding'.startsWith(name);
    if (framing) this.framingLost = true;
    this.lastStored = false;
    this.lastWasFraming = framing;
  }

  /** one complete header line (no CR/LF): bytes [off, off + len) of `buf` (the line buffer, or the chunk itself) */
  private headerLine(buf: Uint8Array, off: number, len: number): string | undefined {
    const end = off + len;
    const b0 = buf[off]!;
    if (b0 === SP || b0 === HTAB) {
      // obs-fold (RFC 9112 §5.2): continuation of the previous field value
      if (this.lastWasFraming) return 'obs-fold in a framing header';
      if (this.storing && this.lastStored) {
        let s = off;
        let e = end;
        while (s < e && (buf[s] === SP || buf[s] === HTAB)) s++;
        while (e > s && (buf[e - 1] === SP || buf[e - 1] === HTAB)) e--;
        const last = this.headers[this.headers.length - 1];
        if (last !== undefined && e > s) {
          const add = latin1(buf, s, e);
          last[1] = last[1].length > 0 ? `${last[1]} ${add}` : add;
          this.headerChars += add.length + 1;
        }
      }
      return undefined;
    }
    let colon = -1;
    for (let i = off; i < end; i++) {
      const c = buf[i]!;
      if (c === COLON) {
        colon = i;
        break;
      }
      if (TCHAR[c] !== 1) return 'invalid header name';
    }
    if (colon < 0) return 'header line without colon';
    if (colon === off) return 'empty header name';
    let vs = colon + 1;
    let ve = end;
    while (vs < ve && (buf[vs] === SP || buf[vs] === HTAB)) vs++;
    while (ve > vs && (buf[ve - 1] === SP || buf[ve - 1] === HTAB)) ve--;
    const name = interned(buf, off, colon, true);
    const secret = SECRET_HEADERS.has(name);
    if (secret) this.sawSecret = true;
    const value = secret ? latin1(buf, vs, ve) : interned(buf, vs, ve, false);
    const err = this.noteFraming(name, value);
    if (err !== undefined) return err;
    if (this.storing && this.headers.length < this.maxHeaders) {
      this.headers.push([name, value]);
      this.headerChars += name.length + value.length;
      this.lastStored = true;
    } else {
      if (this.storing) this.headersDropped = true;
      this.lastStored = false;
    }
    return undefined;
  }

  private noteFraming(name: string, value: string): string | undefined {
    this.lastWasFraming = false;
    switch (name) {
      case 'content-length': {
        const v = parseContentLength(value);
        if (v < 0) return 'invalid content-length';
        if (this.contentLength >= 0 && this.contentLength !== v) return 'conflicting content-length';
        this.contentLength = v;
        this.lastWasFraming = true;
        break;
      }
      case 'transfer-encoding': {
        this.teSeen = true;
        const last = lastCoding(value);
        if (last !== undefined) this.teChunkedLast = last === 'chunked';
        this.lastWasFraming = true;
        break;
      }
      case 'connection':
        if (hasToken(value, 'upgrade')) this.connUpgrade = true;
        break;
      case 'upgrade':
        this.upgradeHeader = true;
        break;
    }
    return undefined;
  }

  /** the blank line ending the head was consumed */
  private headEnd(out: Http1Event[], chunk: Chunk): string | undefined {
    if (this.kind === 'request' && this.teSeen && !this.teChunkedLast && !this.framingLost) {
      return 'request transfer-encoding does not end in chunked';
    }
    if (!this.inMsg) this.emitHead(out, this.headersDropped);
    this.releaseLine();
    this.startBody(out, chunk.tsEnd);
    return undefined;
  }

  private emitHead(out: Http1Event[], truncated: boolean): void {
    if (this.kind === 'response') this.resolveMethod();
    // the parser's array itself: a new one is made for the next message, and no header is added
    // to this one after its head was emitted (storing stops at the limit that emits it early)
    const head: HttpHead = { kind: this.kind, version: this.version, headers: this.headers, headTruncated: truncated };
    if (this.kind === 'request') {
      if (this.method !== undefined) head.method = this.method;
      if (this.target !== undefined) head.target = this.target;
    } else {
      if (this.status !== undefined) head.status = this.status;
      if (this.reason !== undefined) head.reason = this.reason;
    }
    this.counters.messages++;
    if (truncated) this.counters.truncatedHeads++;
    this.inMsg = true;
    out.push({ type: 'head', head, ts: this.msgTsEnd, tsStart: this.msgTsStart });
  }

  private resolveMethod(): void {
    if (this.methodResolved) return;
    const st = this.status;
    if (st !== undefined && st >= 100 && st < 200) return; // interim: the final response asks
    this.methodResolved = true;
    if (this.requestMethodFn === undefined) return;
    try {
      const m = this.requestMethodFn();
      this.reqMethod = typeof m === 'string' ? m : undefined;
    } catch {
      this.reqMethod = undefined;
    }
  }

  /** RFC 9112 §6.3 */
  private startBody(out: Http1Event[], ts: bigint): void {
    if (this.kind === 'response') {
      const st = this.status ?? 0;
      if (st === 101 || (this.reqMethod === 'CONNECT' && st >= 200 && st < 300)) {
        this.isUpgraded = true;
        this.endMessage(out, 'none', ts);
        return;
      }
      if ((st >= 100 && st < 200) || st === 204 || st === 304 || this.reqMethod === 'HEAD') {
        this.endMessage(out, 'none', ts);
        return;
      }
      if (this.framingLost) this.setOpen('unknown');
      else if (this.teSeen) {
        if (this.teChunkedLast) this.beginChunked();
        else this.setOpen('close');
      } else if (this.contentLength >= 0) this.beginLength(out, ts);
      else this.setOpen('close');
      return;
    }
    if (this.framingLost) this.setOpen('unknown');
    else if (this.teSeen) this.beginChunked();
    else if (this.contentLength >= 0) this.beginLength(out, ts);
    else this.endMessage(out, 'none', ts);
  }

  private beginLength(out: Http1Event[], ts: bigint): void {
    if (this.contentLength === 0) {
      this.endMessage(out, 'length', ts);
      return;
    }
    this.remaining = this.contentLength;
    this.state = 'body';
  }

  private beginChunked(): void {
    this.resetChunkSize();
    this.state = 'chunkSize';
  }

  private resetChunkSize(): void {
    this.csPhase = CS_SIZE;
    this.csSize = 0;
    this.csAny = false;
    this.csSig = 0;
    this.csLineLen = 0;
  }

  private setOpen(framing: Http1Framing): void {
    this.openFraming = framing;
    this.state = 'open';
  }

  private endMessage(out: Http1Event[], framing: Http1Framing, ts: bigint): void {
    out.push({ type: 'end', ts, bodyBytes: this.bodyBytes, framing });
    this.inMsg = false;
    this.releaseLine();
    if (this.isUpgraded) this.state = 'upgraded';
    else if (this.kind === 'request' && (this.method === 'CONNECT' || (this.connUpgrade && this.upgradeHeader))) {
      this.state = 'sync'; // tunnel or protocol switch may follow; resume at the next request line
    } else this.state = 'start';
  }

  /** lost sync: end the message in progress, report, skip until a chunk starts with a start line */
  private fail(out: Http1Event[], reason: string, pos: number, total: number): number {
    if (this.inMsg) this.endMessage(out, 'unknown', this.lastTs);
    else if (this.state === 'head') this.counters.skippedBytes += this.headConsumed;
    this.counters.skippedBytes += Math.max(0, total - pos);
    this.counters.errors++;
    out.push({ type: 'error', reason });
    this.state = 'sync';
    this.releaseLine();
    return total;
  }

  private internalFault(out: Http1Event[]): void {
    try {
      if (this.inMsg) out.push({ type: 'end', ts: this.lastTs, bodyBytes: this.bodyBytes, framing: 'unknown' });
    } catch {
      // ignore
    }
    this.inMsg = false;
    this.counters.errors++;
    out.push({ type: 'error', reason: 'internal parser error' });
    this.state = 'sync';
    this.line = EMPTY;
    this.resetLine();
  }

  private resetMessage(): void {
    this.scanner.reset();
    this.resetLine();
    this.headBytes = 0;
    this.headConsumed = 0;
    this.storing = true;
    this.startLineDone = false;
    this.headersDropped = false;
    this.lastStored = false;
    this.lastWasFraming = false;
    this.method = undefined;
    this.target = undefined;
    this.status = undefined;
    this.reason = undefined;
    this.version = '';
    this.headers = [];
    this.headerChars = 0;
    this.headChunk = undefined;
    this.sawSecret = false;
    this.contentLength = -1;
    this.teSeen = false;
    this.teChunkedLast = false;
    this.framingLost = false;
    this.connUpgrade = false;
    this.upgradeHeader = false;
    this.reqMethod = undefined;
    this.methodResolved = false;
    this.bodyBytes = 0;
    this.remaining = 0;
    this.openFraming = 'unknown';
    this.resetChunkSize();
    this.crSeen = false;
    this.trailerLineLen = 0;
    this.trailerBytes = 0;
  }
}
