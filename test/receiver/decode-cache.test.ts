import test from 'ava';
import { decodeBatch, decodeCacheStats, decodeConn, DECODE_CACHE_SLOTS, type KernelEvent } from '../../src/receiver/decode.js';
import { EVENT, EventType, Direction } from '../../src/receiver/layout.js';
import { batch, encodeEvent, type FakeEvent } from '../helpers/events.js';
import { rngUnit } from '../helpers/hostile.js';

// values that differ from each other in one byte or one field, so a cache keyed too loosely would mix them up
const COMMS = ['nginx', 'nginy', 'nginx-worker-12', 'nginx-worker-13', 'MainThread', 'libuv-worker', 'curl', 'x'];
const SOCKS = [0n, 1n, 0xffff888812345678n, 0xffff888812345679n, 0x7fff888812345678n, 0xffffffffffffffffn, 1n << 32n];
const CGROUPS = [0n, 99n, 100n, 1n << 40n, (1n << 40n) + 99n];
const RETS = [0, 1, 100, -11, -104, 2 ** 31, -(2 ** 31), 2 ** 40, -(2 ** 40), 2 ** 53 - 1, -(2 ** 53) + 1];
const CONNS: Partial<FakeEvent>[] = [
  { family: 2, saddr: [127, 0, 0, 1], daddr: [127, 0, 0, 1], sport: 8080, dport: 40000, netns: 4026531840 },
  { family: 2, saddr: [127, 0, 0, 1], daddr: [127, 0, 0, 1], sport: 8080, dport: 40001, netns: 4026531840 },
  { family: 2, saddr: [127, 0, 0, 1], daddr: [127, 0, 0, 1], sport: 8080, dport: 40000, netns: 4026531841 },
  { family: 2, saddr: [10, 0, 0, 1], daddr: [127, 0, 0, 1], sport: 8080, dport: 40000, netns: 4026531840 },
  { family: 10, saddr: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], daddr: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], sport: 443, dport: 50000, netns: 1 },
  { family: 10, saddr: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1], daddr: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], sport: 443, dport: 50000, netns: 1 },
];

test('decoding through the caches gives exactly what fresh decoding gives, across collisions and near-duplicates', (t) => {
  const r = rngUnit(9);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(r() * a.length)]!;
  const fakes: FakeEvent[] = [];
  for (let i = 0; i < 20_000; i++) {
    // mostly repeats, sometimes one of many distinct conns (more than the cache has slots)
    const conn = r() < 0.8 ? pick(CONNS) : { family: 2 as const, saddr: [10, 1, (i >> 8) & 255, i & 255], daddr: [10, 2, 0, 1], sport: 1 + (i % 65535), dport: 80, netns: 7 };
    fakes.push({
      type: EventType.Data,
      direction: r() < 0.5 ? Direction.Egress : Direction.Ingress,
      syscall: 1,
      tgid: 1000 + (i % 7),
      tid: 2000 + (i % 13),
      sock: r() < 0.9 ? pick(SOCKS) : BigInt(i) << 20n,
      cgroupId: pick(CGROUPS),
      tsStart: BigInt(i) * 1000n,
      tsEnd: BigInt(i) * 1000n + 7n,
      ret: pick(RETS),
      comm: r() < 0.95 ? pick(COMMS) : `c${i % 1000}`,
      ...conn,
      data: 'x',
    });
  }
  const records = fakes.map(encodeEvent);
  const events: KernelEvent[] = [];
  const stats = { records: 0, malformed: 0 };
  const hits0 = decodeCacheStats.hits;
  decodeBatch(batch(records), (e) => events.push(e), stats);
  t.is(stats.malformed, 0);
  t.is(events.length, fakes.length);
  for (let i = 0; i < fakes.length; i++) {
    const f = fakes[i]!;
    const e = events[i]!;
    const rec = records[i]!;
    const dv = new DataView(rec.buffer, rec.byteOffset, rec.byteLength);
    const want = {
      sock: f.sock,
      cgroupId: f.cgroupId,
      ret: Number(dv.getBigInt64(EVENT.ret, true)),
      comm: f.comm,
      conn: decodeConn(rec, dv, EVENT.conn),
    };
    const got = { sock: e.sock, cgroupId: e.cgroupId, ret: e.ret, comm: e.comm, conn: e.conn };
    if (JSON.stringify(got, (_, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v)) !== JSON.stringify(want, (_, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v))) {
      t.deepEqual(got, want, `event ${i}`);
      return;
    }
  }
  t.true(decodeCacheStats.hits - hits0 > fakes.length, 'the caches were used');
  t.true(DECODE_CACHE_SLOTS > 0);
});

test('events handed out share conn objects only when they are equal', (t) => {
  const base: FakeEvent = { type: EventType.Data, direction: Direction.Egress, tgid: 1, tid: 1, comm: 'a', ...CONNS[0], data: 'x' };
  const events: KernelEvent[] = [];
  decodeBatch(batch([encodeEvent(base), encodeEvent(base), encodeEvent({ ...base, ...CONNS[1] })]), (e) => events.push(e), { records: 0, malformed: 0 });
  t.is(events[0]!.conn, events[1]!.conn);
  t.not(events[0]!.conn, events[2]!.conn);
  t.is(events[2]!.conn.remote.port, 40001);
  t.is(events[0]!.conn.remote.port, 40000);
});
