/**
 * agent.ts — one running Sidelight agent: loads and configures the eBPF object, attaches
 * it (the TLS uprobes per OpenSSL file, found by receiver/tls.ts), and pumps ring-buffer batches through decode → routing (process records to the
 * process cache, DNS to the DNS tracker, the rest to the connection table: HTTP/1, HTTP/2,
 * gRPC) → span assembly and trace stitching → enrichment (process, container, Kubernetes)
 * → console trace trees, OTLP export and/or an OTLP JSON lines file (spans, and duration
 * metrics per workload); serves health and the agent's own metrics (GET /metrics, and
 * sidelight.* over OTLP: src/otlp/selfmetrics.ts). At start, the iter/tcp pickup seeds the
 * connection table with the connections that predate the agent (receiver/pickup.ts).
 *
 * Lifetime: start() once, stop() once (idempotent). Everything runs on the main thread;
 * the addon's poll thread only hands over whole batches, which are processed in time
 * slices so health, metrics and export keep their turns when the agent is starved of CPU
 * (the backlog is bounded by pausing the poll thread). Every loss is counted in stats().
 */
import { existsSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import { getHeapSpaceStatistics } from 'node:v8';
import { resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import type { HrTime } from '@opentelemetry/api';
import type { Config } from './config.js';
import { CgroupIndex } from './enrich/cgroups.js';
import { inCluster, KubernetesMetadata, nodeNameFromEnv } from './enrich/k8s.js';
import { isLibuvWorker, ProcessCache } from './enrich/process.js';
import { startHealthServer } from './health.js';
import { OtlpReceiver } from './ingest/receiver.js';
import { Senders } from './ingest/senders.js';
import { log } from './log.js';
import { loadNative, wrapNative, type NativeObject } from './native.js';
import { ensureIds } from './otlp/convert.js';
import { MetricExportLoop, MetricStore, recordSpan } from './otlp/metrics.js';
import { OtlpMetricExporter } from './otlp/metricexporter.js';
import { ExportPipeline } from './otlp/pipeline.js';
import { renderPrometheus, selfMetrics, SelfMetricsLoop, type CacheSelfStats, type SelfSnapshot } from './otlp/selfmetrics.js';
import { ConnMetricStore } from './otlp/connmetrics.js';
import { ServiceGraph } from './otlp/servicegraph.js';
import { FileSink } from './otlp/filesink.js';
import { OtlpSink } from './otlp/sinks.js';
import { TraceTreeView } from './otlp/terminal.js';
import { bpfObjectPath } from './paths.js';
import { MonotonicClock } from './receiver/clock.js';
import { ConnectionTable } from './receiver/connections.js';
import { TlsAttacher } from './receiver/tls.js';
import { Injection } from './receiver/inject.js';
import { DnsTracker } from './receiver/dns.js';
import { SdkProcesses } from './receiver/sdkdetect.js';
import { RouteTemplater } from './receiver/routes.js';
import { TcpTracker } from './receiver/tcpconn.js';
import { decodePickup, newPickupStats, seedFromPickup } from './receiver/pickup.js';
import { decodeBatchFrom, decodeCacheStats, type DecodeStats, type KernelEvent } from './receiver/decode.js';
import {
  BPF_NAMES,
  COUNTER_NAMES,
  encodeConfig,
  EventType,
  ITER_PROGRAM_NAMES,
  ITER_PROGRAMS,
  PICKUP,
  FILTER_EXCLUDE,
  FILTER_INCLUDE,
  FilterMode,
  leU16,
  leU32,
  leU64,
  readLeU64,
  SL_EXE_LEN,
  TLS_PROGRAM_NAMES,
} from './receiver/layout.js';
import { headCacheStats, internStats } from './receiver/http1.js';
import { keyCacheStats, kvCacheStats, memoStats, slabStats } from './otlp/encode.js';
import type { SidelightSpan } from './receiver/span.js';
import { AGENT_NAME, AGENT_VERSION } from './version.js';

/**
 * Longest stretch of batch processing before timers and I/O get a turn. One request (accept,
 * read, answer) takes a few event-loop turns, each with a slice: at 2% of a CPU a 10 ms slice
 * made /healthz take 1.7-2.5 s.
 */
const BATCH_SLICE_MS = 4;
/**
 * Ring-buffer batch buffers the addon refills instead of allocating (native.ts start()): the
 * backlog holds at most 4 (backlogHigh) plus one being filled; more only while JS lags, and
 * then the addon falls back to fresh buffers. Resident: up to this many × maxBatchBytes, kept
 * within REUSED_BYTES (a large maxBatchBytes reuses fewer, or none).
 */
const REUSED_BATCHES = 6;
const REUSED_BYTES = 8 << 20;

/** Where the cgroup v2 hierarchy is mounted (hybrid systems mount it at .../unified). */
export function cgroup2Root(): string {
  for (const p of ['/sys/fs/cgroup/unified', '/sys/fs/cgroup']) {
    try {
      if (statSync(`${p}/cgroup.controllers`).isFile() || statSync(`${p}/cgroup.procs`).isFile()) return p;
    } catch {
      /* try the next */
    }
  }
  return '/sys/fs/cgroup';
}

/** A cgroup filter entry (path or numeric id) → cgroup v2 id (the directory's inode). */
export function resolveCgroupId(entry: string | number): bigint {
  if (typeof entry === 'number' || /^\d+$/.test(entry)) return BigInt(entry);
  const path = `${cgroup2Root()}${entry}`;
  try {
    return BigInt(statSync(path).ino);
  } catch (e) {
    throw new Error(`filter.cgroups: ${entry}: no such cgroup v2 directory (${path}): ${(e as Error).message}`);
  }
}

function mode(include: unknown[], exclude: unknown[]): FilterMode {
  return include.length > 0 ? FilterMode.Include : exclude.length > 0 ? FilterMode.Exclude : FilterMode.Off;
}

export interface AttachResult {
  name: string;
  ok: boolean;
  errno: number;
  error: string;
}

/** The bounded per-event caches (decode, HTTP/1 intern table and parsed heads, OTLP attribute keys and fields): a copy of their counters. */
function cacheStats(): CacheSelfStats {
  return { decode: { ...decodeCacheStats }, httpIntern: { ...internStats }, httpHeads: { ...headCacheStats }, otlpKeys: { ...keyCacheStats }, otlpAttributes: { ...kvCacheStats }, otlpMemo: { hits: memoStats.whole, misses: memoStats.spans - memoStats.whole, fields: memoStats.fields }, otlpSlabs: { hits: slabStats.reused, misses: slabStats.made } };
}

/** The agent process's memory, bytes: RSS, the V8 heap (in use, reserved) and its young generation (reserved; capped by bin/sidelight). */
function memoryNow(): { rss: number; heapUsed: number; heapTotal: number; youngGeneration: number } {
  const m = process.memoryUsage();
  const young = getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')?.space_size ?? 0;
  return { rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, youngGeneration: young };
}

export class Agent {
  private readonly config: Config;
  private readonly clock = new MonotonicClock();
  private readonly table: ConnectionTable;
  private readonly dns: DnsTracker;
  private readonly processes: ProcessCache;
  private readonly cgroups: CgroupIndex;
  private readonly pipeline: ExportPipeline | undefined;
  /** OTLP receiver for apps' own SDK telemetry (src/ingest/); undefined when receiver.enabled is false */
  private readonly receiver: OtlpReceiver | undefined;
  /** processes that export their own traces (seen in traffic, or through the receiver): their eBPF hop spans are dropped (sdk.dedup) */
  private readonly sdk: SdkProcesses;
  /** trace trees on stdout (export.console) */
  private readonly view: TraceTreeView | undefined;
  /** OTLP JSON lines to export.file (`run --output FILE`) */
  private readonly filePipeline: ExportPipeline | undefined;
  private readonly metrics: MetricStore | undefined;
  private readonly metricLoop: MetricExportLoop | undefined;
  private readonly metricExporter: OtlpMetricExporter | undefined;
  /** the agent's own metrics (sidelight.*) over OTLP; also served as GET /metrics */
  private readonly selfLoop: SelfMetricsLoop | undefined;
  private spansCreated = 0;
  /** client → server edges from paired spans: exported with the metrics, served on GET /map */
  private readonly graph: ServiceGraph;
  /** TCP summaries (SL_EV_TCP) and connects/accepts → connection facts → connMetrics */
  private readonly tcp: TcpTracker;
  private readonly connMetrics: ConnMetricStore | undefined;
  private readonly decodeStats: DecodeStats = { records: 0, malformed: 0 };
  private obj: NativeObject | undefined;
  private k8s: KubernetesMetadata | undefined;
  private health: { address: string; close(): Promise<void> } | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;
  /** TLS uprobes (tls.enabled); attached after the syscall probes */
  private tls: TlsAttacher | undefined;
  /** traceparent injection (http.inject.enabled): its own BPF object */
  private injection: Injection | undefined;
  private dnsTimer: NodeJS.Timeout | undefined;
  /** ends HTTP requests / HTTP/2 streams unanswered past http.requestTimeoutMs */
  private requestTimer: NodeJS.Timeout | undefined;
  private batches = 0;
  /** the iter/tcp pickup of connections open before the agent started (receiver/pickup.ts) */
  private readonly pickupStats = newPickupStats();
  /**
   * Batches accepted from the poll thread and not yet processed, oldest first; the first may
   * be part-done (from byte backlogHead). Processed in time slices (BATCH_SLICE_MS) from
   * setImmediate, so timers and I/O (health, export) run between slices even when the agent
   * is starved of CPU. Bounded: at backlogHigh bytes the poll thread is paused (records
   * back up in the kernel ring, whose drops are counted) until it is down to backlogLow.
   * A batch is in the first backlogLens[i] bytes of backlog[i]; once processed it goes back to
   * the addon (recycle) to be refilled: nothing here keeps a view of a batch past its
   * processing (the parsers copy what they keep).
   */
  private readonly backlog: ArrayBuffer[] = [];
  private readonly backlogLens: number[] = [];
  private backlogHead = 0;
  private backlogBytes = 0;
  private readonly backlogHigh: number;
  private readonly backlogLow: number;
  private drainScheduled = false;
  private pollPaused = false;
  private readonly backlogStats = { pauses: 0, slices: 0, peakBytes: 0, recycled: 0 };
  private readonly routeEvent = (ev: KernelEvent): void => this.route(ev);
  private ready = false;
  private stopped = false;
  attachResults: AttachResult[] = [];
  /** called for every finished span (tests, embedding) */
  onSpan: ((s: SidelightSpan, resource: Resource) => void) | undefined;

  constructor(config: Config) {
    this.config = config;
    this.backlogHigh = 4 * config.capture.maxBatchBytes;
    this.backlogLow = config.capture.maxBatchBytes;
    const extra = { ...config.export.resourceAttributes };
    this.cgroups = new CgroupIndex({ root: cgroup2Root() });
    this.processes = new ProcessCache({ maxProcesses: config.limits.processes, extraAttributes: extra, cgroups: this.cgroups });
    this.table = new ConnectionTable(
      {
        maxConnections: config.limits.connections,
        selfTgid: process.pid,
        // short-lived clients may be gone by the time their span ends: look them up now
        onNewConnection: (ev) => {
          const info = this.processes.info({ tgid: ev.tgid, tid: ev.tid, comm: ev.comm, cgroupId: ev.cgroupId });
          // injection must not give a Go process's calls another request's trace id
          if (info.go && this.injection) this.injection.markUntrusted(ev.tgid);
        },
        onPickedData: (ev) => this.tcp.pickedOwner(ev),
        threadsUntrusted: (tgid) => this.processes.threadsUntrusted(tgid),
        isPoolThread: (tgid, tid) => isLibuvWorker(tgid, tid),
        idleMs: 5 * 60_000,
        http: { captureQuery: config.http.captureQuery, redactQueryKeys: new Set(config.http.redactQueryKeys.map((k) => k.toLowerCase())), maxPending: config.limits.pendingPerConnection, requestTimeoutMs: config.http.requestTimeoutMs, routes: new RouteTemplater(config.http.routes) },
      },
      this.clock,
      (s) => this.onFinishedSpan(s),
    );
    this.dns = new DnsTracker(config.dns, this.clock, this.table.traces, (s) => this.onFinishedSpan(s));
    const traces = config.export.traces;
    this.pipeline = traces
      ? new ExportPipeline({ ...config.export.batch, retryMaxElapsedMs: config.export.retry.maxElapsedMs, retryInitialMs: config.export.retry.initialMs, retryMaxMs: config.export.retry.maxMs }, new OtlpSink(traces), (m) => log.warn(m))
      : undefined;
    const showConsole = config.export.console === 'always' || (config.export.console === 'auto' && !traces);
    this.view = showConsole ? new TraceTreeView() : undefined;
    this.filePipeline = config.export.file ? new ExportPipeline(config.export.batch, new FileSink(config.export.file), (m) => log.warn(m)) : undefined;
    const rc = config.receiver;
    if (rc.enabled) {
      const senders = new Senders(
        { maxConnections: rc.maxSenders, maxSenders: rc.maxSenders, senderBytesPerSecond: rc.senderBytesPerSecond, totalBytesPerSecond: rc.totalBytesPerSecond },
        this.processes,
      );
      this.receiver = new OtlpReceiver(
        rc,
        { traces: config.export.traces, metrics: config.export.metrics, logs: config.export.logs },
        { delayMs: config.export.batch.delayMs, retry: config.export.retry },
        senders,
        (m) => log.warn(m),
      );
    }
    const sdkSenders = this.receiver && rc.dedup ? this.receiver.senders : undefined;
    this.sdk = new SdkProcesses({
      maxProcesses: config.sdk.maxProcesses,
      ttlMs: config.sdk.ttlMs,
      ...(sdkSenders ? { receiverLookup: (tgid: number, now: number) => sdkSenders.isSdkSender(tgid, now) } : {}),
    });
    this.graph = new ServiceGraph(
      { ...config.export.serviceGraph, maxEdges: config.export.maxSeries },
      // host.name: each node's agent exports its own cumulative edges; they must not collide
      resourceFromAttributes({ ...extra, 'service.name': AGENT_NAME, 'service.version': AGENT_VERSION, 'host.name': hostname() }),
    );
    this.tcp = new TcpTracker({ maxAccepted: config.limits.connections, selfTgid: process.pid }, (f) =>
      this.connMetrics?.record(f, this.processes.resource(f.process)),
    );
    const m = config.export.metrics;
    if (m) {
      // series of a workload that stopped recording (an exited process) are exported once more, then dropped
      const idleMs = Math.max(config.export.metricsIdleMs, 2 * config.export.metricsIntervalMs);
      const conn = new ConnMetricStore({ maxWorkloads: config.limits.processes, maxSeries: config.export.maxSeries, idleMs });
      this.connMetrics = conn;
      this.metrics = new MetricStore({
        maxWorkloads: config.limits.processes,
        maxSeries: config.export.maxSeries,
        maxDnsNamesPerWorkload: config.dns.maxNamesPerWorkload,
        idleMs,
      });
      const store = this.metrics;
      const source = { collect: (now: HrTime) => [...store.collect(now), ...conn.collect(now), ...this.graph.collect(now)] };
      this.metricExporter = new OtlpMetricExporter(m, (msg) => log.warn(msg));
      this.metricLoop = new MetricExportLoop(source, this.metricExporter, config.export.metricsIntervalMs, (msg) => log.warn(msg));
      const self = resourceFromAttributes({ ...extra, 'service.name': AGENT_NAME, 'service.version': AGENT_VERSION, 'process.pid': process.pid, 'host.name': hostname() });
      this.selfLoop = new SelfMetricsLoop(() => this.selfSnapshot(), self, this.metricExporter, config.export.metricsIntervalMs, (msg) => log.warn(msg));
    }
  }

  get healthAddress(): string | undefined {
    return this.health?.address;
  }

  async start(): Promise<void> {
    const c = this.config;
    const healthState = {
      live: true,
      ready: false,
      detail: () => this.stats(),
      map: () => this.graph.snapshot(),
      metrics: () => renderPrometheus(selfMetrics(this.selfSnapshot())),
    };
    Object.defineProperty(healthState, 'ready', { get: () => this.ready });
    this.health = await startHealthServer(c.health.address, healthState);

    // Kubernetes metadata syncs while the probes load; lookups before that simply miss
    this.k8s = this.createKubernetes();
    if (this.k8s) {
      this.processes.setKubernetes(this.k8s, this.k8s.clusterName);
      this.receiver?.senders.setKubernetes(this.k8s, this.k8s.clusterName);
      this.k8s.start().catch((e: Error) => log.error(`kubernetes metadata disabled: ${e.message}`));
    }

    const native = loadNative();
    const f = c.filter;
    const cgroupInclude = f.cgroups.include.map(resolveCgroupId);
    const cgroupExclude = f.cgroups.exclude.map(resolveCgroupId);
    const rodata = encodeConfig({
      selfTgid: process.pid,
      captureBytes: c.capture.bytes,
      wakeupBytes: c.capture.wakeupBytes,
      pidMode: mode(f.pids.include, f.pids.exclude),
      cgroupMode: mode(cgroupInclude, cgroupExclude),
      portMode: mode(f.ports.include, f.ports.exclude),
    });
    const obj = wrapNative(() =>
      native.open(bpfObjectPath(BPF_NAMES.object), rodata, { [BPF_NAMES.ringbuf]: c.capture.ringBufferBytes }),
    );
    this.obj = obj;
    try {
      for (const p of f.pids.include) obj.mapUpdate(BPF_NAMES.pidFilter, leU32(p), Uint8Array.of(FILTER_INCLUDE));
      for (const p of f.pids.exclude) obj.mapUpdate(BPF_NAMES.pidFilter, leU32(p), Uint8Array.of(FILTER_EXCLUDE));
      for (const id of cgroupInclude) obj.mapUpdate(BPF_NAMES.cgroupFilter, leU64(id), Uint8Array.of(FILTER_INCLUDE));
      for (const id of cgroupExclude) obj.mapUpdate(BPF_NAMES.cgroupFilter, leU64(id), Uint8Array.of(FILTER_EXCLUDE));
      for (const p of f.ports.include) obj.mapUpdate(BPF_NAMES.portFilter, leU16(p), Uint8Array.of(FILTER_INCLUDE));
      for (const p of f.ports.exclude) obj.mapUpdate(BPF_NAMES.portFilter, leU16(p), Uint8Array.of(FILTER_EXCLUDE));
      for (const p of c.dns.ports) obj.mapUpdate(BPF_NAMES.dnsPorts, leU16(p), Uint8Array.of(1));
      const st = obj.enableStats();
      if (!st.ok) log.warn(`bpf run-time stats unavailable (errno ${st.errno}); per-probe time will read 0`);

      // the TLS uprobes are attached per binary (TlsAttacher), not by their SEC(); the
      // iterator runs once below (pickup()), it is not a probe
      this.attachResults = obj.attach([...TLS_PROGRAM_NAMES, ...ITER_PROGRAM_NAMES]);
      const failed = this.attachResults.filter((r) => !r.ok);
      if (failed.length > 0) {
        throw new Error(`attach failed: ${failed.map((r) => `${r.name}: ${r.error} (errno ${r.errno})`).join('; ')}`);
      }
      obj.start(
        BPF_NAMES.ringbuf,
        c.capture.pollIntervalMs,
        c.capture.maxBatchBytes,
        (batch, length) => this.onBatch(batch, length),
        (err) => log.error(`ring buffer poll: ${err.message}`),
        Math.min(REUSED_BATCHES, Math.floor(REUSED_BYTES / c.capture.maxBatchBytes)),
      );
      // in the same tick as start(): the table is seeded before the first batch is handled
      this.pickup(obj);
    } catch (e) {
      obj.close();
      this.obj = undefined;
      await this.k8s?.stop();
      throw e;
    }
    if (c.tls.enabled) {
      const o = this.obj;
      this.tls = new TlsAttacher(
        { attachUprobe: (...a) => wrapNative(() => o.attachUprobe(...a)), detachUprobe: (h) => o.detachUprobe(h) },
        { maxBinaries: c.tls.maxBinaries, rescanMs: c.tls.rescanMs, paths: c.tls.paths, warn: (m) => log.warn(m) },
      );
      this.tls.start();
    }
    if (c.http.inject.enabled) {
      try {
        this.injection = Injection.start(native, {
          selfTgid: process.pid,
          cgroupPath: `${cgroup2Root()}${c.http.inject.cgroup === '/' ? '' : c.http.inject.cgroup}`,
          ports: c.http.inject.ports,
          pollIntervalMs: c.capture.pollIntervalMs,
          onError: (err) => log.error(`inject ring buffer poll: ${err.message}`),
        });
      } catch (e) {
        await this.stop();
        throw e;
      }
      this.table.traces.injections = this.injection.tracker;
    }
    this.metricLoop?.start();
    this.selfLoop?.begin();
    this.sweepTimer = setInterval(() => {
      this.table.sweep();
      this.sdk.sweep();
    }, 30_000);
    this.sweepTimer.unref();
    this.dnsTimer = setInterval(() => {
      this.dns.sweep();
      this.graph.sweep();
    }, Math.min(1000, c.dns.timeoutMs));
    this.dnsTimer.unref();
    this.requestTimer = setInterval(() => this.table.expireRequests(), Math.min(1000, c.http.requestTimeoutMs));
    this.requestTimer.unref();
    if (this.receiver) {
      try {
        await this.receiver.start();
      } catch (e) {
        await this.stop();
        throw e;
      }
      const a = this.receiver.addresses;
      log.info(`OTLP receiver: gRPC ${a.grpc ?? 'off'}, HTTP ${a.http ?? 'off'}`);
      const none = (['traces', 'metrics', 'logs'] as const).filter((sig) => !c.export[sig]);
      if (none.length > 0) log.warn(`OTLP receiver: no export endpoint for ${none.join(', ')}: what apps send there is accepted and dropped (counted)`);
    }
    this.ready = true;
    log.info(`attached ${this.attachResults.map((r) => r.name).join(', ')}; health on http://${this.health.address}`);
  }

  /**
   * Seed the connection table with the TCP connections open before the agent started (the
   * iter/tcp pickup). A failure is counted and logged, never fatal: those connections then
   * get their role from their first bytes, as before.
   */
  private pickup(obj: NativeObject): void {
    const st = this.pickupStats;
    const t0 = performance.now();
    try {
      // every connection the table can hold, plus the listeners the kernel side remembers
      const maxBytes = (this.config.limits.connections + 4096) * PICKUP.size;
      const out = wrapNative(() => obj.runIter(ITER_PROGRAMS.tcp, maxBytes));
      if (out.truncated) st.truncated++;
      const { records } = decodePickup(out.data);
      seedFromPickup(records, this.table, st, this.clock.nowMono(), (sock) => this.tcp.pickedUp(sock));
      st.runs++;
    } catch (e) {
      st.failed++;
      log.warn(`pickup of existing connections failed (their roles will come from their bytes): ${(e as Error).message}`);
    }
    st.durationMs = Math.round((performance.now() - t0) * 10) / 10;
    log.info(
      `pickup: ${st.seen} connections seen, ${st.seededServer} server + ${st.seededClient} client seeded, ${st.listeners} listeners, ${st.durationMs} ms`,
    );
  }

  private onBatch(batch: ArrayBuffer, length: number): void {
    this.batches++;
    this.backlog.push(batch);
    this.backlogLens.push(length);
    this.backlogBytes += length;
    if (this.backlogBytes > this.backlogStats.peakBytes) this.backlogStats.peakBytes = this.backlogBytes;
    if (!this.pollPaused && this.backlogBytes >= this.backlogHigh && this.obj) {
      this.pollPaused = true;
      this.backlogStats.pauses++;
      this.obj.setPaused(true);
    }
    this.scheduleDrain();
  }

  /** One drainBacklog slice on the next check phase (after this turn's I/O), once. */
  private scheduleDrain(): void {
    if (this.drainScheduled || this.stopped) return;
    this.drainScheduled = true;
    setImmediate(() => {
      this.drainScheduled = false;
      this.drainBacklog(BATCH_SLICE_MS);
    });
  }

  /** Process backlog for about sliceMs (Infinity: all of it), then reschedule if any is left. */
  private drainBacklog(sliceMs: number): void {
    this.backlogStats.slices++;
    const until = performance.now() + sliceMs;
    const shouldYield = Number.isFinite(sliceMs) ? () => performance.now() >= until : undefined;
    while (this.backlog.length > 0) {
      const b = this.backlog[0]!;
      const len = this.backlogLens[0]!;
      let next = len;
      try {
        next = decodeBatchFrom(b, this.routeEvent, this.decodeStats, this.backlogHead, shouldYield, len);
      } catch (e) {
        // a bug, not traffic: keep running, count it, say it (the rest of the batch is lost)
        this.decodeStats.malformed++;
        log.error(`batch processing failed: ${(e as Error).stack ?? String(e)}`);
      }
      if (next < len) {
        this.backlogHead = next;
        break;
      }
      this.backlog.shift();
      this.backlogLens.shift();
      this.backlogHead = 0;
      this.backlogBytes -= len;
      if (this.obj?.recycle(b) === true) this.backlogStats.recycled++;
      if (shouldYield?.()) break;
    }
    if (this.pollPaused && this.backlogBytes <= this.backlogLow) {
      this.pollPaused = false;
      this.obj?.setPaused(false);
    }
    if (this.backlog.length > 0) this.scheduleDrain();
  }

  private route(ev: KernelEvent): void {
    if (ev.type === EventType.Proc) this.onProcess(ev);
    else if (ev.type === EventType.Tcp) this.tcp.onSummary(ev);
    else if (this.dns.claims(ev)) this.dns.onEvent(ev);
    else {
      if (ev.type === EventType.Connect || ev.type === EventType.Accept || ev.type === EventType.Close) this.tcp.observe(ev);
      this.table.onEvent(ev);
    }
  }

  /** The kernel's description of a process, sent on its first connect/accept. */
  private onProcess(ev: KernelEvent): void {
    const exe = ev.data.subarray(0, SL_EXE_LEN);
    const nul = exe.indexOf(0);
    const name = Buffer.from(exe.subarray(0, nul < 0 ? exe.length : nul)).toString('utf8');
    this.processes.hint(ev.tgid, name, ev.data.subarray(SL_EXE_LEN));
    // a new process: does it bring its own OpenSSL?
    this.tls?.scanPid(ev.tgid);
  }

  /** null when off; throws when `k8s.enabled: true` cannot work (before anything is attached). */
  private createKubernetes(): KubernetesMetadata | undefined {
    const k = this.config.k8s;
    if (k.enabled === 'false') return undefined;
    const nodeName = k.nodeName || nodeNameFromEnv();
    const credentials = k.kubeconfig !== '' || inCluster();
    if (k.enabled === 'auto' && (!nodeName || !credentials)) {
      log.debug(`kubernetes metadata off: ${!credentials ? 'not in a cluster' : 'no node name (NODE_NAME)'}`);
      return undefined;
    }
    if (!nodeName) throw new Error('k8s.enabled is true but the node name is unknown: set NODE_NAME (downward API fieldRef spec.nodeName) or k8s.nodeName');
    if (!credentials) throw new Error('k8s.enabled is true but there are no in-cluster credentials and no k8s.kubeconfig');
    if (k.kubeconfig && !existsSync(k.kubeconfig)) throw new Error(`k8s.kubeconfig: ${k.kubeconfig}: no such file`);
    return new KubernetesMetadata({
      nodeName,
      ...(k.clusterName ? { clusterName: k.clusterName } : {}),
      ...(k.kubeconfig ? { kubeconfig: k.kubeconfig } : {}),
      clusterDomain: k.clusterDomain,
      peers: k.peers,
      maxPods: k.maxPods,
      maxServices: k.maxServices,
      maxEndpointSlices: k.maxEndpointSlices,
      maxEndpoints: k.maxEndpoints,
      ownerCacheTtlMs: k.ownerCacheTtlMs,
      deletedPodRetentionMs: k.deletedPodRetentionMs,
      syncTimeoutMs: k.syncTimeoutMs,
      logger: log,
    });
  }

  /** sidelight.peer.* on a CLIENT span; server.address only when the span has none. */
  private describePeer(s: SidelightSpan): void {
    const ip = s.attributes['network.peer.address'];
    const port = s.attributes['network.peer.port'];
    if (typeof ip !== 'string') return;
    const d = this.k8s!.describePeer(ip, typeof port === 'number' ? port : undefined);
    if (!d) return;
    const { serverAddress, ...attrs } = d;
    for (const [k, v] of Object.entries(attrs)) if (v !== undefined && !(k in s.attributes)) s.attributes[k] = v;
    if (serverAddress && s.attributes['server.address'] === undefined) s.attributes['server.address'] = serverAddress;
  }

  private onFinishedSpan(s: SidelightSpan): void {
    this.spansCreated++;
    ensureIds(s);
    // an OTLP trace export marks its process; the process then reports its hops itself: one span per hop
    this.sdk.observe(s);
    if (this.config.sdk.dedup && this.sdk.suppress(s)) return;
    if (this.k8s && s.kind === 'client') this.describePeer(s);
    const resource = this.processes.resource(s.process);
    this.view?.push(s, String(resource.attributes['service.name'] ?? s.process.comm));
    this.pipeline?.push(s, resource);
    this.filePipeline?.push(s, resource);
    if (this.metrics) recordSpan(this.metrics, s, resource);
    this.graph.onSpan(s, resource);
    this.onSpan?.(s, resource);
  }

  /** BPF counters summed over CPUs, by name. */
  kernelCounters(): Record<string, number> {
    const out: Record<string, number> = {};
    if (!this.obj) return out;
    COUNTER_NAMES.forEach((name, i) => {
      const vals = this.obj!.mapLookup(BPF_NAMES.counters, leU32(i)) ?? [];
      let sum = 0n;
      for (const v of vals) sum += readLeU64(v);
      out[name] = Number(sum);
    });
    return out;
  }

  /** The counters self-telemetry (selfmetrics.ts) is built from. */
  selfSnapshot(): SelfSnapshot {
    const http = this.table.stats.http;
    const dns = this.dns.stats;
    return {
      kernel: this.kernelCounters(),
      probes: this.obj ? this.obj.programStats().map((p) => ({ name: p.name, runTimeNs: Number(p.runTimeNs), runCount: Number(p.runCount) })) : [],
      eventsReceived: this.decodeStats.records,
      malformedEvents: this.decodeStats.malformed,
      spansCreated: this.spansCreated,
      parserGaveUp: http.parseErrors + http.h2.desyncs + http.h2.protocolErrors + dns.parseErrors + dns.tcpDesync,
      pendingOverflow: http.pendingOverflow,
      connections: this.table.size,
      traces: this.pipeline ? { stats: this.pipeline.stats, depth: this.pipeline.depth, depthBytes: this.pipeline.depthBytes, latency: this.pipeline.latency } : null,
      metrics: this.metricExporter ? this.metricExporter.stats : null,
      ...(this.receiver ? { receiver: this.receiver.selfStats() } : {}),
      sdk: { deduplicated: this.sdk.stats.deduplicated, processes: this.sdk.size },
      pickup: { ...this.pickupStats },
      ...(this.metrics && this.connMetrics
        ? {
            workloadMetrics: {
              requests: { workloads: this.metrics.workloadCount, evicted: this.metrics.stats.workloadsEvicted, expired: this.metrics.stats.workloadsExpired },
              tcp: { workloads: this.connMetrics.workloadCount, evicted: this.connMetrics.stats.workloadsEvicted, expired: this.connMetrics.stats.workloadsExpired },
            },
          }
        : {}),
      memory: memoryNow(),
      caches: cacheStats(),
    };
  }

  stats(): Record<string, unknown> {
    const probes = this.obj
      ? this.obj.programStats().map((p) => ({ name: p.name, runTimeNs: Number(p.runTimeNs), runCount: Number(p.runCount) }))
      : [];
    return {
      ready: this.ready,
      kernel: this.kernelCounters(),
      probes,
      batches: this.batches,
      backlog: { bytes: this.backlogBytes, batches: this.backlog.length, paused: this.pollPaused, highBytes: this.backlogHigh, ...this.backlogStats },
      decode: { ...this.decodeStats },
      // bounded caches on the per-event path (slots fixed at module load): hit rates
      caches: cacheStats(),
      connections: { size: this.table.size, ...this.table.stats, http: { ...this.table.stats.http }, trace: { ...this.table.stats.trace, ...this.table.traces.sizes } },
      dns: { pending: this.dns.size, ...this.dns.stats },
      tls: this.tls ? { ...this.tls.stats } : null,
      inject: this.injection ? this.injection.stats() : null,
      processes: { size: this.processes.size, ...this.processes.stats },
      cgroups: { size: this.cgroups.size, ...this.cgroups.stats },
      k8s: this.k8s ? { ready: this.k8s.ready, ...this.k8s.stats } : null,
      export: this.pipeline ? { depth: this.pipeline.depth, depthBytes: this.pipeline.depthBytes, ...this.pipeline.stats } : null,
      file: this.filePipeline ? { depth: this.filePipeline.depth, ...this.filePipeline.stats } : null,
      console: this.view ? { held: this.view.held, ...this.view.stats } : null,
      receiver: this.receiver ? { ...this.receiver.snapshot(), dedupSuppressed: this.sdk.stats.deduplicated } : null,
      sdk: { dedup: this.config.sdk.dedup, ...this.sdk.stats },
      serviceGraph: { edges: this.graph.edgeCount, pending: this.graph.pending, ...this.graph.stats },
      tcp: { accepted: this.tcp.size, pickedUp: this.tcp.pickedSize, ...this.tcp.stats, metrics: this.connMetrics ? { workloads: this.connMetrics.workloadCount, ...this.connMetrics.stats } : null },
      memory: memoryNow(),
      pickup: { ...this.pickupStats },
      metrics: this.metrics ? { workloads: this.metrics.workloadCount, ...this.metrics.stats, ...this.metricLoop?.stats } : null,
    };
  }

  async stop(deadlineMs = 5000): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.ready = false;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    if (this.dnsTimer) clearInterval(this.dnsTimer);
    if (this.requestTimer) clearInterval(this.requestTimer);
    this.obj?.stop();
    this.drainBacklog(Infinity); // what the poll thread handed over is processed, then flushed
    this.tls?.stop();
    this.injection?.close();
    this.injection = undefined;
    this.obj?.close();
    this.obj = undefined;
    await this.receiver?.stop(deadlineMs);
    this.view?.stop();
    await Promise.all([this.pipeline?.shutdown(deadlineMs), this.filePipeline?.shutdown(deadlineMs)]);
    if (this.pipeline) {
      // the last word on the span queue: what was delivered and what was lost, and why
      const p = this.pipeline.stats;
      log.info(
        `span export at stop: received ${p.received}, exported ${p.exported}, dropped ${p.droppedQueueFull + p.droppedQueueBytes} (queue full) + ${p.droppedExportFailed} (export failed or shutdown deadline), left ${this.pipeline.depth}`,
      );
    }
    await this.selfLoop?.shutdown(deadlineMs); // before the metric loop: it shuts the shared exporter down
    await this.metricLoop?.shutdown(deadlineMs);
    await this.k8s?.stop();
    await this.health?.close();
  }
}

