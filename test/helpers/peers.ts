/**
 * peers.ts (test helper) — shared set-up of the protocol-depth tests (http1-depth, grpc-go):
 * an in-process Agent restricted to the test's ports, exporting spans and metrics over OTLP
 * gRPC to a real Collector; the Go peers built by scripts/peers.sh; span/metric look-ups on
 * what the Collector wrote.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { Agent } from '../../src/agent.js';
import { loadConfig } from '../../src/config.js';
import { repoRoot } from '../../src/paths.js';
import { collectorBinary, startCollector, type CollectorHistogramPoint, type CollectorSpan, type RunningCollector } from './collector.js';
import { kernelUnavailable } from './kernel.js';
import { waitForPort } from './servers.js';

export const PEERS = `${repoRoot()}/.tools/peers`;
export const H2C_SERVER = `${PEERS}/h2cserver`;
export const GREETER = `${PEERS}/greeter`;

export const SPAN_KIND_SERVER = 2;
export const SPAN_KIND_CLIENT = 3;
export const STATUS_ERROR = 2;

/** Why these tests cannot run here, or undefined. */
export function peersUnavailable(): string | undefined {
  return (
    kernelUnavailable() ??
    (collectorBinary() ? undefined : 'collector not built (bash scripts/collector.sh)') ??
    (existsSync(H2C_SERVER) && existsSync(GREETER) ? undefined : 'Go peers not built (bash scripts/peers.sh)')
  );
}

export interface Rig {
  agent: Agent;
  collector: RunningCollector;
  children: ChildProcess[];
  stop(): Promise<void>;
}

/** A Collector and an agent tracing only `ports`, with a short request timeout and metric interval. */
export async function startRig(ports: number[], requestTimeoutMs: number): Promise<Rig> {
  const collector = await startCollector();
  const config = loadConfig({
    env: {
      SIDELIGHT_HEALTH_ADDR: '127.0.0.1:0',
      OTEL_EXPORTER_OTLP_ENDPOINT: collector.grpcEndpoint,
      OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc',
      OTEL_METRIC_EXPORT_INTERVAL: '500',
    },
  });
  config.export.console = 'never';
  config.capture.pollIntervalMs = 20;
  config.filter.ports.include = ports;
  config.http.requestTimeoutMs = requestTimeoutMs;
  const agent = new Agent(config);
  try {
    await agent.start();
  } catch (e) {
    await collector.stop();
    throw e;
  }
  const children: ChildProcess[] = [];
  return {
    agent,
    collector,
    children,
    async stop() {
      for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
      await agent.stop();
      await collector.stop();
    },
  };
}

/** Start a long-running peer listening on `port` (127.0.0.1). */
export async function startPeer(rig: Rig, cmd: string, args: string[], port: number, serviceName: string): Promise<ChildProcess> {
  const p = spawn(cmd, args, { stdio: 'ignore', env: { ...process.env, OTEL_SERVICE_NAME: serviceName } });
  rig.children.push(p);
  await waitForPort(port);
  return p;
}

/** The attributes `keys` of a span (absent ones as undefined), for exact comparison. */
export function attrs(s: CollectorSpan | undefined, keys: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of keys) out[k] = s?.attributes[k];
  return out;
}

export const onPort = (port: number, kind: number) => (s: CollectorSpan) => s.kind === kind && s.attributes['server.port'] === port;

/** The last exported cumulative point of a metric with these attributes (subset match). */
export function lastPoint(points: CollectorHistogramPoint[], name: string, match: Record<string, unknown>): CollectorHistogramPoint | undefined {
  let found: CollectorHistogramPoint | undefined;
  for (const p of points) {
    if (p.name !== name) continue;
    if (Object.entries(match).every(([k, v]) => p.attributes[k] === v)) found = p;
  }
  return found;
}

export async function waitMetric(
  c: RunningCollector,
  name: string,
  match: Record<string, unknown>,
  minCount = 1,
): Promise<CollectorHistogramPoint> {
  const pts = await c.waitForMetrics((m) => (lastPoint(m, name, match)?.count ?? 0) >= minCount, 15_000);
  return lastPoint(pts, name, match)!;
}
