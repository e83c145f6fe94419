/**
 * Export resilience and self-telemetry, end to end (issue 7): `bin/sidelight run` exporting
 * over OTLP/gRPC to a real Collector that is stopped and restarted mid-stream. Within the
 * queue budget every span arrives after the Collector returns; beyond it (a 16-span queue)
 * the spans lost are exactly the drops the agent reports. The counters are read from the
 * agent's Prometheus endpoint (GET /metrics) and checked against the traffic sent (curl →
 * python http.server: one CLIENT and one SERVER span per request).
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { collectorBinary, startCollector, type CollectorSpan, type RunningCollector } from '../helpers/collector.js';
import { startAgentProcess, type AgentProcess } from '../helpers/agentproc.js';
import { kernelUnavailable, need } from '../helpers/kernel.js';
import { parsePrometheus } from '../helpers/prom.js';
import { curl, startPythonServer } from '../helpers/servers.js';

const unavailable = kernelUnavailable() ?? (collectorBinary() ? undefined : 'collector not built (bash scripts/collector.sh)');

async function scrape(agent: AgentProcess): Promise<(name: string, labels?: Record<string, string>) => number> {
  const r = await fetch(`${agent.healthUrl}/metrics`);
  if (r.status !== 200) throw new Error(`/metrics: ${r.status}`);
  if (!String(r.headers.get('content-type')).startsWith('text/plain; version=0.0.4')) throw new Error(`/metrics content-type ${r.headers.get('content-type')}`);
  const samples = parsePrometheus(await r.text());
  return (name, labels = {}) => {
    const hits = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
    return hits.reduce((a, s) => a + s.value, 0);
  };
}

function config(lines: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'sl-exp-'));
  writeFileSync(join(dir, 'c.yaml'), lines);
  return join(dir, 'c.yaml');
}

const until = async (pred: () => Promise<boolean>, ms: number): Promise<boolean> => {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await pred()) return true;
    await new Promise((r) => setTimeout(r, 200));
  }
  return false;
};

async function requests(port: number, n: number, tag: string): Promise<void> {
  await curl(Array.from({ length: n }, (_, i) => `http://127.0.0.1:${port}/hello.txt?${tag}${i}`).flatMap((u) => ['-o', '/dev/null', u]));
}

test.serial('Collector stopped and restarted mid-stream: every span delivered after it returns; /metrics matches the traffic', async (t) => {
  if (!need(t, unavailable)) return;
  let collector: RunningCollector = await startCollector();
  const ports = { grpc: Number(new URL(collector.grpcEndpoint).port), http: Number(new URL(collector.httpEndpoint).port) };
  const srv = await startPythonServer();
  const agent = await startAgentProcess(
    { OTEL_EXPORTER_OTLP_ENDPOINT: collector.grpcEndpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' },
    ['--config', config(`filter:\n  ports:\n    include: [${srv.port}]\nexport:\n  batch:\n    delayMs: 100\n  retry:\n    initialMs: 200\n    maxMs: 1000\n    maxElapsedMs: 120000\n`)],
  );
  const ours = (s: CollectorSpan): boolean => s.attributes['server.port'] === srv.port;
  let before: CollectorSpan[] = [];
  let after: CollectorSpan[] = [];
  let m1: Awaited<ReturnType<typeof scrape>> | undefined;
  let m2: Awaited<ReturnType<typeof scrape>> | undefined;
  let errorsWhileDown = 0;
  try {
    await requests(srv.port, 5, 'a');
    before = (await collector.waitForSpans((all) => all.filter(ours).length >= 10, 20_000)).filter(ours);
    await collector.stop();
    await requests(srv.port, 7, 'b');
    // the agent fails, retries, keeps the batch
    await until(async () => (await scrape(agent))('sidelight_export_errors_total', { signal: 'traces' }) >= 2, 15_000);
    m1 = await scrape(agent);
    errorsWhileDown = m1('sidelight_export_errors_total', { signal: 'traces' });
    collector = await startCollector({ ports });
    after = (await collector.waitForSpans((all) => all.filter(ours).length >= 14, 30_000)).filter(ours);
    await new Promise((r) => setTimeout(r, 500));
    m2 = await scrape(agent);
  } finally {
    await agent.stop();
    await collector.stop();
    await srv.stop();
  }
  t.is(before.length, 10, '5 requests: 5 client + 5 server spans before the stop');
  t.is(after.length, 14, '7 requests while the Collector was down: all 14 spans delivered after it came back');
  t.true(errorsWhileDown >= 2, `export errors counted while down: ${errorsWhileDown}`);
  t.true(m1!('sidelight_export_retries_total') >= 1);
  t.is(m1!('sidelight_spans_exported_total'), 10, 'while the Collector is down only the first 10 spans count as exported');
  const get = m2!;
  t.is(get('sidelight_spans_created_total'), 24, '12 requests, two ends each');
  t.is(get('sidelight_spans_exported_total'), 24);
  for (const reason of ['queue_full', 'queue_bytes_full', 'export_failed', 'rejected_by_backend', 'ringbuf_full', 'malformed_event', 'parser_gave_up']) {
    t.is(get('sidelight_drops_total', { reason }), 0, `nothing dropped: ${reason}`);
  }
  t.is(get('sidelight_export_queue_spans'), 0);
  t.is(get('sidelight_export_duration_seconds_count', { signal: 'traces' }), get('sidelight_export_duration_seconds_bucket', { le: '+Inf' }));
  t.true(get('sidelight_export_duration_seconds_count') >= 3, 'latency observed per attempt');
  t.true(get('sidelight_events_received_total') > 0);
  t.true(get('sidelight_kernel_events_total') >= get('sidelight_events_received_total'));
  t.true(get('sidelight_bpf_probe_runs_total', { probe: 'sl_sys_enter' }) > 0, 'per-probe run counts');
  t.true(get('sidelight_bpf_probe_run_time_seconds_total', { probe: 'sl_sys_exit' }) > 0, 'per-probe run time');
});

test.serial('beyond the queue budget: spans lost are exactly the drops the agent counts', async (t) => {
  if (!need(t, unavailable)) return;
  let collector: RunningCollector = await startCollector();
  const ports = { grpc: Number(new URL(collector.grpcEndpoint).port), http: Number(new URL(collector.httpEndpoint).port) };
  await collector.stop();
  const srv = await startPythonServer();
  const agent = await startAgentProcess(
    { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${ports.grpc}`, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' },
    ['--config', config(`filter:\n  ports:\n    include: [${srv.port}]\nexport:\n  batch:\n    maxSpans: 16\n    queueSpans: 16\n    maxInFlight: 2\n    delayMs: 50\n  retry:\n    initialMs: 200\n    maxMs: 500\n    maxElapsedMs: 120000\n`)],
  );
  const ours = (s: CollectorSpan): boolean => s.attributes['server.port'] === srv.port;
  let got: CollectorSpan[] = [];
  let m: Awaited<ReturnType<typeof scrape>> | undefined;
  try {
    await requests(srv.port, 30, 'c'); // 60 spans: one batch of 16 retrying, 16 queued, the rest dropped
    await until(async () => (await scrape(agent))('sidelight_spans_created_total') >= 60, 10_000);
    collector = await startCollector({ ports });
    await until(async () => {
      const s = await scrape(agent);
      return s('sidelight_export_queue_spans') === 0 && s('sidelight_spans_exported_total') + s('sidelight_drops_total') >= 60;
    }, 30_000);
    await new Promise((r) => setTimeout(r, 500)); // the Collector's file exporter flushes every 100 ms
    got = (await collector.spans()).filter(ours);
    m = await scrape(agent);
  } finally {
    await agent.stop();
    await collector.stop();
    await srv.stop();
  }
  const created = m!('sidelight_spans_created_total');
  const exported = m!('sidelight_spans_exported_total');
  const queueFull = m!('sidelight_drops_total', { reason: 'queue_full' });
  t.is(created, 60);
  t.is(got.length, exported, 'the Collector has exactly the spans the agent says it exported');
  t.is(exported + queueFull + m!('sidelight_drops_total', { reason: 'export_failed' }), created, 'every span either delivered or counted as dropped');
  t.true(queueFull >= 60 - 48, `at least the spans beyond two batches in flight (maxInFlight 2) + a full queue are dropped: ${queueFull}`);
  t.true(exported >= 16 && exported <= 48, `the batches in flight and the queue delivered: ${exported}`);
});
