/**
 * otelcol.ts (test helper) — runs the real Collector (.tools/otelcol) with a config the test
 * writes, for pipelines collector.ts does not cover: a sink that writes traces, metrics AND
 * logs to files as OTLP JSON lines (read back raw, so a test can compare every byte of an
 * attribute, id and timestamp), and a sender whose otlp_grpc / otlp_http exporters point at
 * Sidelight's receiver. Each collector has its own temp dir; stop() kills it and removes it.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { collectorBinary } from './collector.js';
import { freePort } from './servers.js';

export interface Otelcol {
  pid: number;
  grpcPort: number;
  httpPort: number;
  dir: string;
  /** Every JSON line of an output file (traces.jsonl, metrics.jsonl, logs.jsonl), parsed. */
  lines(file: string): Promise<unknown[]>;
  waitFor<T>(file: string, pred: (lines: unknown[]) => T | undefined, timeoutMs?: number): Promise<T>;
  output(): string;
  stop(): Promise<void>;
}

async function waitPort(port: number, deadline: number, alive: () => boolean, out: () => string): Promise<void> {
  const net = await import('node:net');
  for (;;) {
    if (!alive()) throw new Error(`collector exited:\n${out()}`);
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => (s.destroy(), r(true)));
      s.once('error', () => r(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`collector not listening on ${port}:\n${out()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** `build(grpcPort, httpPort, dir)` returns the collector config; its otlp receiver must use those ports. */
export async function startOtelcol(build: (grpcPort: number, httpPort: number, dir: string) => object, ports?: { grpc: number; http: number }): Promise<Otelcol> {
  const bin = collectorBinary();
  if (!bin) throw new Error('.tools/otelcol missing: run `bash scripts/collector.sh`');
  const grpcPort = ports?.grpc ?? (await freePort());
  const httpPort = ports?.http ?? (await freePort());
  const dir = await mkdtemp(path.join(os.tmpdir(), 'sidelight-otelcol-'));
  await writeFile(path.join(dir, 'config.yaml'), stringify(build(grpcPort, httpPort, dir)));
  const child = spawn(bin, ['--config', path.join(dir, 'config.yaml')], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (d: Buffer): void => {
    out = (out + d.toString()).slice(-65536);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise<void>((r) => child.once('close', () => r()));
  const alive = (): boolean => child.exitCode === null && child.signalCode === null;
  const kill = (): void => {
    if (alive()) child.kill('SIGKILL');
  };
  process.once('exit', kill);
  const stop = async (): Promise<void> => {
    if (alive()) {
      child.kill('SIGTERM');
      const t = setTimeout(kill, 5000);
      await exited;
      clearTimeout(t);
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await waitPort(grpcPort, Date.now() + 30_000, alive, () => out);
    await waitPort(httpPort, Date.now() + 30_000, alive, () => out);
  } catch (e) {
    await stop();
    throw e;
  }
  const lines = async (file: string): Promise<unknown[]> => {
    let text = '';
    try {
      text = await readFile(path.join(dir, file), 'utf8');
    } catch {
      return [];
    }
    // the Collector may be mid-write: a last line without its newline is not complete yet
    const all = text.split('\n');
    if (!text.endsWith('\n')) all.pop();
    return all.filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as unknown);
  };
  return {
    pid: child.pid ?? 0,
    grpcPort,
    httpPort,
    dir,
    lines,
    output: () => out,
    async waitFor<T>(file: string, pred: (l: unknown[]) => T | undefined, timeoutMs = 20_000): Promise<T> {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const got = pred(await lines(file));
        if (got !== undefined) return got;
        if (!alive()) throw new Error(`collector exited:\n${out}`);
        if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${file}; have ${JSON.stringify(await lines(file)).slice(0, 2000)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    stop,
  };
}

/** A sink: OTLP in (gRPC + HTTP), every signal to a JSON-lines file, no batching. */
export function sinkConfig(grpcPort: number, httpPort: number, dir: string): object {
  const file = (name: string): object => ({ path: path.join(dir, name), format: 'json', flush_interval: '100ms' });
  return {
    receivers: { otlp: { protocols: { grpc: { endpoint: `127.0.0.1:${grpcPort}` }, http: { endpoint: `127.0.0.1:${httpPort}` } } } },
    exporters: { 'file/traces': file('traces.jsonl'), 'file/metrics': file('metrics.jsonl'), 'file/logs': file('logs.jsonl') },
    service: {
      telemetry: { metrics: { level: 'none' }, logs: { level: 'warn' } },
      pipelines: {
        traces: { receivers: ['otlp'], exporters: ['file/traces'] },
        metrics: { receivers: ['otlp'], exporters: ['file/metrics'] },
        logs: { receivers: ['otlp'], exporters: ['file/logs'] },
      },
    },
  };
}

/** A sender: OTLP in, every signal out through `exporter` (otlp_grpc or otlp_http) to `endpoint`. */
export function senderConfig(exporter: 'otlp_grpc' | 'otlp_http', endpoint: string, extra: object = {}) {
  return (grpcPort: number, httpPort: number): object => ({
    receivers: { otlp: { protocols: { grpc: { endpoint: `127.0.0.1:${grpcPort}` }, http: { endpoint: `127.0.0.1:${httpPort}` } } } },
    exporters: {
      [exporter]: {
        endpoint,
        ...(exporter === 'otlp_grpc' ? { tls: { insecure: true } } : {}),
        retry_on_failure: { enabled: true, initial_interval: '100ms', max_interval: '1s', max_elapsed_time: '60s' },
        ...extra,
      },
    },
    service: {
      telemetry: { metrics: { level: 'none' }, logs: { level: 'warn' } },
      pipelines: {
        traces: { receivers: ['otlp'], exporters: [exporter] },
        metrics: { receivers: ['otlp'], exporters: [exporter] },
        logs: { receivers: ['otlp'], exporters: [exporter] },
      },
    },
  });
}

/** Spans of OTLP JSON lines (traces.jsonl), each with its resource attributes (raw OTLP JSON). */
export function spansOf(lines: unknown[]): { span: Record<string, unknown>; resource: Record<string, unknown> }[] {
  const out: { span: Record<string, unknown>; resource: Record<string, unknown> }[] = [];
  for (const l of lines as { resourceSpans?: { resource?: { attributes?: { key: string; value: unknown }[] }; scopeSpans?: { spans?: Record<string, unknown>[] }[] }[] }[]) {
    for (const rs of l.resourceSpans ?? []) {
      const resource = Object.fromEntries((rs.resource?.attributes ?? []).map((kv) => [kv.key, kv.value]));
      for (const ss of rs.scopeSpans ?? []) for (const span of ss.spans ?? []) out.push({ span, resource });
    }
  }
  return out;
}

/** Log records of logs.jsonl with their resource attributes. */
export function logsOf(lines: unknown[]): { log: Record<string, unknown>; resource: Record<string, unknown> }[] {
  const out: { log: Record<string, unknown>; resource: Record<string, unknown> }[] = [];
  for (const l of lines as { resourceLogs?: { resource?: { attributes?: { key: string; value: unknown }[] }; scopeLogs?: { logRecords?: Record<string, unknown>[] }[] }[] }[]) {
    for (const rl of l.resourceLogs ?? []) {
      const resource = Object.fromEntries((rl.resource?.attributes ?? []).map((kv) => [kv.key, kv.value]));
      for (const sl of rl.scopeLogs ?? []) for (const log of sl.logRecords ?? []) out.push({ log, resource });
    }
  }
  return out;
}

/** Metric names (with resource) of metrics.jsonl. */
export function metricsOf(lines: unknown[]): { metric: Record<string, unknown>; resource: Record<string, unknown> }[] {
  const out: { metric: Record<string, unknown>; resource: Record<string, unknown> }[] = [];
  for (const l of lines as { resourceMetrics?: { resource?: { attributes?: { key: string; value: unknown }[] }; scopeMetrics?: { metrics?: Record<string, unknown>[] }[] }[] }[]) {
    for (const rm of l.resourceMetrics ?? []) {
      const resource = Object.fromEntries((rm.resource?.attributes ?? []).map((kv) => [kv.key, kv.value]));
      for (const sm of rm.scopeMetrics ?? []) for (const metric of sm.metrics ?? []) out.push({ metric, resource });
    }
  }
  return out;
}
