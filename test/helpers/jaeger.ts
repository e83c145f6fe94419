/**
 * jaeger.ts (test helper) — runs a real Jaeger v2 (`.tools/jaeger`, built from the Go module
 * proxy by `bash scripts/jaeger.sh`): an OTLP receiver (gRPC + HTTP) into the in-memory trace
 * store, and the query service whose HTTP API (`/api/services`, `/api/traces?service=…`,
 * `/api/traces/<id>`) the tests read back. Also the client for that API and a tree builder.
 *
 * Owns, per startJaeger() call: one jaeger child process on four free loopback ports and one
 * temp dir holding its config. The store holds at most 10,000 traces (Jaeger's memory
 * max_traces; older ones are evicted). stop() (SIGTERM, SIGKILL after 5 s) must be awaited by
 * the caller; a jaeger still running when the test process exits is SIGKILLed.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants, statSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { repoRoot } from '../../src/paths.js';
import { freePort, waitForPort } from './servers.js';

export const JAEGER_LINK = path.join(repoRoot(), '.tools', 'jaeger');

/** .tools/jaeger if it resolves to an executable file, else undefined. */
export function jaegerBinary(): string | undefined {
  try {
    accessSync(JAEGER_LINK, constants.X_OK);
    return statSync(JAEGER_LINK).isFile() ? JAEGER_LINK : undefined;
  } catch {
    return undefined;
  }
}

/** A span as Jaeger's query API (`/api/traces`) returns it. */
export interface JaegerSpan {
  traceID: string;
  spanID: string;
  operationName: string;
  references?: { refType: string; traceID: string; spanID: string }[];
  startTime: number; // µs since the epoch
  duration: number; // µs
  tags: { key: string; type: string; value: unknown }[];
  processID: string;
}
export interface JaegerTrace {
  traceID: string;
  spans: JaegerSpan[];
  processes: Record<string, { serviceName: string; tags: { key: string; type: string; value: unknown }[] }>;
}

export interface RunningJaeger {
  /** OTLP/gRPC endpoint `http://127.0.0.1:P` (plaintext). */
  otlpGrpc: string;
  /** OTLP/HTTP base endpoint `http://127.0.0.1:P`. */
  otlpHttp: string;
  /** Query service base URL (API and UI), `http://127.0.0.1:P`. */
  queryUrl: string;
  services(): Promise<string[]>;
  traces(service: string, limit?: number): Promise<JaegerTrace[]>;
  /** The trace, or undefined on 404. */
  trace(traceId: string): Promise<JaegerTrace | undefined>;
  output(): string;
  stop(): Promise<void>;
}

async function getJson<T>(url: string): Promise<{ status: number; body: T }> {
  const r = await fetch(url);
  const text = await r.text();
  try {
    return { status: r.status, body: JSON.parse(text) as T };
  } catch {
    throw new Error(`GET ${url}: ${r.status}, not JSON: ${text.slice(0, 300)}`);
  }
}

export async function startJaeger(): Promise<RunningJaeger> {
  const bin = jaegerBinary();
  if (!bin) throw new Error('.tools/jaeger missing: run `bash scripts/jaeger.sh`');
  const [grpc, http, query, queryGrpc] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const dir = await mkdtemp(path.join(os.tmpdir(), 'sidelight-jaeger-'));
  const config = {
    service: {
      extensions: ['jaeger_storage', 'jaeger_query'],
      pipelines: { traces: { receivers: ['otlp'], exporters: ['jaeger_storage_exporter'] } },
      // no fixed ports (8888) that would collide with other collectors on the machine
      telemetry: { metrics: { level: 'none' }, logs: { level: 'warn' } },
    },
    extensions: {
      jaeger_storage: { backends: { mem: { memory: { max_traces: 10_000 } } } },
      jaeger_query: { storage: { traces: 'mem' }, http: { endpoint: `127.0.0.1:${query}` }, grpc: { endpoint: `127.0.0.1:${queryGrpc}` } },
    },
    receivers: { otlp: { protocols: { grpc: { endpoint: `127.0.0.1:${grpc}` }, http: { endpoint: `127.0.0.1:${http}` } } } },
    exporters: { jaeger_storage_exporter: { trace_storage: 'mem' } },
  };
  await writeFile(path.join(dir, 'config.yaml'), stringify(config));
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
    process.removeListener('exit', kill);
    await rm(dir, { recursive: true, force: true });
  };
  // rejects if jaeger exits before it is up (handled here: it may also exit much later)
  const died = exited.then(() => Promise.reject(new Error('jaeger exited during startup')));
  died.catch(() => undefined);
  try {
    for (const p of [grpc, http, query]) await Promise.race([waitForPort(p, 60_000), died]);
  } catch (e) {
    await stop();
    throw new Error(`${(e as Error).message}\njaeger output:\n${out}`);
  }
  const queryUrl = `http://127.0.0.1:${query}`;
  return {
    otlpGrpc: `http://127.0.0.1:${grpc}`,
    otlpHttp: `http://127.0.0.1:${http}`,
    queryUrl,
    async services() {
      const { body } = await getJson<{ data: string[] | null }>(`${queryUrl}/api/services`);
      return body.data ?? [];
    },
    async traces(service, limit = 20) {
      const { body } = await getJson<{ data: JaegerTrace[] | null }>(
        `${queryUrl}/api/traces?service=${encodeURIComponent(service)}&limit=${limit}&lookback=1h`,
      );
      return body.data ?? [];
    },
    async trace(traceId) {
      const { status, body } = await getJson<{ data: JaegerTrace[] | null }>(`${queryUrl}/api/traces/${traceId}`);
      if (status === 404) return undefined;
      if (status !== 200) throw new Error(`GET /api/traces/${traceId}: ${status} ${JSON.stringify(body).slice(0, 300)}`);
      return body.data?.[0];
    },
    output: () => out,
    stop,
  };
}

/** One node of a trace tree: the span, its service, its children ordered by start time. */
export interface TreeNode {
  span: JaegerSpan;
  service: string;
  kind: string;
  children: TreeNode[];
}

/** Tag value of a Jaeger span (e.g. `span.kind`, `url.path`). */
export function tag(s: JaegerSpan, key: string): unknown {
  return s.tags.find((t) => t.key === key)?.value;
}

/** The trace as a forest: roots are spans whose CHILD_OF parent is not in the trace. */
export function traceTree(t: JaegerTrace): TreeNode[] {
  const nodes = new Map<string, TreeNode>();
  for (const s of t.spans) {
    nodes.set(s.spanID, { span: s, service: t.processes[s.processID]?.serviceName ?? '?', kind: String(tag(s, 'span.kind') ?? ''), children: [] });
  }
  const roots: TreeNode[] = [];
  for (const n of nodes.values()) {
    const parent = n.span.references?.find((r) => r.refType === 'CHILD_OF');
    const p = parent ? nodes.get(parent.spanID) : undefined;
    (p ? p.children : roots).push(n);
  }
  const order = (a: TreeNode, b: TreeNode): number => a.span.startTime - b.span.startTime;
  for (const n of nodes.values()) n.children.sort(order);
  return roots.sort(order);
}

/** `service kind operation` per line, indented by depth: a readable, comparable shape. */
export function treeShape(roots: TreeNode[], label: (n: TreeNode) => string = (n) => `${n.service} ${n.kind} ${n.span.operationName}`): string[] {
  const out: string[] = [];
  const walk = (n: TreeNode, depth: number): void => {
    out.push(`${'  '.repeat(depth)}${label(n)}`);
    for (const c of n.children) walk(c, depth + 1);
  };
  for (const r of roots) walk(r, 0);
  return out;
}
