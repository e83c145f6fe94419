/**
 * hpack.ts — RFC 7541 (HPACK) header block decoder for passively observed HTTP/2 traffic.
 *
 * Decodes complete header blocks (the concatenated fragments of one HEADERS / PUSH_PROMISE
 * frame and its CONTINUATION frames) into ordered [name, value] lists: static table, dynamic
 * table with eviction and size updates, all literal forms, bounded integer decoding and
 * Huffman decoding with the full RFC 7541 Appendix B code (EOS, over-long and non-ones
 * padding are rejected). Names and values are decoded as latin1 (one char per octet), like
 * http1.ts, so string length == octet length and the RFC 7541 §4.1 entry size is exact.
 *
 * Owns: the dynamic table of ONE direction of ONE HTTP/2 connection (at most `maxTableSize`
 * octets of entries, the limit itself capped by `tableSizeCeiling`) and a scratch buffer for
 * Huffman output. Lifetime: one instance per connection direction, created with the connection
 * and dropped with it (or replaced when the connection resynchronises). Single-threaded, no
 * I/O, no timers.
 *
 * Error contract: decode() throws HpackError on malformed input. After an HpackError with
 * `tableIntact === false` the dynamic table no longer mirrors the encoder's (a block may have
 * been applied halfway): the caller must stop decoding with this instance. The only
 * `tableIntact === true` error is an oversized header list: the whole block was still walked
 * and every table insertion applied, so later blocks decode correctly; only this list is lost.
 * Defences: integers above 2^28 or with more than 5 continuation octets, strings running past
 * the block, references past the table, size updates above the limit or after the first field,
 * and decoded lists above `maxHeaderListBytes` (RFC 9113 §6.5.2 accounting, name + value + 32
 * per field — this also bounds "table bombs" that repeat a large indexed entry).
 */
import { Buffer } from 'node:buffer';

export class HpackError extends Error {
  /** true when the dynamic table is still in sync after this error (oversized header list only) */
  readonly tableIntact: boolean;

  constructor(message: string, tableIntact = false) {
    super(message);
    this.name = 'HpackError';
    this.tableIntact = tableIntact;
  }
}

export interface HpackDecoderOptions {
  /**
   * SETTINGS_HEADER_TABLE_SIZE in force for this decoder (the protocol limit a dynamic table
   * size update may not exceed); default 4096. The initial table max size equals it.
   */
  maxTableSize?: number;
  /** hard cap on the limit whatever SETTINGS announce (memory bound); default 65536 */
  tableSizeCeiling?: number;
  /** bound on one decoded header list (name + value + 32 per field); default 65536 */
  maxHeaderListBytes?: number;
}

/** RFC 7541 §4.1: overhead added to name + value octets for every table entry / list field */
export const HPACK_ENTRY_OVERHEAD = 32;
/** largest integer accepted anywhere in a block */
export const HPACK_MAX_INT = 2 ** 28;

const DEFAULT_TABLE_SIZE = 4096;
const DEFAULT_CEILING = 65536;
const DEFAULT_MAX_LIST = 65536;

/** RFC 7541 Appendix A */
export const STATIC_TABLE: ReadonlyArray<readonly [string, string]> = [
  [':authority', ''],
  [':method', 'GET'],
  [':method', 'POST'],
  [':path', '/'],
  [':path', '/index.html'],
  [':scheme', 'http'],
  [':scheme', 'https'],
  [':status', '200'],
  [':status', '204'],
  [':status', '206'],
  [':status', '304'],
  [':status', '400'],
  [':status', '404'],
  [':status', '500'],
  ['accept-charset', ''],
  ['accept-encoding', 'gzip, deflate'],
  ['accept-language', ''],
  ['accept-ranges', ''],
  ['accept', ''],
  ['access-control-allow-origin', ''],
  ['age', ''],
  ['allow', ''],
  ['authorization', ''],
  ['cache-control', ''],
  ['content-disposition', ''],
  ['content-encoding', ''],
  ['content-language', ''],
  ['content-length', ''],
  ['content-location', ''],
  ['content-range', ''],
  ['content-type', ''],
  ['cookie', ''],
  ['date', ''],
  ['etag', ''],
  ['expect', ''],
  ['expires', ''],
  ['from', ''],
  ['host', ''],
  ['if-match', ''],
  ['if-modified-since', ''],
  ['if-none-match', ''],
  ['if-range', ''],
  ['if-unmodified-since', ''],
  ['last-modified', ''],
  ['link', ''],
  ['location', ''],
  ['max-forwards', ''],
  ['proxy-authenticate', ''],
  ['proxy-authorization', ''],
  ['range', ''],
  ['referer', ''],
  ['refresh', ''],
  ['retry-after', ''],
  ['server', ''],
  ['set-cookie', ''],
  ['strict-transport-security', ''],
  ['transfer-encoding', ''],
  ['user-agent', ''],
  ['vary', ''],
  ['via', ''],
  ['www-authenticate', ''],
];
const STATIC_LEN = STATIC_TABLE.length; // 61

// ---- Huffman code (RFC 7541 Appendix B) ---------------------------------------------------

/** code of symbol i (right-aligned), i = 0..255 and 256 = EOS */
export const HUFFMAN_CODES: readonly number[] = [
  0x1ff8, 0x7fffd8, 0xfffffe2, 0xfffffe3, 0xfffffe4, 0xfffffe5, 0xfffffe6, 0xfffffe7,
  0xfffffe8, 0xffffea, 0x3ffffffc, 0xfffffe9, 0xfffffea, 0x3ffffffd, 0xfffffeb, 0xfffffec,
  0xfffffed, 0xfffffee, 0xfffffef, 0xffffff0, 0xffffff1, 0xffffff2, 0x3ffffffe, 0xffffff3,
  0xffffff4, 0xffffff5, 0xffffff6, 0xffffff7, 0xffffff8, 0xffffff9, 0xffffffa, 0xffffffb,
  0x14, 0x3f8, 0x3f9, 0xffa, 0x1ff9, 0x15, 0xf8, 0x7fa,
  0x3fa, 0x3fb, 0xf9, 0x7fb, 0xfa, 0x16, 0x17, 0x18,
  0x0, 0x1, 0x2, 0x19, 0x1a, 0x1b, 0x1c, 0x1d,
  0x1e, 0x1f, 0x5c, 0xfb, 0x7ffc, 0x20, 0xffb, 0x3fc,
  0x1ffa, 0x21, 0x5d, 0x5e, 0x5f, 0x60, 0x61, 0x62,
  0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a,
  0x6b, 0x6c, 0x6d, 0x6e, 0x6f, 0x70, 0x71, 0x72,
  0xfc, 0x73, 0xfd, 0x1ffb, 0x7fff0, 0x1ffc, 0x3ffc, 0x22,
  0x7ffd, 0x3, 0x23, 0x4, 0x24, 0x5, 0x25, 0x26,
  0x27, 0x6, 0x74, 0x75, 0x28, 0x29, 0x2a, 0x7,
  0x2b, 0x76, 0x2c, 0x8, 0x9, 0x2d, 0x77, 0x78,
  0x79, 0x7a, 0x7b, 0x7ffe, 0x7fc, 0x3ffd, 0x1ffd, 0xffffffc,
  0xfffe6, 0x3fffd2, 0xfffe7, 0xfffe8, 0x3fffd3, 0x3fffd4, 0x3fffd5, 0x7fffd9,
  0x3fffd6, 0x7fffda, 0x7fffdb, 0x7fffdc, 0x7fffdd, 0x7fffde, 0xffffeb, 0x7fffdf,
  0xffffec, 0xffffed, 0x3fffd7, 0x7fffe0, 0xffffee, 0x7fffe1, 0x7fffe2, 0x7fffe3,
  0x7fffe4, 0x1fffdc, 0x3fffd8, 0x7fffe5, 0x3fffd9, 0x7fffe6, 0x7fffe7, 0xffffef,
  0x3fffda, 0x1fffdd, 0xfffe9, 0x3fffdb, 0x3fffdc, 0x7fffe8, 0x7fffe9, 0x1fffde,
  0x7fffea, 0x3fffdd, 0x3fffde, 0xfffff0, 0x1fffdf, 0x3fffdf, 0x7fffeb, 0x7fffec,
  0x1fffe0, 0x1fffe1, 0x3fffe0, 0x1fffe2, 0x7fffed, 0x3fffe1, 0x7fffee, 0x7fffef,
  0xfffea, 0x3fffe2, 0x3fffe3, 0x3fffe4, 0x7ffff0, 0x3fffe5, 0x3fffe6, 0x7ffff1,
  0x3ffffe0, 0x3ffffe1, 0xfffeb, 0x7fff1, 0x3fffe7, 0x7ffff2, 0x3fffe8, 0x1ffffec,
  0x3ffffe2, 0x3ffffe3, 0x3ffffe4, 0x7ffffde, 0x7ffffdf, 0x3ffffe5, 0xfffff1, 0x1ffffed,
  0x7fff2, 0x1fffe3, 0x3ffffe6, 0x7ffffe0, 0x7ffffe1, 0x3ffffe7, 0x7ffffe2, 0xfffff2,
  0x1fffe4, 0x1fffe5, 0x3ffffe8, 0x3ffffe9, 0xffffffd, 0x7ffffe3, 0x7ffffe4, 0x7ffffe5,
  0xfffec, 0xfffff3, 0xfffed, 0x1fffe6, 0x3fffe9, 0x1fffe7, 0x1fffe8, 0x7ffff3,
  0x3fffea, 0x3fffeb, 0x1ffffee, 0x1ffffef, 0xfffff4, 0xfffff5, 0x3ffffea, 0x7ffff4,
  0x3ffffeb, 0x7ffffe6, 0x3ffffec, 0x3ffffed, 0x7ffffe7, 0x7ffffe8, 0x7ffffe9, 0x7ffffea,
  0x7ffffeb, 0xffffffe, 0x7ffffec, 0x7ffffed, 0x7ffffee, 0x7ffffef, 0x7fffff0, 0x3ffffee,
  0x3fffffff,
];

/** bit length of the code of symbol i, i = 0..256 */
export const HUFFMAN_LENGTHS: readonly number[] = [
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
  28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
  6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
  5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
  13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
  7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
  15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,
  6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
  20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
  24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
  22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
  21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
  26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
  19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
  20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
  26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
  30,
];

const EOS = 256;

/**
 * Nibble-driven decoding automaton built from the code table at load time. The states are
 * the 256 internal nodes of the code tree (root = 0); feeding 4 bits from a state yields the
 * next state and at most one symbol (every code is >= 5 bits long).
 */
interface HuffmanAutomaton {
  /** next state for (state << 4 | nibble) */
  next: Uint8Array;
  /** emitted symbol + 1 (0 = none) for (state << 4 | nibble) */
  emit: Uint16Array;
  /** 1 when the 4 bits run into EOS */
  fail: Uint8Array;
  /** 1 when ending the string in this state is valid padding (<= 7 bits, all ones) */
  accept: Uint8Array;
}

function buildHuffman(): HuffmanAutomaton {
  // tree: child >= 0 internal node id, child < 0 leaf -(sym + 1), NONE unassigned
  const NONE = 0x7fffffff;
  const left: number[] = [NONE];
  const right: number[] = [NONE];
  const depth: number[] = [0];
  const ones: boolean[] = [true];
  for (let sym = 0; sym <= EOS; sym++) {
    const code = HUFFMAN_CODES[sym]!;
    const len = HUFFMAN_LENGTHS[sym]!;
    let node = 0;
    for (let i = len - 1; i >= 0; i--) {
      const bit = Math.floor(code / 2 ** i) % 2;
      const kids = bit === 1 ? right : left;
      if (i === 0) {
        if (kids[node] !== NONE) throw new Error('hpack: Huffman table is not prefix-free');
        kids[node] = -(sym + 1);
      } else {
        let child = kids[node]!;
        if (child === NONE) {
          child = left.length;
          left.push(NONE);
          right.push(NONE);
          depth.push(depth[node]! + 1);
          ones.push(ones[node]! && bit === 1);
          kids[node] = child;
        } else if (child < 0) {
          throw new Error('hpack: Huffman table is not prefix-free');
        }
        node = child;
      }
    }
  }
  const states = left.length;
  if (states !== 256 || left.includes(NONE) || right.includes(NONE)) throw new Error('hpack: Huffman table is not complete');
  const next = new Uint8Array(states * 16);
  const emit = new Uint16Array(states * 16);
  const fail = new Uint8Array(states * 16);
  const accept = new Uint8Array(states);
  for (let s = 0; s < states; s++) {
    accept[s] = ones[s]! && depth[s]! <= 7 ? 1 : 0;
    for (let nib = 0; nib < 16; nib++) {
      let cur = s;
      let sym = -1;
      let bad = false;
      for (let b = 3; b >= 0; b--) {
        const child = ((nib >> b) & 1) === 1 ? right[cur]! : left[cur]!;
        if (child < 0) {
          const leaf = -child - 1;
          if (leaf === EOS) bad = true;
          else sym = leaf;
          cur = 0;
        } else {
          cur = child;
        }
      }
      const k = (s << 4) | nib;
      next[k] = cur;
      emit[k] = sym + 1;
      fail[k] = bad ? 1 : 0;
    }
  }
  return { next, emit, fail, accept };
}

const HUFFMAN = buildHuffman();

/**
 * Decode Huffman-coded octets block[start, end) into `out` (which must hold at least
 * floor((end - start) * 8 / 5) octets). Returns the number of octets written; throws
 * HpackError on EOS, padding longer than 7 bits or padding that is not all ones.
 */
export function huffmanDecode(block: Uint8Array, start: number, end: number, out: Uint8Array): number {
  const { next, emit, fail, accept } = HUFFMAN;
  let state = 0;
  let n = 0;
  for (let i = start; i < end; i++) {
    const byte = block[i]!;
    let k = (state << 4) | (byte >> 4);
    if (fail[k] === 1) throw new HpackError('Huffman string contains EOS');
    let sym = emit[k]!;
    if (sym !== 0) out[n++] = sym - 1;
    state = next[k]!;
    k = (state << 4) | (byte & 0x0f);
    if (fail[k] === 1) throw new HpackError('Huffman string contains EOS');
    sym = emit[k]!;
    if (sym !== 0) out[n++] = sym - 1;
    state = next[k]!;
  }
  if (accept[state] !== 1) throw new HpackError('invalid Huffman padding');
  return n;
}

// ---- decoder ------------------------------------------------------------------------------

function sanitize(v: number | undefined, dflt: number, min: number, max: number): number {
  return v !== undefined && Number.isSafeInteger(v) && v >= min ? Math.min(v, max) : dflt;
}

function latin1(buf: Uint8Array, start: number, end: number): string {
  if (end <= start) return '';
  return Buffer.from(buf.buffer, buf.byteOffset + start, end - start).toString('latin1');
}

export class HpackDecoder {
  private readonly ceiling: number;
  private readonly maxListBytes: number;
  /** protocol limit (SETTINGS_HEADER_TABLE_SIZE, capped by the ceiling) */
  private limit: number;
  /** current maximum table size (set by dynamic table size updates) */
  private maxSize: number;
  /** current table size per RFC 7541 §4.1 */
  private size = 0;
  /** entries oldest first in tab[first..tab.length) */
  private tab: Array<[string, string] | undefined> = [];
  private first = 0;
  private scratch = new Uint8Array(256);

  // per-decode cursor
  private blk: Uint8Array = new Uint8Array(0);
  private pos = 0;

  constructor(opts: HpackDecoderOptions = {}) {
    this.ceiling = sanitize(opts.tableSizeCeiling, DEFAULT_CEILING, 0, HPACK_MAX_INT);
    this.limit = Math.min(sanitize(opts.maxTableSize, DEFAULT_TABLE_SIZE, 0, HPACK_MAX_INT), this.ceiling);
    this.maxSize = this.limit;
    this.maxListBytes = sanitize(opts.maxHeaderListBytes, DEFAULT_MAX_LIST, 0, Number.MAX_SAFE_INTEGER);
  }

  /** current dynamic table size in octets (RFC 7541 §4.1 accounting) */
  get tableSize(): number {
    return this.size;
  }

  /** number of entries in the dynamic table */
  get entries(): number {
    return this.tab.length - this.first;
  }

  /** current maximum dynamic table size (last size update, or the limit) */
  get maxTableSize(): number {
    return this.maxSize;
  }

  /** protocol limit a size update may not exceed */
  get tableSizeLimit(): number {
    return this.limit;
  }

  /** the dynamic table, newest entry first (index 62 first) — a copy, for diagnostics/tests */
  dynamicTable(): Array<[string, string]> {
    const out: Array<[string, string]> = [];
    for (let i = this.tab.length - 1; i >= this.first; i--) {
      const e = this.tab[i]!;
      out.push([e[0], e[1]]);
    }
    return out;
  }

  /**
   * The decoder's side announced SETTINGS_HEADER_TABLE_SIZE = n (capped by the ceiling). A
   * table larger than the new limit is shrunk at once (the encoder must follow with a size
   * update anyway). Invalid values are ignored.
   */
  setTableSizeLimit(n: number): void {
    if (!Number.isSafeInteger(n) || n < 0) return;
    this.limit = Math.min(n, this.ceiling);
    if (this.maxSize > this.limit) {
      this.maxSize = this.limit;
      this.evict(0);
    }
  }

  /** decode one complete header block; throws HpackError (see the header comment) */
  decode(block: Uint8Array): Array<[string, string]> {
    if (!(block instanceof Uint8Array)) throw new HpackError('header block is not bytes');
    this.blk = block;
    this.pos = 0;
    const out: Array<[string, string]> = [];
    const n = block.length;
    let listBytes = 0;
    let tooBig = false;
    let fieldSeen = false;
    try {
      while (this.pos < n) {
        const b = block[this.pos]!;
        let name: string;
        let value: string;
        if ((b & 0x80) !== 0) {
          // §6.1 indexed header field
          const idx = this.readInt(7);
          if (idx === 0) throw new HpackError('indexed header field with index 0');
          const e = this.lookup(idx);
          name = e[0];
          value = e[1];
        } else if ((b & 0xc0) === 0x40) {
          // §6.2.1 literal with incremental indexing
          const idx = this.readInt(6);
          name = idx === 0 ? this.readString() : this.lookup(idx)[0];
          value = this.readString();
          this.insert(name, value);
        } else if ((b & 0xe0) === 0x20) {
          // §6.3 dynamic table size update: only at the start of a block (§4.2)
          if (fieldSeen) throw new HpackError('dynamic table size update after a header field');
          const size = this.readInt(5);
          if (size > this.limit) throw new HpackError(`dynamic table size update ${size} above the limit ${this.limit}`);
          this.maxSize = size;
          this.evict(0);
          continue;
        } else {
          // §6.2.2 without indexing (0000) / §6.2.3 never indexed (0001)
          const idx = this.readInt(4);
          name = idx === 0 ? this.readString() : this.lookup(idx)[0];
          value = this.readString();
        }
        fieldSeen = true;
        if (!tooBig) {
          listBytes += name.length + value.length + HPACK_ENTRY_OVERHEAD;
          if (listBytes > this.maxListBytes) tooBig = true;
          else out.push([name, value]);
        }
      }
    } finally {
      this.blk = new Uint8Array(0);
      if (this.scratch.length > 4096) this.scratch = new Uint8Array(256);
    }
    if (tooBig) throw new HpackError(`header list larger than ${this.maxListBytes} octets`, true);
    return out;
  }

  // ---- primitives ----

  /** §5.1 integer with an N-bit prefix starting at the current octet */
  private readInt(prefixBits: number): number {
    const blk = this.blk;
    const mask = (1 << prefixBits) - 1;
    let v = blk[this.pos++]! & mask;
    if (v < mask) return v;
    let m = 0;
    for (;;) {
      if (this.pos >= blk.length) throw new HpackError('truncated integer');
      const b = blk[this.pos++]!;
      v += (b & 0x7f) * 2 ** m;
      if (v > HPACK_MAX_INT) throw new HpackError('integer too large');
      if ((b & 0x80) === 0) return v;
      m += 7;
      if (m > 28) throw new HpackError('integer encoding too long');
    }
  }

  /** §5.2 string literal */
  private readString(): string {
    const blk = this.blk;
    if (this.pos >= blk.length) throw new HpackError('truncated string literal');
    const huffman = (blk[this.pos]! & 0x80) !== 0;
    const len = this.readInt(7);
    const start = this.pos;
    if (len > blk.length - start) throw new HpackError('string literal runs past the end of the block');
    this.pos = start + len;
    if (!huffman) return latin1(blk, start, start + len);
    const cap = Math.floor((len * 8) / 5) + 1;
    if (this.scratch.length < cap) this.scratch = new Uint8Array(Math.max(cap, this.scratch.length * 2));
    const k = huffmanDecode(blk, start, start + len, this.scratch);
    return latin1(this.scratch, 0, k);
  }

  private lookup(idx: number): readonly [string, string] {
    if (idx <= STATIC_LEN) return STATIC_TABLE[idx - 1]!;
    const d = idx - STATIC_LEN; // 1 = newest
    const count = this.tab.length - this.first;
    if (d > count) throw new HpackError(`index ${idx} past the end of the dynamic table`);
    return this.tab[this.tab.length - d]!;
  }

  /** §4.4: evict until the new entry fits; an entry larger than the table empties it */
  private insert(name: string, value: string): void {
    const sz = name.length + value.length + HPACK_ENTRY_OVERHEAD;
    if (sz > this.maxSize) {
      this.clear();
      return;
    }
    this.evict(sz);
    this.tab.push([name, value]);
    this.size += sz;
  }

  /** §4.3: evict oldest entries until size + room <= maxSize */
  private evict(room: number): void {
    while (this.size + room > this.maxSize && this.first < this.tab.length) {
      const e = this.tab[this.first]!;
      this.tab[this.first] = undefined;
      this.first++;
      this.size -= e[0].length + e[1].length + HPACK_ENTRY_OVERHEAD;
    }
    if (this.first === this.tab.length) {
      this.tab = [];
      this.first = 0;
      this.size = 0;
    } else if (this.first > 32 && this.first * 2 > this.tab.length) {
      this.tab = this.tab.slice(this.first);
      this.first = 0;
    }
  }

  private clear(): void {
    this.tab = [];
    this.first = 0;
    this.size = 0;
  }
}
