/**
 * services.ts (bench) — the processes a benchmark run needs, each on a free loopback port in
 * the run's work directory: the origin nginx (`return 200`), the sidecar-style nginx reverse
 * proxy (access log to a file), the OpenTelemetry Collector used as the OTLP sink, and the
 * Sidelight agent as users run it (`bin/sidelight run --config FILE`).
 *
 * Every process is started with spawnTracked() so bench.ts can kill what is left on exit;
 * each start function returns a handle whose stop() waits for the process to end.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, sleep, spawnTracked, trackPid, waitForPort, type Tracked } from './util.js';

export const REPO = join(import.meta.dirname, '..', '..');

function nginxBinary(): string {
  return ['/usr/sbin/nginx', '/usr/local/sbin/nginx'].find((p) => existsSync(p)) ?? 'nginx';
}

export interface Nginx {
  port: number;
  /** the worker process (worker_processes 1) */
  workerPid: number;
  masterPid: number;
  accessLog: string | undefined;
  stop(): Promise<void>;
}

async function workerOf(masterPid: number): Promise<number> {
  const { readFileSync } = await import('node:fs');
  for (let i = 0; i < 100; i++) {
    try {
      const kids = readFileSync(`/proc/${masterPid}/task/${masterPid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
      if (kids.length > 0) return Number(kids[0]);
    } catch {
      /* not yet */
    }
    await sleep(20);
  }
  return 0;
}

const COMMON = (dir: string): string => `
worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }`;

const TEMP = (dir: string): string =>
  `client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fcgi; ` +
  `uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;`;

async function startNginxWith(dir: string, port: number, conf: string, accessLog?: string): Promise<Nginx> {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'nginx.conf'), conf);
  const t: Tracked = spawnTracked(nginxBinary(), ['-p', dir, '-c', join(dir, 'nginx.conf')]);
  try {
    await waitForPort(port, 15_000, () => t.child.exitCode === null);
  } catch (e) {
    await t.stop(1000);
    throw new Error(`nginx (${dir}) did not start: ${(e as Error).message}\n${t.output()}`);
  }
  const workerPid = await workerOf(t.pid);
  trackPid(workerPid, 'nginx');
  return {
    port,
    masterPid: t.pid,
    workerPid,
    accessLog,
    stop: async () => {
      await t.stop(5000);
    },
  };
}

/** The application: nginx `return 200`, one worker, keep-alive, no access log. */
export async function startOrigin(dir: string): Promise<Nginx> {
  const port = await freePort();
  const conf = `${COMMON(dir)}
http {
  access_log off;
  ${TEMP(dir)}
  keepalive_requests 1000000000;
  keepalive_timeout 600s;
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location = / { return 200 "nginx ok\\n"; }
    location / { return 200 "nginx ok\\n"; }
  }
}`;
  return startNginxWith(dir, port, conf);
}

/**
 * The sidecar stand-in: an nginx L7 reverse proxy (one worker) with keep-alive to the origin and
 * an access log written per request (combined format, unbuffered), as a sidecar proxy logs.
 */
export async function startProxy(dir: string, upstreamPort: number): Promise<Nginx> {
  const port = await freePort();
  const accessLog = join(dir, 'access.log');
  const conf = `${COMMON(dir)}
http {
  access_log ${accessLog} combined;
  ${TEMP(dir)}
  keepalive_requests 1000000000;
  keepalive_timeout 600s;
  upstream origin {
    server 127.0.0.1:${upstreamPort};
    keepalive 128;
    keepalive_requests 1000000000;
  }
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
    }
  }
}`;
  return startNginxWith(dir, port, conf, accessLog);
}

export interface Collector {
  /** OTLP/gRPC endpoint whose pipeline ends in the debug exporter (basic verbosity) */
  grpcEndpoint: string;
  /** OTLP/gRPC endpoint whose pipeline ends in the file exporter (JSON lines), for delay */
  delayEndpoint: string;
  spansFile: string;
  pid: number;
  stop(): Promise<void>;
}

/**
 * The OTLP sink: the Collector built by scripts/collector.sh (.tools/otelcol), two pipelines.
 * `cheap`: otlp receiver → debug exporter, verbosity basic (one log line per batch, spans are
 * counted and discarded): the sink of every B round. `delay`: a second otlp receiver → file
 * exporter (OTLP JSON, one export request per line, flushed every 20 ms): used only in the
 * targets phase, where the time a span becomes visible is measured.
 */
export async function startCollector(dir: string): Promise<Collector> {
  const binary = join(REPO, '.tools', 'otelcol');
  if (!existsSync(binary)) throw new Error(`collector not built: ${binary} (run bash scripts/collector.sh)`);
  mkdirSync(dir, { recursive: true });
  const [grpc, delay] = [await freePort(), await freePort()];
  const spansFile = join(dir, 'spans.jsonl');
  const conf = `
receivers:
  otlp:
    protocols:
      grpc: { endpoint: "127.0.0.1:${grpc}" }
  otlp/delay:
    protocols:
      grpc: { endpoint: "127.0.0.1:${delay}" }
exporters:
  debug:
    verbosity: basic
    sampling_initial: 1
    sampling_thereafter: 1000000
  file:
    path: ${spansFile}
    format: json
    flush_interval: 20ms
service:
  telemetry:
    metrics: { level: none }
    logs: { level: warn }
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug]
    traces/delay:
      receivers: [otlp/delay]
      exporters: [file]
`;
  writeFileSync(join(dir, 'collector.yaml'), conf);
  const t = spawnTracked(binary, ['--config', join(dir, 'collector.yaml')], { cwd: dir });
  try {
    await waitForPort(grpc, 30_000, () => t.child.exitCode === null);
    await waitForPort(delay, 30_000, () => t.child.exitCode === null);
  } catch (e) {
    await t.stop(1000);
    throw new Error(`collector did not start: ${(e as Error).message}\n${t.output()}`);
  }
  return {
    grpcEndpoint: `http://127.0.0.1:${grpc}`,
    delayEndpoint: `http://127.0.0.1:${delay}`,
    spansFile,
    pid: t.pid,
    stop: async () => {
      await t.stop(5000);
    },
  };
}

export interface AgentHandle {
  pid: number;
  healthUrl: string;
  health(): Promise<Health>;
  output(): string;
  /** SIGTERM, wait for exit; the exit code */
  stop(): Promise<number | null>;
}

/** The subset of GET /healthz (Agent.stats()) the benchmark reads. */
export interface Health {
  kernel: Record<string, number>;
  probes: { name: string; runTimeNs: number; runCount: number }[];
  batches: number;
  decode: { records: number; malformed: number };
  connections: { http?: Record<string, number> } & Record<string, unknown>;
  export: { depth: number; received: number; exported: number; droppedQueueFull: number; droppedExportFailed: number } | null;
  /** the agent's memory (bytes); absent in agents older than it */
  memory?: { rss: number; heapUsed: number; heapTotal: number; youngGeneration: number };
}

export interface AgentOptions {
  dir: string;
  endpoint: string;
  /** ports excluded by the kernel filter (arm D) */
  excludePorts?: number[];
  /** extra node flags: the agent is then run as `node --enable-source-maps FLAGS dist/cli.js run` (profiling) */
  nodeFlags?: string[];
  name: string;
  /** more YAML lines for the agent's config file (top-level sections, e.g. ['capture:', '  bytes: 64']) */
  extraConfig?: string[];
  /** more keys of the export section, e.g. ['compression: none'] */
  exportConfig?: string[];
  /** a command line that execs the agent after its own arguments (the tail phase: `sh -c 'echo $$ > CGROUP && exec "$@"' sh`) */
  wrap?: string[];
}

/** `bin/sidelight run --config FILE` with a health port of its own; resolves once /readyz is 200. */
export async function startAgent(o: AgentOptions): Promise<AgentHandle> {
  const healthPort = await freePort();
  const cfg = join(o.dir, `agent-${o.name}.yaml`);
  const lines = [
    '# written by bench/run',
    'export:',
    `  endpoint: "${o.endpoint}"`,
    '  protocol: grpc',
    '  console: never',
    ...(o.exportConfig ?? []).map((l) => `  ${l}`),
    'health:',
    `  address: "127.0.0.1:${healthPort}"`,
    'log:',
    '  level: warn',
  ];
  if (o.excludePorts?.length) lines.push('filter:', '  ports:', `    exclude: [${o.excludePorts.join(', ')}]`);
  if (o.extraConfig) lines.push(...o.extraConfig);
  mkdirSync(o.dir, { recursive: true });
  writeFileSync(cfg, `${lines.join('\n')}\n`);
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('OTEL_') && !k.startsWith('SIDELIGHT_')));
  const [cmd, ...args] = [
    ...(o.wrap ?? []),
    ...(o.nodeFlags
      ? [join(REPO, '.tools', 'node', 'bin', 'node'), '--enable-source-maps', ...o.nodeFlags, join(REPO, 'dist', 'cli.js')]
      : [join(REPO, 'bin', 'sidelight')]),
    'run',
    '--config',
    cfg,
  ];
  const t = spawnTracked(cmd!, args, { env, cwd: REPO });
  const healthUrl = `http://127.0.0.1:${healthPort}`;
  const end = Date.now() + 30_000;
  for (;;) {
    if (t.child.exitCode !== null) throw new Error(`agent exited with ${t.child.exitCode} before ready:\n${t.output()}`);
    try {
      const r = await fetch(`${healthUrl}/readyz`);
      await r.arrayBuffer();
      if (r.status === 200) break;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > end) {
      await t.stop(1000);
      throw new Error(`agent not ready after 30 s:\n${t.output()}`);
    }
    await sleep(50);
  }
  return {
    pid: t.pid,
    healthUrl,
    health: async () => {
      const r = await fetch(`${healthUrl}/healthz`);
      return (await r.json()) as Health;
    },
    output: t.output,
    stop: () => t.stop(15_000),
  };
}
