/**
 * collector.ts (test helper) — runs a real OpenTelemetry Collector (`otelcol-sidelight`, built
 * by `bash scripts/collector.sh` from test/collector/builder-config.yaml and linked at
 * .tools/otelcol) so tests can send OTLP to it over gRPC, HTTP/protobuf or HTTP/JSON and read
 * back exactly what it received.
 *
 * Owns, per startCollector() call: one collector child process listening on two free loopback
 * ports (OTLP gRPC and OTLP HTTP), and one temp dir holding its config and the file exporter's
 * output (`spans.jsonl`, one OTLP JSON ExportTraceServiceRequest per line, flushed every 100 ms).
 *
 * Lifetime: from startCollector() until stop(), which the caller must await (e.g. in
 * t.teardown / test.after.always). stop() terminates the process (SIGTERM, SIGKILL after 5 s) and
 * deletes the temp dir. As a safety net, collectors still running when the test process exits
 * are SIGKILLed and their temp dirs removed.
 *
 * Decoded attribute values: string, bool and double as in OTLP JSON; intValue (a decimal string
 * in OTLP JSON) becomes a JS number (exact up to 2^53; larger values lose precision); arrays and
 * kvlists become JS arrays and objects; bytesValue stays a base64 string; an empty value is null.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, rmSync, statSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';

export interface CollectorSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: Record<string, unknown>;
  resource: Record<string, unknown>;
  status: { code?: number; message?: string };
}

/** One histogram data point as the Collector wrote it (OTLP JSON, flattened). */
export interface CollectorHistogramPoint {
  name: string;
  unit: string;
  resource: Record<string, unknown>;
  attributes: Record<string, unknown>;
  count: number;
  sum: number;
  bucketCounts: number[];
  explicitBounds: number[];
}

/** One sum (counter) data point as the Collector wrote it (OTLP JSON, flattened). */
export interface CollectorSumPoint {
  name: string;
  unit: string;
  resource: Record<string, unknown>;
  attributes: Record<string, unknown>;
  value: number;
  monotonic: boolean;
}

export interface RunningCollector {
  /** OTLP/gRPC endpoint, `http://127.0.0.1:PORT` (plaintext). */
  grpcEndpoint: string;
  /** OTLP/HTTP base endpoint, `http://127.0.0.1:PORT`; traces go to `${httpEndpoint}/v1/traces`. */
  httpEndpoint: string;
  /** Every span the collector has written to its file so far, in arrival order. */
  spans(): Promise<CollectorSpan[]>;
  /** Polls spans() until pred holds; rejects after timeoutMs (default 10 s) or if the collector dies. */
  waitForSpans(pred: (s: CollectorSpan[]) => boolean, timeoutMs?: number): Promise<CollectorSpan[]>;
  /** Every histogram data point written so far (one entry per point per export). */
  metrics(): Promise<CollectorHistogramPoint[]>;
  /** Every sum data point written so far (one entry per point per export). */
  sums(): Promise<CollectorSumPoint[]>;
  /** Polls metrics() until pred holds. */
  waitForMetrics(pred: (m: CollectorHistogramPoint[]) => boolean, timeoutMs?: number): Promise<CollectorHistogramPoint[]>;
  /** Terminates the collector and removes its temp dir. Idempotent. */
  stop(): Promise<void>;
}

export interface StartCollectorOptions {
  /** Collector binary; default collectorBinary(). */
  binary?: string;
  /** How long to wait for both ports to accept connections; default 30 s. */
  startTimeoutMs?: number;
  /** Listen on these ports instead of free ones (e.g. to come up where an agent already points). */
  ports?: { grpc: number; http: number };
}

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BINARY_LINK = path.join(REPO_ROOT, '.tools', 'otelcol');
const MISSING_HINT = 'run `bash scripts/collector.sh` to build it (needs Go and the Go module proxy)';
const STDERR_KEEP = 64 * 1024;
const POLL_MS = 50;

/** Path of .tools/otelcol if it resolves to an executable file, else undefined. */
export function collectorBinary(): string | undefined {
  return isExecutableFile(BINARY_LINK) ? BINARY_LINK : undefined;
}

function isExecutableFile(p: string): boolean {
  try {
    accessSync(p, constants.X_OK);
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

export async function startCollector(options: StartCollectorOptions = {}): Promise<RunningCollector> {
  const binary = options.binary ?? collectorBinary();
  if (binary === undefined || !isExecutableFile(binary)) {
    throw new Error(
      `OpenTelemetry Collector binary not found or not executable at ${binary ?? BINARY_LINK}; ${MISSING_HINT}`,
    );
  }
  const timeoutMs = options.startTimeoutMs ?? 30_000;
  // Free ports are found by binding port 0 and closing again, so another process can take one
  // before the collector binds it; on "address already in use" we retry with fresh ports.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(binary, timeoutMs, options.ports);
    } catch (err) {
      if (attempt < 3 && !options.ports && err instanceof PortInUseError) continue;
      throw err;
    }
  }
}

class PortInUseError extends Error {}

// Collectors not yet stopped, killed synchronously if the test process exits first.
const live = new Set<{ child: ChildProcess; dir: string }>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const { child, dir } of live) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

async function startOnce(binary: string, timeoutMs: number, fixedPorts?: { grpc: number; http: number }): Promise<RunningCollector> {
  const [grpcPort, httpPort] = fixedPorts ? [fixedPorts.grpc, fixedPorts.http] : ((await freePorts(2)) as [number, number]);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'sidelight-otelcol-'));
  const spansFile = path.join(dir, 'spans.jsonl');
  const metricsFile = path.join(dir, 'metrics.jsonl');
  const configFile = path.join(dir, 'config.yaml');
  const config = {
    receivers: {
      otlp: {
        protocols: {
          grpc: { endpoint: `127.0.0.1:${grpcPort}` },
          http: { endpoint: `127.0.0.1:${httpPort}` },
        },
      },
    },
    exporters: {
      // No batch processor: spans reach the file as soon as they are received.
      file: { path: spansFile, format: 'json', flush_interval: '100ms' },
      'file/metrics': { path: metricsFile, format: 'json', flush_interval: '100ms' },
      debug: { verbosity: 'basic' },
    },
    service: {
      // The collector's own metrics would otherwise listen on a fixed port (8888), which
      // collides between collectors running side by side.
      telemetry: { metrics: { level: 'none' }, logs: { level: 'info' } },
      pipelines: {
        traces: { receivers: ['otlp'], exporters: ['file', 'debug'] },
        metrics: { receivers: ['otlp'], exporters: ['file/metrics'] },
      },
    },
  };
  await writeFile(configFile, stringify(config));

  const child = spawn(binary, ['--config', configFile], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  const entry = { child, dir };
  live.add(entry);
  installExitHook();

  let output = '';
  const keep = (chunk: Buffer): void => {
    output += chunk.toString('utf8');
    if (output.length > STDERR_KEEP) output = output.slice(-STDERR_KEEP);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  let spawnError: Error | undefined;
  child.on('error', (e) => (spawnError = e));
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  const isRunning = (): boolean => child.exitCode === null && child.signalCode === null && !spawnError;
  const describeExit = (): string =>
    spawnError ? `failed to spawn (${spawnError.message})` : `exited (code ${child.exitCode}, signal ${child.signalCode})`;

  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopped ??= (async () => {
      if (isRunning()) {
        child.kill('SIGTERM');
        const killer = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await exited;
        clearTimeout(killer);
      } else if (!spawnError) {
        await exited;
      }
      live.delete(entry);
      await rm(dir, { recursive: true, force: true });
    })());

  try {
    const deadline = Date.now() + timeoutMs;
    const pending = new Set([grpcPort, httpPort]);
    while (pending.size > 0) {
      if (!isRunning()) {
        await Promise.race([exited, sleep(1_000)]); // collect the last of its output
        const err = /address already in use/i.test(output) ? PortInUseError : Error;
        throw new err(`otelcol ${describeExit()} during startup; its output:\n${output}`);
      }
      if (Date.now() > deadline) {
        throw new Error(
          `otelcol did not accept connections on 127.0.0.1:${[...pending].join(', ')} within ${timeoutMs} ms; its output:\n${output}`,
        );
      }
      for (const port of [...pending]) if (await canConnect(port)) pending.delete(port);
      if (pending.size > 0) await sleep(POLL_MS);
    }
  } catch (err) {
    await stop();
    throw err;
  }

  const spans = async (): Promise<CollectorSpan[]> => {
    let text: string;
    try {
      text = await readFile(spansFile, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    // Only complete lines: a flush can stop in the middle of one.
    const complete = text.slice(0, text.lastIndexOf('\n') + 1);
    const out: CollectorSpan[] = [];
    for (const line of complete.split('\n')) {
      if (line.trim() !== '') out.push(...flattenTraces(JSON.parse(line) as OtlpTracesJson));
    }
    return out;
  };

  const waitForSpans = async (
    pred: (s: CollectorSpan[]) => boolean,
    waitMs = 10_000,
  ): Promise<CollectorSpan[]> => {
    const deadline = Date.now() + waitMs;
    for (;;) {
      const got = await spans();
      if (pred(got)) return got;
      if (!isRunning()) throw new Error(`otelcol ${describeExit()} while waiting for spans; its output:\n${output}`);
      if (Date.now() > deadline) {
        throw new Error(
          `waitForSpans: condition not met within ${waitMs} ms; ${got.length} span(s) received: ` +
            `${JSON.stringify(got.slice(0, 20).map((s) => s.name))}${got.length > 20 ? ' ...' : ''}; collector output:\n${output.slice(-4096)}`,
        );
      }
      await sleep(POLL_MS * 2);
    }
  };

  const metrics = async (): Promise<CollectorHistogramPoint[]> => {
    let text: string;
    try {
      text = await readFile(metricsFile, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    const complete = text.slice(0, text.lastIndexOf('\n') + 1);
    const out: CollectorHistogramPoint[] = [];
    for (const line of complete.split('\n')) if (line.trim() !== '') out.push(...flattenHistograms(JSON.parse(line) as OtlpMetricsJson));
    return out;
  };

  const sums = async (): Promise<CollectorSumPoint[]> => {
    let text: string;
    try {
      text = await readFile(metricsFile, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    const complete = text.slice(0, text.lastIndexOf('\n') + 1);
    const out: CollectorSumPoint[] = [];
    for (const line of complete.split('\n')) if (line.trim() !== '') out.push(...flattenSums(JSON.parse(line) as OtlpMetricsJson));
    return out;
  };

  const waitForMetrics = async (pred: (m: CollectorHistogramPoint[]) => boolean, waitMs = 10_000): Promise<CollectorHistogramPoint[]> => {
    const deadline = Date.now() + waitMs;
    for (;;) {
      const got = await metrics();
      if (pred(got)) return got;
      if (!isRunning()) throw new Error(`otelcol ${describeExit()} while waiting for metrics; its output:\n${output}`);
      if (Date.now() > deadline) throw new Error(`waitForMetrics: condition not met within ${waitMs} ms; got ${JSON.stringify([...new Set(got.map((m) => m.name))])}`);
      await sleep(POLL_MS * 2);
    }
  };

  return {
    grpcEndpoint: `http://127.0.0.1:${grpcPort}`,
    httpEndpoint: `http://127.0.0.1:${httpPort}`,
    spans,
    waitForSpans,
    metrics,
    sums,
    waitForMetrics,
    stop,
  };
}

/** n distinct free loopback ports: all are bound at once (so they differ), then released. */
async function freePorts(n: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < n; i++) {
      const srv = net.createServer();
      servers.push(srv);
      await new Promise<void>((resolve, reject) => {
        srv.once('error', reject);
        srv.listen(0, '127.0.0.1', () => resolve());
      });
      ports.push((srv.address() as net.AddressInfo).port);
    }
    return ports;
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    const done = (ok: boolean): void => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(1_000, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// --- OTLP JSON (as written by the collector's pdata JSON marshaler) -----------------------

interface OtlpAnyValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: string | number;
  doubleValue?: number | string;
  bytesValue?: string;
  arrayValue?: { values?: OtlpAnyValue[] };
  kvlistValue?: { values?: OtlpKeyValue[] };
}
interface OtlpKeyValue {
  key: string;
  value?: OtlpAnyValue;
}
interface OtlpSpanJson {
  traceId?: string;
  spanId?: string;
  parentSpanId?: string;
  name?: string;
  kind?: number;
  startTimeUnixNano?: string | number;
  endTimeUnixNano?: string | number;
  attributes?: OtlpKeyValue[];
  status?: { code?: number; message?: string };
}
interface OtlpTracesJson {
  resourceSpans?: {
    resource?: { attributes?: OtlpKeyValue[] };
    scopeSpans?: { spans?: OtlpSpanJson[] }[];
  }[];
}

/** Flattens one ExportTraceServiceRequest (OTLP JSON) into CollectorSpans. */
export function flattenTraces(req: OtlpTracesJson): CollectorSpan[] {
  const out: CollectorSpan[] = [];
  for (const rs of req.resourceSpans ?? []) {
    const resource = attributesToObject(rs.resource?.attributes);
    for (const ss of rs.scopeSpans ?? []) {
      for (const s of ss.spans ?? []) {
        const status: CollectorSpan['status'] = {};
        if (s.status?.code !== undefined) status.code = s.status.code;
        if (s.status?.message !== undefined) status.message = s.status.message;
        out.push({
          traceId: s.traceId ?? '',
          spanId: s.spanId ?? '',
          parentSpanId: s.parentSpanId ?? '',
          name: s.name ?? '',
          kind: s.kind ?? 0,
          startTimeUnixNano: String(s.startTimeUnixNano ?? '0'),
          endTimeUnixNano: String(s.endTimeUnixNano ?? '0'),
          attributes: attributesToObject(s.attributes),
          resource: { ...resource },
          status,
        });
      }
    }
  }
  return out;
}

interface OtlpMetricsJson {
  resourceMetrics?: Array<{
    resource?: { attributes?: OtlpKeyValue[] };
    scopeMetrics?: Array<{
      metrics?: Array<{
        name: string;
        unit?: string;
        histogram?: { dataPoints?: Array<{ attributes?: OtlpKeyValue[]; count?: string | number; sum?: number; bucketCounts?: Array<string | number>; explicitBounds?: number[] }> };
        sum?: { isMonotonic?: boolean; dataPoints?: Array<{ attributes?: OtlpKeyValue[]; asInt?: string | number; asDouble?: number }> };
      }>;
    }>;
  }>;
}

/** Histogram points of one OTLP JSON metrics request. */
export function flattenHistograms(req: OtlpMetricsJson): CollectorHistogramPoint[] {
  const out: CollectorHistogramPoint[] = [];
  for (const rm of req.resourceMetrics ?? []) {
    const resource = attributesToObject(rm.resource?.attributes);
    for (const sm of rm.scopeMetrics ?? []) {
      for (const m of sm.metrics ?? []) {
        for (const p of m.histogram?.dataPoints ?? []) {
          out.push({
            name: m.name,
            unit: m.unit ?? '',
            resource,
            attributes: attributesToObject(p.attributes),
            count: Number(p.count ?? 0),
            sum: p.sum ?? 0,
            bucketCounts: (p.bucketCounts ?? []).map(Number),
            explicitBounds: p.explicitBounds ?? [],
          });
        }
      }
    }
  }
  return out;
}

/** Sum points of one OTLP JSON metrics request. */
export function flattenSums(req: OtlpMetricsJson): CollectorSumPoint[] {
  const out: CollectorSumPoint[] = [];
  for (const rm of req.resourceMetrics ?? []) {
    const resource = attributesToObject(rm.resource?.attributes);
    for (const sm of rm.scopeMetrics ?? []) {
      for (const m of sm.metrics ?? []) {
        for (const p of m.sum?.dataPoints ?? []) {
          out.push({
            name: m.name,
            unit: m.unit ?? '',
            resource,
            attributes: attributesToObject(p.attributes),
            value: Number(p.asInt ?? p.asDouble ?? 0),
            monotonic: m.sum?.isMonotonic === true,
          });
        }
      }
    }
  }
  return out;
}

export function attributesToObject(kvs: OtlpKeyValue[] | undefined): Record<string, unknown> {
  const obj: Record<string, unknown> = {};
  for (const kv of kvs ?? []) obj[kv.key] = anyValueToJs(kv.value);
  return obj;
}

export function anyValueToJs(v: OtlpAnyValue | undefined): unknown {
  if (v === undefined) return null;
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.boolValue !== undefined) return v.boolValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.doubleValue !== undefined) return Number(v.doubleValue); // "NaN"/"Infinity" arrive as strings
  if (v.bytesValue !== undefined) return v.bytesValue;
  if (v.arrayValue !== undefined) return (v.arrayValue.values ?? []).map(anyValueToJs);
  if (v.kvlistValue !== undefined) return attributesToObject(v.kvlistValue.values);
  return null;
}
