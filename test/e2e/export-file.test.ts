/**
 * The embedded default (issue 7.6): with no backend, `bin/sidelight run` prints trace trees
 * (curl → python http.server: the CLIENT span with the SERVER span indented under it), and
 * `--output FILE` writes OTLP JSON lines. Each line is then posted, unchanged, to a real
 * Collector as an OTLP/HTTP JSON request — the same pdata JSON decoder its otlpjsonfile
 * receiver uses (that receiver is not in our Collector build: the Go module proxy here does
 * not serve it) — and the Collector must yield every span with its ids intact.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { collectorBinary, startCollector } from '../helpers/collector.js';
import { startAgentProcess } from '../helpers/agentproc.js';
import { lossCounters } from '../helpers/counters.js';
import { kernelUnavailable, need } from '../helpers/kernel.js';
import { curl, startPythonServer } from '../helpers/servers.js';

const unavailable = kernelUnavailable() ?? (collectorBinary() ? undefined : 'collector not built (bash scripts/collector.sh)');

interface JsonSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  kind: number;
  attributes: Array<{ key: string; value: { intValue?: string | number; stringValue?: string } }>;
}
interface Line {
  resourceSpans: Array<{ resource: { attributes: Array<{ key: string; value: { stringValue?: string } }> }; scopeSpans: Array<{ scope: { name: string }; spans: JsonSpan[] }> }>;
}

test.serial('no backend: trace trees on the terminal, and --output FILE holds OTLP JSON lines a Collector reads back', async (t) => {
  if (!need(t, unavailable)) return;
  const srv = await startPythonServer();
  const dir = mkdtempSync(join(tmpdir(), 'sl-out-'));
  const file = join(dir, 'spans.jsonl');
  writeFileSync(join(dir, 'c.yaml'), `filter:\n  ports:\n    include: [${srv.port}]\nexport:\n  batch:\n    delayMs: 100\n`);
  const agent = await startAgentProcess({}, ['--config', join(dir, 'c.yaml'), '--output', file]);
  let code: number | null = null;
  // the agent's non-zero counters before it stops, for the failure messages
  let counters = '';
  try {
    await curl([`http://127.0.0.1:${srv.port}/hello.txt`, '-o', '/dev/null', `http://127.0.0.1:${srv.port}/missing`, '-o', '/dev/null', `http://127.0.0.1:${srv.port}/hello.txt?x=1`, '-o', '/dev/null']);
    const end = Date.now() + 10_000;
    while (Date.now() < end && (agent.stdout().match(/SERVER .*python3/g) ?? []).length < 3) await new Promise((r) => setTimeout(r, 100));
    const h = (await (await fetch(`${agent.healthUrl}/healthz`)).json()) as { detail?: Record<string, unknown> };
    counters = JSON.stringify(lossCounters(h.detail ?? {}));
  } finally {
    code = await agent.stop(); // SIGTERM: the file pipeline is flushed
    await srv.stop();
  }
  t.is(code, 0);
  const out = agent.stdout();
  // one tree per request: header, the curl CLIENT span, the python SERVER span under it
  const trees = out.split(/(?=^trace [0-9a-f]{32} )/m).filter((b) => b.startsWith('trace '));
  t.is(trees.length, 3, out);
  for (const tree of trees) {
    const lines = tree.trimEnd().split('\n');
    const all = `${out}\nagent counters: ${counters}`;
    t.regex(lines[0]!, /^trace [0-9a-f]{32} 2 spans \d+\.\d+ms( 1 ERROR)?$/, all); // the 404 CLIENT span is an error
    t.regex(lines[1]!, /^ {2}\S+ CLIENT .*curl.* GET http:\/\/127\.0\.0\.1:\d+\/(hello\.txt|missing) (200|404) /, all);
    t.regex(lines[2]!, /^ {2}└─ \S+ SERVER .*python3.* GET \/(hello\.txt|missing) (200|404) /, all);
  }
  t.regex(out, /└─ \S+ SERVER .* GET \/missing 404 /);

  const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l !== '');
  t.true(lines.length >= 1);
  const spans: JsonSpan[] = [];
  for (const l of lines) {
    const req = JSON.parse(l) as Line; // one ExportTraceServiceRequest per line
    for (const rs of req.resourceSpans) for (const ss of rs.scopeSpans) spans.push(...ss.spans);
  }
  t.is(spans.length, 6, '3 requests, two ends each');
  t.true(spans.every((s) => /^[0-9a-f]{32}$/.test(s.traceId) && /^[0-9a-f]{16}$/.test(s.spanId)), 'hex ids, as OTLP/JSON requires');
  t.is(new Set(spans.map((s) => s.traceId)).size, 3);

  const collector = await startCollector();
  try {
    for (const l of lines) {
      const r = await fetch(`${collector.httpEndpoint}/v1/traces`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: l });
      t.is(r.status, 200, await r.text());
    }
    const got = await collector.waitForSpans((all) => all.length >= 6, 15_000);
    t.deepEqual(got.map((s) => s.spanId).sort(), spans.map((s) => s.spanId).sort());
    const server = got.find((s) => s.kind === 2 && s.attributes['http.response.status_code'] === 404)!;
    t.truthy(server);
    t.is(server.attributes['server.port'], srv.port);
    t.is(server.parentSpanId, got.find((s) => s.kind === 3 && s.traceId === server.traceId)!.spanId, 'parent link survives the file round trip');
  } finally {
    await collector.stop();
  }
});
