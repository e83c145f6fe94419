// Tests for src/receiver/hpack.ts: every example of RFC 7541 Appendix C (test/testdata/hpack/)
// with exact header lists and dynamic table states, the Huffman code table (Appendix B) and
// its decoder, integer bounds, size updates and limits, eviction, malformed blocks, header
// list / table bomb bounds, and a seeded fuzz. Pure; no I/O besides reading the test data.

import test from 'ava';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  HPACK_MAX_INT,
  HUFFMAN_CODES,
  HUFFMAN_LENGTHS,
  HpackDecoder,
  HpackError,
  STATIC_TABLE,
  huffmanDecode,
} from '../../src/receiver/hpack.js';
import { fuzzIterations } from '../helpers/fuzz.js';

/** generated/mutated inputs per fuzz test: 3000 in CI, a million with `make fuzz` */
const FUZZ_N = fuzzIterations(3000);

// ---- helpers -----------------------------------------------------------------------------

const repo = (rel: string): string => fileURLToPath(new URL(`../../${rel}`, import.meta.url));
const hex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const latin1 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'latin1'));

/** RFC 7541 §5.1 integer with an N-bit prefix; `flags` are the bits above the prefix */
function int(value: number, prefixBits: number, flags = 0): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [flags | value];
  const out = [flags | max];
  let v = value - max;
  while (v >= 128) {
    out.push((v % 128) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
}

/** test-only Huffman encoder straight from the Appendix B table */
function huffEncode(s: Uint8Array): number[] {
  const out: number[] = [];
  let acc = 0;
  let bits = 0;
  for (const b of s) {
    const code = HUFFMAN_CODES[b]!;
    const len = HUFFMAN_LENGTHS[b]!;
    for (let i = len - 1; i >= 0; i--) {
      acc = (acc << 1) | (Math.floor(code / 2 ** i) % 2);
      if (++bits === 8) {
        out.push(acc);
        acc = 0;
        bits = 0;
      }
    }
  }
  if (bits > 0) out.push((acc << (8 - bits)) | ((1 << (8 - bits)) - 1));
  return out;
}

/** §5.2 string literal (raw or Huffman) */
function str(s: string, huffman = false): number[] {
  const raw = latin1(s);
  if (!huffman) return [...int(raw.length, 7, 0), ...raw];
  const h = huffEncode(raw);
  return [...int(h.length, 7, 0x80), ...h];
}

const block = (...parts: number[][]): Uint8Array => new Uint8Array(parts.flat());
const indexed = (i: number): number[] => int(i, 7, 0x80);
const incNew = (name: string, value: string, huffman = false): number[] => [0x40, ...str(name, huffman), ...str(value, huffman)];
const incIdx = (nameIdx: number, value: string): number[] => [...int(nameIdx, 6, 0x40), ...str(value)];
const noIdx = (name: string, value: string): number[] => [0x00, ...str(name), ...str(value)];
const sizeUpdate = (n: number): number[] => int(n, 5, 0x20);

/** deterministic PRNG (mulberry32) */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function hpackError(t: { throws: (fn: () => unknown, exp: { instanceOf: typeof HpackError }) => unknown }, fn: () => unknown): HpackError {
  return t.throws(fn, { instanceOf: HpackError }) as HpackError;
}

// ---- RFC 7541 Appendix C -----------------------------------------------------------------

interface Step {
  hex: string;
  headers: Array<[string, string]>;
  table: Array<[string, string]>;
  size: number;
}
interface Section {
  name: string;
  tableSize: number;
  steps: Step[];
}

const APPENDIX_C = JSON.parse(readFileSync(repo('test/testdata/hpack/rfc7541-appendix-c.json'), 'utf8')) as { sections: Section[] };

test('the Appendix C test data covers C.2.1-C.2.4, C.3, C.4, C.5, C.6 with 3 steps each for C.3-C.6', (t) => {
  t.deepEqual(
    APPENDIX_C.sections.map((s) => [s.name.split(' ')[0], s.steps.length, s.tableSize]),
    [
      ['C.2.1', 1, 4096],
      ['C.2.2', 1, 4096],
      ['C.2.3', 1, 4096],
      ['C.2.4', 1, 4096],
      ['C.3', 3, 4096],
      ['C.4', 3, 4096],
      ['C.5', 3, 256],
      ['C.6', 3, 256],
    ],
  );
});

for (const section of APPENDIX_C.sections) {
  test(`RFC 7541 ${section.name}: exact header lists and dynamic table after each block`, (t) => {
    const d = new HpackDecoder({ maxTableSize: section.tableSize });
    section.steps.forEach((step, i) => {
      t.deepEqual(d.decode(hex(step.hex)), step.headers, `headers of step ${i + 1}`);
      t.deepEqual(d.dynamicTable(), step.table, `table of step ${i + 1}`);
      t.is(d.tableSize, step.size, `table size of step ${i + 1}`);
      t.is(d.entries, step.table.length);
      t.is(d.maxTableSize, section.tableSize);
    });
  });
}

test('C.3 and C.4 decode to the same lists and tables (Huffman vs raw)', (t) => {
  const raw = APPENDIX_C.sections.find((s) => s.name.startsWith('C.3'))!;
  const huff = APPENDIX_C.sections.find((s) => s.name.startsWith('C.4'))!;
  const a = new HpackDecoder();
  const b = new HpackDecoder();
  for (let i = 0; i < 3; i++) {
    t.deepEqual(a.decode(hex(raw.steps[i]!.hex)), b.decode(hex(huff.steps[i]!.hex)));
    t.deepEqual(a.dynamicTable(), b.dynamicTable());
  }
});

test('RFC 7541 C.1 integer examples through size updates (5-bit prefix)', (t) => {
  const d = new HpackDecoder({ maxTableSize: 4096 });
  d.decode(hex('2a')); // C.1.1: 10 = 01010 in a 5-bit prefix (0x20 | 10)
  t.is(d.maxTableSize, 10);
  d.decode(hex('3f 9a 0a')); // C.1.2: 1337 = 31 + 26 + 10*128
  t.is(d.maxTableSize, 1337);
  // C.1.3: 42 on an octet boundary — the 7-bit string length prefix is the closest HPACK has
  t.deepEqual(d.decode(block([0x00], str('n'), [42], [...latin1('v'.repeat(42))])), [['n', 'v'.repeat(42)]]);
});

// ---- static table ------------------------------------------------------------------------

test('static table: 61 entries, spot checks of Appendix A', (t) => {
  t.is(STATIC_TABLE.length, 61);
  const d = new HpackDecoder();
  const spots: Array<[number, string, string]> = [
    [1, ':authority', ''],
    [2, ':method', 'GET'],
    [8, ':status', '200'],
    [14, ':status', '500'],
    [16, 'accept-encoding', 'gzip, deflate'],
    [31, 'content-type', ''],
    [38, 'host', ''],
    [55, 'set-cookie', ''],
    [61, 'www-authenticate', ''],
  ];
  for (const [i, n, v] of spots) t.deepEqual(d.decode(block(indexed(i))), [[n, v]], `index ${i}`);
  hpackError(t, () => new HpackDecoder().decode(block(indexed(62)))); // empty dynamic table
});

// ---- Huffman -----------------------------------------------------------------------------

test('Huffman table: 257 canonical codes, Kraft sum exactly 1, EOS is 30 ones', (t) => {
  t.is(HUFFMAN_CODES.length, 257);
  t.is(HUFFMAN_LENGTHS.length, 257);
  t.is(HUFFMAN_CODES[256], 0x3fffffff);
  t.is(HUFFMAN_LENGTHS[256], 30);
  // canonical: sorted by (length, symbol), each code is the previous + 1, shifted to the new length
  const order = [...Array(257).keys()].sort((a, b) => HUFFMAN_LENGTHS[a]! - HUFFMAN_LENGTHS[b]! || a - b);
  let code = 0;
  let prev = HUFFMAN_LENGTHS[order[0]!]!;
  let mismatches = 0;
  for (const s of order) {
    const len = HUFFMAN_LENGTHS[s]!;
    code *= 2 ** (len - prev);
    prev = len;
    if (HUFFMAN_CODES[s] !== code) mismatches++;
    code++;
  }
  t.is(mismatches, 0);
  t.is(code, 2 ** 30); // the code space is exactly full
  let kraft = 0;
  for (const len of HUFFMAN_LENGTHS) kraft += 2 ** (30 - len);
  t.is(kraft, 2 ** 30);
  // Appendix B spot checks
  t.deepEqual([HUFFMAN_CODES[0x30], HUFFMAN_LENGTHS[0x30]], [0x0, 5]); // '0'
  t.deepEqual([HUFFMAN_CODES[0x20], HUFFMAN_LENGTHS[0x20]], [0x14, 6]); // ' '
  t.deepEqual([HUFFMAN_CODES[0x7e], HUFFMAN_LENGTHS[0x7e]], [0x1ffd, 13]); // '~'
  t.deepEqual([HUFFMAN_CODES[0xff], HUFFMAN_LENGTHS[0xff]], [0x3ffffee, 26]);
  t.deepEqual([HUFFMAN_CODES[10], HUFFMAN_LENGTHS[10]], [0x3ffffffc, 30]);
});

const HUFF_STRINGS: Array<[string, string]> = [
  ['f1e3 c2e5 f23a 6ba0 ab90 f4ff', 'www.example.com'],
  ['a8eb 1064 9cbf', 'no-cache'],
  ['25a8 49e9 5ba9 7d7f', 'custom-key'],
  ['25a8 49e9 5bb8 e8b4 bf', 'custom-value'],
  ['6402', '302'],
  ['aec3 771a 4b', 'private'],
  ['d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff', 'Mon, 21 Oct 2013 20:13:21 GMT'],
  ['9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3', 'https://www.example.com'],
  ['9bd9 ab', 'gzip'],
  ['', ''],
];

for (const [h, s] of HUFF_STRINGS) {
  test(`huffmanDecode(${JSON.stringify(s)})`, (t) => {
    const input = hex(h);
    const out = new Uint8Array(input.length * 2 + 1);
    const n = huffmanDecode(input, 0, input.length, out);
    t.is(Buffer.from(out.subarray(0, n)).toString('latin1'), s);
    t.deepEqual(huffEncode(latin1(s)), [...input], 'the test encoder agrees with the RFC');
  });
}

test('Huffman: every symbol 0..255 alone and all 256 in one string decode exactly', (t) => {
  const d = new HpackDecoder();
  for (let b = 0; b < 256; b++) {
    const s = String.fromCharCode(b);
    t.deepEqual(d.decode(block([0x00], str('x', true), str(s, true))), [['x', s]]);
  }
  let all = '';
  for (let b = 0; b < 256; b++) all += String.fromCharCode(255 - b, b);
  t.deepEqual(d.decode(block([0x00], str('all', true), str(all, true))), [['all', all]]);
});

const BAD_HUFFMAN: Array<[string, number[]]> = [
  ['padding longer than 7 bits (one 0xff octet)', [0xff]],
  ['"a" + 1 octet of excess padding', [0x1f, 0xff]],
  ['"a" + 2 octets of excess padding', [0x1f, 0xff, 0xff]],
  ['"a" + 29 bits of padding', [0xff, 0x9f, 0xff, 0xff, 0xff]],
  ['padding ends on a partial symbol', [0x52, 0xbc, 0x30, 0xff, 0xff, 0xff, 0xff]],
  ['EOS symbol inside the string', [0xff, 0xff, 0xff, 0xff, 0xfc]],
  ['padding not all ones ("0" + 000)', [0x00]],
  ['padding not all ones ("a" + 110)', [0x1e]],
];

for (const [name, bytes] of BAD_HUFFMAN) {
  test(`Huffman rejects: ${name}`, (t) => {
    const input = new Uint8Array(bytes);
    hpackError(t, () => huffmanDecode(input, 0, input.length, new Uint8Array(64)));
    const err = hpackError(t, () => new HpackDecoder().decode(block([0x00], str('n'), int(bytes.length, 7, 0x80), bytes)));
    t.false(err.tableIntact);
  });
}

test('Huffman: 7 bits of all-ones padding is accepted', (t) => {
  // '0' = 00000 (5 bits) + 111 padding; 'a' = 00011 + 111; '00' = 10 bits + 111111
  const out = new Uint8Array(8);
  t.is(huffmanDecode(new Uint8Array([0x07]), 0, 1, out), 1);
  t.is(out[0], 0x30);
  t.is(huffmanDecode(new Uint8Array([0x1f]), 0, 1, out), 1);
  t.is(out[0], 0x61);
  t.is(huffmanDecode(new Uint8Array([0x00, 0x3f]), 0, 2, out), 2);
});

// ---- integers ----------------------------------------------------------------------------

test('integers: boundary values at every prefix width', (t) => {
  const d = new HpackDecoder({ maxTableSize: HPACK_MAX_INT, tableSizeCeiling: HPACK_MAX_INT });
  for (const v of [0, 1, 30, 31, 32, 127, 128, 159, 160, 4096, 16383, 16384, 2 ** 21, 2 ** 28]) {
    d.decode(block(sizeUpdate(v)));
    t.is(d.maxTableSize, v, `size update ${v}`);
  }
  // 7-bit prefix (string lengths) and 6/4-bit prefixes (name indexes)
  const long = 'v'.repeat(300);
  t.deepEqual(new HpackDecoder().decode(block([0x00], str('n'), str(long))), [['n', long]]);
  t.deepEqual(new HpackDecoder().decode(block(incIdx(58, 'ua'))), [['user-agent', 'ua']]); // 6-bit prefix
  t.deepEqual(new HpackDecoder().decode(block(int(61, 4, 0x00), str('w'))), [['www-authenticate', 'w']]); // 4-bit prefix overflow
  t.deepEqual(new HpackDecoder().decode(block(int(61, 4, 0x10), str('w'))), [['www-authenticate', 'w']]); // never indexed
  t.deepEqual(new HpackDecoder().decode(block(indexed(61))), [['www-authenticate', '']]);
});

const BAD_INTEGERS: Array<[string, number[]]> = [
  ['above 2^28', sizeUpdate(2 ** 28 + 1)],
  ['far above 2^28', [0x3f, 0xff, 0xff, 0xff, 0xff, 0x0f]],
  ['more than 5 continuation octets (zero padded)', [0x3f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]],
  ['truncated (continuation bit on the last octet)', [0x3f, 0xe1]],
  ['truncated (prefix full, nothing follows)', [0x3f]],
  ['index truncated', [0xff, 0x80]],
];

for (const [name, bytes] of BAD_INTEGERS) {
  test(`integers: rejects ${name}`, (t) => {
    const d = new HpackDecoder({ maxTableSize: HPACK_MAX_INT, tableSizeCeiling: HPACK_MAX_INT });
    hpackError(t, () => d.decode(new Uint8Array(bytes)));
  });
}

// ---- malformed blocks --------------------------------------------------------------------

const MALFORMED: Array<[string, Uint8Array]> = [
  ['indexed field with index 0', block([0x80])],
  ['index past the static table with an empty dynamic table', block(indexed(62))],
  ['index far past the tables', block(indexed(100000))],
  ['literal name index past the tables', block(incIdx(70, 'v'))],
  ['string length runs past the block', block([0x00], str('n'), [0x05, 0x61])],
  ['string literal missing entirely', block([0x00], str('n'))],
  ['name literal missing', block([0x40])],
  ['Huffman string length past the block', block([0x00, 0x83, 0x1f])],
  ['size update above the 4096 limit', block(sizeUpdate(4097))],
  ['size update after a header field', block(indexed(2), sizeUpdate(0))],
  ['size update between fields', block(sizeUpdate(100), indexed(2), sizeUpdate(100))],
];

for (const [name, b] of MALFORMED) {
  test(`malformed block: ${name}`, (t) => {
    const err = hpackError(t, () => new HpackDecoder().decode(b));
    t.false(err.tableIntact);
    t.is(err.name, 'HpackError');
  });
}

test('decode(non-bytes) throws HpackError', (t) => {
  hpackError(t, () => new HpackDecoder().decode('x' as unknown as Uint8Array));
});

// ---- dynamic table -----------------------------------------------------------------------

test('dynamic table: indexes count from the newest entry, eviction is oldest-first and exact', (t) => {
  const d = new HpackDecoder({ maxTableSize: 100 });
  // 'aaaa: 1111' = 4 + 4 + 32 = 40 octets each
  t.deepEqual(d.decode(block(incNew('aaaa', '1111'), incNew('bbbb', '2222'))), [['aaaa', '1111'], ['bbbb', '2222']]);
  t.is(d.tableSize, 80);
  t.deepEqual(d.decode(block(indexed(62), indexed(63))), [['bbbb', '2222'], ['aaaa', '1111']]);
  // a third entry evicts 'aaaa'
  t.deepEqual(d.decode(block(incNew('cccc', '3333'))), [['cccc', '3333']]);
  t.deepEqual(d.dynamicTable(), [['cccc', '3333'], ['bbbb', '2222']]);
  t.is(d.tableSize, 80);
  hpackError(t, () => d.decode(block(indexed(64))));
});

test('dynamic table: literal with indexed name from the dynamic table, name reuse', (t) => {
  const d = new HpackDecoder();
  d.decode(block(incNew('x-custom', 'a')));
  t.deepEqual(d.decode(block(incIdx(62, 'b'))), [['x-custom', 'b']]);
  t.deepEqual(d.dynamicTable(), [['x-custom', 'b'], ['x-custom', 'a']]);
  // §4.4: an entry may reference the name of the entry it evicts
  const e = new HpackDecoder({ maxTableSize: 50 });
  e.decode(block(incNew('nnnnnnnn', 'v1'))); // 8 + 2 + 32 = 42
  t.deepEqual(e.decode(block(incIdx(62, 'v2'))), [['nnnnnnnn', 'v2']]);
  t.deepEqual(e.dynamicTable(), [['nnnnnnnn', 'v2']]);
  t.is(e.tableSize, 42);
});

test('dynamic table: an entry larger than the table empties it and is not added', (t) => {
  const d = new HpackDecoder({ maxTableSize: 100 });
  d.decode(block(incNew('a', 'b')));
  t.is(d.entries, 1);
  t.deepEqual(d.decode(block(incNew('big', 'x'.repeat(100)))), [['big', 'x'.repeat(100)]]);
  t.is(d.entries, 0);
  t.is(d.tableSize, 0);
  // exactly the table size fits
  d.decode(block(incNew('a', 'x'.repeat(67)))); // 1 + 67 + 32 = 100
  t.is(d.tableSize, 100);
});

test('size updates: shrink evicts, 0 clears, regrow up to the limit, multiple at the start', (t) => {
  const d = new HpackDecoder();
  d.decode(block(incNew('aaaa', '1111'), incNew('bbbb', '2222'), incNew('cccc', '3333')));
  t.is(d.tableSize, 120);
  d.decode(block(sizeUpdate(80)));
  t.deepEqual(d.dynamicTable(), [['cccc', '3333'], ['bbbb', '2222']]);
  t.is(d.maxTableSize, 80);
  t.deepEqual(d.decode(block(sizeUpdate(0), sizeUpdate(4096), incNew('dddd', '4444'))), [['dddd', '4444']]);
  t.deepEqual(d.dynamicTable(), [['dddd', '4444']]);
  t.is(d.maxTableSize, 4096);
  t.deepEqual(d.decode(new Uint8Array(0)), []);
});

test('limit: setTableSizeLimit raises the bound for size updates, shrinks the table when lowered, is capped by the ceiling', (t) => {
  const d = new HpackDecoder({ tableSizeCeiling: 10000 });
  hpackError(t, () => d.decode(block(sizeUpdate(8192))));
  const e = new HpackDecoder({ tableSizeCeiling: 10000 });
  e.setTableSizeLimit(8192);
  t.is(e.tableSizeLimit, 8192);
  t.is(e.maxTableSize, 4096, 'raising the limit does not grow the table by itself');
  e.decode(block(sizeUpdate(8192)));
  t.is(e.maxTableSize, 8192);
  e.decode(block(incNew('aaaa', '1111'), incNew('bbbb', '2222')));
  e.setTableSizeLimit(40);
  t.is(e.maxTableSize, 40);
  t.deepEqual(e.dynamicTable(), [['bbbb', '2222']]);
  e.setTableSizeLimit(1 << 30);
  t.is(e.tableSizeLimit, 10000, 'capped by the ceiling');
  hpackError(t, () => e.decode(block(sizeUpdate(10001))));
  e.setTableSizeLimit(-1);
  e.setTableSizeLimit(Number.NaN);
  t.is(e.tableSizeLimit, 10000, 'invalid values ignored');
});

test('constructor: maxTableSize above the ceiling is capped; invalid options fall back to defaults', (t) => {
  t.is(new HpackDecoder({ maxTableSize: 1 << 20, tableSizeCeiling: 8192 }).tableSizeLimit, 8192);
  const d = new HpackDecoder({ maxTableSize: -5, maxHeaderListBytes: Number.NaN });
  t.is(d.tableSizeLimit, 4096);
  t.is(d.maxTableSize, 4096);
  t.deepEqual(new HpackDecoder({ maxTableSize: 0 }).decode(block(incNew('a', 'b'), indexed(2))), [['a', 'b'], [':method', 'GET']]);
});

test('churn: 10000 insertions keep the table exact and bounded', (t) => {
  const d = new HpackDecoder({ maxTableSize: 1000 });
  const model: Array<[string, string]> = [];
  let size = 0;
  const r = rng(11);
  for (let i = 0; i < 10000; i++) {
    const name = `h${Math.floor(r() * 50)}`;
    const value = 'v'.repeat(Math.floor(r() * 80));
    t.deepEqual(d.decode(block(incNew(name, value))), [[name, value]]);
    const sz = name.length + value.length + 32;
    model.unshift([name, value]);
    size += sz;
    while (size > 1000) {
      const [n, v] = model.pop()!;
      size -= n.length + v.length + 32;
    }
    if (i % 997 === 0) t.deepEqual(d.dynamicTable(), model);
  }
  t.deepEqual(d.dynamicTable(), model);
  t.is(d.tableSize, size);
  // every entry is still addressable by its index
  const refs = model.map((_, i) => indexed(62 + i));
  t.deepEqual(d.decode(block(...refs)), model);
});

// ---- bounds ------------------------------------------------------------------------------

test('table bomb: one large entry referenced 1000 times is bounded by maxHeaderListBytes and leaves the table intact', (t) => {
  const d = new HpackDecoder({ maxHeaderListBytes: 65536 });
  const big = 'b'.repeat(4000);
  d.decode(block(incNew('bomb', big))); // 4036 octets
  const refs = Array.from({ length: 1000 }, () => indexed(63)); // 62 is the entry inserted first in the block
  const err = hpackError(t, () => d.decode(block(incNew('later', 'entry'), ...refs)));
  t.true(err.tableIntact);
  t.regex(err.message, /header list larger than 65536/);
  // the whole block was applied: the insertion before the bomb is in the table, later blocks decode
  t.deepEqual(d.dynamicTable(), [['later', 'entry'], ['bomb', big]]);
  t.deepEqual(d.decode(block(indexed(62))), [['later', 'entry']]);
});

test('header list bound counts name + value + 32 per field exactly', (t) => {
  const d = new HpackDecoder({ maxHeaderListBytes: 100 });
  t.deepEqual(d.decode(block(noIdx('aaaa', 'x'.repeat(64)))), [['aaaa', 'x'.repeat(64)]]); // 4 + 64 + 32 = 100
  hpackError(t, () => d.decode(block(noIdx('aaaa', 'x'.repeat(65)))));
  // a malformed field after the list overflowed is a real (non-intact) error
  const err = hpackError(t, () => d.decode(block(noIdx('aaaa', 'x'.repeat(65)), [0x80])));
  t.false(err.tableIntact);
});

// ---- fuzz --------------------------------------------------------------------------------

test(`fuzz: ${FUZZ_N} seeded random / mutated blocks only ever throw HpackError, table stays within its max size`, (t) => {
  const r = rng(0xc0ffee);
  const seeds = APPENDIX_C.sections.flatMap((s) => s.steps.map((st) => hex(st.hex)));
  let decoded = 0;
  for (let it = 0; it < FUZZ_N; it++) {
    const d = new HpackDecoder({ maxTableSize: r() < 0.5 ? 256 : 4096, maxHeaderListBytes: 2048 });
    for (let k = 0; k < 4; k++) {
      let b: Uint8Array;
      if (r() < 0.5) {
        b = new Uint8Array(Math.floor(r() * 64));
        for (let i = 0; i < b.length; i++) b[i] = Math.floor(r() * 256);
      } else {
        b = seeds[Math.floor(r() * seeds.length)]!.slice();
        const flips = 1 + Math.floor(r() * 3);
        for (let f = 0; f < flips && b.length > 0; f++) b[Math.floor(r() * b.length)] = Math.floor(r() * 256);
        if (r() < 0.3) b = b.subarray(0, Math.floor(r() * b.length));
      }
      try {
        const list = d.decode(b);
        decoded++;
        t.true(list.every(([n, v]) => typeof n === 'string' && typeof v === 'string'));
      } catch (e) {
        if (!(e instanceof HpackError)) {
          t.fail(`non-HpackError thrown: ${String(e)}`);
          return;
        }
      }
      t.true(d.tableSize <= d.maxTableSize && d.maxTableSize <= d.tableSizeLimit);
    }
  }
  t.true(decoded > 100, 'some inputs decode');
});
