/**
 * Reliability (issue #10, item 9): data hygiene, end to end. Real clients (curl; a Node http2
 * client) send requests carrying secrets in Authorization, Cookie, Proxy-Authorization, a custom
 * header, the query string and the body, to real servers (Node http and http2) that answer with
 * secrets in Set-Cookie, a custom header and the body. The agent (`bin/sidelight run`) exports
 * spans and metrics to a real Collector; the test searches everything the Collector received
 * for every secret. Query strings: absent by default; present only with http.captureQuery, and
 * then the values of http.redactQueryKeys (token among the defaults) are REDACTED.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { startAgentProcess } from '../helpers/agentproc.js';
import { collectorBinary, startCollector, type CollectorSpan } from '../helpers/collector.js';
import { kernelUnavailable, need } from '../helpers/kernel.js';
import { curl, freePort, NODE, waitForPort } from '../helpers/servers.js';

const unavailable = kernelUnavailable() ?? (collectorBinary() ? undefined : 'collector not built (bash scripts/collector.sh)');

const SECRETS = {
  authorization: 'SECRETauthZ9f3',
  cookie: 'SECRETcookieQ7',
  proxy: 'SECRETproxyW2',
  apiKey: 'SECRETapikeyK1',
  query: 'SECRETqueryT5',
  requestBody: 'SECRETreqbodyB8',
  setCookie: 'SECRETsetcookieS4',
  responseHeader: 'SECRETresphdrR6',
  responseBody: 'SECRETrespbodyY3',
} as const;

const SERVERS = (httpPort: number, h2Port: number): string => `
const reply = (res) => {
  res.setHeader('set-cookie', 'session=${SECRETS.setCookie}; HttpOnly');
  res.setHeader('x-internal-token', '${SECRETS.responseHeader}');
  res.end('body ${SECRETS.responseBody}');
};
require('node:http').createServer((req, res) => { req.resume(); req.on('end', () => reply(res)); }).listen(${httpPort}, '127.0.0.1');
require('node:http2').createServer((req, res) => { req.resume(); req.on('end', () => reply(res)); }).listen(${h2Port}, '127.0.0.1');`;

const H2_CLIENT = (port: number, path: string): string => `
const s = require('node:http2').connect('http://127.0.0.1:${port}');
const r = s.request({ ':method': 'POST', ':path': '${path}', authorization: 'Bearer ${SECRETS.authorization}', cookie: 'sid=${SECRETS.cookie}', 'proxy-authorization': 'Basic ${SECRETS.proxy}', 'x-api-key': '${SECRETS.apiKey}' });
r.on('response', (h) => console.log(h[':status'])); r.on('data', () => {}); r.on('end', () => s.close());
r.end('${SECRETS.requestBody}');`;

async function runCase(t: import('ava').ExecutionContext, captureQuery: boolean): Promise<void> {
  const collector = await startCollector();
  const [httpPort, h2Port] = [await freePort(), await freePort()];
  const servers: ChildProcess = spawn(NODE, ['-e', SERVERS(httpPort, h2Port)], { stdio: 'ignore' });
  const dir = mkdtempSync(join(tmpdir(), 'sl-hygiene-'));
  writeFileSync(join(dir, 'a.yaml'), `filter:\n  ports:\n    include: [${httpPort}, ${h2Port}]\nhttp:\n  captureQuery: ${captureQuery}\n`);
  let agent: Awaited<ReturnType<typeof startAgentProcess>> | undefined;
  try {
    await waitForPort(httpPort);
    await waitForPort(h2Port);
    agent = await startAgentProcess(
      { OTEL_EXPORTER_OTLP_ENDPOINT: collector.grpcEndpoint, OTEL_METRIC_EXPORT_INTERVAL: '1000' },
      ['--config', join(dir, 'a.yaml')],
    );
    const path = `/account/settings?token=${SECRETS.query}&page=2`;
    const body = await curl([
      '-X', 'POST',
      '-H', `Authorization: Bearer ${SECRETS.authorization}`,
      '-H', `Cookie: sid=${SECRETS.cookie}`,
      '-H', `Proxy-Authorization: Basic ${SECRETS.proxy}`,
      '-H', `X-Api-Key: ${SECRETS.apiKey}`,
      '--data', SECRETS.requestBody,
      `http://127.0.0.1:${httpPort}${path}`,
    ]);
    t.is(body, `body ${SECRETS.responseBody}`);
    const h2status = await new Promise<string>((resolve) => {
      const c = spawn(NODE, ['-e', H2_CLIENT(h2Port, path)], { stdio: ['ignore', 'pipe', 'ignore'] });
      let s = '';
      c.stdout.on('data', (d: Buffer) => (s += d.toString()));
      c.on('exit', () => resolve(s.trim()));
    });
    t.is(h2status, '200');
    const ours = (s: CollectorSpan): boolean => [httpPort, h2Port].includes(Number(s.attributes['server.port'] ?? s.attributes['network.local.port']));
    const spans = (await collector.waitForSpans((all) => all.filter(ours).length >= 4, 20_000)).filter(ours);
    await collector.waitForMetrics((m) => m.some((p) => p.name === 'http.server.request.duration'), 20_000);
    const everything = JSON.stringify({ spans: await collector.spans(), metrics: await collector.metrics() });
    for (const [what, secret] of Object.entries(SECRETS)) {
      t.false(everything.includes(secret), `${what} (${secret}) must not reach the Collector`);
    }
    t.true(everything.includes('/account/settings'), 'the path itself is exported');
    for (const s of spans) {
      const full = s.attributes['url.full'];
      if (captureQuery) {
        t.true(s.attributes['url.query'] === 'token=REDACTED&page=2' || String(full).endsWith('?token=REDACTED&page=2'), `opt-in query, token redacted, on ${s.kind} ${String(s.attributes['network.protocol.version'])}`);
      } else {
        t.false('url.query' in s.attributes);
        if (full !== undefined) t.false(String(full).includes('?'), 'url.full without the query');
      }
    }
    t.is(spans.filter((s) => s.kind === 2).length, 2, 'one SERVER span per protocol');
    t.is(spans.filter((s) => s.kind === 3).length, 2, 'one CLIENT span per protocol');
  } finally {
    await agent?.stop();
    servers.kill('SIGKILL');
    await collector.stop();
  }
}

test.serial('no header value, query string or payload byte reaches the Collector (defaults)', async (t) => {
  if (!need(t, unavailable)) return;
  await runCase(t, false);
});

test.serial('http.captureQuery: true exports the query string with configured keys REDACTED, and still no header value or payload byte', async (t) => {
  if (!need(t, unavailable)) return;
  await runCase(t, true);
});
