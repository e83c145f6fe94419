/**
 * hostile.ts (test helper) — adversarial traffic on real sockets, for the reliability tests:
 * HTTP/1 requests and responses that break every rule (huge heads, invalid UTF-8, absurd
 * lengths, seeded random bytes), HTTP/2 frames and HPACK blocks built to exhaust a decoder
 * (table bombs, integer overflows, index past the table, CONTINUATION floods, stream floods),
 * DNS messages with compression-pointer loops and impossible counts, and connection churn.
 * Also reads what the agent process looks like from outside (/healthz JSON, RSS, CPU time).
 *
 * Stateless apart from the sockets each call opens and always closes before resolving; the
 * random generator is seeded so a failure replays byte for byte.
 */
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import net from 'node:net';

/** xorshift32: deterministic bytes for fuzzing (replayable). */
export function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

/** The same xorshift32 sequence as numbers in [0, 1). */
export function rngUnit(seed: number): () => number {
  const next = rng(seed);
  return () => next() / 0x100000000;
}

export function randomBytes(next: () => number, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = next() & 0xff;
  return b;
}

/**
 * Connect, write each chunk (one write per chunk, so each is its own syscall), wait until the
 * peer closes or `lingerMs` passes, then destroy. Never rejects: errors are what we expect.
 */
export function sendRaw(port: number, chunks: Buffer[], lingerMs = 200, host = '127.0.0.1'): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host });
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      s.destroy();
      resolve();
    };
    s.on('error', finish);
    s.on('close', finish);
    s.on('data', () => undefined);
    s.once('connect', () => {
      void (async () => {
        for (const c of chunks) {
          if (done) return;
          await new Promise<void>((r) => s.write(c, () => r()));
        }
        setTimeout(finish, lingerMs);
      })();
    });
    setTimeout(finish, 10_000);
  });
}

/** Run `n` tasks with at most `concurrency` at once. */
export async function pool(n: number, concurrency: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    for (;;) {
      const i = next++;
      if (i >= n) return;
      await task(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
}

/** Open and close `n` TCP connections (optionally writing `payload` on each first). */
export async function connectionChurn(port: number, n: number, concurrency: number, payload?: Buffer): Promise<void> {
  await pool(n, concurrency, () =>
    new Promise<void>((resolve) => {
      const s = net.connect({ port, host: '127.0.0.1' });
      s.on('error', () => resolve());
      s.once('connect', () => {
        if (payload) s.write(payload);
        s.end();
      });
      s.on('data', () => undefined);
      s.once('close', () => resolve());
    }),
  );
}

const CRLF = '\r\n';

/** Requests no HTTP/1 parser should accept (and a few that are merely huge). */
export function hostileHttp1Requests(seed: number): Array<{ what: string; chunks: Buffer[] }> {
  const next = rng(seed);
  const b = (s: string): Buffer => Buffer.from(s, 'latin1');
  const out: Array<{ what: string; chunks: Buffer[] }> = [
    { what: '1 MiB header value', chunks: [b(`GET /big HTTP/1.1${CRLF}Host: x${CRLF}X-Big: `), b('a'.repeat(1 << 20)), b(`${CRLF}${CRLF}`)] },
    { what: '20000 headers', chunks: [b(`GET /many HTTP/1.1${CRLF}${Array.from({ length: 20000 }, (_, i) => `X-H${i}: v${CRLF}`).join('')}${CRLF}`)] },
    { what: '100 KiB request target', chunks: [b(`GET /${'p'.repeat(100_000)} HTTP/1.1${CRLF}Host: x${CRLF}${CRLF}`)] },
    {
      what: 'invalid UTF-8 and control bytes in target and headers',
      chunks: [Buffer.concat([b('GET /'), Buffer.from([0xff, 0xfe, 0xc0, 0xaf, 0xed, 0xa0, 0x80, 0x25, 0x5a]), b(` HTTP/1.1${CRLF}Host: `), Buffer.from([0xff, 0x00, 0x01, 0x7f]), b(`${CRLF}X-\u00ff: \u0080${CRLF}${CRLF}`)])],
    },
    { what: 'binary method', chunks: [Buffer.concat([Buffer.from([0xde, 0xad, 0xbe, 0xef]), b(` / HTTP/1.1${CRLF}${CRLF}`)])] },
    { what: 'chunk size overflow', chunks: [b(`POST /chunk HTTP/1.1${CRLF}Host: x${CRLF}Transfer-Encoding: chunked${CRLF}${CRLF}ffffffffffffffffffffffff${CRLF}abc${CRLF}`)] },
    { what: 'negative chunk size', chunks: [b(`POST /chunk HTTP/1.1${CRLF}Host: x${CRLF}Transfer-Encoding: chunked${CRLF}${CRLF}-5${CRLF}abc${CRLF}0${CRLF}${CRLF}`)] },
    { what: 'Content-Length beyond 2^64', chunks: [b(`POST /cl HTTP/1.1${CRLF}Host: x${CRLF}Content-Length: 99999999999999999999999${CRLF}${CRLF}abc`)] },
    { what: 'negative Content-Length', chunks: [b(`POST /cl HTTP/1.1${CRLF}Host: x${CRLF}Content-Length: -1${CRLF}${CRLF}`)] },
    { what: 'Content-Length and chunked together', chunks: [b(`POST /smuggle HTTP/1.1${CRLF}Host: x${CRLF}Content-Length: 4${CRLF}Transfer-Encoding: chunked${CRLF}${CRLF}0${CRLF}${CRLF}GET /inner HTTP/1.1${CRLF}Host: x${CRLF}${CRLF}`)] },
    { what: 'bare LF and spaces in names', chunks: [b(`GET /lf HTTP/1.1\nHost : x\nBad Name: y\n\n`)] },
    { what: 'HTTP/9.9 and a 3-digit garbage version', chunks: [b(`GET / HTTP/9.9${CRLF}${CRLF}`), b(`GET / HTTP/1.1000${CRLF}${CRLF}`)] },
    { what: '2000 pipelined requests in one write', chunks: [b(`GET /pipe HTTP/1.1${CRLF}Host: x${CRLF}${CRLF}`.repeat(2000))] },
    { what: 'a head cut at every byte boundary', chunks: [...`GET /slow HTTP/1.1${CRLF}Host: x${CRLF}${CRLF}`].map((c) => b(c)) },
    { what: 'request then close mid-body', chunks: [b(`POST /cut HTTP/1.1${CRLF}Host: x${CRLF}Content-Length: 1000000${CRLF}${CRLF}partial`)] },
  ];
  for (let i = 0; i < 40; i++) {
    out.push({ what: `random bytes #${i}`, chunks: [randomBytes(next, 1 + (next() % 4096))] });
    // a valid start followed by random bytes: gets past protocol detection into the parser
    out.push({ what: `GET + random #${i}`, chunks: [Buffer.concat([b('GET /'), randomBytes(next, 1 + (next() % 2048))])] });
  }
  return out;
}

/** Responses a hostile server sends to whatever it is asked (for the client-side parser). */
export function hostileHttp1Responses(seed: number): Buffer[] {
  const next = rng(seed);
  const b = (s: string): Buffer => Buffer.from(s, 'latin1');
  const out = [
    b(`HTTP/1.1 200 OK${CRLF}X-Big: ${'a'.repeat(200_000)}${CRLF}Content-Length: 0${CRLF}${CRLF}`),
    b(`HTTP/1.1 99999 Weird${CRLF}${CRLF}`),
    b(`HTTP/1.1 -1 Negative${CRLF}Content-Length: 0${CRLF}${CRLF}`),
    Buffer.concat([b('HTTP/1.1 200 '), Buffer.from([0xff, 0xfe, 0x00]), b(`${CRLF}Content-Length: 2${CRLF}${CRLF}ok`)]),
    b(`HTTP/1.1 200 OK${CRLF}Transfer-Encoding: chunked${CRLF}${CRLF}fffffffffffffffffff${CRLF}`),
    b(`HTTP/1.1 100 Continue${CRLF}${CRLF}`.repeat(5000)),
    b(`HTTP/1.1 200 OK${CRLF}Content-Length: 5${CRLF}${CRLF}hello`.repeat(500)),
    b(`HTTP/1.1 101 Switching Protocols${CRLF}Upgrade: h2c${CRLF}Connection: Upgrade${CRLF}${CRLF}`),
  ];
  for (let i = 0; i < 20; i++) out.push(randomBytes(next, 1 + (next() % 4096)));
  return out;
}

// ---- HTTP/2 ----

export const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export function h2frame(type: number, flags: number, stream: number, payload: Buffer, lengthOverride?: number): Buffer {
  const h = Buffer.alloc(9);
  const len = lengthOverride ?? payload.length;
  h.writeUIntBE(len & 0xffffff, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream & 0x7fffffff, 5);
  return Buffer.concat([h, payload]);
}

const DATA = 0;
const HEADERS = 1;
const SETTINGS = 4;
const CONTINUATION = 9;
const END_STREAM = 1;
const END_HEADERS = 4;

/** HPACK integer with an n-bit prefix (RFC 7541 §5.1), first byte ORed with `mask`. */
export function hpackInt(value: number, prefixBits: number, mask: number): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([mask | value]);
  const out = [mask | max];
  let v = value - max;
  while (v >= 128) {
    out.push((v % 128) + 128);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Buffer.from(out);
}

/** Literal with incremental indexing, new name (both raw strings). */
export function hpackLiteralIndexed(name: string, value: string): Buffer {
  return Buffer.concat([Buffer.from([0x40]), hpackInt(name.length, 7, 0), Buffer.from(name), hpackInt(value.length, 7, 0), Buffer.from(value)]);
}

/** A valid request head: :method GET, :scheme http, :path, :authority (static table + literal). */
export function hpackGet(path: string): Buffer {
  return Buffer.concat([Buffer.from([0x82, 0x86]), Buffer.from([0x44]), hpackInt(path.length, 7, 0), Buffer.from(path), Buffer.from([0x41, 0x01, 0x78])]);
}

/** Client connections whose header blocks attack the HPACK decoder and the frame layer. */
export function hostileH2Connections(seed: number): Array<{ what: string; chunks: Buffer[] }> {
  const next = rng(seed);
  const settings = (pairs: Array<[number, number]>): Buffer => {
    const p = Buffer.alloc(pairs.length * 6);
    pairs.forEach(([id, v], i) => {
      p.writeUInt16BE(id, i * 6);
      p.writeUInt32BE(v >>> 0, i * 6 + 2);
    });
    return h2frame(SETTINGS, 0, 0, p);
  };
  const open = [H2_PREFACE, settings([])];
  const headers = (stream: number, block: Buffer, flags = END_HEADERS | END_STREAM): Buffer => h2frame(HEADERS, flags, stream, block);
  const bomb: Buffer[] = [];
  // table bomb: announce the largest table, then insert entries that each fill it, one write each
  bomb.push(H2_PREFACE, settings([[1, 0xffffffff]]));
  for (let i = 0; i < 2000; i++) {
    bomb.push(headers(1 + 2 * i, Buffer.concat([hpackInt(0xfffffff, 5, 0x20), hpackGet('/bomb'), hpackLiteralIndexed(`x-bomb-${i}`, 'v'.repeat(400))])));
  }
  const contFlood: Buffer[] = [...open, headers(1, hpackGet('/cont'), END_STREAM)];
  for (let i = 0; i < 5000; i++) contFlood.push(h2frame(CONTINUATION, 0, 1, hpackLiteralIndexed(`c${i}`, 'y'.repeat(200))));
  const streamFlood: Buffer[] = [...open];
  for (let i = 0; i < 5000; i++) streamFlood.push(headers(1 + 2 * i, hpackGet(`/open/${i}`), END_HEADERS));
  const out: Array<{ what: string; chunks: Buffer[] }> = [
    { what: 'HPACK table bomb (size update 2^28-1, 2000 x 400-byte inserts)', chunks: bomb },
    { what: 'CONTINUATION flood (5000 frames, no END_HEADERS)', chunks: contFlood },
    { what: '5000 streams opened, never ended', chunks: streamFlood },
    { what: 'HPACK index past the table', chunks: [...open, headers(1, Buffer.concat([Buffer.from([0x82]), hpackInt(0x0fffffff, 7, 0x80)]))] },
    { what: 'HPACK integer overflow', chunks: [...open, headers(1, Buffer.from([0xff, ...Array(20).fill(0xff), 0x01]))] },
    { what: 'HPACK string length past the block', chunks: [...open, headers(1, Buffer.concat([Buffer.from([0x40]), hpackInt(0x7ffffff, 7, 0), Buffer.from('abc')]))] },
    { what: 'Huffman with EOS and bad padding', chunks: [...open, headers(1, Buffer.from([0x40, 0x84, 0xff, 0xff, 0xff, 0xff, 0x84, 0xff, 0xff, 0xff, 0x00]))] },
    { what: 'size update after a field', chunks: [...open, headers(1, Buffer.concat([Buffer.from([0x82]), hpackInt(100, 5, 0x20)]))] },
    { what: 'frame announcing 16 MiB, cut short', chunks: [...open, h2frame(HEADERS, END_HEADERS, 1, Buffer.from([0x82]), 0xffffff)] },
    { what: 'DATA on stream 0 and on a never-opened stream', chunks: [...open, h2frame(DATA, END_STREAM, 0, Buffer.alloc(100)), h2frame(DATA, END_STREAM, 99, Buffer.alloc(100))] },
    { what: 'SETTINGS with 10000 entries', chunks: [H2_PREFACE, settings(Array.from({ length: 10000 }, (_, i) => [i & 0xffff, i] as [number, number]))] },
    { what: 'invalid UTF-8 header value', chunks: [...open, headers(1, Buffer.concat([hpackGet('/utf8'), Buffer.from([0x40, 0x02]), Buffer.from('xx'), Buffer.from([0x04, 0xff, 0xfe, 0xc0, 0x80])]))] },
  ];
  for (let i = 0; i < 30; i++) out.push({ what: `preface + random frames #${i}`, chunks: [H2_PREFACE, randomBytes(next, 1 + (next() % 4096))] });
  return out;
}

// ---- DNS ----

function dnsHeader(id: number, flags: number, qd: number, an: number, ns = 0, ar = 0): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt16BE(id, 0);
  h.writeUInt16BE(flags, 2);
  h.writeUInt16BE(qd, 4);
  h.writeUInt16BE(an, 6);
  h.writeUInt16BE(ns, 8);
  h.writeUInt16BE(ar, 10);
  return h;
}

const QTAIL = Buffer.from([0, 1, 0, 1]); // type A, class IN

function name(labels: string[]): Buffer {
  return Buffer.concat([...labels.map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'latin1')])), Buffer.from([0])]);
}

/** DNS messages no parser should follow: pointer loops, impossible counts, names past 255 octets. */
export function hostileDnsMessages(seed: number, response: boolean): Array<{ what: string; msg: Buffer }> {
  const next = rng(seed);
  const f = response ? 0x8180 : 0x0100;
  const id = (): number => next() & 0xffff;
  const out = [
    { what: 'pointer to itself', msg: Buffer.concat([dnsHeader(id(), f, 1, 0), Buffer.from([0xc0, 0x0c]), QTAIL]) },
    { what: 'two pointers to each other', msg: Buffer.concat([dnsHeader(id(), f, 1, 0), Buffer.from([0xc0, 0x0e, 0xc0, 0x0c]), QTAIL]) },
    { what: 'pointer past the end', msg: Buffer.concat([dnsHeader(id(), f, 1, 0), Buffer.from([0xff, 0xff]), QTAIL]) },
    {
      what: 'answer name a pointer loop through a label',
      msg: Buffer.concat([dnsHeader(id(), f, 1, 1), name(['loop', 'test']), QTAIL, Buffer.from([0x01, 0x61, 0xc0, 0x1d]), Buffer.from([0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4])]),
    },
    { what: 'name longer than 255 octets', msg: Buffer.concat([dnsHeader(id(), f, 1, 0), name(Array(10).fill('z'.repeat(63))), QTAIL]) },
    { what: 'label length 64..255 (reserved bits)', msg: Buffer.concat([dnsHeader(id(), f, 1, 0), Buffer.from([0x7f, ...Buffer.from('a'.repeat(20))]), QTAIL]) },
    { what: '65535 questions and answers announced, none present', msg: dnsHeader(id(), f, 0xffff, 0xffff, 0xffff, 0xffff) },
    { what: 'answer rdlength 65535', msg: Buffer.concat([dnsHeader(id(), f, 1, 1), name(['r', 'test']), QTAIL, Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0xff, 0xff, 1, 2])]) },
    { what: '5-byte message', msg: Buffer.from([1, 2, 3, 4, 5]) },
    { what: 'empty datagram', msg: Buffer.alloc(0) },
    { what: 'invalid UTF-8 name', msg: Buffer.concat([dnsHeader(id(), f, 1, 0), Buffer.from([4, 0xff, 0xfe, 0xc0, 0x80, 0]), QTAIL]) },
    { what: '4000-byte datagram of zeros after a header', msg: Buffer.concat([dnsHeader(id(), f, 1, 0), Buffer.alloc(4000)]) },
  ];
  for (let i = 0; i < 60; i++) out.push({ what: `random #${i}`, msg: randomBytes(next, 1 + (next() % 1500)) });
  return out;
}

/** A valid A query for `qname` with id `qid`. */
export function dnsQuery(qid: number, qname: string): Buffer {
  return Buffer.concat([dnsHeader(qid, 0x0100, 1, 0), name(qname.split('.')), QTAIL]);
}

/** A valid answer to dnsQuery(qid, qname): one A record 192.0.2.1. */
export function dnsAnswer(qid: number, qname: string): Buffer {
  return Buffer.concat([dnsHeader(qid, 0x8180, 1, 1), name(qname.split('.')), QTAIL, Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1])]);
}

/**
 * Send datagrams from one UDP socket to 127.0.0.1:port, waiting `gapMs` between them: a
 * connected socket (as glibc's resolver does), or with `connected: false` an unconnected one
 * (sendto with a destination, as Node's c-ares and many resolvers do).
 */
export async function sendDatagrams(port: number, msgs: Buffer[], gapMs = 1, connected = true): Promise<void> {
  const s = dgram.createSocket('udp4');
  s.on('error', () => undefined);
  s.on('message', () => undefined);
  if (connected) await new Promise<void>((r) => s.connect(port, '127.0.0.1', () => r()));
  for (const m of msgs) {
    await new Promise<void>((r) => (connected ? s.send(m, () => r()) : s.send(m, port, '127.0.0.1', () => r())));
    if (gapMs) await new Promise((r) => setTimeout(r, gapMs));
  }
  await new Promise((r) => setTimeout(r, 100));
  s.close();
}

// ---- the agent from outside ----

export async function healthz(url: string): Promise<Record<string, any>> {
  const r = await fetch(`${url}/healthz`);
  if (r.status !== 200) throw new Error(`/healthz answered ${r.status}`);
  return (await r.json()) as Record<string, any>;
}

/** Resident set size of a process, bytes. */
export function rssBytes(pid: number): number {
  const m = /^VmRSS:\s*(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

/** User + system CPU time of a process so far, seconds. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
}
