import test from 'ava';
import { decodeBatch, decodeBatchFrom, formatIPv6, type KernelEvent } from '../../src/receiver/decode.js';
import { EventType, Direction } from '../../src/receiver/layout.js';
import { batch, encodeEvent } from '../helpers/events.js';

function decodeAll(buf: ArrayBuffer): { events: KernelEvent[]; records: number; malformed: number } {
  const events: KernelEvent[] = [];
  const stats = { records: 0, malformed: 0 };
  decodeBatch(buf, (e) => events.push(e), stats);
  return { events, ...stats };
}

test('decodes every field of a data event', (t) => {
  const { events, records, malformed } = decodeAll(
    batch([
      encodeEvent({
        type: EventType.Data,
        direction: Direction.Egress,
        syscall: 4,
        proto: 17,
        tgid: 4242,
        tid: 4243,
        fd: 17,
        sock: 0xffff888812345678n,
        cgroupId: 99n,
        tsStart: 123_456_789n,
        tsEnd: 123_456_999n,
        ret: 1000,
        comm: 'nginx',
        family: 2,
        saddr: [10, 1, 2, 3],
        daddr: [192, 168, 7, 9],
        sport: 80,
        dport: 51234,
        netns: 4026532000,
        data: 'HTTP/1.1 200 OK\r\n',
      }),
    ]),
  );
  t.is(records, 1);
  t.is(malformed, 0);
  const e = events[0]!;
  t.like(e, {
    type: EventType.Data,
    direction: Direction.Egress,
    syscall: 4,
    proto: 17,
    tgid: 4242,
    tid: 4243,
    fd: 17,
    sock: 0xffff888812345678n,
    cgroupId: 99n,
    tsStart: 123_456_789n,
    tsEnd: 123_456_999n,
    ret: 1000,
    comm: 'nginx',
  });
  t.deepEqual(e.conn, {
    family: 4,
    local: { address: '10.1.2.3', port: 80 },
    remote: { address: '192.168.7.9', port: 51234 },
    netns: 4026532000,
  });
  t.is(new TextDecoder().decode(e.data), 'HTTP/1.1 200 OK\r\n');
});

test('IPv6 addresses: compression, v4-mapped become IPv4', (t) => {
  const v6 = (bytes: number[]): string => formatIPv6(Uint8Array.from(bytes), 0);
  t.is(v6([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]), '::1');
  t.is(v6([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1]), '127.0.0.1');
  t.is(v6([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1]), '2001:db8::1:0:0:1');
  t.is(v6([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0]), 'fe80::1234:5678:9abc:def0');
  const { events } = decodeAll(
    batch([encodeEvent({ family: 10, saddr: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1], daddr: [...Array(15).fill(0), 1] })]),
  );
  t.is(events[0]!.conn.local.address, '127.0.0.1');
  t.is(events[0]!.conn.family, 4);
  t.is(events[0]!.conn.remote.address, '::1');
});

test('many records in one batch, payload views do not overlap', (t) => {
  const recs = Array.from({ length: 500 }, (_, i) => encodeEvent({ tgid: i + 1, data: `req-${i}` }));
  const { events, records } = decodeAll(batch(recs));
  t.is(records, 500);
  t.is(events.length, 500);
  events.forEach((e, i) => {
    t.is(e.tgid, i + 1);
    t.is(new TextDecoder().decode(e.data), `req-${i}`);
  });
});

test('malformed records are counted and skipped, never thrown', (t) => {
  const good = encodeEvent({ data: 'x' });
  const badType = encodeEvent({ type: 9 });
  const short = new Uint8Array(20);
  const lying = encodeEvent({ data: 'abc' });
  new DataView(lying.buffer).setUint32(56, 4000, true); // cap_len past the record
  const r = decodeAll(batch([good, badType, short, lying, good]));
  t.is(r.events.length, 2);
  t.is(r.malformed, 3);
  // a truncated frame: the length prefix says more than the batch holds
  const b = new Uint8Array(batch([good]));
  const cut = b.slice(0, b.length - 10).buffer;
  const r2 = decodeAll(cut);
  t.is(r2.events.length, 0);
  t.is(r2.malformed, 1);
  t.notThrows(() => decodeAll(new ArrayBuffer(3)));
});

test('decodeBatchFrom stops when asked to yield and resumes at the record where it stopped: every record once, in order', (t) => {
  const recs = Array.from({ length: 1000 }, (_, i) => encodeEvent({ tgid: i + 1, data: `r${i}` }));
  const b = batch(recs);
  const seen: number[] = [];
  const stats = { records: 0, malformed: 0 };
  let asked = 0;
  let off = 0;
  let slices = 0;
  while (off < b.byteLength) {
    // yield on every other question: slices of 128 records, except the first (64)
    off = decodeBatchFrom(b, (e) => seen.push(e.tgid), stats, off, () => ++asked % 2 === 1);
    slices++;
  }
  t.is(off, b.byteLength);
  t.deepEqual(seen, recs.map((_, i) => i + 1));
  t.deepEqual(stats, { records: 1000, malformed: 0 });
  t.true(slices >= 8 && slices <= 16, `slices ${slices}`);
  // without shouldYield: the whole batch at once
  const all: number[] = [];
  t.is(decodeBatchFrom(b, (e) => all.push(e.tgid), { records: 0, malformed: 0 }), b.byteLength);
  t.is(all.length, 1000);
});
