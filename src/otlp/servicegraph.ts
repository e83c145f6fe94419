/**
 * servicegraph.ts — the service graph: one edge per (client service → server service),
 * computed from the CLIENT and SERVER spans Sidelight builds, exported with the metric
 * names and attributes of the OpenTelemetry Collector's `servicegraph` connector and
 * Tempo's metrics-generator, so the backends that draw a service map from those (Grafana,
 * Kiali-style views) draw Sidelight's too:
 *
 *   traces_service_graph_request_total           counter   client, server, connection_type
 *   traces_service_graph_request_failed_total    counter   (same)
 *   traces_service_graph_request_client_seconds  histogram (same; the client span's duration)
 *   traces_service_graph_request_server_seconds  histogram (same; the server span's duration)
 *
 * Pairing (the connector's rule): a SERVER span whose parent is a CLIENT span is one
 * request on the edge client's service → server's service. Both ends on this node are
 * linked by trace.ts (the server span is the child of the client span), so the pair is
 * found here by span id, whichever ends first. An end whose other end does not show up
 * within `waitMs` is an edge to a virtual node (connection_type `virtual_node`, as the
 * connector does): a client span's server is its peer's name (`sidelight.peer.service`,
 * else `server.address`), a server span's client is its `client.address`; a server span
 * with no parent at all (nobody upstream traced it) is such an edge at once. Only the
 * side that was seen feeds its duration histogram. Only HTTP and RPC spans take part
 * (a DNS lookup is not a service call). A request fails when either end has error status.
 *
 * Service names are the resources' `service.name`. All edges are exported under one
 * resource, the agent's (service.name sidelight, host.name), like the connector, which emits
 * them apart from any workload; host.name keeps the cumulative series of two nodes apart.
 *
 * Bounds, all counted: spans waiting for their other end (`maxPending`, oldest dropped),
 * edges (`maxEdges`; past it, requests go to one edge with otel.metric.overflow=true —
 * the same series limit for all four instruments, since they share the edge set).
 * Single-threaded; the owner calls sweep() periodically; collect() and snapshot() read.
 */
import { ValueType, type Attributes, type HrTime } from '@opentelemetry/api';
import type { Resource } from '@opentelemetry/resources';
import { AggregationTemporality, DataPointType, type MetricData, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { ATTR_CLIENT_ADDRESS, ATTR_HTTP_REQUEST_METHOD, ATTR_RPC_SYSTEM_NAME, ATTR_SERVER_ADDRESS } from '@opentelemetry/semantic-conventions';
import type { SidelightSpan } from '../receiver/span.js';
import { AGENT_NAME, AGENT_VERSION } from '../version.js';
import { OVERFLOW_ATTRIBUTE } from './metrics.js';

/** The servicegraph connector's default latency buckets, in seconds. */
export const SERVICE_GRAPH_BUCKETS = [0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1, 1.4, 2, 5, 10, 15];

export const SERVICE_GRAPH_METRICS = {
  total: 'traces_service_graph_request_total',
  failed: 'traces_service_graph_request_failed_total',
  client: 'traces_service_graph_request_client_seconds',
  server: 'traces_service_graph_request_server_seconds',
} as const;

export const VIRTUAL_NODE = 'virtual_node';
/** The peer name used when a span names none (no address at all). */
export const UNKNOWN_PEER = 'unknown';
export const ATTR_PEER_SERVICE = 'sidelight.peer.service';

export interface ServiceGraphOptions {
  /** how long one end waits for the other, ms */
  waitMs: number;
  /** spans waiting for their other end */
  maxPending: number;
  /** edges (series per instrument); more go to the overflow edge */
  maxEdges: number;
}

export interface ServiceGraphStats {
  /** requests recorded on an edge (paired or virtual) */
  requests: number;
  paired: number;
  /** ends that expired unpaired and were recorded against a virtual node */
  virtual: number;
  /** waiting spans dropped because maxPending were waiting */
  pendingDropped: number;
  /** requests recorded on the overflow edge */
  overflowed: number;
}

interface Histogram {
  count: number;
  sum: number;
  counts: number[];
}

export interface Edge {
  client: string;
  server: string;
  connectionType: string;
  overflow: boolean;
  requests: number;
  failed: number;
  clientSeconds: Histogram;
  serverSeconds: Histogram;
  start: HrTime;
  lastUnixMs: number;
}

interface End {
  service: string;
  seconds: number;
  failed: boolean;
  /** the virtual peer's name if this end expires unpaired */
  peer: string;
  deadlineMs: number;
}

/** What GET /map returns (and `sidelight map` prints). */
export interface ServiceMap {
  edges: Array<{
    client: string;
    server: string;
    connectionType: string;
    overflow?: true;
    requests: number;
    failed: number;
    /** mean duration seen by the client / server, seconds (absent when that end was never seen) */
    clientMeanSeconds?: number;
    serverMeanSeconds?: number;
    lastUnixMs: number;
  }>;
  /** spans waiting for their other end right now */
  pending: number;
}

function serviceOf(r: Resource): string {
  const v = r.attributes['service.name'];
  return typeof v === 'string' && v !== '' ? v : UNKNOWN_PEER;
}

function seconds(s: SidelightSpan): number {
  return Number(s.endUnixNs - s.startUnixNs) / 1e9;
}

function newHistogram(): Histogram {
  return { count: 0, sum: 0, counts: new Array<number>(SERVICE_GRAPH_BUCKETS.length + 1).fill(0) };
}

function observe(h: Histogram, v: number): void {
  h.count++;
  h.sum += v;
  let i = 0;
  while (i < SERVICE_GRAPH_BUCKETS.length && v > SERVICE_GRAPH_BUCKETS[i]!) i++;
  h.counts[i]!++;
}

function hrNow(ms: number): HrTime {
  return [Math.floor(ms / 1000), (ms % 1000) * 1e6];
}

export class ServiceGraph {
  private readonly opts: ServiceGraphOptions;
  private readonly resource: Resource;
  private readonly now: () => number;
  /** CLIENT spans by span id, waiting for their server; insertion order is deadline order */
  private readonly clients = new Map<string, End>();
  /** SERVER spans by parent span id, waiting for their client */
  private readonly servers = new Map<string, End>();
  private readonly edges = new Map<string, Edge>();
  /** the same edges (not the overflow one) by client, server, connection type: found without building the key */
  private readonly index = new Map<string, Map<string, Map<string, Edge>>>();
  readonly stats: ServiceGraphStats = { requests: 0, paired: 0, virtual: 0, pendingDropped: 0, overflowed: 0 };

  /** `resource`: the one the edges are exported under; `now`: wall clock, ms (tests). */
  constructor(opts: ServiceGraphOptions, resource: Resource, now: () => number = Date.now) {
    this.opts = opts;
    this.resource = resource;
    this.now = now;
  }

  get pending(): number {
    return this.clients.size + this.servers.size;
  }

  get edgeCount(): number {
    return this.edges.size;
  }

  /** A finished span with its workload's resource. */
  onSpan(s: SidelightSpan, resource: Resource): void {
    const a = s.attributes;
    if (a[ATTR_HTTP_REQUEST_METHOD] === undefined && a[ATTR_RPC_SYSTEM_NAME] === undefined) return;
    if (s.kind !== 'client' && s.kind !== 'server') return;
    const now = this.now();
    const end: End = {
      service: serviceOf(resource),
      seconds: seconds(s),
      failed: s.status.code === 'error',
      peer: '',
      deadlineMs: now + this.opts.waitMs,
    };
    if (s.kind === 'client') {
      if (!s.spanId) return;
      const server = this.servers.get(s.spanId);
      if (server) {
        this.servers.delete(s.spanId);
        this.paired(end, server, now);
        return;
      }
      end.peer = String(a[ATTR_PEER_SERVICE] ?? a[ATTR_SERVER_ADDRESS] ?? UNKNOWN_PEER);
      this.wait(this.clients, s.spanId, end);
    } else {
      end.peer = String(a[ATTR_CLIENT_ADDRESS] ?? UNKNOWN_PEER);
      if (!s.parentSpanId) {
        this.record(end.peer, end.service, VIRTUAL_NODE, end.failed, undefined, end.seconds, now);
        this.stats.virtual++;
        return;
      }
      const client = this.clients.get(s.parentSpanId);
      if (client) {
        this.clients.delete(s.parentSpanId);
        this.paired(client, end, now);
        return;
      }
      this.wait(this.servers, s.parentSpanId, end);
    }
  }

  /** Ends whose other end did not come within waitMs become virtual-node edges. */
  sweep(): void {
    const now = this.now();
    for (const [id, c] of this.clients) {
      if (c.deadlineMs > now) break;
      this.clients.delete(id);
      this.record(c.service, c.peer, VIRTUAL_NODE, c.failed, c.seconds, undefined, now);
      this.stats.virtual++;
    }
    for (const [id, sv] of this.servers) {
      if (sv.deadlineMs > now) break;
      this.servers.delete(id);
      this.record(sv.peer, sv.service, VIRTUAL_NODE, sv.failed, undefined, sv.seconds, now);
      this.stats.virtual++;
    }
  }

  private wait(m: Map<string, End>, id: string, end: End): void {
    if (this.clients.size + this.servers.size >= this.opts.maxPending) {
      // drop the oldest of the larger side: it is the closest to expiring anyway
      const from = this.clients.size >= this.servers.size ? this.clients : this.servers;
      const oldest = from.keys().next();
      if (!oldest.done) from.delete(oldest.value);
      this.stats.pendingDropped++;
    }
    m.set(id, end);
  }

  private paired(client: End, server: End, now: number): void {
    this.stats.paired++;
    this.record(client.service, server.service, '', client.failed || server.failed, client.seconds, server.seconds, now);
  }

  private record(client: string, server: string, connectionType: string, failed: boolean, clientSec: number | undefined, serverSec: number | undefined, now: number): void {
    let e = this.index.get(client)?.get(server)?.get(connectionType);
    if (!e) {
      let key = `${client}\u0000${server}\u0000${connectionType}`;
      e = this.edges.get(key);
      if (!e) {
        const overflow = this.edges.size >= this.opts.maxEdges;
        if (overflow) {
          key = OVERFLOW_ATTRIBUTE;
          e = this.edges.get(key);
        }
        if (!e) {
          e = {
            client: overflow ? '' : client,
            server: overflow ? '' : server,
            connectionType: overflow ? '' : connectionType,
            overflow,
            requests: 0,
            failed: 0,
            clientSeconds: newHistogram(),
            serverSeconds: newHistogram(),
            start: hrNow(now),
            lastUnixMs: now,
          };
          this.edges.set(key, e);
        }
      }
      if (!e.overflow) {
        let byServer = this.index.get(client);
        if (!byServer) this.index.set(client, (byServer = new Map()));
        let byType = byServer.get(server);
        if (!byType) byServer.set(server, (byType = new Map()));
        byType.set(connectionType, e);
      }
    }
    if (e.overflow) this.stats.overflowed++;
    this.stats.requests++;
    e.requests++;
    if (failed) e.failed++;
    if (clientSec !== undefined) observe(e.clientSeconds, clientSec);
    if (serverSec !== undefined) observe(e.serverSeconds, serverSec);
    e.lastUnixMs = now;
  }

  /** Cumulative snapshot under the agent's resource (empty when no edge yet). */
  collect(now: HrTime): ResourceMetrics[] {
    this.sweep();
    if (this.edges.size === 0) return [];
    const edges = [...this.edges.values()];
    const attrs = (e: Edge): Attributes =>
      e.overflow ? { [OVERFLOW_ATTRIBUTE]: true } : { client: e.client, server: e.server, connection_type: e.connectionType };
    const sum = (name: string, description: string, value: (e: Edge) => number): MetricData => ({
      descriptor: { name, description, unit: '1', valueType: ValueType.INT },
      aggregationTemporality: AggregationTemporality.CUMULATIVE,
      dataPointType: DataPointType.SUM,
      isMonotonic: true,
      dataPoints: edges.map((e) => ({ startTime: e.start, endTime: now, attributes: attrs(e), value: value(e) })),
    });
    const hist = (name: string, description: string, pick: (e: Edge) => Histogram): MetricData => ({
      descriptor: { name, description, unit: 's', valueType: ValueType.DOUBLE },
      aggregationTemporality: AggregationTemporality.CUMULATIVE,
      dataPointType: DataPointType.HISTOGRAM,
      dataPoints: edges
        .filter((e) => pick(e).count > 0)
        .map((e) => {
          const h = pick(e);
          return {
            startTime: e.start,
            endTime: now,
            attributes: attrs(e),
            value: { buckets: { boundaries: SERVICE_GRAPH_BUCKETS, counts: [...h.counts] }, sum: h.sum, count: h.count },
          };
        }),
    });
    const metrics = [
      sum(SERVICE_GRAPH_METRICS.total, 'Requests between two services.', (e) => e.requests),
      sum(SERVICE_GRAPH_METRICS.failed, 'Failed requests between two services.', (e) => e.failed),
      hist(SERVICE_GRAPH_METRICS.client, 'Request duration seen by the client.', (e) => e.clientSeconds),
      hist(SERVICE_GRAPH_METRICS.server, 'Request duration seen by the server.', (e) => e.serverSeconds),
    ].filter((m) => m.dataPoints.length > 0);
    return [{ resource: this.resource, scopeMetrics: [{ scope: { name: AGENT_NAME, version: AGENT_VERSION }, metrics }] }];
  }

  /** The current map (cumulative since the agent started), edges sorted by client, server. */
  snapshot(): ServiceMap {
    this.sweep();
    const edges = [...this.edges.values()]
      .map((e) => ({
        client: e.client,
        server: e.server,
        connectionType: e.connectionType,
        ...(e.overflow ? { overflow: true as const } : {}),
        requests: e.requests,
        failed: e.failed,
        ...(e.clientSeconds.count ? { clientMeanSeconds: e.clientSeconds.sum / e.clientSeconds.count } : {}),
        ...(e.serverSeconds.count ? { serverMeanSeconds: e.serverSeconds.sum / e.serverSeconds.count } : {}),
        lastUnixMs: e.lastUnixMs,
      }))
      .sort((x, y) => (x.client === y.client ? x.server.localeCompare(y.server) : x.client.localeCompare(y.client)));
    return { edges, pending: this.pending };
  }
}
