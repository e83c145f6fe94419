/**
 * connmetrics.ts — TCP connection metrics per workload pair: the process's resource (the
 * source workload) and the peer's attributes, from the facts of receiver/tcpconn.ts.
 * Semantic conventions have no TCP connection metrics, so the names are Sidelight's, under
 * `sidelight.tcp.` (attributes are semconv names where one exists):
 *
 *   sidelight.tcp.connections.opened    counter  {connection}  sidelight.tcp.role
 *   sidelight.tcp.connect.failures      counter  {connection}  error.type (errno name: ECONNREFUSED, ETIMEDOUT, ...)
 *   sidelight.tcp.bytes                 counter  By            sidelight.tcp.role, network.io.direction (transmit|receive)
 *   sidelight.tcp.connection.duration   histogram s            sidelight.tcp.role
 *   sidelight.tcp.retransmits           counter  {segment}     sidelight.tcp.role
 *   sidelight.tcp.rtt                   histogram s            sidelight.tcp.role (smoothed RTT at close)
 *
 * and on every one the peer: network.peer.address (the other end's IP) and server.port (the
 * remote port for clients, the local one for servers). Bytes are the kernel's bytes acked
 * by the peer (sent) and received in order, counted when the connection closes; opened
 * counts connect() calls that started a connection (0 or EINPROGRESS) and accepts; a
 * failed connect is counted only under failures.
 *
 * Bounds, all counted: workloads (keyed by resource attributes as in metrics.ts; past
 * `maxWorkloads` the longest idle is evicted with its series, preferring one already exported
 * since its last fact), series per instrument and
 * workload (past it: one series with otel.metric.overflow=true). A workload with no fact for
 * `idleMs` (an exited process) is in one more snapshot, then dropped (`workloadsExpired`).
 * Single-threaded; collect() returns a cumulative snapshot.
 */
import { ValueType, type Attributes, type HrTime } from '@opentelemetry/api';
import type { Resource } from '@opentelemetry/resources';
import { AggregationTemporality, DataPointType, type MetricData, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { ATTR_ERROR_TYPE, ATTR_NETWORK_PEER_ADDRESS, ATTR_SERVER_PORT } from '@opentelemetry/semantic-conventions';
import type { TcpFact } from '../receiver/tcpconn.js';
import type { AttrValue } from '../receiver/span.js';
import { AGENT_NAME, AGENT_VERSION } from '../version.js';
import { DEFAULT_WORKLOAD_IDLE_MS, evictionVictim, hrToMs, OVERFLOW_ATTRIBUTE, resourceIdentity } from './metrics.js';

export const ATTR_TCP_ROLE = 'sidelight.tcp.role';
export const ATTR_NETWORK_IO_DIRECTION = 'network.io.direction';

interface ConnInstrument {
  name: string;
  description: string;
  unit: string;
  /** histogram bucket boundaries; absent: a monotonic sum */
  buckets?: number[];
}

export const CONN_INSTRUMENTS = {
  opened: { name: 'sidelight.tcp.connections.opened', description: 'TCP connections opened (connect started, or accepted).', unit: '{connection}' },
  failures: { name: 'sidelight.tcp.connect.failures', description: 'TCP connects that failed, by errno.', unit: '{connection}' },
  bytes: { name: 'sidelight.tcp.bytes', description: 'Bytes sent (acknowledged by the peer) and received on TCP connections, counted at close.', unit: 'By' },
  duration: {
    name: 'sidelight.tcp.connection.duration',
    description: 'Duration of TCP connections, from SYN to close.',
    unit: 's',
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600],
  },
  retransmits: { name: 'sidelight.tcp.retransmits', description: 'TCP segments retransmitted, counted at close.', unit: '{segment}' },
  rtt: {
    name: 'sidelight.tcp.rtt',
    description: 'Smoothed round-trip time of TCP connections at close.',
    unit: 's',
    buckets: [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
  },
} as const satisfies Record<string, ConnInstrument>;

export interface ConnMetricOptions {
  maxWorkloads: number;
  maxSeries: number;
  /** a workload with no fact for this long is exported once more, then dropped (default 5 min) */
  idleMs?: number;
  /** the clock, ms since the epoch (tests) */
  nowMs?: () => number;
}

export interface ConnMetricStats {
  recorded: number;
  series: number;
  overflowed: number;
  /** workloads dropped because maxWorkloads were held */
  workloadsEvicted: number;
  /** workloads dropped after idleMs without facts, after their last export */
  workloadsExpired: number;
}

interface Series {
  attributes: Attributes;
  start: HrTime;
  value: number;
  count: number;
  counts: number[] | undefined;
}

interface Workload {
  resource: Resource;
  instruments: Map<ConnInstrument, Map<string, Series>>;
  lastMs: number;
  /** recorded since the last snapshot */
  dirty: boolean;
}

function key(attrs: Record<string, AttrValue>): string {
  let k = '';
  for (const [a, v] of Object.entries(attrs)) k += `${a}\u0000${String(v)}\u0001`;
  return k;
}

function hrFromMs(ms: number): HrTime {
  return [Math.floor(ms / 1000), Math.round((ms % 1000) * 1e6)];
}

export class ConnMetricStore {
  private readonly opts: Required<ConnMetricOptions>;
  /** by resourceIdentity(), least recently recorded first */
  private readonly workloads = new Map<string, Workload>();
  readonly stats: ConnMetricStats = { recorded: 0, series: 0, overflowed: 0, workloadsEvicted: 0, workloadsExpired: 0 };

  constructor(opts: ConnMetricOptions) {
    this.opts = { idleMs: DEFAULT_WORKLOAD_IDLE_MS, nowMs: Date.now, ...opts };
  }

  get workloadCount(): number {
    return this.workloads.size;
  }

  private drop(id: string, w: Workload): void {
    for (const m of w.instruments.values()) this.stats.series -= m.size;
    this.workloads.delete(id);
  }

  /** One fact, for the workload whose resource is given. */
  record(fact: TcpFact, resource: Resource): void {
    const c = fact.conn;
    const peer: Record<string, AttrValue> = {
      [ATTR_NETWORK_PEER_ADDRESS]: c.remote.address,
      [ATTR_SERVER_PORT]: fact.kind === 'failed' || fact.role === 'client' ? c.remote.port : c.local.port,
    };
    if (fact.kind === 'failed') {
      this.add(resource, CONN_INSTRUMENTS.failures, { ...peer, [ATTR_ERROR_TYPE]: fact.errno }, 1);
      return;
    }
    const attrs = { [ATTR_TCP_ROLE]: fact.role, ...peer };
    if (fact.kind === 'opened') {
      this.add(resource, CONN_INSTRUMENTS.opened, attrs, 1);
      return;
    }
    this.add(resource, CONN_INSTRUMENTS.bytes, { ...attrs, [ATTR_NETWORK_IO_DIRECTION]: 'transmit' }, fact.bytesSent);
    this.add(resource, CONN_INSTRUMENTS.bytes, { ...attrs, [ATTR_NETWORK_IO_DIRECTION]: 'receive' }, fact.bytesReceived);
    if (fact.durationSeconds !== undefined) this.add(resource, CONN_INSTRUMENTS.duration, attrs, fact.durationSeconds);
    this.add(resource, CONN_INSTRUMENTS.retransmits, attrs, fact.retransmits);
    if (fact.rttSeconds !== undefined) this.add(resource, CONN_INSTRUMENTS.rtt, attrs, fact.rttSeconds);
  }

  private workload(resource: Resource, nowMs: number): Workload {
    const id = resourceIdentity(resource);
    let w = this.workloads.get(id);
    if (w) {
      this.workloads.delete(id); // most recently used last
      this.workloads.set(id, w);
      w.resource = resource;
      w.lastMs = nowMs;
      w.dirty = true;
      return w;
    }
    if (this.workloads.size >= this.opts.maxWorkloads) {
      const victim = evictionVictim(this.workloads);
      if (victim) {
        this.drop(victim[0], victim[1]);
        this.stats.workloadsEvicted++;
      }
    }
    w = { resource, instruments: new Map(), lastMs: nowMs, dirty: true };
    this.workloads.set(id, w);
    return w;
  }

  private add(resource: Resource, def: ConnInstrument, attrs: Record<string, AttrValue>, value: number): void {
    const nowMs = this.opts.nowMs();
    const w = this.workload(resource, nowMs);
    let m = w.instruments.get(def);
    if (!m) w.instruments.set(def, (m = new Map()));
    let k = key(attrs);
    let s = m.get(k);
    if (!s) {
      if (m.size >= this.opts.maxSeries) {
        attrs = { [OVERFLOW_ATTRIBUTE]: true };
        k = key(attrs);
        s = m.get(k);
      }
      if (!s) {
        s = { attributes: attrs as Attributes, start: hrFromMs(nowMs), value: 0, count: 0, counts: def.buckets ? new Array<number>(def.buckets.length + 1).fill(0) : undefined };
        m.set(k, s);
        this.stats.series++;
      }
    }
    if (s.attributes[OVERFLOW_ATTRIBUTE] === true) this.stats.overflowed++;
    this.stats.recorded++;
    s.value += value;
    s.count++;
    if (s.counts && def.buckets) {
      let i = 0;
      while (i < def.buckets.length && value > def.buckets[i]!) i++;
      s.counts[i]!++;
    }
  }

  /** Cumulative snapshot, one ResourceMetrics per workload; workloads idle for idleMs are in it for the last time. */
  collect(now: HrTime): ResourceMetrics[] {
    const out: ResourceMetrics[] = [];
    const expireBefore = hrToMs(now) - this.opts.idleMs;
    for (const [id, w] of this.workloads) {
      if (w.lastMs <= expireBefore) {
        this.drop(id, w);
        this.stats.workloadsExpired++;
      }
      w.dirty = false;
      const resource = w.resource;
      const metrics: MetricData[] = [];
      for (const [def, series] of w.instruments) {
        const points = [...series.values()];
        if (def.buckets) {
          const buckets = def.buckets;
          metrics.push({
            descriptor: { name: def.name, description: def.description, unit: def.unit, valueType: ValueType.DOUBLE },
            aggregationTemporality: AggregationTemporality.CUMULATIVE,
            dataPointType: DataPointType.HISTOGRAM,
            dataPoints: points.map((s) => ({
              startTime: s.start,
              endTime: now,
              attributes: s.attributes,
              value: { buckets: { boundaries: buckets, counts: [...s.counts!] }, sum: s.value, count: s.count },
            })),
          });
        } else {
          metrics.push({
            descriptor: { name: def.name, description: def.description, unit: def.unit, valueType: ValueType.INT },
            aggregationTemporality: AggregationTemporality.CUMULATIVE,
            dataPointType: DataPointType.SUM,
            isMonotonic: true,
            dataPoints: points.map((s) => ({ startTime: s.start, endTime: now, attributes: s.attributes, value: s.value })),
          });
        }
      }
      if (metrics.length) out.push({ resource, scopeMetrics: [{ scope: { name: AGENT_NAME, version: AGENT_VERSION }, metrics }] });
    }
    return out;
  }
}
