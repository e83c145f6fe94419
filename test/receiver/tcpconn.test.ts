import test from 'ava';
import { decodeBatch, type KernelEvent } from '../../src/receiver/decode.js';
import { EventType, TCP_SUMMARY, TcpFlag, TcpRole } from '../../src/receiver/layout.js';
import { errnoName, TcpTracker, type TcpFact } from '../../src/receiver/tcpconn.js';
import { batch, encodeEvent, type FakeEvent } from '../helpers/events.js';

function decode(e: FakeEvent): KernelEvent {
  const out: KernelEvent[] = [];
  decodeBatch(batch([encodeEvent(e)]), (ev) => out.push(ev), { records: 0, malformed: 0 });
  return out[0]!;
}

function summary(s: { role: number; flags?: number; oldState?: number; skErr?: number; sent?: bigint; received?: bigint; openNs?: bigint; srttUs?: number; retrans?: number }): Uint8Array {
  const b = new Uint8Array(TCP_SUMMARY.size);
  const dv = new DataView(b.buffer);
  dv.setBigUint64(TCP_SUMMARY.bytes_sent, s.sent ?? 0n, true);
  dv.setBigUint64(TCP_SUMMARY.bytes_received, s.received ?? 0n, true);
  dv.setBigUint64(TCP_SUMMARY.open_ns, s.openNs ?? 0n, true);
  dv.setUint32(TCP_SUMMARY.srtt_us, s.srttUs ?? 0, true);
  dv.setUint32(TCP_SUMMARY.total_retrans, s.retrans ?? 0, true);
  dv.setUint8(TCP_SUMMARY.role, s.role);
  dv.setUint8(TCP_SUMMARY.old_state, s.oldState ?? 1);
  dv.setUint16(TCP_SUMMARY.sk_err, s.skErr ?? 0, true);
  dv.setUint8(TCP_SUMMARY.flags, s.flags ?? 0);
  return b;
}

const conn = { family: 2 as const, saddr: [127, 0, 0, 1], daddr: [127, 0, 0, 1], sport: 8080, dport: 40000 };

test('server summaries are attributed to the process that accepted the socket, then forgotten', (t) => {
  const facts: TcpFact[] = [];
  const tr = new TcpTracker({ maxAccepted: 10 }, (f) => facts.push(f));
  tr.observe(decode({ type: EventType.Accept, tgid: 42, comm: 'srv', sock: 0xabcn, ret: 5, ...conn }));
  t.is(tr.size, 1);
  tr.onSummary(decode({ type: EventType.Tcp, tgid: 0, sock: 0xabcn, tsEnd: 3_000_000_000n, ...conn, data: summary({ role: TcpRole.Server, sent: 2500n, received: 1000n, openNs: 1_000_000_000n, srttUs: 250, retrans: 2 }) }));
  t.is(tr.size, 0);
  t.is(facts.length, 2);
  t.like(facts[0]!, { kind: 'opened', role: 'server', process: { tgid: 42, comm: 'srv' } });
  t.like(facts[1]!, { kind: 'closed', role: 'server', bytesSent: 2500, bytesReceived: 1000, durationSeconds: 2, rttSeconds: 0.00025, retransmits: 2, process: { tgid: 42 } });
  // the same sock again with no accept: unattributed, counted
  tr.onSummary(decode({ type: EventType.Tcp, tgid: 0, sock: 0xabcn, ...conn, data: summary({ role: TcpRole.Server }) }));
  t.is(tr.stats.unattributed, 1);
  t.is(facts.length, 2);
});

test('client summaries carry their process; SYN_SENT → CLOSE is a failed connect by errno name', (t) => {
  const facts: TcpFact[] = [];
  const tr = new TcpTracker({ maxAccepted: 10, selfTgid: 7 }, (f) => facts.push(f));
  tr.observe(decode({ type: EventType.Connect, tgid: 50, ret: -115, sock: 1n, ...conn }));
  tr.observe(decode({ type: EventType.Connect, tgid: 50, ret: -111, sock: 2n, ...conn })); // refused at once: not opened
  tr.observe(decode({ type: EventType.Connect, tgid: 7, ret: 0, sock: 3n, ...conn })); // the agent itself
  tr.onSummary(decode({ type: EventType.Tcp, tgid: 50, comm: 'cli', sock: 2n, ...conn, data: summary({ role: TcpRole.Client, oldState: 2, skErr: 111 }) }));
  tr.onSummary(decode({ type: EventType.Tcp, tgid: 50, comm: 'cli', sock: 1n, ...conn, data: summary({ role: TcpRole.Client, oldState: 2, skErr: 110 }) }));
  t.deepEqual(facts.map((f) => [f.kind, f.kind === 'failed' ? f.errno : f.role, f.process.tgid]), [
    ['opened', 'client', 50],
    ['failed', 'ECONNREFUSED', 50],
    ['failed', 'ETIMEDOUT', 50],
  ]);
});

test('accepted sockets are bounded (oldest evicted, counted); short payloads are counted', (t) => {
  const tr = new TcpTracker({ maxAccepted: 2 }, () => {});
  for (const sock of [1n, 2n, 3n]) tr.observe(decode({ type: EventType.Accept, tgid: 1, sock, ret: 4, ...conn }));
  t.is(tr.size, 2);
  t.is(tr.stats.acceptedEvicted, 1);
  tr.onSummary(decode({ type: EventType.Tcp, sock: 9n, ...conn, data: new Uint8Array(10) }));
  t.is(tr.stats.malformed, 1);
});

test('picked-up connections: attributed to the process that closed the socket, no duration; unregistered or never closed by a syscall: unattributed', (t) => {
  const facts: TcpFact[] = [];
  const tr = new TcpTracker({ maxAccepted: 10 }, (f) => facts.push(f));
  const picked = summary({ role: TcpRole.Server, flags: TcpFlag.Picked, sent: 2500n, received: 1000n, openNs: 1_000_000_000n, srttUs: 40, retrans: 0 });
  for (const sock of [1n, 2n]) tr.pickedUp(sock);
  t.is(tr.pickedSize, 2);
  tr.observe(decode({ type: EventType.Close, tgid: 60, comm: 'srv', sock: 1n, ...conn }));
  tr.observe(decode({ type: EventType.Close, tgid: 61, comm: 'other', sock: 5n, ...conn })); // not picked up: ignored
  tr.onSummary(decode({ type: EventType.Tcp, tgid: 0, sock: 1n, tsEnd: 9_000_000_000n, ...conn, data: picked }));
  t.deepEqual(facts, [
    { kind: 'closed', role: 'server', process: { tgid: 60, tid: 60, comm: 'srv', cgroupId: 1n }, conn: facts[0]!.conn, bytesSent: 2500, bytesReceived: 1000, durationSeconds: undefined, rttSeconds: 0.00004, retransmits: 0 },
  ]);
  t.is(tr.stats.picked, 1);
  // sock 2 was closed without a close() the agent saw (the process exited): unattributed
  tr.onSummary(decode({ type: EventType.Tcp, tgid: 0, sock: 2n, ...conn, data: picked }));
  // a flagged summary for a socket the pickup did not register (its role was unsure)
  tr.onSummary(decode({ type: EventType.Tcp, tgid: 0, sock: 3n, ...conn, data: picked }));
  t.is(tr.stats.unattributed, 2);
  t.is(tr.pickedSize, 0);
  t.is(facts.length, 1);
});

test('picked-up sockets are bounded (oldest evicted, counted)', (t) => {
  const tr = new TcpTracker({ maxAccepted: 2 }, () => {});
  for (const sock of [1n, 2n, 3n]) tr.pickedUp(sock);
  t.is(tr.pickedSize, 2);
  t.is(tr.stats.pickedEvicted, 1);
});

test('errno names', (t) => {
  t.is(errnoName(111), 'ECONNREFUSED');
  t.is(errnoName(113), 'EHOSTUNREACH');
  t.is(errnoName(0), '_OTHER');
  t.is(errnoName(9999), 'errno_9999');
});
