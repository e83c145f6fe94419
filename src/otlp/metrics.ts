/**
 * metrics.ts — request metrics per workload: http.server.request.duration,
 * http.client.request.duration, rpc.server/client.call.duration and dns.lookup.duration (histograms in seconds, semconv
 * buckets), http.server/client.request/response.body.size (histograms in By, the SDK's
 * default buckets: semconv gives none; recorded when the message was seen to its end), recorded from finished spans, aggregated cumulatively per (workload Resource,
 * instrument, attribute set), and exported periodically as OTLP through the OpenTelemetry
 * JS metric exporters.
 *
 * Why not the SDK's MeterProvider: it carries one Resource per provider, and every
 * workload on the node needs its own. The aggregation is a few lines; encoding and
 * transport stay with the SDK exporters.
 *
 * Workloads are keyed by their resource's attributes, not by the Resource object: the process
 * cache may build a new Resource for the same process after evicting it, and two entries for
 * one identity would export two conflicting cumulative streams. Per span, the last workload and
 * a 4-entry Resource → workload cache skip that identity lookup, and the HTTP instruments reuse
 * the last series key while the attribute values repeat.
 *
 * Bounds, all counted: workloads (`maxWorkloads`; past it the longest idle one is evicted,
 * preferring among the EVICTION_SCAN longest idle one already exported since its last measurement),
 * series per instrument and workload (past it, values go to one series with
 * otel.metric.overflow=true, as the SDK does), distinct dns.question.name values per workload
 * (past it, recorded as `_OTHER`). Every short-lived process is a workload of its own
 * (process.pid), so a workload that records nothing for `idleMs` is expired in collect():
 * that snapshot still carries it (its last export), the next does not. A workload that
 * records again later starts new cumulative series (new start time: a reset to consumers).
 * MetricExportLoop sends up to WORKLOADS_PER_REQUEST workloads per request (not one request
 * per workload: thousands of short-lived workloads meant thousands of requests per round).
 * Single-threaded; the export timer is unref'd; shutdown() flushes once.
 */
import { ValueType, type Attributes, type HrTime } from '@opentelemetry/api';
import { ExportResultCode } from '@opentelemetry/core';
import { OTLPMetricExporter as GrpcMetricExporter } from '@opentelemetry/exporter-metrics-otlp-grpc';
import { OTLPMetricExporter as JsonMetricExporter } from '@opentelemetry/exporter-metrics-otlp-http';
import { OTLPMetricExporter as ProtoMetricExporter } from '@opentelemetry/exporter-metrics-otlp-proto';
import type { Resource } from '@opentelemetry/resources';
import {
  AggregationTemporality,
  DataPointType,
  type PushMetricExporter,
  type ResourceMetrics,
} from '@opentelemetry/sdk-metrics';
import {
  ATTR_ERROR_TYPE,
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_HTTP_ROUTE,
  ATTR_NETWORK_PROTOCOL_VERSION,
  ATTR_RPC_METHOD,
  ATTR_RPC_STATUS_CODE,
  ATTR_RPC_SYSTEM_NAME,
  ATTR_SERVER_ADDRESS,
  ATTR_SERVER_PORT,
  ATTR_URL_SCHEME,
} from '@opentelemetry/semantic-conventions';
import { ATTR_DNS_QUESTION_NAME } from '../receiver/dns.js';
import type { AttrValue, SidelightSpan } from '../receiver/span.js';
import { AGENT_NAME, AGENT_VERSION } from '../version.js';
import { hrTime } from './convert.js';
import { exporterOptions, type TracesExportConfig } from './sinks.js';

/** Semconv advisory buckets for HTTP and DNS durations, in seconds. */
export const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10];

/** Body sizes in octets: semconv advises no buckets, these are the SDK's default explicit ones. */
export const BODY_SIZE_BUCKETS = [0, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000];

export interface InstrumentDef {
  name: string;
  description: string;
  unit: string;
  buckets: number[];
}

export const INSTRUMENTS = {
  httpServer: { name: 'http.server.request.duration', description: 'Duration of HTTP server requests.', unit: 's', buckets: DURATION_BUCKETS },
  httpClient: { name: 'http.client.request.duration', description: 'Duration of HTTP client requests.', unit: 's', buckets: DURATION_BUCKETS },
  dnsLookup: { name: 'dns.lookup.duration', description: 'Measures the time taken to perform a DNS lookup.', unit: 's', buckets: DURATION_BUCKETS },
  rpcServer: { name: 'rpc.server.call.duration', description: 'Measures the duration of incoming remote procedure calls.', unit: 's', buckets: DURATION_BUCKETS },
  rpcClient: { name: 'rpc.client.call.duration', description: 'Measures the duration of outgoing remote procedure calls.', unit: 's', buckets: DURATION_BUCKETS },
  httpServerRequestBody: { name: 'http.server.request.body.size', description: 'Size of HTTP server request bodies.', unit: 'By', buckets: BODY_SIZE_BUCKETS },
  httpServerResponseBody: { name: 'http.server.response.body.size', description: 'Size of HTTP server response bodies.', unit: 'By', buckets: BODY_SIZE_BUCKETS },
  httpClientRequestBody: { name: 'http.client.request.body.size', description: 'Size of HTTP client request bodies.', unit: 'By', buckets: BODY_SIZE_BUCKETS },
  httpClientResponseBody: { name: 'http.client.response.body.size', description: 'Size of HTTP client response bodies.', unit: 'By', buckets: BODY_SIZE_BUCKETS },
} as const satisfies Record<string, InstrumentDef>;

export const OVERFLOW_ATTRIBUTE = 'otel.metric.overflow';

/** How many of the longest idle workloads eviction looks through for one already exported. */
export const EVICTION_SCAN = 64;

/** Pick the workload to evict: among the `scan` first (longest idle), the first not dirty; else the first. */
export function evictionVictim<W extends { dirty: boolean }>(workloads: Map<string, W>, scan = EVICTION_SCAN): [string, W] | undefined {
  let first: [string, W] | undefined;
  let n = 0;
  for (const e of workloads) {
    first ??= e;
    if (!e[1].dirty) return e;
    if (++n >= scan) break;
  }
  return first;
}

/** Default idle time after which a workload's series are dropped (after one last export). */
export const DEFAULT_WORKLOAD_IDLE_MS = 5 * 60_000;

export interface MetricStoreOptions {
  /** workloads (resources) held; past it the longest idle is evicted */
  maxWorkloads: number;
  /** a workload with no measurement for this long is exported once more, then dropped (default 5 min) */
  idleMs?: number;
  maxSeries: number;
  maxDnsNamesPerWorkload: number;
}

export interface MetricStoreStats {
  recorded: number;
  series: number;
  /** values recorded into an overflow series */
  overflowed: number;
  /** dns.question.name values recorded as _OTHER */
  dnsNamesCapped: number;
  /** workloads dropped because maxWorkloads were held (their series end early) */
  workloadsEvicted: number;
  /** workloads dropped after idleMs without measurements (exited processes), after their last export */
  workloadsExpired: number;
}

interface Series {
  attributes: Attributes;
  start: HrTime;
  count: number;
  sum: number;
  min: number;
  max: number;
  counts: number[];
}

interface Workload {
  resource: Resource;
  instruments: Map<InstrumentDef, Map<string, Series>>;
  dnsNames: Set<string>;
  /** time of the last measurement, ms since the epoch */
  lastMs: number;
  /** measured since the last snapshot (evicting it would lose data no export carried) */
  dirty: boolean;
  /** its key in the store (resourceIdentity) */
  id: string;
  /** false once dropped (evicted or expired): cached references must not use it */
  alive: boolean;
}

/** Resource → workload pairs remembered besides the last one */
const MRU_SIZE = 4;

const identities = new WeakMap<Resource, string>();

/** A resource's identity: its attributes, order-independent (cached per Resource object). */
export function resourceIdentity(resource: Resource): string {
  let id = identities.get(resource);
  if (id === undefined) {
    id = JSON.stringify(Object.entries(resource.attributes).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    identities.set(resource, id);
  }
  return id;
}

export function hrToMs(t: HrTime): number {
  return t[0] * 1000 + t[1] / 1e6;
}

function seriesKey(attrs: Record<string, AttrValue>): string {
  let k = '';
  for (const a in attrs) k += a + '\u0000' + String(attrs[a]) + '\u0001';
  return k;
}

/** the HTTP metric attributes (semconv), in the order they are recorded */
const HTTP_SERVER_KEYS = [ATTR_HTTP_REQUEST_METHOD, ATTR_HTTP_RESPONSE_STATUS_CODE, ATTR_HTTP_ROUTE, ATTR_URL_SCHEME, ATTR_NETWORK_PROTOCOL_VERSION, ATTR_ERROR_TYPE];
const HTTP_CLIENT_KEYS = [ATTR_HTTP_REQUEST_METHOD, ATTR_HTTP_RESPONSE_STATUS_CODE, ATTR_SERVER_ADDRESS, ATTR_SERVER_PORT, ATTR_NETWORK_PROTOCOL_VERSION, ATTR_ERROR_TYPE];

const RPC_KEYS = [ATTR_RPC_SYSTEM_NAME, ATTR_RPC_METHOD, ATTR_RPC_STATUS_CODE, ATTR_ERROR_TYPE, ATTR_SERVER_ADDRESS, ATTR_SERVER_PORT];
const DNS_KEYS = [ATTR_DNS_QUESTION_NAME, ATTR_ERROR_TYPE];

/** the attributes among `keys` that `a` has, in that order */
function pickDefined(a: Readonly<Record<string, AttrValue>>, keys: readonly string[]): Record<string, AttrValue> {
  const out: Record<string, AttrValue> = {};
  for (const k of keys) if (a[k] !== undefined) out[k] = a[k]!;
  return out;
}

export class MetricStore {
  private readonly opts: Required<MetricStoreOptions>;
  /** by resourceIdentity(), least recently recorded first */
  private readonly workloads = new Map<string, Workload>();
  readonly stats: MetricStoreStats = { recorded: 0, series: 0, overflowed: 0, dnsNamesCapped: 0, workloadsEvicted: 0, workloadsExpired: 0 };

  constructor(opts: MetricStoreOptions) {
    this.opts = { idleMs: DEFAULT_WORKLOAD_IDLE_MS, ...opts };
  }

  get workloadCount(): number {
    return this.workloads.size;
  }

  /** the attribute values and series key of the last recordHttp() per span kind */
  private readonly lastHttpServer: { values: (AttrValue | undefined)[]; key: string } = { values: [], key: '' };
  private readonly lastHttpClient: { values: (AttrValue | undefined)[]; key: string } = { values: [], key: '' };

  /** the workload of the last record() (spans of one process come in runs): skips the LRU move */
  private lastResource: Resource | undefined;
  private lastWorkload: Workload | undefined;
  private readonly mru: { resource: Resource; workload: Workload }[] = [];
  /** the workload at the most-recent end of the LRU order (last moved or added) */
  private tail: Workload | undefined;
  private mruNext = 0;

  private drop(id: string, w: Workload): void {
    for (const m of w.instruments.values()) this.stats.series -= m.size;
    w.alive = false;
    if (this.tail === w) this.tail = undefined;
    this.workloads.delete(id);
    if (this.lastWorkload === w) this.lastResource = this.lastWorkload = undefined;
  }

  private workload(resource: Resource, nowMs: number): Workload {
    const last = this.lastWorkload;
    if (last && resource === this.lastResource) return this.touch(last, nowMs); // the tail already: no move
    // spans alternate between a few processes (a server and its clients): a small MRU of
    // Resource → workload avoids the identity lookup and the LRU move on each switch
    const mru = this.mru;
    for (let i = 0; i < mru.length; i++) {
      const e = mru[i]!;
      if (e.resource === resource && e.workload.alive) {
        this.lastResource = resource;
        this.lastWorkload = e.workload;
        return this.touch(e.workload, nowMs);
      }
    }
    const w = this.workloadSlow(resource, nowMs);
    this.tail = w;
    this.lastResource = resource;
    this.lastWorkload = w;
    mru[this.mruNext] = { resource, workload: w };
    this.mruNext = (this.mruNext + 1) % MRU_SIZE;
    return w;
  }

  /** a workload measured again: dirty, its time advanced, moved to the most-recent end of the LRU order (unless it is there) */
  private touch(w: Workload, nowMs: number): Workload {
    w.dirty = true;
    if (nowMs > w.lastMs) w.lastMs = nowMs;
    if (this.tail !== w) {
      this.workloads.delete(w.id);
      this.workloads.set(w.id, w);
      this.tail = w;
    }
    return w;
  }

  private workloadSlow(resource: Resource, nowMs: number): Workload {
    const id = resourceIdentity(resource);
    let w = this.workloads.get(id);
    if (w) {
      // most recently used last, so eviction takes the longest idle
      w.resource = resource;
      return this.touch(w, nowMs);
    }
    if (this.workloads.size >= this.opts.maxWorkloads) {
      const victim = evictionVictim(this.workloads);
      if (victim) {
        this.drop(victim[0], victim[1]);
        this.stats.workloadsEvicted++;
      }
    }
    w = { resource, instruments: new Map(), dnsNames: new Set(), lastMs: nowMs, dirty: true, id, alive: true };
    this.workloads.set(id, w);
    return w;
  }

  /** `key`: seriesKey(attrs) when the caller already has it (several instruments, one attribute set). */
  record(resource: Resource, def: InstrumentDef, attrs: Record<string, AttrValue>, value: number, now: HrTime, key?: string): void {
    const w = this.workload(resource, hrToMs(now));
    if (def === INSTRUMENTS.dnsLookup) {
      const name = attrs[ATTR_DNS_QUESTION_NAME];
      if (typeof name === 'string' && !w.dnsNames.has(name)) {
        if (w.dnsNames.size >= this.opts.maxDnsNamesPerWorkload) {
          attrs = { ...attrs, [ATTR_DNS_QUESTION_NAME]: '_OTHER' };
          key = undefined;
          this.stats.dnsNamesCapped++;
        } else {
          w.dnsNames.add(name);
        }
      }
    }
    let m = w.instruments.get(def);
    if (!m) w.instruments.set(def, (m = new Map()));
    key ??= seriesKey(attrs);
    let s = m.get(key);
    if (!s) {
      if (m.size >= this.opts.maxSeries) {
        attrs = { [OVERFLOW_ATTRIBUTE]: true };
        key = seriesKey(attrs);
        s = m.get(key);
        this.stats.overflowed++;
      }
      if (!s) {
        s = { attributes: attrs as Attributes, start: now, count: 0, sum: 0, min: Infinity, max: -Infinity, counts: new Array<number>(def.buckets.length + 1).fill(0) };
        m.set(key, s);
        this.stats.series++;
      }
    } else if (key.startsWith(OVERFLOW_ATTRIBUTE)) {
      this.stats.overflowed++;
    }
    this.observe(s, def, value);
  }

  /**
   * A span's HTTP instruments (duration; request and response body sizes when seen to their
   * end), all on one attribute set: one workload lookup and one series key for the three, and
   * the attribute object built only when a series is new. Same series as record() would make.
   */
  recordHttp(resource: Resource, server: boolean, a: Readonly<Record<string, AttrValue>>, seconds: number, requestBody: number | undefined, responseBody: number | undefined, endUnixNs: bigint): void {
    const keys = server ? HTTP_SERVER_KEYS : HTTP_CLIENT_KEYS;
    // consecutive spans of one kind mostly carry the same values: reuse the last key then
    // (no string building, and the key's hash is already computed)
    const last = server ? this.lastHttpServer : this.lastHttpClient;
    let same = last.key !== '';
    for (let i = 0; same && i < keys.length; i++) same = a[keys[i]!] === last.values[i];
    let key: string;
    if (same) {
      key = last.key;
    } else {
      key = '';
      for (let i = 0; i < keys.length; i++) {
        const v = a[keys[i]!];
        last.values[i] = v;
        if (v !== undefined) key += keys[i] + '\u0000' + String(v) + '\u0001';
      }
      last.key = key;
    }
    const w = this.workload(resource, Number(endUnixNs) / 1e6);
    let attrs = this.httpOne(w, server ? INSTRUMENTS.httpServer : INSTRUMENTS.httpClient, key, seconds, a, keys, undefined, resource, endUnixNs);
    if (requestBody !== undefined) attrs = this.httpOne(w, server ? INSTRUMENTS.httpServerRequestBody : INSTRUMENTS.httpClientRequestBody, key, requestBody, a, keys, attrs, resource, endUnixNs);
    if (responseBody !== undefined) this.httpOne(w, server ? INSTRUMENTS.httpServerResponseBody : INSTRUMENTS.httpClientResponseBody, key, responseBody, a, keys, attrs, resource, endUnixNs);
  }

  /** one instrument of recordHttp: an existing series directly, else record() (new series, overflow); returns the attributes if it built them */
  private httpOne(w: Workload, def: InstrumentDef, key: string, value: number, a: Readonly<Record<string, AttrValue>>, keys: readonly string[], attrs: Record<string, AttrValue> | undefined, resource: Resource, endUnixNs: bigint): Record<string, AttrValue> | undefined {
    const s = w.instruments.get(def)?.get(key);
    if (s) {
      this.observe(s, def, value);
      return attrs;
    }
    attrs ??= pickDefined(a, keys);
    this.record(resource, def, attrs, value, hrTime(endUnixNs), key);
    return attrs;
  }

  private observe(s: Series, def: InstrumentDef, value: number): void {
    s.count++;
    s.sum += value;
    if (value < s.min) s.min = value;
    if (value > s.max) s.max = value;
    let i = 0;
    while (i < def.buckets.length && value > def.buckets[i]!) i++;
    s.counts[i]!++;
    this.stats.recorded++;
  }

  /**
   * Cumulative snapshot, one ResourceMetrics per workload. Workloads idle for idleMs are in
   * this snapshot for the last time: they are dropped from the store afterwards.
   */
  collect(now: HrTime): ResourceMetrics[] {
    const out: ResourceMetrics[] = [];
    const expireBefore = hrToMs(now) - this.opts.idleMs;
    for (const [id, w] of this.workloads) {
      if (w.lastMs <= expireBefore) {
        this.drop(id, w); // deleting the current entry while iterating a Map is safe
        this.stats.workloadsExpired++;
      }
      w.dirty = false;
      const metrics = [...w.instruments.entries()].map(([def, series]) => ({
        descriptor: { name: def.name, description: def.description, unit: def.unit, valueType: ValueType.DOUBLE },
        aggregationTemporality: AggregationTemporality.CUMULATIVE,
        dataPointType: DataPointType.HISTOGRAM as const,
        dataPoints: [...series.values()].map((s) => ({
          startTime: s.start,
          endTime: now,
          attributes: s.attributes,
          value: {
            buckets: { boundaries: def.buckets, counts: [...s.counts] },
            sum: s.sum,
            count: s.count,
            min: s.min,
            max: s.max,
          },
        })),
      }));
      if (metrics.length) out.push({ resource: w.resource, scopeMetrics: [{ scope: { name: AGENT_NAME, version: AGENT_VERSION }, metrics }] });
    }
    return out;
  }
}

/** The metric a finished span feeds, with the attributes semconv prescribes for it. */
export function recordSpan(store: MetricStore, s: SidelightSpan, resource: Resource): void {
  const a = s.attributes;
  const seconds = Number(s.endUnixNs - s.startUnixNs) / 1e9;
  if (a[ATTR_HTTP_REQUEST_METHOD] !== undefined && a[ATTR_RPC_SYSTEM_NAME] === undefined && a[ATTR_DNS_QUESTION_NAME] === undefined) {
    store.recordHttp(resource, s.kind === 'server', a, seconds, s.bodySize?.request, s.bodySize?.response, s.endUnixNs);
    return;
  }
  const now = hrTime(s.endUnixNs);
  if (a[ATTR_RPC_SYSTEM_NAME] !== undefined) {
    store.record(resource, s.kind === 'server' ? INSTRUMENTS.rpcServer : INSTRUMENTS.rpcClient, pickDefined(a, RPC_KEYS), seconds, now);
  } else if (a[ATTR_DNS_QUESTION_NAME] !== undefined) {
    store.record(resource, INSTRUMENTS.dnsLookup, pickDefined(a, DNS_KEYS), seconds, now);
  }
}

export function createOtlpMetricExporter(c: TracesExportConfig): PushMetricExporter {
  const o = exporterOptions(c);
  if (c.protocol === 'grpc') return new GrpcMetricExporter(o.grpc);
  return c.protocol === 'http/json' ? new JsonMetricExporter(o.http) : new ProtoMetricExporter(o.http);
}

export interface MetricExportStats {
  exports: number;
  failures: number;
  lastError?: string;
}

/** Anything that yields a cumulative snapshot (MetricStore, the service graph, ...). */
export interface MetricSource {
  collect(now: HrTime): ResourceMetrics[];
}

/** An exporter that can send several workloads in one request (metricexporter.ts). */
export interface BatchMetricExporter extends PushMetricExporter {
  exportBatch(metrics: ResourceMetrics[], resultCallback: (result: { code: ExportResultCode; error?: Error }) => void): void;
}

/** Workloads (ResourceMetrics) per export request: few requests, each well under the Collector's 4 MiB gRPC limit. */
export const WORKLOADS_PER_REQUEST = 64;

/**
 * Sends the store's snapshot every intervalMs; one export round at a time. A batch exporter
 * gets WORKLOADS_PER_REQUEST workloads per request; another, one request per workload.
 */
export class MetricExportLoop {
  private readonly store: MetricSource;
  private readonly exporter: PushMetricExporter | BatchMetricExporter;
  private readonly intervalMs: number;
  private readonly onError: (m: string) => void;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  readonly stats: MetricExportStats = { exports: 0, failures: 0 };

  constructor(store: MetricSource, exporter: PushMetricExporter | BatchMetricExporter, intervalMs: number, onError: (m: string) => void = () => {}) {
    this.store = store;
    this.exporter = exporter;
    this.intervalMs = intervalMs;
    this.onError = onError;
  }

  start(): void {
    this.timer = setInterval(() => void this.flush(), this.intervalMs);
    this.timer.unref();
  }

  /** Export the current snapshot (waits for a round already running). */
  async flush(): Promise<void> {
    if (this.running) return this.running;
    this.running = (async () => {
      const now = hrTime(BigInt(Date.now()) * 1_000_000n);
      const all = this.store.collect(now);
      const ex = this.exporter;
      const batch = 'exportBatch' in ex ? ex : undefined;
      const step = batch ? WORKLOADS_PER_REQUEST : 1;
      for (let i = 0; i < all.length; i += step) {
        const chunk = all.slice(i, i + step);
        const r = await new Promise<{ code: ExportResultCode; error?: Error }>((resolve) => (batch ? batch.exportBatch(chunk, resolve) : ex.export(chunk[0]!, resolve)));
        if (r.code === ExportResultCode.SUCCESS) this.stats.exports++;
        else {
          this.stats.failures++;
          this.stats.lastError = r.error?.message ?? 'export failed';
          this.onError(`metric export failed: ${this.stats.lastError}`);
        }
      }
    })().finally(() => (this.running = undefined));
    return this.running;
  }

  async shutdown(deadlineMs: number): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await Promise.race([this.flush(), new Promise((r) => setTimeout(r, deadlineMs).unref())]);
    await Promise.race([this.exporter.shutdown(), new Promise((r) => setTimeout(r, 2000).unref())]);
  }
}
