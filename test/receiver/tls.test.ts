/**
 * TLS on the receiver side, without a kernel: the TLS record recogniser, the connection
 * table's TLS gate (ciphertext never parsed, plaintext from SSL_* parsed, url.scheme https),
 * and the .dynsym reader that decides which files get the SSL_* uprobes (on real files).
 */
import test from 'ava';
import { existsSync } from 'node:fs';
import { elfDynamicFunctions } from '../../src/enrich/elf.js';
import { MonotonicClock } from '../../src/receiver/clock.js';
import { ConnectionTable, type ConnectionTableOptions } from '../../src/receiver/connections.js';
import { decodeBatch } from '../../src/receiver/decode.js';
import { Direction, EventType, SYS_SSL_READ, SYS_SSL_WRITE } from '../../src/receiver/layout.js';
import type { SidelightSpan } from '../../src/receiver/span.js';
import { looksLikeTlsRecord } from '../../src/receiver/tls.js';
import { batch, encodeEvent, type FakeEvent } from '../helpers/events.js';
import { need } from '../helpers/kernel.js';

const OPTS: ConnectionTableOptions = { maxConnections: 100, idleMs: 60_000, http: { captureQuery: false, maxPending: 16 } } as ConnectionTableOptions;

function harness() {
  const clock = new MonotonicClock();
  const spans: SidelightSpan[] = [];
  const table = new ConnectionTable(OPTS, clock, (s) => spans.push(s));
  const feed = (...evs: FakeEvent[]): void =>
    decodeBatch(batch(evs.map(encodeEvent)), (e) => table.onEvent(e), { records: 0, malformed: 0 });
  return { spans, table, feed };
}

const server = { sport: 8443, dport: 40000, saddr: [127, 0, 0, 1], daddr: [127, 0, 0, 2], sock: 0x1000n };
const client = { sport: 40000, dport: 443, saddr: [127, 0, 0, 2], daddr: [127, 0, 0, 1], sock: 0x2000n };
const IN = Direction.Ingress;
const OUT = Direction.Egress;
const clientHello = Uint8Array.of(0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03);
const serverHello = Uint8Array.of(0x16, 0x03, 0x03, 0x00, 0x7a, 0x02, 0x00, 0x00, 0x76, 0x03, 0x03);
const appData = Uint8Array.of(0x17, 0x03, 0x03, 0x00, 0x40, 0x9e, 0x11, 0x47, 0x20, 0x47, 0x45, 0x54);
const resp = 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok';

test('looksLikeTlsRecord: handshake, application data, one peeked byte; never HTTP', (t) => {
  t.true(looksLikeTlsRecord(clientHello));
  t.true(looksLikeTlsRecord(serverHello));
  t.true(looksLikeTlsRecord(appData));
  t.true(looksLikeTlsRecord(Uint8Array.of(0x16)), 'nginx peeks one byte (MSG_PEEK) first');
  t.false(looksLikeTlsRecord(new TextEncoder().encode('GET / HTTP/1.1\r\n')));
  t.false(looksLikeTlsRecord(new TextEncoder().encode('PRI * HTTP/2.0\r\n')));
  t.false(looksLikeTlsRecord(Uint8Array.of(0x16, 0x02, 0x01)), 'version major must be 3');
  t.false(looksLikeTlsRecord(Uint8Array.of(0x16, 0x03, 0x09)), 'version minor up to 4');
  t.false(looksLikeTlsRecord(new Uint8Array()));
});

test('server: handshake ciphertext is skipped, plaintext from SSL_read/SSL_write becomes an https span', (t) => {
  const h = harness();
  h.feed(
    { ...server, type: EventType.Accept, ret: 5 },
    { ...server, direction: IN, data: clientHello },
    { ...server, direction: OUT, data: serverHello },
    { ...server, direction: IN, syscall: SYS_SSL_READ, tsStart: 100n, tsEnd: 200n, data: 'GET /secure/path HTTP/1.1\r\nHost: example.com\r\n\r\n' },
    { ...server, direction: OUT, syscall: SYS_SSL_WRITE, tsStart: 300n, tsEnd: 400n, data: resp },
  );
  t.is(h.spans.length, 1);
  t.like(h.spans[0]!.attributes, { 'url.scheme': 'https', 'url.path': '/secure/path', 'http.response.status_code': 200, 'server.address': 'example.com' });
  t.like(h.table.stats, { tlsConnections: 1, tlsCiphertextConnections: 1, tlsCiphertextChunks: 2, tlsPlaintextChunks: 2, unknownChunks: 0 });
  t.is(h.table.stats.http.parseErrors, 0);
});

test('client: url.full is https://, the default port 443 is left out', (t) => {
  const h = harness();
  h.feed(
    { ...client, type: EventType.Connect, ret: -115 },
    { ...client, direction: OUT, data: clientHello },
    { ...client, direction: OUT, syscall: SYS_SSL_WRITE, data: 'GET /a HTTP/1.1\r\nHost: api.example.com\r\n\r\n' },
    { ...client, direction: IN, syscall: SYS_SSL_READ, data: resp },
  );
  t.is(h.spans.length, 1);
  t.is(h.spans[0]!.attributes['url.full'], 'https://api.example.com/a');
  t.is(h.spans[0]!.kind, 'client');
});

test('ciphertext alone (no uprobes, or a connection seen from its middle) never makes a span', (t) => {
  const h = harness();
  h.feed(
    { ...server, type: EventType.Accept, ret: 5 },
    { ...server, direction: IN, data: clientHello },
    // ciphertext that happens to contain request-looking bytes is still not parsed
    { ...server, direction: IN, data: appData },
    { ...server, direction: IN, data: 'GET / HTTP/1.1\r\nHost: x\r\n\r\n' },
    { ...server, direction: OUT, data: resp },
    // another socket, first seen in the middle of its TLS stream
    { ...client, sock: 0x3000n, direction: IN, data: appData },
    { ...client, sock: 0x3000n, direction: OUT, data: 'GET / HTTP/1.1\r\nHost: x\r\n\r\n' },
  );
  t.is(h.spans.length, 0);
  t.like(h.table.stats, { tlsCiphertextConnections: 2, tlsCiphertextChunks: 6, tlsConnections: 0 });
  t.is(h.table.stats.http.parseErrors, 0);
});

test('HTTP/2 over TLS: the client preface in SSL_write plaintext starts HTTP/2', (t) => {
  const h = harness();
  h.feed(
    { ...client, type: EventType.Connect, ret: -115 },
    { ...client, direction: OUT, data: clientHello },
    { ...client, direction: OUT, syscall: SYS_SSL_WRITE, data: 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n' },
  );
  t.is(h.table.stats.tlsConnections, 1);
  t.is(h.table.stats.unknownChunks, 0, 'recognised as HTTP/2 at once');
});

const LIBSSL = ['/usr/lib/x86_64-linux-gnu/libssl.so.3', '/lib/x86_64-linux-gnu/libssl.so.3', '/usr/lib64/libssl.so.3'].find((p) => existsSync(p));

test('elfDynamicFunctions: libssl.so.3 and Node export SSL_*; curl and a text file do not', (t) => {
  if (!need(t, LIBSSL ? undefined : 'no libssl.so.3 on this system')) return;
  const names = ['SSL_read', 'SSL_write', 'SSL_read_ex', 'SSL_write_ex', 'SSL_free', 'no_such_function'];
  t.deepEqual([...elfDynamicFunctions(LIBSSL!, names)!].sort(), ['SSL_free', 'SSL_read', 'SSL_read_ex', 'SSL_write', 'SSL_write_ex']);
  // Node links OpenSSL statically and exports its symbols
  t.true(elfDynamicFunctions(process.execPath, names)!.has('SSL_write'));
  // curl only imports SSL_* (undefined in its .dynsym)
  const curl = ['/usr/bin/curl'].find((p) => existsSync(p));
  if (curl) t.is(elfDynamicFunctions(curl, names)!.size, 0);
  t.is(elfDynamicFunctions('/etc/hostname', names), undefined);
  t.is(elfDynamicFunctions('/no/such/file', names), undefined);
});
