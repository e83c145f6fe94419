/**
 * traceparent injection, userspace half (src/receiver/inject.ts) on exact inputs: the record
 * layout of bpf/inject.h, and spans taking the injected ids whatever the order in which the
 * kernel's injection records and the syscall records arrive; where it must refuse.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import test from 'ava';
import { bpfObjectPath } from '../../src/paths.js';
import { MonotonicClock } from '../../src/receiver/clock.js';
import { ConnectionTable } from '../../src/receiver/connections.js';
import { decodeBatch } from '../../src/receiver/decode.js';
import {
  decodeInjectRecord,
  INJECT_CONFIG_SIZE,
  INJECT_EVENT,
  INJECT_NAMES,
  INJECT_SLOTS,
  InjectEventType,
  injectSlotKey,
  InjectTracker,
} from '../../src/receiver/inject.js';
import { Direction } from '../../src/receiver/layout.js';
import type { SidelightSpan } from '../../src/receiver/span.js';
import { batch, encodeEvent, type FakeEvent } from '../helpers/events.js';
import { need } from '../helpers/kernel.js';

const IN = Direction.Ingress;
const OUT = Direction.Egress;
const RESP = 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n';
const T = '4bf92f3577b34da6a3ce929d0e0e4736';
const S = '00f067aa0ba902b7';
const X = '0af7651916cd43dd8448eb211c80319c';

function req(path: string, extra = ''): string {
  return `GET ${path} HTTP/1.1\r\nHost: x\r\n${extra}\r\n`;
}

/** One record as bpf/inject.bpf.c writes it. */
function record(o: { type: number; tid: number; lport: number; rport: number; ts: bigint; traceparent: string }): Uint8Array {
  const b = new Uint8Array(INJECT_EVENT.size);
  const dv = new DataView(b.buffer);
  dv.setUint8(INJECT_EVENT.type, o.type);
  dv.setUint32(INJECT_EVENT.tgid, o.tid, true);
  dv.setUint32(INJECT_EVENT.tid, o.tid, true);
  dv.setUint16(INJECT_EVENT.lport, o.lport, true);
  dv.setUint16(INJECT_EVENT.rport, o.rport, true);
  dv.setBigUint64(INJECT_EVENT.ts, o.ts, true);
  b.set(new TextEncoder().encode(o.traceparent), INJECT_EVENT.traceparent);
  return b;
}

/**
 * A table with a tracker. `kernel`: records already stamped in the kernel's slots map (what
 * `pull` reads there), whether or not the ring buffer delivered them yet.
 */
function harness(kernel?: Uint8Array[]) {
  const spans: SidelightSpan[] = [];
  const table = new ConnectionTable({ maxConnections: 100, idleMs: 60_000, http: { captureQuery: false, maxPending: 16 } }, new MonotonicClock(), (s) =>
    spans.push(s),
  );
  const pull = kernel
    ? (type: number, tid: number, lport: number, rport: number): Uint8Array[] =>
        kernel.filter((b) => {
          const r = decodeInjectRecord(b);
          return r !== undefined && r.type === type && r.tid === tid && r.lport === lport && r.rport === rport;
        })
    : undefined;
  const tracker = new InjectTracker({ maxRecords: 64, maxAgeNs: 10_000_000_000n, ...(pull ? { pull } : {}) });
  table.traces.injections = tracker;
  const feed = (...evs: FakeEvent[]): void => decodeBatch(batch(evs.map(encodeEvent)), (e) => table.onEvent(e), { records: 0, malformed: 0 });
  const span = (kind: string): SidelightSpan => {
    const s = spans.find((x) => x.kind === kind);
    if (!s) throw new Error(`no ${kind} span`);
    return s;
  };
  return { spans, tracker, feed, span };
}

// A (tid 200) serves 41001 → 8000 and calls a server on another node: 42001 → 9000
const up = { sock: 0x100n, tgid: 200, tid: 200, sport: 8000, dport: 41001 };
const down = { sock: 0x200n, tgid: 200, tid: 200, sport: 42001, dport: 9000 };
const context = record({ type: InjectEventType.Context, tid: 200, lport: 8000, rport: 41001, ts: 2_100n, traceparent: `00-${T}-0000000000000000-01` });
const injected = record({ type: InjectEventType.Injected, tid: 200, lport: 42001, rport: 9000, ts: 3_500n, traceparent: `00-${T}-${S}-01` });
const serverRead: FakeEvent = { ...up, direction: IN, tsStart: 1_000n, tsEnd: 2_000n, data: req('/a') };
const clientWrite: FakeEvent = { ...down, direction: OUT, tsStart: 3_000n, tsEnd: 4_000n, data: req('/b') };
const rest: FakeEvent[] = [
  { ...down, direction: IN, tsStart: 5_000n, tsEnd: 6_000n, data: RESP },
  { ...up, direction: OUT, tsStart: 7_000n, tsEnd: 8_000n, data: RESP },
];

const orders = [
  { name: 'records before the syscall records', run: (h: ReturnType<typeof harness>) => {
    h.tracker.onRecord(context);
    h.tracker.onRecord(injected);
    h.feed(serverRead, clientWrite, ...rest);
  } },
  { name: 'records after the requests started (they wait)', run: (h: ReturnType<typeof harness>) => {
    h.feed(serverRead, clientWrite);
    h.tracker.onRecord(injected);
    h.tracker.onRecord(context);
    h.feed(...rest);
  } },
  { name: 'each record just after its own request', run: (h: ReturnType<typeof harness>) => {
    h.feed(serverRead);
    h.tracker.onRecord(context);
    h.feed(clientWrite);
    h.tracker.onRecord(injected);
    h.feed(...rest);
  } },
];

for (const o of orders) {
  test(`the CLIENT span takes the injected ids and its root SERVER the trace id: ${o.name}`, (t) => {
    const h = harness();
    o.run(h);
    const server = h.span('server');
    const client = h.span('client');
    t.is(client.traceId, T);
    t.is(client.spanId, S, 'the span id the callee sees as its parent');
    t.is(client.parentSpanId, server.spanId);
    t.is(server.traceId, T, 'the root request adopted the kernel-chosen trace id');
    t.is(server.parentSpanId, undefined);
    t.is(h.tracker.stats.clientsMatched, 1);
    t.is(h.tracker.stats.serversAdopted, 1);
    t.is(h.tracker.size, 0);
    t.is(h.tracker.waiterCount, 0, 'no request left waiting after its span');
  });
}

test('a CONTEXT record stamped long after its read (the thread held up between the two programs) and delivered late: the children emitted first still join the kernel’s trace', (t) => {
  // A reads its request at 2 µs, but the kernel's CONTEXT program runs 5 ms later; A then calls
  // an uninjected port (that span is emitted first) and then the injected one. The ring delivers
  // the CONTEXT record last; the slots map has had it since it was stamped.
  const late = record({ type: InjectEventType.Context, tid: 200, lport: 8000, rport: 41001, ts: 5_002_000n, traceparent: `00-${T}-0000000000000000-01` });
  const inj = record({ type: InjectEventType.Injected, tid: 200, lport: 42001, rport: 9000, ts: 6_500n * 1000n, traceparent: `00-${T}-${S}-01` });
  const h = harness([late, inj]);
  const other = { sock: 0x300n, tgid: 200, tid: 200, sport: 43001, dport: 9100 };
  h.feed(
    serverRead,
    { ...other, direction: OUT, tsStart: 5_100_000n, tsEnd: 5_200_000n, data: req('/side') },
    { ...other, direction: IN, tsStart: 5_300_000n, tsEnd: 5_400_000n, data: RESP },
    { ...down, direction: OUT, tsStart: 6_000_000n, tsEnd: 7_000_000n, data: req('/b') },
    { ...down, direction: IN, tsStart: 7_100_000n, tsEnd: 7_200_000n, data: RESP },
    { ...up, direction: OUT, tsStart: 7_300_000n, tsEnd: 7_400_000n, data: RESP },
  );
  h.tracker.onRecord(inj);
  h.tracker.onRecord(late);
  const server = h.span('server');
  const [side, client] = h.spans.filter((x) => x.kind === 'client');
  t.is(server.traceId, T, 'the SERVER took the kernel’s trace id');
  t.is(side!.traceId, T, 'the child emitted before the record arrived is in that trace');
  t.is(side!.parentSpanId, server.spanId);
  t.is(client!.traceId, T);
  t.is(client!.spanId, S);
  t.is(client!.parentSpanId, server.spanId, 'the injected CLIENT keeps its parent');
  t.is(h.tracker.stats.parentMismatch, 0);
  t.is(h.tracker.stats.serversAdopted, 1);
  t.is(h.tracker.stats.contextsLate, 1);
  t.is(h.tracker.size, 0, 'the ring’s late copies are recognised, not kept');
});

test('keep-alive, the first request without a CONTEXT record (the kernel saw it ambiguous): it never takes the next request’s, however close', (t) => {
  // request 1 read at 2 µs, answered at 3 µs; request 2 read at 4.5 µs, its record at 4.6 µs
  const next = record({ type: InjectEventType.Context, tid: 200, lport: 8000, rport: 41001, ts: 4_600n, traceparent: `00-${T}-0000000000000000-01` });
  const h = harness([next]);
  h.tracker.onRecord(next);
  h.feed(
    serverRead,
    { ...up, direction: OUT, tsStart: 3_000n, tsEnd: 4_000n, data: RESP },
    { ...up, direction: IN, tsStart: 4_500n, tsEnd: 4_500n, data: req('/a2') },
    { ...up, direction: OUT, tsStart: 5_000n, tsEnd: 6_000n, data: RESP },
  );
  const [first, second] = h.spans.filter((x) => x.kind === 'server');
  t.not(first!.traceId, T);
  t.is(second!.traceId, T);
  t.is(h.tracker.stats.serversAdopted, 1);
  t.is(h.tracker.size, 0);
});

test('a record stamped outside the write is not taken (keep-alive: the next request’s record)', (t) => {
  const h = harness();
  h.tracker.onRecord(record({ type: InjectEventType.Injected, tid: 200, lport: 42001, rport: 9000, ts: 9_000n, traceparent: `00-${T}-${S}-01` }));
  h.feed(serverRead, clientWrite, ...rest);
  t.not(h.span('client').spanId, S);
  t.is(h.tracker.stats.clientsMatched, 0);
  t.is(h.tracker.size, 1, 'still there for the request it belongs to');
});

test('a record for another thread or port is not taken', (t) => {
  const h = harness();
  h.tracker.onRecord(record({ type: InjectEventType.Injected, tid: 201, lport: 42001, rport: 9000, ts: 3_500n, traceparent: `00-${T}-${S}-01` }));
  h.tracker.onRecord(record({ type: InjectEventType.Injected, tid: 200, lport: 42002, rport: 9000, ts: 3_500n, traceparent: `00-${T}-${S}-01` }));
  h.feed(serverRead, clientWrite, ...rest);
  t.is(h.tracker.stats.clientsMatched, 0);
});

test('serving a request with its own traceparent: same trace id, the tree holds', (t) => {
  const h = harness();
  h.tracker.onRecord(record({ type: InjectEventType.Injected, tid: 200, lport: 42001, rport: 9000, ts: 3_500n, traceparent: `00-${X}-${S}-01` }));
  h.feed({ ...serverRead, data: req('/a', `traceparent: 00-${X}-b7ad6b7169203331-01\r\n`) }, clientWrite, ...rest);
  const server = h.span('server');
  const client = h.span('client');
  t.is(server.traceId, X);
  t.is(client.traceId, X);
  t.is(client.parentSpanId, server.spanId);
  t.is(h.tracker.stats.parentMismatch, 0);
});

test('an injected trace id other than the serving request’s: the CLIENT keeps the injected ids, no parent (counted)', (t) => {
  const h = harness();
  // the kernel saw the thread's context as ambiguous and started a new trace T
  h.tracker.onRecord(injected);
  h.feed({ ...serverRead, data: req('/a', `traceparent: 00-${X}-b7ad6b7169203331-01\r\n`) }, clientWrite, ...rest);
  const client = h.span('client');
  t.is(client.traceId, T);
  t.is(client.spanId, S);
  t.is(client.parentSpanId, undefined, 'never a parent in another trace');
  t.is(h.span('server').traceId, X, 'the request keeps its caller’s trace');
  t.is(h.tracker.stats.parentMismatch, 1);
});

test('a record arriving after the span was emitted changes nothing already sent; it ages out, counted', (t) => {
  const h = harness();
  h.feed(serverRead, clientWrite, ...rest);
  const before = h.span('client').spanId;
  h.tracker.onRecord(injected);
  t.is(h.span('client').spanId, before);
  h.tracker.sweep(20_000_000_000n);
  t.is(h.tracker.size, 0);
  t.is(h.tracker.stats.unclaimed, 1);
});

test('decodeInjectRecord: layout, and malformed records rejected', (t) => {
  const r = decodeInjectRecord(injected);
  t.like(r, { type: InjectEventType.Injected, tid: 200, lport: 42001, rport: 9000, ts: 3_500n, traceId: T, spanId: S, flags: 1 });
  t.like(decodeInjectRecord(context), { type: InjectEventType.Context, traceId: T, spanId: '' });
  t.is(decodeInjectRecord(injected.subarray(0, 95)), undefined, 'short');
  const bad = injected.slice();
  bad[INJECT_EVENT.type] = 9;
  t.is(decodeInjectRecord(bad), undefined, 'unknown type');
  t.is(decodeInjectRecord(record({ type: 1, tid: 1, lport: 1, rport: 1, ts: 1n, traceparent: `00-${'0'.repeat(32)}-${S}-01` })), undefined, 'all-zero trace id');
  t.is(decodeInjectRecord(record({ type: 2, tid: 1, lport: 1, rport: 1, ts: 1n, traceparent: `00-${T}-${S}-01` })), undefined, 'CONTEXT with a span id');
});

test('a record the ring buffer has not delivered yet is read from the kernel’s slots, and applied once', (t) => {
  const slots = [injected];
  const tracker = new InjectTracker({ maxRecords: 64, maxAgeNs: 10n ** 12n, pull: (type, tid, lport, rport) => (type === 1 && tid === 200 && lport === 42001 && rport === 9000 ? slots : []) });
  const spans: SidelightSpan[] = [];
  const table = new ConnectionTable({ maxConnections: 100, idleMs: 60_000, http: { captureQuery: false, maxPending: 16 } }, new MonotonicClock(), (s) => spans.push(s));
  table.traces.injections = tracker;
  decodeBatch(batch([serverRead, clientWrite, ...rest].map(encodeEvent)), (e) => table.onEvent(e), { records: 0, malformed: 0 });
  const client = spans.find((s) => s.kind === 'client')!;
  t.is(client.spanId, S);
  t.is(tracker.stats.pulled, 1);
  tracker.onRecord(injected); // the ring's copy, late
  t.is(tracker.size, 0, 'the late copy is recognised, not kept');
  t.is(tracker.stats.records, 1);
});

test('bounds: records and waiters past maxRecords drop the oldest, counted', (t) => {
  const tr = new InjectTracker({ maxRecords: 2, maxAgeNs: 10n ** 12n });
  for (let i = 0; i < 3; i++) tr.onRecord(record({ type: 1, tid: i, lport: 1, rport: 2, ts: 5n, traceparent: `00-${T}-${S}-01` }));
  t.is(tr.size, 2);
  t.is(tr.stats.unclaimed, 1);
});

test('the layout in inject.ts is the one compiled into build/inject.bpf.o (its BTF)', (t) => {
  const obj = bpfObjectPath(INJECT_NAMES.object);
  if (!need(t, existsSync(obj) ? undefined : `${obj} not built (make bpf)`)) return;
  const btf = JSON.parse(execFileSync('bpftool', ['-j', 'btf', 'dump', 'file', obj], { encoding: 'utf8', maxBuffer: 64 << 20 })) as {
    types: { name?: string; size?: number; members?: { name: string; bits_offset: number }[] }[];
  };
  const struct = (name: string) => {
    const s = btf.types.find((x) => x.name === name && x.members);
    if (!s) throw new Error(`no struct ${name} in ${obj}`);
    return { size: s.size, at: Object.fromEntries(s.members!.map((m) => [m.name, m.bits_offset / 8])) };
  };
  const ev = struct('sl_inject_event');
  t.is(ev.size, INJECT_EVENT.size);
  t.deepEqual(
    { type: ev.at['type'], source: ev.at['source'], tgid: ev.at['tgid'], tid: ev.at['tid'], lport: ev.at['lport'], rport: ev.at['rport'], sock: ev.at['sock'], ts: ev.at['ts'], serverSock: ev.at['server_sock'], traceparent: ev.at['traceparent'] },
    { type: INJECT_EVENT.type, source: INJECT_EVENT.source, tgid: INJECT_EVENT.tgid, tid: INJECT_EVENT.tid, lport: INJECT_EVENT.lport, rport: INJECT_EVENT.rport, sock: INJECT_EVENT.sock, ts: INJECT_EVENT.ts, serverSock: INJECT_EVENT.serverSock, traceparent: INJECT_EVENT.traceparent },
  );
  t.is(struct('sl_inject_config').size, INJECT_CONFIG_SIZE);
  const key = struct('sl_inj_key');
  t.is(key.size, injectSlotKey(1, 2, 3, 4).length);
  t.deepEqual([key.at['tid'], key.at['lport'], key.at['rport'], key.at['type']], [0, 4, 6, 8]);
  const slots = struct('sl_inj_slots');
  t.is(slots.size, INJECT_SLOTS * INJECT_EVENT.size + 8);
});
