// Tests for src/config.ts: defaults vs config/default.yaml, file and environment
// precedence, OTLP traces URL rules, exact validation messages for the bad
// configs in test/testdata/config/, bad environment values, and that
// describeConfig never prints header values. Pure functions; no I/O besides
// reading the test data.

import test from 'ava';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { CONFIG_ENV_VARS, ConfigError, defaultConfig, describeConfig, loadConfig, type Config, type K8sOptions } from '../src/config.js';

const repo = (rel: string): string => fileURLToPath(new URL(`../${rel}`, import.meta.url));
const data = (name: string): string => repo(`test/testdata/config/${name}`);

function loadError(t: { throws: (fn: () => unknown, exp: { instanceOf: typeof ConfigError }) => unknown }, opts: Parameters<typeof loadConfig>[0]): ConfigError {
  return t.throws(() => loadConfig(opts), { instanceOf: ConfigError }) as ConfigError;
}

const DEFAULTS: Config = {
  capture: { bytes: 512, ringBufferBytes: 16777216, wakeupBytes: 262144, pollIntervalMs: 100, maxBatchBytes: 1048576 },
  filter: {
    pids: { include: [], exclude: [] },
    cgroups: { include: [], exclude: [] },
    ports: { include: [], exclude: [] },
  },
  http: { captureQuery: false, redactQueryKeys: ['AWSAccessKeyId', 'Signature', 'sig', 'X-Goog-Signature', 'access_token', 'token', 'api_key', 'apikey', 'password', 'secret'], requestTimeoutMs: 30000, routes: { heuristic: true, templates: [] }, inject: { enabled: false, cgroup: '/', ports: [] } },
  dns: { ports: [53], timeoutMs: 5000, maxPending: 16384, maxNamesPerWorkload: 100 },
  tls: { enabled: true, rescanMs: 5000, maxBinaries: 256, paths: [] },
  limits: { connections: 65536, processes: 8192, pendingPerConnection: 64 },
  export: {
    endpoint: '',
    tracesEndpoint: '',
    metricsEndpoint: '',
    logsEndpoint: '',
    protocol: 'grpc',
    headers: {},
    timeoutMs: 10000,
    compression: 'none',
    insecure: false,
    certificate: '',
    clientCertificate: '',
    clientKey: '',
    console: 'auto',
    batch: { maxSpans: 2048, maxBytes: 2097152, delayMs: 1000, maxInFlight: 4, queueSpans: 8192, queueBytes: 33554432 },
    retry: { initialMs: 1000, maxMs: 30000, maxElapsedMs: 300000 },
    file: '',
    metricsIntervalMs: 60000,
    metricsIdleMs: 300000,
    maxSeries: 2000,
    serviceGraph: { waitMs: 10000, maxPending: 10000 },
    resourceAttributes: {},
    traces: null,
    metrics: null,
    logs: null,
  },
  receiver: {
    enabled: false,
    grpcAddress: '127.0.0.1:4317',
    httpAddress: '127.0.0.1:4318',
    maxRequestBytes: 4194304,
    queueBytes: 33554432,
    senderBytesPerSecond: 0,
    totalBytesPerSecond: 0,
    maxSenders: 4096,
    tls: { certFile: '', keyFile: '' },
    dedup: true,
  },
  sdk: { dedup: true, ttlMs: 600000, maxProcesses: 4096 },
  k8s: {
    enabled: 'auto',
    nodeName: '',
    clusterName: '',
    kubeconfig: '',
    clusterDomain: 'cluster.local',
    peers: true,
    maxPods: 1024,
    maxServices: 10000,
    maxEndpointSlices: 20000,
    maxEndpoints: 100000,
    ownerCacheTtlMs: 600000,
    deletedPodRetentionMs: 30000,
    syncTimeoutMs: 10000,
  },
  health: { address: '127.0.0.1:13133' },
  log: { level: 'info' },
};

// ---------------------------------------------------------------------------
// Defaults

test('defaultConfig() is exactly the documented defaults', (t) => {
  t.deepEqual(defaultConfig(), DEFAULTS);
});

test('config/default.yaml parses to exactly defaultConfig() (minus the computed export.traces and export.metrics)', (t) => {
  const fromYaml = parse(readFileSync(repo('config/default.yaml'), 'utf8')) as unknown;
  const { traces, metrics, logs, ...exportKeys } = defaultConfig().export;
  t.is(traces, null);
  t.is(metrics, null);
  t.is(logs, null);
  t.deepEqual(fromYaml, { ...defaultConfig(), export: exportKeys });
});

test('loading config/default.yaml gives defaultConfig()', (t) => {
  t.deepEqual(loadConfig({ file: repo('config/default.yaml'), env: {} }), defaultConfig());
});

test('keys come out in schema order whatever set them', (t) => {
  const c = loadConfig({ env: { SIDELIGHT_LOG_LEVEL: 'debug', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4317' } });
  t.deepEqual(Object.keys(c), ['capture', 'filter', 'http', 'dns', 'tls', 'limits', 'export', 'receiver', 'sdk', 'k8s', 'health', 'log']);
  t.deepEqual(Object.keys(c.export), Object.keys(DEFAULTS.export));
});

test('defaultConfig() returns a fresh object each call', (t) => {
  const a = defaultConfig();
  a.capture.bytes = 16;
  a.filter.ports.include.push(80);
  a.export.headers['x'] = 'y';
  t.deepEqual(defaultConfig(), DEFAULTS);
});

test('a file with only comments, and empty sections, keep the defaults', (t) => {
  t.deepEqual(loadConfig({ file: data('good_empty.yaml'), env: {} }), DEFAULTS);
  t.deepEqual(loadConfig({ file: data('good_empty_sections.yaml'), env: {} }), DEFAULTS);
});

test('env defaults to process.env when not given', (t) => {
  const before = process.env['SIDELIGHT_LOG_LEVEL'];
  process.env['SIDELIGHT_LOG_LEVEL'] = 'warn';
  try {
    t.is(loadConfig({}).log.level, 'warn');
    t.is(loadConfig({ env: {} }).log.level, 'info');
  } finally {
    if (before === undefined) delete process.env['SIDELIGHT_LOG_LEVEL'];
    else process.env['SIDELIGHT_LOG_LEVEL'] = before;
  }
});

// ---------------------------------------------------------------------------
// File

const OVERRIDE: Config = {
  capture: { bytes: 1024, ringBufferBytes: 67108864, wakeupBytes: 1048576, pollIntervalMs: 50, maxBatchBytes: 4194304 },
  filter: {
    pids: { include: [], exclude: [1, 2] },
    cgroups: { include: ['/system.slice/nginx.service', 4242, '/'], exclude: [] },
    ports: { include: [80, 8080], exclude: [] },
  },
  http: {
    captureQuery: true,
    redactQueryKeys: ['session'],
    requestTimeoutMs: 5000,
    routes: { heuristic: false, templates: ['/users/{id}', '/static/*'] },
    inject: { enabled: true, cgroup: '/sidelight-test', ports: [80, 8080] },
  },
  dns: { ports: [53, 5353], timeoutMs: 2500, maxPending: 1000, maxNamesPerWorkload: 10 },
  tls: { enabled: false, rescanMs: 0, maxBinaries: 8, paths: ['/opt/app/lib/libssl.so.3'] },
  limits: { connections: 1024, processes: 512, pendingPerConnection: 8 },
  export: {
    endpoint: 'https://collector.example.com:4318/',
    tracesEndpoint: '',
    metricsEndpoint: 'https://metrics.example.com/custom',
    logsEndpoint: 'https://logs.example.com/custom',
    protocol: 'http/protobuf',
    headers: { Authorization: 'Bearer file-token', 'x-tenant': 'team-a' },
    timeoutMs: 5000,
    compression: 'none',
    insecure: true,
    certificate: '/etc/sidelight/ca.pem',
    clientCertificate: '/etc/sidelight/client.pem',
    clientKey: '/etc/sidelight/client-key.pem',
    console: 'never',
    batch: { maxSpans: 256, maxBytes: 2097152, delayMs: 500, maxInFlight: 2, queueSpans: 4096, queueBytes: 1048576 },
    retry: { initialMs: 200, maxMs: 5000, maxElapsedMs: 60000 },
    file: '/var/log/sidelight/spans.jsonl',
    metricsIntervalMs: 15000,
    metricsIdleMs: 120000,
    maxSeries: 500,
    serviceGraph: { waitMs: 2000, maxPending: 100 },
    resourceAttributes: { 'deployment.environment.name': 'staging', 'k8s.cluster.name': 'blue' },
    traces: {
      url: 'https://collector.example.com:4318/v1/traces',
      protocol: 'http/protobuf',
      headers: { Authorization: 'Bearer file-token', 'x-tenant': 'team-a' },
      timeoutMs: 5000,
      compression: 'none',
      insecure: true,
      certificate: '/etc/sidelight/ca.pem',
      clientCertificate: '/etc/sidelight/client.pem',
      clientKey: '/etc/sidelight/client-key.pem',
    },
    metrics: {
      url: 'https://metrics.example.com/custom',
      protocol: 'http/protobuf',
      headers: { Authorization: 'Bearer file-token', 'x-tenant': 'team-a' },
      timeoutMs: 5000,
      compression: 'none',
      insecure: true,
      certificate: '/etc/sidelight/ca.pem',
      clientCertificate: '/etc/sidelight/client.pem',
      clientKey: '/etc/sidelight/client-key.pem',
    },
    logs: {
      url: 'https://logs.example.com/custom',
      protocol: 'http/protobuf',
      headers: { Authorization: 'Bearer file-token', 'x-tenant': 'team-a' },
      timeoutMs: 5000,
      compression: 'none',
      insecure: true,
      certificate: '/etc/sidelight/ca.pem',
      clientCertificate: '/etc/sidelight/client.pem',
      clientKey: '/etc/sidelight/client-key.pem',
    },
  },
  receiver: {
    enabled: true,
    grpcAddress: '0.0.0.0:14317',
    httpAddress: '',
    maxRequestBytes: 1048576,
    queueBytes: 1048576,
    senderBytesPerSecond: 100000,
    totalBytesPerSecond: 1000000,
    maxSenders: 64,
    tls: { certFile: '/etc/sidelight/tls.crt', keyFile: '/etc/sidelight/tls.key' },
    dedup: false,
  },
  sdk: { dedup: false, ttlMs: 5000, maxProcesses: 32 },
  k8s: {
    enabled: 'false',
    nodeName: 'node-7',
    clusterName: 'prod',
    kubeconfig: '/etc/kube/config',
    clusterDomain: 'cluster.example',
    peers: false,
    maxPods: 64,
    maxServices: 100,
    maxEndpointSlices: 200,
    maxEndpoints: 1000,
    ownerCacheTtlMs: 60000,
    deletedPodRetentionMs: 1000,
    syncTimeoutMs: 500,
  },
  health: { address: '[::1]:13134' },
  log: { level: 'debug' },
};

test('a file overrides every key', (t) => {
  t.deepEqual(loadConfig({ file: data('good_override.yaml'), env: {} }), OVERRIDE);
});

test('a partial file keeps the other defaults', (t) => {
  const c = loadConfig({ file: data('good_partial.yaml'), env: {} });
  t.deepEqual(c, { ...DEFAULTS, capture: { ...DEFAULTS.capture, bytes: 64 }, log: { level: 'warn' } });
});

// ---------------------------------------------------------------------------
// Environment precedence: every variable beats the file (good_override.yaml sets every key).

interface EnvRow {
  name: string;
  value: string;
  get: (c: Config) => unknown;
  want: unknown;
}

const ENV_ROWS: EnvRow[] = [
  { name: 'OTEL_EXPORTER_OTLP_ENDPOINT', value: 'http://env-collector:4318', get: (c) => [c.export.endpoint, c.export.traces?.url], want: ['http://env-collector:4318', 'http://env-collector:4318/v1/traces'] },
  { name: 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', value: 'http://env-collector:4318/custom', get: (c) => [c.export.tracesEndpoint, c.export.traces?.url], want: ['http://env-collector:4318/custom', 'http://env-collector:4318/custom'] },
  { name: 'OTEL_EXPORTER_OTLP_METRICS_ENDPOINT', value: 'http://env-collector:4318/m', get: (c) => [c.export.metricsEndpoint, c.export.metrics?.url, c.export.traces?.url], want: ['http://env-collector:4318/m', 'http://env-collector:4318/m', 'https://collector.example.com:4318/v1/traces'] },
  { name: 'OTEL_EXPORTER_OTLP_LOGS_ENDPOINT', value: 'http://env-collector:4318/l', get: (c) => [c.export.logsEndpoint, c.export.logs?.url, c.export.traces?.url], want: ['http://env-collector:4318/l', 'http://env-collector:4318/l', 'https://collector.example.com:4318/v1/traces'] },
  { name: 'OTEL_METRIC_EXPORT_INTERVAL', value: '5000', get: (c) => c.export.metricsIntervalMs, want: 5000 },
  { name: 'SIDELIGHT_K8S_ENABLED', value: 'true', get: (c) => c.k8s.enabled, want: 'true' },
  { name: 'SIDELIGHT_K8S_CLUSTER_NAME', value: 'blue', get: (c) => c.k8s.clusterName, want: 'blue' },
  { name: 'OTEL_EXPORTER_OTLP_PROTOCOL', value: 'grpc', get: (c) => [c.export.protocol, c.export.traces?.url], want: ['grpc', 'https://collector.example.com:4318/'] },
  { name: 'OTEL_EXPORTER_OTLP_HEADERS', value: 'x-env=1, x-tenant = team%20b ', get: (c) => c.export.traces?.headers, want: { Authorization: 'Bearer file-token', 'x-tenant': 'team b', 'x-env': '1' } },
  { name: 'OTEL_EXPORTER_OTLP_TIMEOUT', value: '30000', get: (c) => [c.export.timeoutMs, c.export.traces?.timeoutMs], want: [30000, 30000] },
  { name: 'OTEL_EXPORTER_OTLP_COMPRESSION', value: 'gzip', get: (c) => [c.export.compression, c.export.traces?.compression], want: ['gzip', 'gzip'] },
  { name: 'OTEL_EXPORTER_OTLP_INSECURE', value: 'FALSE', get: (c) => [c.export.insecure, c.export.traces?.insecure], want: [false, false] },
  { name: 'OTEL_EXPORTER_OTLP_CERTIFICATE', value: '/env/ca.pem', get: (c) => [c.export.certificate, c.export.traces?.certificate], want: ['/env/ca.pem', '/env/ca.pem'] },
  { name: 'OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE', value: '/env/client.pem', get: (c) => [c.export.clientCertificate, c.export.traces?.clientCertificate, c.export.logs?.clientCertificate], want: ['/env/client.pem', '/env/client.pem', '/env/client.pem'] },
  { name: 'OTEL_EXPORTER_OTLP_CLIENT_KEY', value: '/env/client-key.pem', get: (c) => [c.export.clientKey, c.export.metrics?.clientKey], want: ['/env/client-key.pem', '/env/client-key.pem'] },
  { name: 'OTEL_RESOURCE_ATTRIBUTES', value: 'k8s.cluster.name=green,team=a%2Cb', get: (c) => c.export.resourceAttributes, want: { 'deployment.environment.name': 'staging', 'k8s.cluster.name': 'green', team: 'a,b' } },
  { name: 'OTEL_SDK_DISABLED', value: 'true', get: (c) => [c.export.traces, c.export.console, c.export.endpoint], want: [null, 'never', 'https://collector.example.com:4318/'] },
  { name: 'SIDELIGHT_HEALTH_ADDR', value: '0.0.0.0:9000', get: (c) => c.health.address, want: '0.0.0.0:9000' },
  { name: 'SIDELIGHT_RECEIVER_ENABLED', value: 'false', get: (c) => c.receiver.enabled, want: false },
  { name: 'SIDELIGHT_RECEIVER_GRPC_ADDR', value: '10.0.0.7:4317', get: (c) => c.receiver.grpcAddress, want: '10.0.0.7:4317' },
  { name: 'SIDELIGHT_RECEIVER_HTTP_ADDR', value: '[fd00::7]:4318', get: (c) => c.receiver.httpAddress, want: '[fd00::7]:4318' },
  { name: 'SIDELIGHT_LOG_LEVEL', value: 'error', get: (c) => c.log.level, want: 'error' },
  ...(['traces', 'metrics', 'logs'] as const).flatMap((signal) => [
    perSignal(signal, 'PROTOCOL', 'grpc', 'protocol', 'grpc'),
    perSignal(signal, 'TIMEOUT', '1', 'timeoutMs', 1),
    perSignal(signal, 'COMPRESSION', 'gzip', 'compression', 'gzip'),
    perSignal(signal, 'INSECURE', 'FALSE', 'insecure', false),
    perSignal(signal, 'CERTIFICATE', `/env/${signal}-ca.pem`, 'certificate', `/env/${signal}-ca.pem`),
    perSignal(signal, 'CLIENT_CERTIFICATE', `/env/${signal}-client.pem`, 'clientCertificate', `/env/${signal}-client.pem`),
    perSignal(signal, 'CLIENT_KEY', `/env/${signal}-client-key.pem`, 'clientKey', `/env/${signal}-client-key.pem`),
    perSignal(signal, 'HEADERS', 'authorization=Bearer%20env-token', 'headers', { 'x-tenant': 'team-a', authorization: 'Bearer env-token' }),
  ]),
];

/**
 * OTEL_EXPORTER_OTLP_<SIGNAL>_<suffix> changes that signal's computed exporter only: the other
 * signals and the generic export.<field> keep the file's value (OTLP exporter spec).
 */
function perSignal(signal: 'traces' | 'metrics' | 'logs', suffix: string, value: string, field: 'protocol' | 'timeoutMs' | 'compression' | 'insecure' | 'certificate' | 'clientCertificate' | 'clientKey' | 'headers', want: unknown): EnvRow {
  const fileValue = (c: Config): unknown => c.export[field];
  const fileConfig = loadConfig({ file: data('good_override.yaml'), env: {} });
  const expected: Record<string, unknown> = {
    traces: fileValue(fileConfig),
    metrics: fileValue(fileConfig),
    logs: fileValue(fileConfig),
    generic: fileValue(fileConfig),
    urls: [fileConfig.export.traces?.url, fileConfig.export.metrics?.url, fileConfig.export.logs?.url],
  };
  expected[signal] = want;
  // gRPC takes the base endpoint as-is: traces (no own endpoint in the file) lose /v1/traces
  if (signal === 'traces' && field === 'protocol') expected['urls'] = ['https://collector.example.com:4318/', 'https://metrics.example.com/custom', 'https://logs.example.com/custom'];
  return {
    name: `OTEL_EXPORTER_OTLP_${signal.toUpperCase()}_${suffix}`,
    value,
    get: (c) => ({
      traces: c.export.traces?.[field],
      metrics: c.export.metrics?.[field],
      logs: c.export.logs?.[field],
      generic: c.export[field],
      urls: [c.export.traces?.url, c.export.metrics?.url, c.export.logs?.url],
    }),
    want: expected,
  };
}

test('the precedence table covers every environment variable loadConfig reads', (t) => {
  t.deepEqual(ENV_ROWS.map((r) => r.name).sort(), [...CONFIG_ENV_VARS].sort());
});

for (const row of ENV_ROWS) {
  test(`env ${row.name} wins over the file`, (t) => {
    const fileOnly = loadConfig({ file: data('good_override.yaml'), env: {} });
    t.notDeepEqual(row.get(fileOnly), row.want, 'the file must set something else, or this row proves nothing');
    const c = loadConfig({ file: data('good_override.yaml'), env: { [row.name]: row.value } });
    t.deepEqual(row.get(c), row.want);
  });
}

test('per-signal variables win over the generic ones', (t) => {
  const c = loadConfig({
    env: {
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://generic:4318',
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://traces:4318/v1/traces',
      OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc',
      OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/protobuf',
      OTEL_EXPORTER_OTLP_TIMEOUT: '1000',
      OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: '2000',
      OTEL_EXPORTER_OTLP_COMPRESSION: 'none',
      OTEL_EXPORTER_OTLP_TRACES_COMPRESSION: 'gzip',
      OTEL_EXPORTER_OTLP_INSECURE: 'true',
      OTEL_EXPORTER_OTLP_TRACES_INSECURE: 'false',
      OTEL_EXPORTER_OTLP_CERTIFICATE: '/generic.pem',
      OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE: '/traces.pem',
      OTEL_EXPORTER_OTLP_HEADERS: 'a=generic,b=generic',
      OTEL_EXPORTER_OTLP_TRACES_HEADERS: 'B=traces',
    },
  });
  t.deepEqual(c.export.traces, {
    url: 'http://traces:4318/v1/traces',
    protocol: 'http/protobuf',
    headers: { a: 'generic', B: 'traces' },
    timeoutMs: 2000,
    compression: 'gzip',
    insecure: false,
    certificate: '/traces.pem',
  });
  const generic = { url: 'http://generic:4318', protocol: 'grpc', headers: { a: 'generic', b: 'generic' }, timeoutMs: 1000, compression: 'none', insecure: true, certificate: '/generic.pem' };
  t.deepEqual(c.export.metrics, generic, 'traces variables must not change metrics export');
  t.deepEqual(c.export.logs, generic, 'traces variables must not change logs export');
});

test('each signal takes its own variables; the signal protocol decides the /v1/<signal> suffix', (t) => {
  const c = loadConfig({
    env: {
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://generic:4318/base/',
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf',
      OTEL_EXPORTER_OTLP_HEADERS: 'Authorization=generic-s3cret,x-a=1',
      OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: 'grpc',
      OTEL_EXPORTER_OTLP_METRICS_TIMEOUT: '3000',
      OTEL_EXPORTER_OTLP_METRICS_HEADERS: 'authorization=m-s3cret',
      OTEL_EXPORTER_OTLP_LOGS_PROTOCOL: 'http/json',
      OTEL_EXPORTER_OTLP_LOGS_COMPRESSION: 'none',
      OTEL_EXPORTER_OTLP_LOGS_INSECURE: 'true',
      OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE: '/logs.pem',
      OTEL_EXPORTER_OTLP_LOGS_HEADERS: 'x-b=2',
    },
  });
  t.deepEqual(c.export.traces, { url: 'http://generic:4318/base/v1/traces', protocol: 'http/protobuf', headers: { Authorization: 'generic-s3cret', 'x-a': '1' }, timeoutMs: 10000, compression: 'none', insecure: false });
  t.deepEqual(c.export.metrics, { url: 'http://generic:4318/base/', protocol: 'grpc', headers: { 'x-a': '1', authorization: 'm-s3cret' }, timeoutMs: 3000, compression: 'none', insecure: false });
  t.deepEqual(c.export.logs, { url: 'http://generic:4318/base/v1/logs', protocol: 'http/json', headers: { Authorization: 'generic-s3cret', 'x-a': '1', 'x-b': '2' }, timeoutMs: 10000, compression: 'none', insecure: true, certificate: '/logs.pem' });
  t.is(c.export.protocol, 'http/protobuf');
  t.deepEqual(c.export.headers, { Authorization: 'generic-s3cret', 'x-a': '1' });
  const text = describeConfig(c);
  t.true(text.includes('export.traces = http/protobuf http://generic:4318/base/v1/traces (timeout 10000 ms, compression none, insecure false, system CAs, 2 header(s))\n'), text);
  t.true(text.includes('export.metrics = grpc http://generic:4318/base/ (timeout 3000 ms, compression none, insecure false, system CAs, 2 header(s))  (from OTEL_EXPORTER_OTLP_METRICS_PROTOCOL, OTEL_EXPORTER_OTLP_METRICS_TIMEOUT, OTEL_EXPORTER_OTLP_METRICS_HEADERS)'), text);
  t.true(text.includes('(from OTEL_EXPORTER_OTLP_LOGS_PROTOCOL, OTEL_EXPORTER_OTLP_LOGS_COMPRESSION, OTEL_EXPORTER_OTLP_LOGS_INSECURE, OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE, OTEL_EXPORTER_OTLP_LOGS_HEADERS)'), text);
  t.false(text.includes('s3cret'), 'header values must not be printed');
});

test('per-signal variables apply even when the file sets the generic keys', (t) => {
  const c = loadConfig({ file: data('good_override.yaml'), env: { OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_EXPORTER_OTLP_LOGS_PROTOCOL: 'grpc' } });
  t.deepEqual([c.export.traces?.protocol, c.export.metrics?.protocol, c.export.logs?.protocol], ['http/json', 'http/json', 'grpc']);
});

test('empty and blank environment variables are ignored', (t) => {
  const env = Object.fromEntries(CONFIG_ENV_VARS.map((name, i) => [name, i % 2 === 0 ? '' : '  ']));
  t.deepEqual(loadConfig({ file: data('good_override.yaml'), env }), OVERRIDE);
  t.deepEqual(loadConfig({ env }), DEFAULTS);
});

test('unrelated environment variables are ignored', (t) => {
  t.deepEqual(loadConfig({ env: { OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT: 'nonsense', SIDELIGHT_NOPE: 'x', PATH: '/bin' } }), DEFAULTS);
});

test('OTEL_SDK_DISABLED=false (any case) keeps export on', (t) => {
  const c = loadConfig({ env: { OTEL_SDK_DISABLED: 'False', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4317' } });
  t.is(c.export.traces?.url, 'http://c:4317');
});

test('OTEL_SDK_DISABLED=TRUE disables export and keeps console as configured', (t) => {
  const c = loadConfig({ env: { OTEL_SDK_DISABLED: 'TRUE', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4317' } });
  t.is(c.export.traces, null);
  t.is(c.export.console, 'auto');
  t.is(c.export.endpoint, 'http://c:4317');
});

// ---------------------------------------------------------------------------
// OTLP traces URL

const URL_ROWS: { env: Record<string, string>; url: string | null }[] = [
  { env: {}, url: null },
  { env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4317' }, url: 'http://c:4317' },
  { env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4317/' }, url: 'http://c:4317/' },
  { env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf' }, url: 'http://c:4318/v1/traces' },
  { env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318/', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf' }, url: 'http://c:4318/v1/traces' },
  { env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'https://c:4318/otlp', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' }, url: 'https://c:4318/otlp/v1/traces' },
  { env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'https://c:4318/otlp/', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' }, url: 'https://c:4318/otlp/v1/traces' },
  { env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'https://c/otlp?tenant=a', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf' }, url: 'https://c/otlp/v1/traces?tenant=a' },
  { env: { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://c:4318', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf' }, url: 'http://c:4318' },
  { env: { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://c:4318/custom/', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf' }, url: 'http://c:4318/custom/' },
  { env: { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://t:443', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4317' }, url: 'https://t:443' },
];

for (const row of URL_ROWS) {
  test(`traces URL for ${JSON.stringify(row.env)}`, (t) => {
    t.is(loadConfig({ env: row.env }).export.traces?.url ?? null, row.url);
  });
}

test('file tracesEndpoint is used as-is and wins over the file endpoint', (t) => {
  // good_override.yaml has endpoint https://collector.example.com:4318/ and protocol http/protobuf.
  const c = loadConfig({ file: data('good_override.yaml'), env: { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://other/v1/t' } });
  t.is(c.export.traces?.url, 'https://other/v1/t');
});

test('traces has no certificate key when none is configured', (t) => {
  const c = loadConfig({ env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4317' } });
  t.deepEqual(c.export.traces, { url: 'http://c:4317', protocol: 'grpc', headers: {}, timeoutMs: 10000, compression: 'none', insecure: false });
  t.false(Object.hasOwn(c.export.traces!, 'certificate'));
});

// ---------------------------------------------------------------------------
// Bad config files: exact message, key and source.

const BAD_FILES: { file: string; key: string; message: (f: string) => string }[] = [
  { file: 'bad_unknown_key.yaml', key: 'capture.bites', message: (f) => `${f}: unknown key "capture.bites" (allowed: bytes, ringBufferBytes, wakeupBytes, pollIntervalMs, maxBatchBytes); did you mean "capture.bytes"?` },
  { file: 'bad_unknown_top_key.yaml', key: 'exporter', message: (f) => `${f}: unknown key "exporter" (allowed: capture, filter, http, dns, tls, limits, export, receiver, sdk, k8s, health, log); did you mean "export"?` },
  { file: 'bad_capture_bytes.yaml', key: 'capture.bytes', message: (f) => `${f}: capture.bytes: 9999 is not allowed: must be an integer from 16 to 4096` },
  { file: 'bad_protocol.yaml', key: 'export.protocol', message: (f) => `${f}: export.protocol: "http" is not allowed: must be one of grpc, http/protobuf, http/json` },
  { file: 'bad_ring_not_pow2.yaml', key: 'capture.ringBufferBytes', message: (f) => `${f}: capture.ringBufferBytes: 100000 is not allowed: must be a power of two from 65536 to 1073741824 (nearest: 65536 or 131072)` },
  { file: 'bad_include_and_exclude.yaml', key: 'filter.ports', message: (f) => `${f}: filter.ports: include [80,8080] together with exclude [443] is not allowed: set filter.ports.include or filter.ports.exclude, not both` },
  { file: 'bad_port.yaml', key: 'filter.ports.include[1]', message: (f) => `${f}: filter.ports.include[1]: 70000 is not allowed: must be an integer from 1 to 65535` },
  { file: 'bad_pid_zero.yaml', key: 'filter.pids.exclude[1]', message: (f) => `${f}: filter.pids.exclude[1]: 0 is not allowed: must be an integer from 1 to 4194304` },
  { file: 'bad_cgroup_relative.yaml', key: 'filter.cgroups.include[1]', message: (f) => `${f}: filter.cgroups.include[1]: "system.slice/redis.service" is not allowed: must be an absolute cgroup v2 path like /system.slice/nginx.service (no empty, "." or ".." parts) or a positive integer cgroup id` },
  { file: 'bad_cgroup_dotdot.yaml', key: 'filter.cgroups.exclude[0]', message: (f) => `${f}: filter.cgroups.exclude[0]: "/system.slice/../user.slice" is not allowed: must be an absolute cgroup v2 path like /system.slice/nginx.service (no empty, "." or ".." parts) or a positive integer cgroup id` },
  { file: 'bad_endpoint_scheme.yaml', key: 'export.endpoint', message: (f) => `${f}: export.endpoint: "collector.observability:4317" is not allowed: must be an http:// or https:// URL such as http://localhost:4317, or empty for no export` },
  { file: 'bad_traces_endpoint_scheme.yaml', key: 'export.tracesEndpoint', message: (f) => `${f}: export.tracesEndpoint: "ftp://collector/v1/traces" is not allowed: must be an http:// or https:// URL such as http://localhost:4317, or empty for no export` },
  { file: 'bad_yaml_syntax.yaml', key: '', message: (f) => `${f}:4:1: invalid YAML: All mapping items must start at the same column\n${f}:5:1: invalid YAML: Flow sequence in block collection must be sufficiently indented and end with a ]` },
  { file: 'bad_duplicate_key.yaml', key: '', message: (f) => `${f}:4:3: invalid YAML: Map keys must be unique` },
  { file: 'bad_wakeup_gt_ring.yaml', key: 'capture.wakeupBytes', message: (f) => `${f}: capture.wakeupBytes: 65536 is not allowed: must be an integer from 4096 to capture.ringBufferBytes/2 = 32768` },
  { file: 'bad_wakeup_default_gt_small_ring.yaml', key: 'capture.wakeupBytes', message: (f) => `${f}: capture.wakeupBytes: 262144 (default) is not allowed: must be an integer from 4096 to capture.ringBufferBytes/2 = 131072` },
  { file: 'bad_batch_max_gt_queue.yaml', key: 'export.batch.maxSpans', message: (f) => `${f}: export.batch.maxSpans: 1024 is not allowed: must be an integer from 1 to export.batch.queueSpans = 512` },
  { file: 'bad_receiver_addr.yaml', key: 'receiver.httpAddress', message: (f) => `${f}: receiver.httpAddress: "4318" is not allowed: must be host:port or [ipv6]:port with a port from 0 to 65535, e.g. 127.0.0.1:13133, 0.0.0.0:13133 or [::1]:13133, or empty for no server` },
  { file: 'bad_receiver_tls_half.yaml', key: 'receiver.tls.certFile', message: (f) => `${f}: receiver.tls.certFile: "/etc/sidelight/tls.crt" is not allowed: needs receiver.tls.keyFile as well (both or neither)` },
  { file: 'bad_health_addr.yaml', key: 'health.address', message: (f) => `${f}: health.address: "localhost:99999" is not allowed: must be host:port or [ipv6]:port with a port from 0 to 65535, e.g. 127.0.0.1:13133, 0.0.0.0:13133 or [::1]:13133` },
  { file: 'bad_health_addr_v6_unbracketed.yaml', key: 'health.address', message: (f) => `${f}: health.address: "::1:13133" is not allowed: must be host:port or [ipv6]:port with a port from 0 to 65535, e.g. 127.0.0.1:13133, 0.0.0.0:13133 or [::1]:13133` },
  { file: 'bad_type_string_for_int.yaml', key: 'limits.connections', message: (f) => `${f}: limits.connections: "65536" is not allowed: must be an integer from 16 to 4194304` },
  { file: 'bad_type_float_for_int.yaml', key: 'export.timeoutMs', message: (f) => `${f}: export.timeoutMs: 2.5 is not allowed: must be an integer from 1 to 600000` },
  { file: 'bad_route_template.yaml', key: 'http.routes.templates[1]', message: (f) => `${f}: http.routes.templates[1]: "/static/*/css" is not allowed: must be a route template like /users/{id} or /static/* ("*" is allowed only as the last segment)` },
  { file: 'bad_bool.yaml', key: 'http.captureQuery', message: (f) => `${f}: http.captureQuery: "yes" is not allowed: must be true or false` },
  { file: 'bad_log_level.yaml', key: 'log.level', message: (f) => `${f}: log.level: "INFO" is not allowed: must be one of error, warn, info, debug` },
  { file: 'bad_console.yaml', key: 'export.console', message: (f) => `${f}: export.console: "stdout" is not allowed: must be one of auto, always, never` },
  { file: 'bad_compression.yaml', key: 'export.compression', message: (f) => `${f}: export.compression: "zstd" is not allowed: must be one of gzip, none` },
  { file: 'bad_section_not_mapping.yaml', key: 'capture', message: (f) => `${f}: capture: 512 is not allowed: must be a mapping with keys bytes, ringBufferBytes, wakeupBytes, pollIntervalMs, maxBatchBytes` },
  { file: 'bad_top_level_list.yaml', key: '', message: (f) => `${f}: top level: ["capture","filter"] is not allowed: must be a mapping with keys capture, filter, http, dns, tls, limits, export, receiver, sdk, k8s, health, log` },
  { file: 'bad_header_name.yaml', key: 'export.headers["x api key"]', message: (f) => `${f}: export.headers["x api key"]: header name "x api key" is not allowed: must be an HTTP header name (letters, digits and !#$%&'*+-.^_\`|~)` },
  { file: 'bad_header_value_type.yaml', key: 'export.headers.authorization', message: (f) => `${f}: export.headers.authorization: number value (not shown: headers may carry credentials) is not allowed: must be a string` },
  { file: 'bad_resource_attribute_type.yaml', key: 'export.resourceAttributes["service.version"]', message: (f) => `${f}: export.resourceAttributes["service.version"]: 1.5 is not allowed: must be a string` },
];

for (const row of BAD_FILES) {
  test(`bad config ${row.file}`, (t) => {
    const f = data(row.file);
    const err = loadError(t, { file: f, env: {} });
    t.is(err.message, row.message(f));
    t.is(err.key, row.key);
    t.is(err.source, f);
    t.is(err.name, 'ConfigError');
  });
}

test('every bad_*.yaml in testdata is in the table', async (t) => {
  const { readdirSync } = await import('node:fs');
  const files = readdirSync(repo('test/testdata/config')).filter((n) => n.startsWith('bad_') && n !== 'bad_many.yaml');
  t.deepEqual(files.sort(), BAD_FILES.map((r) => r.file).sort());
});

test('all problems are reported at once, one per line', (t) => {
  const f = data('bad_many.yaml');
  const err = loadError(t, { file: f, env: {} });
  t.is(
    err.message,
    [
      `${f}: capture.bytes: 8 is not allowed: must be an integer from 16 to 4096`,
      `${f}: export.protocol: "grpcc" is not allowed: must be one of grpc, http/protobuf, http/json`,
      `${f}: unknown key "log.levle" (allowed: level); did you mean "log.level"?`,
      `${f}: capture.ringBufferBytes: 100000 is not allowed: must be a power of two from 65536 to 1073741824 (nearest: 65536 or 131072)`,
      `${f}: filter.pids: include [12] together with exclude [34] is not allowed: set filter.pids.include or filter.pids.exclude, not both`,
      `${f}: export.endpoint: "localhost:4317" is not allowed: must be an http:// or https:// URL such as http://localhost:4317, or empty for no export`,
    ].join('\n'),
  );
  t.deepEqual(
    err.problems.map((p) => p.key),
    ['capture.bytes', 'export.protocol', 'log.levle', 'capture.ringBufferBytes', 'filter.pids', 'export.endpoint'],
  );
  t.is(err.key, 'capture.bytes');
});

test('file and environment problems are collected together', (t) => {
  const f = data('bad_capture_bytes.yaml');
  const err = loadError(t, { file: f, env: { OTEL_EXPORTER_OTLP_PROTOCOL: 'grpcc' } });
  t.deepEqual(
    err.problems.map((p) => [p.source, p.key]),
    [
      [f, 'capture.bytes'],
      ['OTEL_EXPORTER_OTLP_PROTOCOL', 'export.protocol'],
    ],
  );
});

test('a missing file names the file', (t) => {
  const f = data('does_not_exist.yaml');
  const err = loadError(t, { file: f, env: {} });
  t.is(err.message, `${f}: cannot read config file: no such file (ENOENT)`);
  t.is(err.source, f);
});

test('a bad file value is reported even when the environment overrides it', (t) => {
  const f = data('bad_protocol.yaml');
  const err = loadError(t, { file: f, env: { OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' } });
  t.is(err.message, `${f}: export.protocol: "http" is not allowed: must be one of grpc, http/protobuf, http/json`);
  const f2 = data('bad_endpoint_scheme.yaml');
  const err2 = loadError(t, { file: f2, env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://ok:4317' } });
  t.deepEqual(err2.problems.map((p) => [p.source, p.key]), [[f2, 'export.endpoint']]);
});

test('a bad file value and a bad env value for the same key are both reported', (t) => {
  const f = data('bad_endpoint_scheme.yaml');
  const err = loadError(t, { file: f, env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'ftp://x' } });
  t.deepEqual(
    err.problems.map((p) => [p.source, p.key]),
    [
      [f, 'export.endpoint'],
      ['OTEL_EXPORTER_OTLP_ENDPOINT', 'export.endpoint'],
    ],
  );
});

test('a cross-key problem set up by the environment names the variable', (t) => {
  const err = loadError(t, { env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'grpc://c:4317' } });
  t.is(err.message, 'OTEL_EXPORTER_OTLP_ENDPOINT (export.endpoint): "grpc://c:4317" is not allowed: must be an http:// or https:// URL such as http://localhost:4317, or empty for no export');
  t.is(err.source, 'OTEL_EXPORTER_OTLP_ENDPOINT');
  t.is(err.key, 'export.endpoint');
});

// ---------------------------------------------------------------------------
// Bad environment values

const BAD_ENV: { name: string; value: string; key: string; message: string }[] = [
  { name: 'OTEL_EXPORTER_OTLP_ENDPOINT', value: 'localhost:4317', key: 'export.endpoint', message: 'OTEL_EXPORTER_OTLP_ENDPOINT (export.endpoint): "localhost:4317" is not allowed: must be an http:// or https:// URL such as http://localhost:4317, or empty for no export' },
  { name: 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', value: 'not a url', key: 'export.tracesEndpoint', message: 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (export.tracesEndpoint): "not a url" is not allowed: must be an http:// or https:// URL such as http://localhost:4317, or empty for no export' },
  { name: 'OTEL_EXPORTER_OTLP_PROTOCOL', value: 'http', key: 'export.protocol', message: 'OTEL_EXPORTER_OTLP_PROTOCOL (export.protocol): "http" is not allowed: must be one of grpc, http/protobuf, http/json' },
  { name: 'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL', value: 'HTTP/PROTOBUF', key: 'export.traces.protocol', message: 'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL (export.traces.protocol): "HTTP/PROTOBUF" is not allowed: must be one of grpc, http/protobuf, http/json' },
  { name: 'OTEL_EXPORTER_OTLP_LOGS_PROTOCOL', value: 'http', key: 'export.logs.protocol', message: 'OTEL_EXPORTER_OTLP_LOGS_PROTOCOL (export.logs.protocol): "http" is not allowed: must be one of grpc, http/protobuf, http/json' },
  { name: 'OTEL_EXPORTER_OTLP_TIMEOUT', value: '10s', key: 'export.timeoutMs', message: 'OTEL_EXPORTER_OTLP_TIMEOUT (export.timeoutMs): "10s" is not allowed: must be an integer from 1 to 600000' },
  { name: 'OTEL_EXPORTER_OTLP_TRACES_TIMEOUT', value: '600001', key: 'export.traces.timeoutMs', message: 'OTEL_EXPORTER_OTLP_TRACES_TIMEOUT (export.traces.timeoutMs): "600001" is not allowed: must be an integer from 1 to 600000' },
  { name: 'OTEL_EXPORTER_OTLP_METRICS_TIMEOUT', value: '5s', key: 'export.metrics.timeoutMs', message: 'OTEL_EXPORTER_OTLP_METRICS_TIMEOUT (export.metrics.timeoutMs): "5s" is not allowed: must be an integer from 1 to 600000' },
  { name: 'OTEL_EXPORTER_OTLP_TIMEOUT', value: '0', key: 'export.timeoutMs', message: 'OTEL_EXPORTER_OTLP_TIMEOUT (export.timeoutMs): "0" is not allowed: must be an integer from 1 to 600000' },
  { name: 'OTEL_EXPORTER_OTLP_COMPRESSION', value: 'zstd', key: 'export.compression', message: 'OTEL_EXPORTER_OTLP_COMPRESSION (export.compression): "zstd" is not allowed: must be one of gzip, none' },
  { name: 'OTEL_EXPORTER_OTLP_TRACES_COMPRESSION', value: 'deflate', key: 'export.traces.compression', message: 'OTEL_EXPORTER_OTLP_TRACES_COMPRESSION (export.traces.compression): "deflate" is not allowed: must be one of gzip, none' },
  { name: 'OTEL_EXPORTER_OTLP_LOGS_COMPRESSION', value: 'zstd', key: 'export.logs.compression', message: 'OTEL_EXPORTER_OTLP_LOGS_COMPRESSION (export.logs.compression): "zstd" is not allowed: must be one of gzip, none' },
  { name: 'OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE', value: '/c.pem', key: 'export.clientCertificate', message: 'OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE (export.clientCertificate): "/c.pem" is not allowed: needs export.clientKey as well (both or neither)' },
  { name: 'OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY', value: '/k.pem', key: 'export.traces.clientKey', message: 'OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY (export.traces.clientKey): "/k.pem" is not allowed: needs OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE or OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE as well (both or neither)' },
  { name: 'OTEL_EXPORTER_OTLP_INSECURE', value: 'yes', key: 'export.insecure', message: 'OTEL_EXPORTER_OTLP_INSECURE (export.insecure): "yes" is not allowed: must be true or false' },
  { name: 'OTEL_EXPORTER_OTLP_TRACES_INSECURE', value: '1', key: 'export.traces.insecure', message: 'OTEL_EXPORTER_OTLP_TRACES_INSECURE (export.traces.insecure): "1" is not allowed: must be true or false' },
  { name: 'OTEL_EXPORTER_OTLP_METRICS_INSECURE', value: 'yes', key: 'export.metrics.insecure', message: 'OTEL_EXPORTER_OTLP_METRICS_INSECURE (export.metrics.insecure): "yes" is not allowed: must be true or false' },
  { name: 'OTEL_EXPORTER_OTLP_HEADERS', value: 'Bearer abc123', key: 'export.headers', message: 'OTEL_EXPORTER_OTLP_HEADERS (export.headers): entry 1 (not shown: headers may carry credentials) is not allowed: must be comma-separated key=value pairs with percent-encoded values, e.g. k1=v1,k2=v%20two' },
  { name: 'OTEL_EXPORTER_OTLP_TRACES_HEADERS', value: 'a=b,authorization=%E0%A4%A', key: 'export.traces.headers', message: 'OTEL_EXPORTER_OTLP_TRACES_HEADERS (export.traces.headers): value of "authorization" (not shown: headers may carry credentials) is not allowed: must be comma-separated key=value pairs with percent-encoded values, e.g. k1=v1,k2=v%20two' },
  { name: 'OTEL_EXPORTER_OTLP_HEADERS', value: 'bad name=x', key: 'export.headers["bad name"]', message: 'OTEL_EXPORTER_OTLP_HEADERS (export.headers["bad name"]): header name "bad name" is not allowed: must be an HTTP header name (letters, digits and !#$%&\'*+-.^_`|~)' },
  { name: 'OTEL_EXPORTER_OTLP_METRICS_HEADERS', value: 'x-ok=1,bad name=x', key: 'export.metrics.headers["bad name"]', message: 'OTEL_EXPORTER_OTLP_METRICS_HEADERS (export.metrics.headers["bad name"]): header name "bad name" is not allowed: must be an HTTP header name (letters, digits and !#$%&\'*+-.^_`|~)' },
  { name: 'OTEL_EXPORTER_OTLP_LOGS_HEADERS', value: 'authorization=s3cret%0D%0Ax-evil:1', key: 'export.logs.headers.authorization', message: 'OTEL_EXPORTER_OTLP_LOGS_HEADERS (export.logs.headers.authorization): value (not shown: headers may carry credentials) is not allowed: must not contain CR, LF or NUL' },
  { name: 'OTEL_EXPORTER_OTLP_LOGS_HEADERS', value: 'Bearer abc123', key: 'export.logs.headers', message: 'OTEL_EXPORTER_OTLP_LOGS_HEADERS (export.logs.headers): entry 1 (not shown: headers may carry credentials) is not allowed: must be comma-separated key=value pairs with percent-encoded values, e.g. k1=v1,k2=v%20two' },
  { name: 'OTEL_RESOURCE_ATTRIBUTES', value: 'service.name=a,=b', key: 'export.resourceAttributes', message: 'OTEL_RESOURCE_ATTRIBUTES (export.resourceAttributes): entry 2 "=b" is not allowed: must be comma-separated key=value pairs with percent-encoded values, e.g. k1=v1,k2=v%20two' },
  { name: 'OTEL_RESOURCE_ATTRIBUTES', value: 'team=100%', key: 'export.resourceAttributes', message: 'OTEL_RESOURCE_ATTRIBUTES (export.resourceAttributes): entry "team=100%" is not allowed: must be comma-separated key=value pairs with percent-encoded values, e.g. k1=v1,k2=v%20two' },
  { name: 'OTEL_SDK_DISABLED', value: 'yes', key: '', message: 'OTEL_SDK_DISABLED: "yes" is not allowed: must be true or false' },
  { name: 'SIDELIGHT_RECEIVER_GRPC_ADDR', value: '4317', key: 'receiver.grpcAddress', message: 'SIDELIGHT_RECEIVER_GRPC_ADDR (receiver.grpcAddress): "4317" is not allowed: must be host:port or [ipv6]:port with a port from 0 to 65535, e.g. 127.0.0.1:13133, 0.0.0.0:13133 or [::1]:13133, or empty for no server' },
  { name: 'SIDELIGHT_HEALTH_ADDR', value: '13133', key: 'health.address', message: 'SIDELIGHT_HEALTH_ADDR (health.address): "13133" is not allowed: must be host:port or [ipv6]:port with a port from 0 to 65535, e.g. 127.0.0.1:13133, 0.0.0.0:13133 or [::1]:13133' },
  { name: 'SIDELIGHT_LOG_LEVEL', value: 'trace', key: 'log.level', message: 'SIDELIGHT_LOG_LEVEL (log.level): "trace" is not allowed: must be one of error, warn, info, debug' },
];

for (const row of BAD_ENV) {
  test(`bad env ${row.name}=${JSON.stringify(row.value)}`, (t) => {
    const err = loadError(t, { env: { [row.name]: row.value } });
    t.is(err.message, row.message);
    t.is(err.source, row.name);
    t.is(err.key, row.key);
  });
}

test('a bad generic variable is an error even when the per-signal one overrides it', (t) => {
  const err = loadError(t, { env: { OTEL_EXPORTER_OTLP_PROTOCOL: 'bogus', OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'grpc' } });
  t.is(err.source, 'OTEL_EXPORTER_OTLP_PROTOCOL');
  t.is(err.problems.length, 1);
});

test('header values never appear in error messages', (t) => {
  const secrets = ['abc123', 'sup3r-s3cret', '424242424242'];
  const errs = [
    loadError(t, { env: { OTEL_EXPORTER_OTLP_HEADERS: 'Bearer abc123' } }),
    loadError(t, { env: { OTEL_EXPORTER_OTLP_HEADERS: 'authorization=sup3r-s3cret%ZZ' } }),
    loadError(t, { file: data('bad_header_value_type.yaml'), env: {} }),
  ];
  for (const err of errs) for (const s of secrets) t.false(err.message.includes(s), `${s} leaked: ${err.message}`);
});

// ---------------------------------------------------------------------------
// describeConfig

test('describeConfig of the defaults: one line per setting plus export.traces, no sources', (t) => {
  const text = describeConfig(defaultConfig());
  const lines = text.split('\n');
  // one line per leaf of the schema, plus the computed export.traces and export.metrics
  const leaves = (n: { type?: unknown; properties?: Record<string, unknown> }): number =>
    n.type === 'object' && n.properties ? Object.values(n.properties).reduce<number>((a, v) => a + leaves(v as never), 0) : 1;
  const schema = JSON.parse(readFileSync(repo('config/schema.json'), 'utf8')) as { properties: Record<string, unknown> };
  t.true(leaves(schema) >= 50);
  t.is(lines.length, leaves(schema) + 3);
  t.is(lines[0], 'capture.bytes = 512');
  t.true(lines.includes('filter.cgroups.include = []'));
  t.true(lines.includes('export.headers = (none)'));
  t.true(lines.includes('health.address = "127.0.0.1:13133"'));
  t.is(lines.at(-3), 'export.traces = off (no endpoint)');
  t.is(lines.at(-2), 'export.metrics = off (no endpoint)');
  t.is(lines.at(-1), 'export.logs = off (no endpoint)');
  t.false(text.includes('(from '));
});

test('describeConfig never prints header values, only names; masks URL credentials', (t) => {
  const f = data('good_override.yaml');
  const c = loadConfig({
    file: f,
    env: {
      OTEL_EXPORTER_OTLP_TRACES_HEADERS: 'x-api-key=sup3r-s3cret',
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://user:hunter2@otlp.example.com/v1/traces?token=t0ken',
    },
  });
  const text = describeConfig(c);
  for (const secret of ['Bearer', 'file-token', 'team-a', 'sup3r-s3cret', 'hunter2', 't0ken']) t.false(text.includes(secret), `${secret} leaked:\n${text}`);
  const lines = text.split('\n');
  t.true(lines.includes(`export.headers = Authorization (from ${f}), x-tenant (from ${f}) (values hidden)`), 'traces headers must not change export.headers');
  t.true(lines.includes('export.tracesEndpoint = "https://***:***@otlp.example.com/v1/traces?token=***"  (from OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)'));
  t.true(lines.includes(`capture.bytes = 1024  (from ${f})`));
  t.true(lines.includes(`export.resourceAttributes = deployment.environment.name="staging" (from ${f}), k8s.cluster.name="blue" (from ${f})`));
  t.is(lines.at(-3), 'export.traces = http/protobuf https://***:***@otlp.example.com/v1/traces?token=*** (timeout 5000 ms, compression none, insecure true, CA /etc/sidelight/ca.pem, client cert /etc/sidelight/client.pem, 3 header(s))  (from OTEL_EXPORTER_OTLP_TRACES_HEADERS)');
  t.is(lines.at(-2), 'export.metrics = http/protobuf https://metrics.example.com/custom (timeout 5000 ms, compression none, insecure true, CA /etc/sidelight/ca.pem, client cert /etc/sidelight/client.pem, 2 header(s))');
});

test('describeConfig says why export is off when OTEL_SDK_DISABLED=true', (t) => {
  const c = loadConfig({ env: { OTEL_SDK_DISABLED: 'true', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4317' } });
  t.deepEqual(describeConfig(c).split('\n').slice(-3), ['export.traces = off (OTEL_SDK_DISABLED=true)', 'export.metrics = off (OTEL_SDK_DISABLED=true)', 'export.logs = off (OTEL_SDK_DISABLED=true)']);
});

// ---------------------------------------------------------------------------
// Schema and docs stay in step with the code

interface Node {
  type?: string | string[];
  properties?: Record<string, Node>;
  additionalProperties?: boolean | Node;
  description?: string;
}

test('schema.json: fixed mappings forbid extra keys and every key has a description', (t) => {
  const root = JSON.parse(readFileSync(repo('config/schema.json'), 'utf8')) as Node & { $schema: string };
  t.is(root.$schema, 'https://json-schema.org/draft/2020-12/schema');
  const walk = (node: Node, path: string): void => {
    if (node.properties) {
      t.is(node.additionalProperties, false, `${path || 'top level'} must have additionalProperties: false`);
      for (const [k, sub] of Object.entries(node.properties)) {
        const p = path ? `${path}.${k}` : k;
        t.truthy(sub.description, `${p} has no description`);
        walk(sub, p);
      }
    }
  };
  walk(root, '');
});

test('every environment variable is documented in config/default.yaml and docs/config.md', (t) => {
  const yamlText = readFileSync(repo('config/default.yaml'), 'utf8');
  const docs = readFileSync(repo('docs/config.md'), 'utf8');
  for (const name of CONFIG_ENV_VARS) {
    t.true(yamlText.includes(name), `${name} missing from config/default.yaml`);
    t.true(docs.includes(name), `${name} missing from docs/config.md`);
  }
});

test('k8s.enabled accepts YAML booleans as well as auto/true/false', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sl-k8s-'));
  for (const [yaml, want] of [['false', 'false'], ['true', 'true'], ['"false"', 'false'], ['auto', 'auto']] as const) {
    writeFileSync(join(dir, 'c.yaml'), `k8s:\n  enabled: ${yaml}\n`);
    t.is(loadConfig({ file: join(dir, 'c.yaml'), env: {} }).k8s.enabled, want);
  }
  writeFileSync(join(dir, 'c.yaml'), 'k8s:\n  enabled: maybe\n');
  t.throws(() => loadConfig({ file: join(dir, 'c.yaml'), env: {} }), { message: /k8s\.enabled/ });
});
