/**
 * tcpconn.ts — TCP connection summaries: turns the kernel's SL_EV_TCP records (one per
 * connection reaching CLOSE, bpf/tcp.bpf.h) and the CONNECT/ACCEPT syscall records into
 * per-process facts for connection metrics: a connection opened (connect() that returned 0
 * or EINPROGRESS, or accept()), a connect that failed (SYN_SENT → CLOSE, with sk_err's
 * errno name), and a finished connection's bytes, duration, smoothed RTT and retransmits.
 *
 * Attribution: a client's summary carries the connecting process (recorded by the kernel
 * at SYN_SENT, in its context). A server's does not (the handshake completes in softirq):
 * it is matched by socket identity (the kernel's struct sock address) to the ACCEPT record
 * seen earlier for that socket, kept in a bounded table (oldest evicted, counted) and
 * removed when the summary arrives. A server summary with no ACCEPT (the process is not
 * traced, or never accepted it) is counted as unattributed and dropped.
 *
 * Connections open before the agent started (the iter/tcp pickup, receiver/pickup.ts) have no
 * CONNECT or ACCEPT: the agent registers each picked-up socket (pickedUp()) and tells which
 * process it saw using it (pickedOwner(): its first bytes after the pickup) or closing it (its
 * CLOSE record, which may come after the summary: the kernel closes a socket whose FIN
 * exchange ends before the process calls close()). Their summary (flagged SL_TCP_F_PICKED)
 * goes to that process; its counts start at the pickup and its duration is unknown (not
 * recorded). One never used nor closed by a traced syscall is unattributed.
 *
 * Owned by the agent; single-threaded; never throws on traffic (short payloads are counted).
 */
import { constants } from 'node:os';
import type { ConnInfo, KernelEvent } from './decode.js';
import { EventType, TCP_SUMMARY, TcpFlag, TcpRole } from './layout.js';
import type { ProcessRef } from './span.js';

const EINPROGRESS = 115;
const TCP_SYN_SENT = 2;

/** errno number → name (ECONNREFUSED, ...), from Node's table for this platform. */
const ERRNO_NAMES = new Map<number, string>(Object.entries(constants.errno).map(([name, n]) => [n, name]));

export function errnoName(n: number): string {
  return ERRNO_NAMES.get(n) ?? (n === 0 ? '_OTHER' : `errno_${n}`);
}

export type TcpRoleName = 'client' | 'server';

export type TcpFact =
  | { kind: 'opened'; process: ProcessRef; role: TcpRoleName; conn: ConnInfo }
  | { kind: 'failed'; process: ProcessRef; conn: ConnInfo; errno: string }
  | {
      kind: 'closed';
      process: ProcessRef;
      role: TcpRoleName;
      conn: ConnInfo;
      bytesSent: number;
      bytesReceived: number;
      /** undefined for a connection open before the agent started (its start is unknown) */
      durationSeconds: number | undefined;
      /** smoothed RTT at close, seconds; undefined when the kernel had no sample */
      rttSeconds: number | undefined;
      retransmits: number;
    };

export interface TcpTrackerOptions {
  /** accepted sockets remembered until their summary arrives */
  maxAccepted: number;
  /** the agent's own pid: its connects are not counted */
  selfTgid?: number;
}

export interface TcpTrackerStats {
  summaries: number;
  /** server summaries with no ACCEPT seen for their socket */
  unattributed: number;
  /** accepted sockets forgotten because maxAccepted were remembered */
  acceptedEvicted: number;
  /** summaries of connections open before the agent started (counted from the pickup) */
  picked: number;
  /** picked-up sockets forgotten because maxAccepted were remembered */
  pickedEvicted: number;
  /** Tcp records whose payload is shorter than struct sl_tcp_summary */
  malformed: number;
}

export class TcpTracker {
  private readonly opts: TcpTrackerOptions;
  private readonly emit: (f: TcpFact) => void;
  /** sock → the process that accepted it; insertion order is age */
  private readonly accepted = new Map<bigint, ProcessRef>();
  /** picked-up socket → the process that closed it (undefined until its CLOSE); insertion order is age */
  private readonly picked = new Map<bigint, ProcessRef | undefined>();
  readonly stats: TcpTrackerStats = { summaries: 0, unattributed: 0, acceptedEvicted: 0, picked: 0, pickedEvicted: 0, malformed: 0 };

  constructor(opts: TcpTrackerOptions, emit: (f: TcpFact) => void) {
    this.opts = opts;
    this.emit = emit;
  }

  /** accepted sockets waiting for their summary */
  get size(): number {
    return this.accepted.size;
  }

  /** picked-up sockets waiting for their summary */
  get pickedSize(): number {
    return this.picked.size;
  }

  /** A socket the pickup seeded: its summary will be attributed to the process that closes it. */
  pickedUp(sock: bigint): void {
    if (this.picked.size >= this.opts.maxAccepted) {
      const oldest = this.picked.keys().next();
      if (!oldest.done) this.picked.delete(oldest.value);
      this.stats.pickedEvicted++;
    }
    this.picked.set(sock, undefined);
  }

  /** The process seen using (or closing) a socket: recorded if the pickup registered it. */
  pickedOwner(ev: KernelEvent): void {
    if (this.picked.size > 0 && this.picked.has(ev.sock)) this.picked.set(ev.sock, ref(ev));
  }

  /** Every CONNECT, ACCEPT and CLOSE record (other records are ignored); does not consume them. */
  observe(ev: KernelEvent): void {
    if (ev.tgid === this.opts.selfTgid) return;
    if (ev.type === EventType.Close) {
      this.pickedOwner(ev);
      return;
    }
    if (ev.proto !== 6) return;
    const process = ref(ev);
    if (ev.type === EventType.Accept && ev.ret >= 0 && ev.sock !== 0n) {
      if (this.accepted.size >= this.opts.maxAccepted) {
        const oldest = this.accepted.keys().next();
        if (!oldest.done) this.accepted.delete(oldest.value);
        this.stats.acceptedEvicted++;
      }
      this.accepted.delete(ev.sock);
      this.accepted.set(ev.sock, process);
      this.emit({ kind: 'opened', process, role: 'server', conn: ev.conn });
    } else if (ev.type === EventType.Connect && (ev.ret === 0 || ev.ret === -EINPROGRESS)) {
      this.emit({ kind: 'opened', process, role: 'client', conn: ev.conn });
    }
  }

  /** One SL_EV_TCP record. */
  onSummary(ev: KernelEvent): void {
    if (ev.data.length < TCP_SUMMARY.size) {
      this.stats.malformed++;
      return;
    }
    this.stats.summaries++;
    const dv = new DataView(ev.data.buffer, ev.data.byteOffset, ev.data.byteLength);
    const role = dv.getUint8(TCP_SUMMARY.role) === TcpRole.Server ? 'server' : 'client';
    const picked = (dv.getUint8(TCP_SUMMARY.flags) & TcpFlag.Picked) !== 0;
    let process: ProcessRef | undefined;
    if (picked) process = this.picked.get(ev.sock);
    else if (role === 'client') process = ev.tgid !== 0 ? ref(ev) : undefined;
    else {
      process = this.accepted.get(ev.sock);
      this.accepted.delete(ev.sock);
    }
    // a socket registered by the pickup whose summary is not flagged: it had an entry of its own
    this.picked.delete(ev.sock);
    if (!process) {
      this.stats.unattributed++;
      return;
    }
    if (dv.getUint8(TCP_SUMMARY.old_state) === TCP_SYN_SENT) {
      this.emit({ kind: 'failed', process, conn: ev.conn, errno: errnoName(dv.getUint16(TCP_SUMMARY.sk_err, true)) });
      return;
    }
    if (picked) this.stats.picked++;
    const srtt = dv.getUint32(TCP_SUMMARY.srtt_us, true);
    this.emit({
      kind: 'closed',
      process,
      role,
      conn: ev.conn,
      bytesSent: Number(dv.getBigUint64(TCP_SUMMARY.bytes_sent, true)),
      bytesReceived: Number(dv.getBigUint64(TCP_SUMMARY.bytes_received, true)),
      durationSeconds: picked ? undefined : Number(ev.tsEnd - dv.getBigUint64(TCP_SUMMARY.open_ns, true)) / 1e9,
      rttSeconds: srtt > 0 ? srtt / 1e6 : undefined,
      retransmits: dv.getUint32(TCP_SUMMARY.total_retrans, true),
    });
  }
}

function ref(ev: KernelEvent): ProcessRef {
  return { tgid: ev.tgid, tid: ev.tid, comm: ev.comm, cgroupId: ev.cgroupId };
}
