/**
 * The TypeScript mirror of bpf/sidelight.h (src/receiver/layout.ts) against what the C
 * compiler made of the header, as the addon reports it.
 */
import test from 'ava';
import { existsSync } from 'node:fs';
import { repoRoot } from '../../src/paths.js';
import { loadNative } from '../../src/native.js';
import * as L from '../../src/receiver/layout.js';
import { need } from '../helpers/kernel.js';

const built = existsSync(`${repoRoot()}/native/build/Release/sidelight.node`) ? undefined : 'addon not built (make setup)';

test('struct offsets and sizes match the header', (t) => {
  if (!need(t, built)) return;
  const l = loadNative().layout();
  const pick = <T extends object>(o: T, keys: string[]) => Object.fromEntries(keys.map((k) => [k, (o as Record<string, number>)[k]]));
  t.deepEqual({ size: L.EVENT.size as number }, { size: l.sl_event.size });
  t.deepEqual(pick(L.EVENT, Object.keys(l.sl_event.offsets)), l.sl_event.offsets);
  t.deepEqual({ size: L.CONN.size as number }, { size: l.sl_conn.size });
  t.deepEqual(pick(L.CONN, Object.keys(l.sl_conn.offsets)), l.sl_conn.offsets);
  t.deepEqual({ size: L.CONFIG.size as number }, { size: l.sl_config.size });
  t.deepEqual({ size: L.TCP_SUMMARY.size as number }, { size: l.sl_tcp_summary.size });
  t.deepEqual(pick(L.TCP_SUMMARY, Object.keys(l.sl_tcp_summary.offsets)), l.sl_tcp_summary.offsets);
  t.deepEqual(pick(L.CONFIG, Object.keys(l.sl_config.offsets)), l.sl_config.offsets);
});

test('enums and constants match the header', (t) => {
  if (!need(t, built)) return;
  const c = loadNative().layout().constants;
  t.deepEqual(L.EventType, { Data: c.SL_EV_DATA, Connect: c.SL_EV_CONNECT, Accept: c.SL_EV_ACCEPT, Close: c.SL_EV_CLOSE, Proc: c.SL_EV_PROC, Tcp: c.SL_EV_TCP });
  t.deepEqual(L.TcpRole, { Client: c.SL_TCP_CLIENT, Server: c.SL_TCP_SERVER });
  t.deepEqual(L.TcpFlag, { Picked: c.SL_TCP_F_PICKED });
  t.deepEqual(L.Direction, { Ingress: c.SL_DIR_INGRESS, Egress: c.SL_DIR_EGRESS });
  t.deepEqual(
    {
      SL_MAX_CAPTURE: L.SL_MAX_CAPTURE,
      SL_COMM_LEN: L.SL_COMM_LEN,
      SL_EXE_LEN: L.SL_EXE_LEN,
      SL_MAX_IOV: L.SL_MAX_IOV,
      SL_MAX_MMSG: L.SL_MAX_MMSG,
      SL_CNT__MAX: L.SL_CNT_MAX,
      SL_FILTER_INCLUDE: L.FILTER_INCLUDE,
      SL_FILTER_EXCLUDE: L.FILTER_EXCLUDE,
    } as Record<string, number | undefined>,
    {
      SL_MAX_CAPTURE: c.SL_MAX_CAPTURE,
      SL_COMM_LEN: c.SL_COMM_LEN,
      SL_EXE_LEN: c.SL_EXE_LEN,
      SL_MAX_IOV: c.SL_MAX_IOV,
      SL_MAX_MMSG: c.SL_MAX_MMSG,
      SL_CNT__MAX: c.SL_CNT__MAX,
      SL_FILTER_INCLUDE: c.SL_FILTER_INCLUDE,
      SL_FILTER_EXCLUDE: c.SL_FILTER_EXCLUDE,
    },
  );
  t.deepEqual(L.FilterMode, { Off: c.SL_MODE_OFF, Include: c.SL_MODE_INCLUDE, Exclude: c.SL_MODE_EXCLUDE });
  const counters = ['SL_CNT_EVENTS', 'SL_CNT_RINGBUF_FULL', 'SL_CNT_STASH_FULL', 'SL_CNT_READ_FAIL', 'SL_CNT_MMSG_PARTIAL', 'SL_CNT_FILTERED', 'SL_CNT_PROCS', 'SL_CNT_TLS_CIPHER', 'SL_CNT_TLS_NOSOCK', 'SL_CNT_TCP_UNTRACKED', 'SL_CNT_TCP_TABLE_FULL'];
  t.deepEqual(counters.map((n) => c[n]), L.COUNTER_NAMES.map((_, i) => i));
  const syscalls = ['READ', 'WRITE', 'READV', 'WRITEV', 'SENDTO', 'RECVFROM', 'SENDMSG', 'RECVMSG', 'SENDMMSG', 'RECVMMSG', 'CONNECT', 'ACCEPT', 'ACCEPT4', 'CLOSE', 'SSL_READ', 'SSL_WRITE'];
  t.deepEqual([L.SYS_SSL_READ, L.SYS_SSL_WRITE], [c.SL_SYS_SSL_READ, c.SL_SYS_SSL_WRITE]);
  t.deepEqual(syscalls.map((n) => L.SYSCALL_NAMES[c[`SL_SYS_${n}`]!]), syscalls.map((n) => n.toLowerCase()));
});
