/**
 * pickup.ts — the pickup of TCP connections that were open before the agent started (or
 * restarted): decodes the struct sl_pickup records the iter/tcp program writes
 * (bpf/iter.bpf.h; read by the addon's runIter()) and seeds the connection table with each
 * socket's role, so requests on keep-alive connections that predate the agent are parsed as
 * the right side (SERVER or CLIENT) from their first bytes. Which process owns a socket is not
 * known here; its first syscall event says it.
 *
 * The kernel decides the role: a socket whose local port has a LISTEN socket in its network
 * namespace is an accepted child (server); any other connected socket is a client. When the
 * kernel could not remember every listener (SL_PICK_LISTEN_LOST) the client verdicts are unsure
 * and those sockets are not seeded (their bytes decide, as without the pickup).
 *
 * Owns only its counters (PickupStats). Pure apart from seeding the table it is given; main
 * thread only; run once per agent start.
 */
import type { ConnectionTable, SeedOutcome } from './connections.js';
import { decodeConn, type ConnInfo } from './decode.js';
import { PICKUP, PickFlag } from './layout.js';

/** TCP states (include/net/tcp_states.h), for messages. */
const TCP_STATE_NAMES: Record<number, string> = {
  1: 'ESTABLISHED',
  2: 'SYN_SENT',
  3: 'SYN_RECV',
  4: 'FIN_WAIT1',
  5: 'FIN_WAIT2',
  6: 'TIME_WAIT',
  7: 'CLOSE',
  8: 'CLOSE_WAIT',
  9: 'LAST_ACK',
  10: 'LISTEN',
  11: 'CLOSING',
};
/** States in which the socket's process may still read or write request bytes. */
const SEEDABLE = new Set([1, 2, 3, 4, 5, 8]);

/** One socket reported by the iterator. */
export interface PickupRecord {
  /** kernel address of struct sock: the connection table's key */
  sock: bigint;
  conn: ConnInfo;
  uid: number;
  /** TCP state number (1 ESTABLISHED ... 10 LISTEN) */
  state: number;
  /** PickFlag bits */
  flags: number;
}

/** Name of a TCP state number, for messages ('STATE_<n>' when unknown). */
export function tcpStateName(state: number): string {
  return TCP_STATE_NAMES[state] ?? `STATE_${state}`;
}

/**
 * Decode the iterator's output: back-to-back PICKUP.size records. A trailing partial record
 * (output cut at runIter's maxBytes) is not decoded; its byte count is returned as `trailing`.
 */
export function decodePickup(buf: ArrayBuffer | Uint8Array): { records: PickupRecord[]; trailing: number } {
  const bytes = buf instanceof Uint8Array ? buf : new Uint8Array(buf);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const records: PickupRecord[] = [];
  const whole = bytes.byteLength - (bytes.byteLength % PICKUP.size);
  for (let off = 0; off < whole; off += PICKUP.size) {
    records.push({
      sock: dv.getBigUint64(off + PICKUP.sock, true),
      conn: decodeConn(bytes, dv, off + PICKUP.conn),
      uid: dv.getUint32(off + PICKUP.uid, true),
      state: dv.getUint8(off + PICKUP.state),
      flags: dv.getUint8(off + PICKUP.flags),
    });
  }
  return { records, trailing: bytes.byteLength - whole };
}

/** What the pickup found and did (GET /healthz `pickup`, sidelight.pickup.sockets). */
export interface PickupStats {
  /** runs completed (0 or 1 per agent start) */
  runs: number;
  /** runs that failed (the iterator could not be created or read); the agent goes on without */
  failed: number;
  /** the output was longer than the read bound: sockets past it were not seen */
  truncated: number;
  /** LISTEN sockets reported (whose port the port filter wants, or that the kernel could not remember) */
  listeners: number;
  /** connected sockets reported (their ports pass the port filter) */
  seen: number;
  /** of those: seeded into the table as server */
  seededServer: number;
  /** of those: seeded into the table as client */
  seededClient: number;
  /** already in the table with a role (an event of theirs came first) */
  skippedKnown: number;
  /** not seeded: closing states (TIME_WAIT excluded by the kernel side; LAST_ACK, CLOSING) */
  skippedClosing: number;
  /** not seeded: a client verdict while the kernel's listener table had overflowed */
  skippedRoleUnsure: number;
  /** not seeded: the connection table was full */
  skippedTableFull: number;
  /** milliseconds the last run took (kernel walk + decode + seeding) */
  durationMs: number;
}

export function newPickupStats(): PickupStats {
  return {
    runs: 0,
    failed: 0,
    truncated: 0,
    listeners: 0,
    seen: 0,
    seededServer: 0,
    seededClient: 0,
    skippedKnown: 0,
    skippedClosing: 0,
    skippedRoleUnsure: 0,
    skippedTableFull: 0,
    durationMs: 0,
  };
}

/** Seed `table` with the connected sockets of `records`; counts into `stats`. */
export function seedFromPickup(
  records: PickupRecord[],
  table: Pick<ConnectionTable, 'seed'>,
  stats: PickupStats,
  nowMono: bigint,
  /** each connected socket whose role is sure, seeded or not (its TCP summary is attributed by it) */
  picked?: (sock: bigint) => void,
): void {
  let unsure = false;
  for (const r of records) {
    if (r.flags & PickFlag.Listener) {
      stats.listeners++;
      if (r.flags & PickFlag.ListenLost) unsure = true;
    }
  }
  for (const r of records) {
    if (r.flags & PickFlag.Listener) continue;
    stats.seen++;
    if (!SEEDABLE.has(r.state)) {
      stats.skippedClosing++;
      continue;
    }
    const server = (r.flags & PickFlag.Server) !== 0;
    if (!server && unsure) {
      stats.skippedRoleUnsure++;
      continue;
    }
    const outcome: SeedOutcome = table.seed(r.sock, r.conn, server ? 'server' : 'client', nowMono);
    if (outcome === 'known') stats.skippedKnown++;
    else if (outcome === 'table_full') stats.skippedTableFull++;
    else if (server) stats.seededServer++;
    else stats.seededClient++;
    picked?.(r.sock);
  }
}
