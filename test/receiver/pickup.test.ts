/**
 * The pickup of connections that predate the agent (src/receiver/pickup.ts, bpf/iter.bpf.h):
 * struct sl_pickup decoding byte for byte, the seeding verdicts and counters, what a seeded
 * role changes in the connection table (a response tail in flight at start no longer gets a
 * keep-alive connection ignored), and the real iter/tcp program run by the addon's runIter()
 * over real loopback sockets of this process.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { existsSync } from 'node:fs';
import test from 'ava';
import { loadNative, SidelightNativeError, wrapNative } from '../../src/native.js';
import { bpfObjectPath, repoRoot } from '../../src/paths.js';
import { MonotonicClock } from '../../src/receiver/clock.js';
import { ConnectionTable, type ConnectionTableOptions } from '../../src/receiver/connections.js';
import { decodeBatch } from '../../src/receiver/decode.js';
import * as L from '../../src/receiver/layout.js';
import { decodePickup, newPickupStats, seedFromPickup, tcpStateName, type PickupRecord } from '../../src/receiver/pickup.js';
import type { SidelightSpan } from '../../src/receiver/span.js';
import { renderPrometheus, selfMetrics } from '../../src/otlp/selfmetrics.js';
import { batch, encodeEvent, type FakeEvent } from '../helpers/events.js';
import { kernelUnavailable, need } from '../helpers/kernel.js';
import { emptySelfSnapshot } from '../helpers/selfsnapshot.js';

const built = existsSync(`${repoRoot()}/native/build/Release/sidelight.node`) ? undefined : 'addon not built (make setup)';

interface FakePickup {
  sock: bigint;
  family?: 2 | 10;
  saddr: number[];
  daddr: number[];
  sport: number;
  dport: number;
  netns?: number;
  uid?: number;
  state?: number;
  flags?: number;
}

/** struct sl_pickup as the kernel side writes it. */
function encodePickup(p: FakePickup): Uint8Array {
  const b = new Uint8Array(L.PICKUP.size);
  const dv = new DataView(b.buffer);
  dv.setBigUint64(L.PICKUP.sock, p.sock, true);
  const c = L.PICKUP.conn;
  b.set(p.saddr, c + L.CONN.saddr);
  b.set(p.daddr, c + L.CONN.daddr);
  dv.setUint16(c + L.CONN.sport, p.sport, true);
  dv.setUint16(c + L.CONN.dport, p.dport, true);
  dv.setUint16(c + L.CONN.family, p.family ?? 2, true);
  dv.setUint32(c + L.CONN.netns, p.netns ?? 4026531840, true);
  dv.setUint32(L.PICKUP.uid, p.uid ?? 0, true);
  dv.setUint8(L.PICKUP.state, p.state ?? 1);
  dv.setUint8(L.PICKUP.flags, p.flags ?? 0);
  return b;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

const LO = [127, 0, 0, 1];
const V6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const V6B = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

test('sl_pickup layout and SL_PICK_* match the header', (t) => {
  if (!need(t, built)) return;
  const l = loadNative().layout();
  t.is(l.sl_pickup.size, L.PICKUP.size);
  t.deepEqual(l.sl_pickup.offsets, { sock: L.PICKUP.sock, conn: L.PICKUP.conn, uid: L.PICKUP.uid, state: L.PICKUP.state, flags: L.PICKUP.flags });
  const c = l.constants;
  t.deepEqual(L.PickFlag, { Server: c.SL_PICK_SERVER, Listener: c.SL_PICK_LISTENER, ListenLost: c.SL_PICK_LISTEN_LOST });
});

test('decodePickup: IPv4 and IPv6 records field by field; a cut record is left as trailing bytes', (t) => {
  const bytes = concat([
    encodePickup({ sock: 0xffff888100001000n, saddr: LO, daddr: [10, 1, 2, 3], sport: 8080, dport: 51000, netns: 4026531993, uid: 1000, state: 1, flags: L.PickFlag.Server }),
    encodePickup({ sock: 0xffff888100002000n, family: 10, saddr: V6, daddr: V6B, sport: 40100, dport: 443, state: 8 }),
    encodePickup({ sock: 0xffff888100003000n, saddr: [0, 0, 0, 0], daddr: [0, 0, 0, 0], sport: 8080, dport: 0, state: 10, flags: L.PickFlag.Listener }),
  ]);
  const cut = bytes.subarray(0, bytes.length - 10);
  const { records, trailing } = decodePickup(cut);
  t.is(trailing, L.PICKUP.size - 10);
  t.is(records.length, 2);
  t.deepEqual(records[0], {
    sock: 0xffff888100001000n,
    conn: { family: 4, local: { address: '127.0.0.1', port: 8080 }, remote: { address: '10.1.2.3', port: 51000 }, netns: 4026531993 },
    uid: 1000,
    state: 1,
    flags: L.PickFlag.Server,
  });
  t.deepEqual(records[1]!.conn, { family: 6, local: { address: '2001:db8::1', port: 40100 }, remote: { address: '2001:db8::2', port: 443 }, netns: 4026531840 });
  t.is(records[1]!.state, 8);
  t.is(tcpStateName(records[1]!.state), 'CLOSE_WAIT');
  // the whole buffer, as an ArrayBuffer (what runIter returns)
  const all = decodePickup(bytes.slice().buffer);
  t.is(all.trailing, 0);
  t.is(all.records.length, 3);
  t.is(all.records[2]!.flags, L.PickFlag.Listener);
  t.deepEqual(decodePickup(new Uint8Array(0)), { records: [], trailing: 0 });
});

const OPTS: ConnectionTableOptions = { maxConnections: 100, idleMs: 60_000, http: { captureQuery: false, maxPending: 16 } };

function harness(opts: Partial<ConnectionTableOptions> = {}) {
  const clock = new MonotonicClock();
  const spans: SidelightSpan[] = [];
  const newConns: number[] = [];
  const table = new ConnectionTable({ ...OPTS, onNewConnection: (ev) => newConns.push(ev.tgid), ...opts }, clock, (s) => spans.push(s));
  const feed = (...evs: FakeEvent[]): void => decodeBatch(batch(evs.map(encodeEvent)), (e) => table.onEvent(e), { records: 0, malformed: 0 });
  return { clock, spans, table, feed, newConns };
}

function rec(p: FakePickup): PickupRecord {
  return decodePickup(encodePickup(p)).records[0]!;
}

test('seedFromPickup: kernel verdicts become roles; every socket lands in exactly one counter', (t) => {
  const h = harness({ maxConnections: 4 });
  // an entry opened by an event before the pickup ran: accepted, role known
  h.feed({ type: L.EventType.Accept, sock: 0x50n, sport: 8080, dport: 50005, ret: 7 });
  const records = [
    rec({ sock: 0x10n, saddr: [0, 0, 0, 0], daddr: [0, 0, 0, 0], sport: 8080, dport: 0, state: 10, flags: L.PickFlag.Listener }),
    rec({ sock: 0x11n, saddr: LO, daddr: LO, sport: 8080, dport: 50001, flags: L.PickFlag.Server }),
    rec({ sock: 0x12n, saddr: LO, daddr: LO, sport: 50001, dport: 8080 }),
    rec({ sock: 0x13n, saddr: LO, daddr: LO, sport: 50002, dport: 8080, state: 9 }), // LAST_ACK
    rec({ sock: 0x14n, saddr: LO, daddr: LO, sport: 8080, dport: 50003, state: 8, flags: L.PickFlag.Server }), // CLOSE_WAIT
    rec({ sock: 0x50n, saddr: LO, daddr: LO, sport: 8080, dport: 50005, flags: L.PickFlag.Server }), // already known
    rec({ sock: 0x15n, saddr: LO, daddr: LO, sport: 50006, dport: 8080 }), // table full by now
  ];
  const st = newPickupStats();
  seedFromPickup(records, h.table, st, h.clock.nowMono());
  t.like(st, { listeners: 1, seen: 6, seededServer: 2, seededClient: 1, skippedClosing: 1, skippedKnown: 1, skippedTableFull: 1, skippedRoleUnsure: 0 });
  t.is(st.seededServer + st.seededClient + st.skippedClosing + st.skippedKnown + st.skippedTableFull + st.skippedRoleUnsure, st.seen);
  t.is(h.table.stats.pickedUp, 3);
  t.is(h.table.size, 4);
});

test('seedFromPickup: a lost listener makes client verdicts unsure (not seeded); server verdicts stand', (t) => {
  const h = harness();
  const st = newPickupStats();
  seedFromPickup(
    [
      rec({ sock: 0x10n, saddr: LO, daddr: [0, 0, 0, 0], sport: 9000, dport: 0, state: 10, flags: L.PickFlag.Listener | L.PickFlag.ListenLost }),
      rec({ sock: 0x11n, saddr: LO, daddr: LO, sport: 8080, dport: 50001, flags: L.PickFlag.Server }),
      rec({ sock: 0x12n, saddr: LO, daddr: LO, sport: 50001, dport: 8080 }),
    ],
    h.table,
    st,
    h.clock.nowMono(),
  );
  t.like(st, { listeners: 1, seen: 2, seededServer: 1, seededClient: 0, skippedRoleUnsure: 1 });
});

// A keep-alive connection whose response was still streaming when the agent started: the
// tail (chunked data, nothing HTTP-looking) comes first, then the next request.
const SERVER = { sport: 8080, dport: 50001, saddr: LO, daddr: LO, sock: 0x11n, tgid: 300 };
const CLIENT = { sport: 50001, dport: 8080, saddr: LO, daddr: LO, sock: 0x12n, tgid: 400 };
const tail = (side: typeof SERVER, dir: number, n: number): FakeEvent[] =>
  Array.from({ length: n }, (_, i) => ({ ...side, direction: dir, tsStart: BigInt(100 + i * 10), data: `c\r\npart-${String(i).padStart(6, '0')}\r\n` }));
const nextExchange = (side: typeof SERVER, reqDir: number, respDir: number): FakeEvent[] => [
  { ...side, direction: reqDir, tsStart: 10_000n, tsEnd: 10_100n, data: 'GET /after HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n' },
  { ...side, direction: respDir, tsStart: 12_000n, tsEnd: 12_100n, data: 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok' },
];

test('without the pickup: a 20-chunk response tail gets the keep-alive connection ignored, the next request is lost', (t) => {
  const h = harness();
  h.feed(...tail(SERVER, L.Direction.Egress, 20), ...nextExchange(SERVER, L.Direction.Ingress, L.Direction.Egress));
  h.feed(...tail(CLIENT, L.Direction.Ingress, 20), ...nextExchange(CLIENT, L.Direction.Egress, L.Direction.Ingress));
  t.is(h.spans.length, 0);
  t.is(h.table.stats.notHttp, 2);
});

test('with the pickup: the seeded roles skip the response tail; the next request is a SERVER and a CLIENT span', (t) => {
  const h = harness();
  const st = newPickupStats();
  seedFromPickup(
    [
      rec({ sock: SERVER.sock, saddr: LO, daddr: LO, sport: 8080, dport: 50001, flags: L.PickFlag.Server }),
      rec({ sock: CLIENT.sock, saddr: LO, daddr: LO, sport: 50001, dport: 8080 }),
    ],
    h.table,
    st,
    h.clock.nowMono(),
  );
  t.like(st, { seededServer: 1, seededClient: 1 });
  h.feed(...tail(SERVER, L.Direction.Egress, 20), ...nextExchange(SERVER, L.Direction.Ingress, L.Direction.Egress));
  h.feed(...tail(CLIENT, L.Direction.Ingress, 20), ...nextExchange(CLIENT, L.Direction.Egress, L.Direction.Ingress));
  t.deepEqual(
    h.spans.map((s) => [s.kind, s.attributes['url.path'] ?? s.attributes['url.full'], s.process.tgid]),
    [
      ['server', '/after', 300],
      ['client', 'http://127.0.0.1:8080/after', 400],
    ],
  );
  t.is(h.table.stats.pickupTailChunks, 40);
  t.is(h.table.stats.notHttp, 0);
  // the owning process is learnt from the first event of each seeded connection
  t.deepEqual(h.newConns, [300, 400]);
});

test('an accept queued behind the pickup replaces the seeded entry silently (same socket, not a reuse)', (t) => {
  const h = harness();
  h.table.seed(0x11n, rec({ sock: 0x11n, saddr: LO, daddr: LO, sport: 8080, dport: 50001 }).conn, 'server', h.clock.nowMono());
  h.feed({ ...SERVER, type: L.EventType.Accept, ret: 6 }, ...nextExchange(SERVER, L.Direction.Ingress, L.Direction.Egress));
  t.is(h.table.stats.replaced, 0);
  t.is(h.spans.length, 1);
  t.is(h.spans[0]!.kind, 'server');
});

test('a data event before the seed: the seed gives the role the bytes had not told', (t) => {
  const h = harness();
  h.feed({ ...SERVER, direction: L.Direction.Egress, data: 'c\r\npart-000000\r\n' });
  const outcome = h.table.seed(SERVER.sock, rec({ sock: SERVER.sock, saddr: LO, daddr: LO, sport: 8080, dport: 50001 }).conn, 'server', h.clock.nowMono());
  t.is(outcome, 'role_set');
  h.feed(...nextExchange(SERVER, L.Direction.Ingress, L.Direction.Egress));
  t.is(h.spans.length, 1);
  t.is(h.spans[0]!.kind, 'server');
});

// ---- the real iterator --------------------------------------------------------------

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)));
}

test.serial('runIter(sl_iter_tcp): real loopback sockets come back with the kernel verdict (server child vs client), port-filtered', async (t) => {
  if (!need(t, kernelUnavailable())) return;
  const accepted: Socket[] = [];
  const srv = createServer((s) => accepted.push(s));
  const port = await listen(srv);
  const other = createServer(() => {});
  const otherPort = await listen(other);
  const cli = connect(port, '127.0.0.1');
  const cli2 = connect(otherPort, '127.0.0.1');
  await Promise.all([new Promise((r) => cli.once('connect', r)), new Promise((r) => cli2.once('connect', r))]);
  while (accepted.length < 1) await new Promise((r) => setTimeout(r, 10));
  const clientPort = cli.localPort!;
  const native = loadNative();
  const rodata = L.encodeConfig({ selfTgid: 1, captureBytes: 512, wakeupBytes: 4096, pidMode: L.FilterMode.Off, cgroupMode: L.FilterMode.Off, portMode: L.FilterMode.Include });
  const obj = wrapNative(() => native.open(bpfObjectPath(L.BPF_NAMES.object), rodata, {}));
  let out: { data: ArrayBuffer; truncated: boolean };
  let small: { data: ArrayBuffer; truncated: boolean };
  let missing: unknown;
  try {
    obj.mapUpdate(L.BPF_NAMES.portFilter, L.leU16(port), Uint8Array.of(L.FILTER_INCLUDE));
    out = wrapNative(() => obj.runIter(L.ITER_PROGRAMS.tcp, 1 << 20));
    small = wrapNative(() => obj.runIter(L.ITER_PROGRAMS.tcp, 8));
    try {
      wrapNative(() => obj.runIter('no_such_iter', 64));
    } catch (e) {
      missing = e;
    }
  } finally {
    obj.close();
    cli.destroy();
    cli2.destroy();
    for (const s of accepted) s.destroy();
    srv.close();
    other.close();
  }
  t.false(out.truncated);
  t.is(out.data.byteLength % L.PICKUP.size, 0);
  const { records } = decodePickup(out.data);
  const ours = records.filter((r) => r.conn.local.port === port || r.conn.remote.port === port);
  t.is(records.length, ours.length, 'the port filter applies: nothing about other ports');
  const listener = ours.find((r) => r.flags & L.PickFlag.Listener);
  t.truthy(listener);
  t.is(listener!.state, 10);
  const child = ours.find((r) => r.conn.local.port === port && !(r.flags & L.PickFlag.Listener));
  const client = ours.find((r) => r.conn.remote.port === port);
  t.truthy(child);
  t.truthy(client);
  t.is(child!.flags, L.PickFlag.Server);
  t.is(child!.state, 1);
  t.is(child!.uid, process.getuid!());
  t.is(child!.conn.remote.port, clientPort);
  t.is(client!.flags, 0);
  t.is(client!.conn.local.port, clientPort);
  t.is(client!.conn.local.address, '127.0.0.1');
  t.not(child!.sock, client!.sock);
  t.is(child!.conn.netns, client!.conn.netns);
  t.true(child!.conn.netns > 0);
  // the read bound: 8 bytes of output, the rest left unread
  t.true(small.truncated);
  t.is(small.data.byteLength, 8);
  t.true(missing instanceof SidelightNativeError);
  t.is((missing as SidelightNativeError).step, 'iter');
  t.is((missing as SidelightNativeError).code, 'ENOENT');
  t.regex((missing as Error).message, /iter no_such_iter: no such program in syscalls\.bpf\.o/);
});

test('self-metrics: sidelight.pickup.* from the pickup counters, every outcome present', (t) => {
  const snap = emptySelfSnapshot({ pickup: { listeners: 3, seen: 9, seededServer: 4, seededClient: 2, skippedKnown: 1, skippedClosing: 1, skippedRoleUnsure: 0, skippedTableFull: 1, failed: 0 } });
  const text = renderPrometheus(selfMetrics(snap));
  for (const line of [
    'sidelight_pickup_sockets_total{outcome="seeded_server"} 4',
    'sidelight_pickup_sockets_total{outcome="seeded_client"} 2',
    'sidelight_pickup_sockets_total{outcome="already_known"} 1',
    'sidelight_pickup_sockets_total{outcome="closing"} 1',
    'sidelight_pickup_sockets_total{outcome="role_unsure"} 0',
    'sidelight_pickup_sockets_total{outcome="table_full"} 1',
    'sidelight_pickup_listeners_total 3',
    'sidelight_pickup_failures_total 0',
  ]) {
    t.true(text.includes(`${line}\n`), line);
  }
  const { pickup: _, ...without } = snap;
  t.false(renderPrometheus(selfMetrics(without)).includes('sidelight_pickup'), 'absent without a pickup snapshot');
});
