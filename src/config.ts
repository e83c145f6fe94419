// Configuration of the Sidelight agent: loading, validation and the resolved Config type.
//
// Owns the precedence rules (defaults < YAML file < environment), the OTel
// environment variables (OTEL_EXPORTER_OTLP_*, OTEL_RESOURCE_ATTRIBUTES,
// OTEL_SDK_DISABLED) plus SIDELIGHT_HEALTH_ADDR / SIDELIGHT_LOG_LEVEL, the computed
// per-signal exporters (export.traces / metrics / logs: URL rules, and the
// OTEL_EXPORTER_OTLP_<SIGNAL>_* variables, which apply to their signal only), and
// every validation message. Structure, types, ranges and
// defaults come from config/schema.json (read once, next to this module's
// parent directory, for both src/ and dist/); checks spanning several keys live
// here. config/default.yaml is the commented user reference; a test keeps it
// equal to defaultConfig().
//
// Lifetime: loadConfig() runs once at startup and returns a fresh plain object;
// nothing here holds state besides the compiled schema.

import { readFileSync } from 'node:fs';
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import { LineCounter, parseDocument } from 'yaml';
import { HOST_PORT_ALLOWED, parseHostPort } from './health.js';
import { parseRouteTemplate } from './receiver/routes.js';

// ---------------------------------------------------------------------------
// Types

/** OTLP transport. */
export type ExportProtocol = 'grpc' | 'http/protobuf' | 'http/json';
/** OTLP request body compression. */
export type ExportCompression = 'gzip' | 'none';
/** When spans are printed to stdout. */
export type ConsoleMode = 'auto' | 'always' | 'never';
/** Agent log level, most to least severe. */
export type LogLevel = 'error' | 'warn' | 'info' | 'debug';

/** What the kernel copies per syscall and how it reaches the agent. */
export interface CaptureOptions {
  /** Payload bytes captured per read/write syscall; integer 16..4096. */
  bytes: number;
  /** Kernel-to-agent ring buffer size; power of two, 65536..1073741824. */
  ringBufferBytes: number;
  /** Wake the agent when this many bytes are pending; 4096..ringBufferBytes/2. */
  wakeupBytes: number;
  /** Longest wait before the agent drains the ring buffer, ms; 1..5000. */
  pollIntervalMs: number;
  /** Largest batch of events handed to JavaScript at once; 65536..67108864. */
  maxBatchBytes: number;
}

/** An allow list or a deny list; at most one of the two is non-empty. */
export interface IncludeExclude<T> {
  /** Only these are traced. Empty: no restriction. */
  include: T[];
  /** These are never traced. Empty: nothing excluded. */
  exclude: T[];
}

/** In-kernel traffic filter, applied before anything is copied. */
export interface FilterOptions {
  /** Process ids, 1..4194304. */
  pids: IncludeExclude<number>;
  /** cgroup v2 paths (absolute, e.g. /system.slice/nginx.service) or numeric cgroup ids. Syntax is checked here; resolution happens elsewhere. */
  cgroups: IncludeExclude<string | number>;
  /** Ports 1..65535, matched against the local or the remote port. */
  ports: IncludeExclude<number>;
}

/** HTTP span content. */
export interface HttpOptions {
  /** Export url.query. Off by default: query strings can carry secrets. */
  captureQuery: boolean;
  /** With captureQuery, the values of these query keys (case-insensitive) are exported as REDACTED. */
  redactQueryKeys: string[];
  /** A request with no response after this long ends with error.type timeout, ms; 100..3600000. */
  requestTimeoutMs: number;
  /** http.route on SERVER spans (src/receiver/routes.ts). */
  routes: RoutesOptions;
  /** traceparent injection into outgoing HTTP/1 requests (src/receiver/inject.ts). */
  inject: InjectOptions;
}

/** traceparent injection (bpf/inject.bpf.c): opt-in, it changes the bytes on the wire. */
export interface InjectOptions {
  /** Insert a traceparent header into outgoing plaintext HTTP/1 requests that carry none. */
  enabled: boolean;
  /** cgroup v2 path (under the cgroup2 mount) whose processes are injected; / is all. */
  cgroup: string;
  /** Remote ports whose connections are injected; empty: every port. */
  ports: number[];
}

/** http.route: configured templates first, then the path heuristic. */
export interface RoutesOptions {
  /** Collapse id-like path segments ({id}, {uuid}, {hash}, {token}) when no template matches. */
  heuristic: boolean;
  /** Route templates like /users/{id} or /static/*, first match wins; at most 1000. */
  templates: string[];
}

/** The service graph (edges between services, exported as traces_service_graph_*). */
export interface ServiceGraphConfig {
  /** How long a CLIENT or SERVER span waits for its other end, ms; 100..600000. */
  waitMs: number;
  /** Spans waiting for their other end; 16..1048576. Past it the oldest is dropped (counted). */
  maxPending: number;
}

/** DNS lookups. */
export interface DnsOptions {
  /** Resolver ports; UDP to them (and TCP connections to them) is parsed as DNS. Empty: DNS is not traced. */
  ports: number[];
  /** A query unanswered after this long ends with error.type timeout, ms; 100..600000. */
  timeoutMs: number;
  /** Queries waiting for an answer, node-wide; 16..1048576. */
  maxPending: number;
  /** Distinct dns.question.name values per workload in dns.lookup.duration; more are recorded as _OTHER. */
  maxNamesPerWorkload: number;
}

/** TLS plaintext capture (src/receiver/tls.ts). */
export interface TlsOptions {
  /** Attach the SSL_* uprobes. */
  enabled: boolean;
  /** Look for new OpenSSL users among new processes this often, ms; 0..3600000 (0: only on first connect/accept). */
  rescanMs: number;
  /** Files probed at most; 1..4096. */
  maxBinaries: number;
  /** Extra OpenSSL libraries or executables to probe (absolute paths). */
  paths: string[];
}

/** Memory bounds of the agent tables. */
export interface LimitsOptions {
  /** Connection table bound; 16..4194304. */
  connections: number;
  /** Process metadata cache bound; 16..1048576. */
  processes: number;
  /** In-flight requests tracked per connection; 1..4096. */
  pendingPerConnection: number;
}

/** Batch span processor settings. */
export interface BatchOptions {
  /** Spans per export request; 1..65536 and at most queueSpans. */
  maxSpans: number;
  /** Bytes of encoded spans per export request (at least one span); 1024..67108864. */
  maxBytes: number;
  /** Longest wait before a partial batch is exported, ms; 1..60000. */
  delayMs: number;
  /** Export requests sent at once; 1..64. */
  maxInFlight: number;
  /** Spans buffered before new spans are dropped; 16..1048576. */
  queueSpans: number;
  /** Estimated bytes of spans buffered before new spans are dropped; 65536..4294967296. */
  queueBytes: number;
}

/** Retries of failed span exports (OTLP retryable outcomes only). */
export interface RetryOptions {
  /** First backoff delay, ms; 1..60000. */
  initialMs: number;
  /** Longest delay between attempts (also caps RetryInfo / Retry-After), ms; 1..600000. */
  maxMs: number;
  /** Give a batch up after retrying this long, ms; 0..3600000. */
  maxElapsedMs: number;
}

/** The resolved OTLP traces exporter settings (computed, not a YAML key). */
export interface TracesExport {
  /** Full traces URL: tracesEndpoint as-is, or endpoint (+ /v1/traces for http/*). */
  url: string;
  /** OTLP transport. */
  protocol: ExportProtocol;
  /** Request headers (export.headers with OTEL_EXPORTER_OTLP_<SIGNAL>_HEADERS merged over them). Never log the values. */
  headers: Record<string, string>;
  /** Per-export request timeout, ms. */
  timeoutMs: number;
  /** Request body compression. */
  compression: ExportCompression;
  /** OTEL_EXPORTER_OTLP_INSECURE semantics, passed through. */
  insecure: boolean;
  /** PEM CA bundle path; absent means system CAs. */
  certificate?: string;
  /** PEM client certificate path for mutual TLS (always with clientKey); absent means none. */
  clientCertificate?: string;
  /** PEM private key path of clientCertificate; absent means none. */
  clientKey?: string;
}

/** OTLP export settings as configured, plus the computed `traces`. */
export interface ExportOptions {
  /** OTLP base endpoint URL (http:// or https://); empty means no export. */
  endpoint: string;
  /** OTLP traces endpoint URL, used as-is; wins over endpoint. */
  tracesEndpoint: string;
  /** OTLP metrics endpoint URL, used as-is; wins over endpoint. */
  metricsEndpoint: string;
  /** OTLP logs endpoint URL, used as-is; wins over endpoint (logs come only from the OTLP receiver). */
  logsEndpoint: string;
  /** OTLP transport. */
  protocol: ExportProtocol;
  /** Extra request headers, name to value. Values are credentials: never log them. */
  headers: Record<string, string>;
  /** Per-export request timeout, ms; 1..600000. */
  timeoutMs: number;
  /** Request body compression. */
  compression: ExportCompression;
  /** OTEL_EXPORTER_OTLP_INSECURE semantics, passed through to the exporter. */
  insecure: boolean;
  /** PEM CA bundle used to verify the collector; empty means system CAs. */
  certificate: string;
  /** PEM client certificate for mutual TLS (needs clientKey); empty: none. */
  clientCertificate: string;
  /** PEM private key of clientCertificate; empty: none. */
  clientKey: string;
  /** Print spans to stdout: auto (only when `traces` is null), always, never. */
  console: ConsoleMode;
  /** Batch span processor. */
  batch: BatchOptions;
  /** Retries of failed span exports. */
  retry: RetryOptions;
  /** Also write spans to this file as OTLP JSON lines; empty: off. */
  file: string;
  /** Metric export interval, ms; 100..3600000. */
  metricsIntervalMs: number;
  /** A workload's metric series with no new measurement for this long (an exited process) are exported once more, then dropped, ms; at least two intervals are used. */
  metricsIdleMs: number;
  /** Attribute sets kept per metric and workload; past it: one overflow series. */
  maxSeries: number;
  /** Service graph pairing (edges are capped by maxSeries). */
  serviceGraph: ServiceGraphConfig;
  /** Extra resource attributes on every span (OTEL_RESOURCE_ATTRIBUTES merged over them). */
  resourceAttributes: Record<string, string>;
  /** Computed: where and how traces are exported; null when there is no endpoint or OTEL_SDK_DISABLED=true. */
  traces: TracesExport | null;
  /** Computed: where and how metrics are exported (same transport settings); null like traces. */
  metrics: TracesExport | null;
  /** Computed: where received logs are forwarded (same transport settings); null like traces. */
  logs: TracesExport | null;
}

/** The OTLP receiver (src/ingest/): apps send their SDK telemetry to Sidelight. */
export interface ReceiverOptions {
  /** Run the OTLP gRPC and HTTP servers. */
  enabled: boolean;
  /** OTLP/gRPC listen address, host:port or [ipv6]:port; empty: no gRPC server. */
  grpcAddress: string;
  /** OTLP/HTTP listen address, host:port or [ipv6]:port; empty: no HTTP server. */
  httpAddress: string;
  /** Largest request body (after gzip decompression), bytes; 1024..268435456. */
  maxRequestBytes: number;
  /** Bytes of received requests waiting to be forwarded; past it senders get Unavailable/503; 65536..4294967296. */
  queueBytes: number;
  /** Per-sender (process or peer address) request bytes per second; 0: unlimited. */
  senderBytesPerSecond: number;
  /** All senders together, request bytes per second; 0: unlimited. */
  totalBytesPerSecond: number;
  /** Senders tracked for rate limits and de-duplication; 16..1048576. */
  maxSenders: number;
  /** Server TLS: PEM certificate chain and key files; both empty: plaintext. */
  tls: { certFile: string; keyFile: string };
  /** Drop Sidelight's own SERVER/CLIENT spans of processes that send SDK hop spans. */
  dedup: boolean;
}

/** SDK-instrumented processes (src/receiver/sdkdetect.ts). */
export interface SdkOptions {
  /** Drop Sidelight's SERVER/CLIENT spans (not DNS) of processes seen exporting OTLP traces themselves. */
  dedup: boolean;
  /** A process is forgotten this long after its last export was seen, ms; 1000..86400000. */
  ttlMs: number;
  /** Processes remembered at once; 16..1048576. */
  maxProcesses: number;
}

/** Kubernetes metadata (src/enrich/k8s.ts). */
export interface K8sOptions {
  /** auto: on in a cluster with a node name; true: required; false: off. */
  enabled: 'auto' | 'true' | 'false';
  /** This node's name; empty: K8S_NODE_NAME, else NODE_NAME. */
  nodeName: string;
  /** k8s.cluster.name; empty: from OTEL_RESOURCE_ATTRIBUTES, else absent. */
  clusterName: string;
  /** kubeconfig file; empty: in-cluster service account. */
  kubeconfig: string;
  /** Cluster DNS domain for ClusterIP peers' server.address. */
  clusterDomain: string;
  /** Watch Services/EndpointSlices to name CLIENT span peers. */
  peers: boolean;
  /** Cache bounds. */
  maxPods: number;
  maxServices: number;
  maxEndpointSlices: number;
  maxEndpoints: number;
  /** Owner (ReplicaSet/Job) lookup reuse, ms. */
  ownerCacheTtlMs: number;
  /** Deleted pods still answered for this long, ms. */
  deletedPodRetentionMs: number;
  /** Wait for the first sync at most this long, ms. */
  syncTimeoutMs: number;
}

/** Health check server. */
export interface HealthOptions {
  /** host:port or [ipv6]:port for /healthz and /readyz; port 0..65535. */
  address: string;
}

/** Agent logging. */
export interface LogOptions {
  /** Least severe level that is logged. */
  level: LogLevel;
}

/** The fully resolved agent configuration; every field is filled. */
export interface Config {
  /** Kernel capture sizing. */
  capture: CaptureOptions;
  /** In-kernel traffic filter. */
  filter: FilterOptions;
  /** HTTP span content. */
  http: HttpOptions;
  /** DNS lookups. */
  dns: DnsOptions;
  /** TLS plaintext capture. */
  tls: TlsOptions;
  /** Table bounds. */
  limits: LimitsOptions;
  /** OTLP export. */
  export: ExportOptions;
  /** OTLP receiver. */
  receiver: ReceiverOptions;
  /** SDK-instrumented processes: de-duplication of their hops. */
  sdk: SdkOptions;
  /** Kubernetes metadata. */
  k8s: K8sOptions;
  /** Health check server. */
  health: HealthOptions;
  /** Logging. */
  log: LogOptions;
}

/** One validation problem. `key` is the dotted config key ('' for whole-file problems). */
export interface ConfigProblem {
  /** Dotted config key, e.g. capture.bytes or filter.ports.include[2]. */
  key: string;
  /** Config file path as given, environment variable name, or 'defaults'. */
  source: string;
  /** One line, naming the key, the bad value and what is allowed. */
  message: string;
}

/** Thrown by loadConfig. With several problems the message has one per line; key/source are the first one's. */
export class ConfigError extends Error {
  /** Dotted key of the first problem. */
  readonly key: string;
  /** Source (file path, env var name or 'defaults') of the first problem. */
  readonly source: string;
  /** Every problem found, in discovery order. */
  readonly problems: readonly ConfigProblem[];

  constructor(problems: readonly ConfigProblem[]) {
    const first = problems[0] ?? { key: '', source: 'defaults', message: 'invalid configuration' };
    super(problems.length > 0 ? problems.map((p) => p.message).join('\n') : first.message);
    this.name = 'ConfigError';
    this.key = first.key;
    this.source = first.source;
    this.problems = problems.length > 0 ? problems : [first];
  }
}

// ---------------------------------------------------------------------------
// Schema

interface SchemaNode {
  type?: string | string[];
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  properties?: Record<string, SchemaNode>;
  additionalProperties?: boolean | SchemaNode;
  items?: SchemaNode;
  default?: unknown;
  description?: string;
}

const SCHEMA_URL = new URL('../config/schema.json', import.meta.url);
let compiled: { root: SchemaNode; validate: ValidateFunction } | undefined;

function schema(): { root: SchemaNode; validate: ValidateFunction } {
  if (!compiled) {
    const root = JSON.parse(readFileSync(SCHEMA_URL, 'utf8')) as SchemaNode;
    const ajv = new Ajv2020({ allErrors: true, useDefaults: true, verbose: true, allowUnionTypes: true });
    compiled = { root, validate: ajv.compile(root) };
  }
  return compiled;
}

function nodeAt(segs: readonly Seg[]): SchemaNode | undefined {
  let node: SchemaNode | undefined = schema().root;
  for (const s of segs) {
    if (!node) return undefined;
    if (typeof s === 'number') node = node.items;
    else node = node.properties?.[s] ?? (typeof node.additionalProperties === 'object' ? node.additionalProperties : undefined);
  }
  return node;
}

function article(word: string): string {
  return /^[aeiou]/.test(word) ? `an ${word}` : `a ${word}`;
}

/** "must be ..." text derived from a schema node, e.g. "must be an integer from 16 to 4096". */
function allowedBy(node: SchemaNode): string {
  if (node.enum) return `must be one of ${node.enum.map(String).join(', ')}`;
  const types = node.type === undefined ? [] : Array.isArray(node.type) ? node.type : [node.type];
  const parts = types.map((t) => {
    if (t === 'integer' || t === 'number') {
      const what = t === 'integer' ? 'an integer' : 'a number';
      if (node.minimum !== undefined && node.maximum !== undefined) return `${what} from ${node.minimum} to ${node.maximum}`;
      if (node.minimum !== undefined) return `${what} >= ${node.minimum}`;
      return what;
    }
    if (t === 'boolean') return 'true or false';
    if (t === 'array') return node.items ? `a list (each item ${allowedBy(node.items).replace(/^must be /, '')})` : 'a list';
    if (t === 'object') {
      if (node.properties) return `a mapping with keys ${Object.keys(node.properties).join(', ')}`;
      const v = typeof node.additionalProperties === 'object' ? allowedBy(node.additionalProperties).replace(/^must be /, '') : 'anything';
      return `a mapping of names to values (each value ${v})`;
    }
    return article(t);
  });
  return `must be ${parts.join(' or ') || 'valid'}`;
}

// ---------------------------------------------------------------------------
// Keys and values

type Seg = string | number;
type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** capture.bytes, filter.ports.include[2], export.resourceAttributes["service.name"] */
function keyOf(segs: readonly Seg[]): string {
  let out = '';
  for (const s of segs) {
    if (typeof s === 'number') out += `[${s}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_-]*$/.test(s)) out += out ? `.${s}` : s;
    else out += `[${JSON.stringify(s)}]`;
  }
  return out;
}

function getIn(root: unknown, segs: readonly Seg[]): unknown {
  let cur = root;
  for (const s of segs) {
    if (typeof s === 'number') cur = Array.isArray(cur) ? cur[s] : undefined;
    else cur = isObj(cur) && Object.hasOwn(cur, s) ? cur[s] : undefined;
    if (cur === undefined) return undefined;
  }
  return cur;
}

/** Sets root[segs] = value, creating missing mappings; returns false when a parent exists but is not a mapping. */
function setIn(root: Obj, segs: readonly string[], value: unknown): boolean {
  let cur = root;
  for (const s of segs.slice(0, -1)) {
    if (!Object.hasOwn(cur, s)) cur[s] = {};
    const next = cur[s];
    if (!isObj(next)) return false;
    cur = next;
  }
  cur[segs[segs.length - 1]!] = value;
  return true;
}

function show(v: unknown): string {
  const text = typeof v === 'string' || isObj(v) || Array.isArray(v) ? JSON.stringify(v) : v === undefined ? 'nothing' : String(v);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

function pointerToSegs(pointer: string): Seg[] {
  if (pointer === '') return [];
  return pointer
    .slice(1)
    .split('/')
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((p) => (/^(0|[1-9][0-9]*)$/.test(p) ? Number(p) : p));
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1]!.toLowerCase() === b[j - 1]!.toLowerCase() ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length]!;
}

// ---------------------------------------------------------------------------
// Environment

/** Scalar environment variables setting one config key each, in application order (per-signal transport settings: SIGNAL_SCALARS). */
const ENV_SCALARS: readonly { name: string; key: readonly string[] }[] = [
  { name: 'OTEL_EXPORTER_OTLP_ENDPOINT', key: ['export', 'endpoint'] },
  { name: 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', key: ['export', 'tracesEndpoint'] },
  { name: 'OTEL_EXPORTER_OTLP_METRICS_ENDPOINT', key: ['export', 'metricsEndpoint'] },
  { name: 'OTEL_EXPORTER_OTLP_LOGS_ENDPOINT', key: ['export', 'logsEndpoint'] },
  { name: 'OTEL_METRIC_EXPORT_INTERVAL', key: ['export', 'metricsIntervalMs'] },
  { name: 'OTEL_EXPORTER_OTLP_PROTOCOL', key: ['export', 'protocol'] },
  { name: 'OTEL_EXPORTER_OTLP_TIMEOUT', key: ['export', 'timeoutMs'] },
  { name: 'OTEL_EXPORTER_OTLP_COMPRESSION', key: ['export', 'compression'] },
  { name: 'OTEL_EXPORTER_OTLP_INSECURE', key: ['export', 'insecure'] },
  { name: 'OTEL_EXPORTER_OTLP_CERTIFICATE', key: ['export', 'certificate'] },
  { name: 'OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE', key: ['export', 'clientCertificate'] },
  { name: 'OTEL_EXPORTER_OTLP_CLIENT_KEY', key: ['export', 'clientKey'] },
  { name: 'SIDELIGHT_K8S_ENABLED', key: ['k8s', 'enabled'] },
  { name: 'SIDELIGHT_K8S_CLUSTER_NAME', key: ['k8s', 'clusterName'] },
  { name: 'SIDELIGHT_HEALTH_ADDR', key: ['health', 'address'] },
  { name: 'SIDELIGHT_RECEIVER_ENABLED', key: ['receiver', 'enabled'] },
  { name: 'SIDELIGHT_RECEIVER_GRPC_ADDR', key: ['receiver', 'grpcAddress'] },
  { name: 'SIDELIGHT_RECEIVER_HTTP_ADDR', key: ['receiver', 'httpAddress'] },
  { name: 'SIDELIGHT_LOG_LEVEL', key: ['log', 'level'] },
];

/** `k=v,...` environment variables merged over a mapping key, in application order. */
const ENV_MAPS: readonly { name: string; key: readonly string[]; secret: boolean }[] = [
  { name: 'OTEL_EXPORTER_OTLP_HEADERS', key: ['export', 'headers'], secret: true },
  { name: 'OTEL_RESOURCE_ATTRIBUTES', key: ['export', 'resourceAttributes'], secret: false },
];

/** An OTLP signal with its own exporter (computed export.traces / export.metrics / export.logs). */
type Signal = 'traces' | 'metrics' | 'logs';
const SIGNALS: readonly Signal[] = ['traces', 'metrics', 'logs'];

/**
 * Per-signal transport variables, OTEL_EXPORTER_OTLP_<SIGNAL>_<suffix> (OTLP exporter spec):
 * each overrides the generic export.<field> for its own signal only, so they map to no
 * config key; values are validated against the generic key's schema.
 */
type SignalField = 'protocol' | 'timeoutMs' | 'compression' | 'insecure' | 'certificate' | 'clientCertificate' | 'clientKey';
const SIGNAL_SCALARS: readonly { suffix: string; field: SignalField }[] = [
  { suffix: 'PROTOCOL', field: 'protocol' },
  { suffix: 'TIMEOUT', field: 'timeoutMs' },
  { suffix: 'COMPRESSION', field: 'compression' },
  { suffix: 'INSECURE', field: 'insecure' },
  { suffix: 'CERTIFICATE', field: 'certificate' },
  { suffix: 'CLIENT_CERTIFICATE', field: 'clientCertificate' },
  { suffix: 'CLIENT_KEY', field: 'clientKey' },
];

function signalVar(signal: Signal, suffix: string): string {
  return `OTEL_EXPORTER_OTLP_${signal.toUpperCase()}_${suffix}`;
}

/** What the per-signal variables set for one signal. */
interface SignalEnv {
  /** Values that replace the generic export.<field> for this signal. */
  values: Partial<Pick<TracesExport, SignalField>>;
  /** OTEL_EXPORTER_OTLP_<SIGNAL>_HEADERS, merged over export.headers (case-insensitive names). */
  headers: Map<string, string>;
  /** The variables that applied, in application order (describeConfig shows them). */
  vars: string[];
}

/** Every environment variable loadConfig reads. */
export const CONFIG_ENV_VARS: readonly string[] = [
  ...ENV_SCALARS.map((e) => e.name),
  ...ENV_MAPS.map((e) => e.name),
  ...SIGNALS.flatMap((s) => [...SIGNAL_SCALARS.map((e) => signalVar(s, e.suffix)), signalVar(s, 'HEADERS')]),
  'OTEL_SDK_DISABLED',
];

const HTTP_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

// ---------------------------------------------------------------------------
// Loading

interface Loader {
  /** Config file path as given, if any. */
  file: string | undefined;
  /** Parsed file content (nulls normalized), before env and defaults: tells what the file set. */
  fileObj: Obj;
  /** Keys set by the environment: key → env var name and raw value. */
  envKeys: Map<string, { name: string; raw: string }>;
  problems: ConfigProblem[];
  /** Keys that already have a problem; checks below them are skipped. */
  badKeys: Set<string>;
  /** Per-signal variables that applied (they set no config key). */
  signals: Record<Signal, SignalEnv>;
}

/** The environment variable that set `segs` (or a parent of it), if any. */
function envOf(ld: Loader, segs: readonly Seg[]): { name: string; raw: string } | undefined {
  for (let n = segs.length; n > 0; n--) {
    const env = ld.envKeys.get(keyOf(segs.slice(0, n)));
    if (env) return env;
  }
  return undefined;
}

function sourceOf(ld: Loader, segs: readonly Seg[]): string {
  const env = envOf(ld, segs);
  if (env) return env.name;
  if (ld.file !== undefined && getIn(ld.fileObj, segs) !== undefined) return ld.file;
  return 'defaults';
}

function isBad(ld: Loader, segs: readonly Seg[]): boolean {
  for (let n = 0; n <= segs.length; n++) if (ld.badKeys.has(keyOf(segs.slice(0, n)))) return true;
  return false;
}

interface ReportOpts {
  /** Replaces the shown value (e.g. for composite or secret values). */
  valueText?: string;
  /** Attribute the problem to the source of this key instead (cross-field checks). */
  sourceFrom?: readonly Seg[];
}

/** Records "<source>: <key>: <value> is not allowed: <allowed>". */
function report(ld: Loader, segs: readonly Seg[], value: unknown, allowed: string, opts: ReportOpts = {}): void {
  const key = keyOf(segs);
  const own = sourceOf(ld, segs);
  const source = opts.sourceFrom && own === 'defaults' ? sourceOf(ld, opts.sourceFrom) : own;
  const env = envOf(ld, segs);
  let valueText = opts.valueText ?? (env ? JSON.stringify(env.raw) : show(value));
  if (own === 'defaults' && opts.valueText === undefined) valueText += ' (default)';
  const where = CONFIG_ENV_VARS.includes(source) ? `${source} (${key || 'top level'})` : `${source}: ${key || 'top level'}`;
  const message = `${where}: ${valueText} is not allowed: ${allowed}`;
  if (!ld.problems.some((p) => p.message === message)) ld.problems.push({ key, source, message }); // the second pass re-finds file problems
  ld.badKeys.add(key);
}

function readFile(ld: Loader, file: string): Obj {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'permission denied' : e.code === 'EISDIR' ? 'is a directory' : e.message;
    ld.problems.push({ key: '', source: file, message: `${file}: cannot read config file: ${why}${e.code ? ` (${e.code})` : ''}` });
    return {};
  }
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true, strict: true });
  const yamlProblems = [...doc.errors, ...doc.warnings];
  for (const e of yamlProblems) {
    const p = lines.linePos(e.pos[0]);
    const first = e.message.split('\n', 1)[0]!.replace(/ at line \d+, column \d+:?$/, '');
    ld.problems.push({ key: '', source: file, message: `${file}:${p.line}:${p.col}: invalid YAML: ${first}` });
  }
  if (yamlProblems.length > 0) return {};
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    ld.problems.push({ key: '', source: file, message: `${file}: invalid YAML: ${(err as Error).message}` });
    return {};
  }
  if (value === null || value === undefined) return {};
  if (!isObj(value)) {
    ld.problems.push({
      key: '',
      source: file,
      message: `${file}: top level: ${show(value)} is not allowed: ${allowedBy(schema().root)}`,
    });
    return {};
  }
  return value;
}

/** An empty `capture:` (null) means "all defaults" for mapping and list keys, as in the Collector. */
function dropNullSections(obj: Obj, node: SchemaNode): void {
  for (const [k, sub] of Object.entries(node.properties ?? {})) {
    if (!Object.hasOwn(obj, k)) continue;
    const v = obj[k];
    const kind = sub.type;
    if (v === null && (kind === 'object' || kind === 'array')) delete obj[k];
    else if (isObj(v) && sub.properties) dropNullSections(v, sub);
  }
}

/** Records "<VAR> (<key>): <value> is not allowed: <allowed>"; key '' for variables that map to no key. */
function envProblem(ld: Loader, name: string, key: string, shown: string, allowed: string): void {
  ld.problems.push({ key, source: name, message: `${key ? `${name} (${key})` : name}: ${shown} is not allowed: ${allowed}` });
  if (key) ld.badKeys.add(key);
}

/**
 * Parses a scalar env value against the schema node at `segs`; undefined (with a problem
 * recorded) when invalid. `key` is the key the problem names (per-signal variables: export.<signal>.<field>).
 */
function parseEnvScalar(ld: Loader, name: string, segs: readonly string[], raw: string, key = keyOf(segs)): unknown {
  const node = nodeAt(segs)!;
  let value: unknown = raw;
  if (node.type === 'integer') value = /^[0-9]{1,15}$/.test(raw) ? Number(raw) : undefined;
  else if (node.type === 'boolean') value = /^true$/i.test(raw) ? true : /^false$/i.test(raw) ? false : undefined;
  const ok =
    value !== undefined &&
    (!node.enum || node.enum.includes(value)) &&
    (node.minimum === undefined || (value as number) >= node.minimum) &&
    (node.maximum === undefined || (value as number) <= node.maximum);
  if (!ok) {
    envProblem(ld, name, key, JSON.stringify(raw), node.type === 'boolean' ? 'must be true or false' : allowedBy(node));
    return undefined;
  }
  return value;
}

/** Parses `k=v,k2=v2` (W3C baggage style: values percent-decoded); null when any entry is invalid. */
function parseEnvMap(ld: Loader, name: string, segs: readonly string[], raw: string, secret: boolean, key = keyOf(segs)): Map<string, string> | null {
  const out = new Map<string, string>();
  let ok = true;
  const format = 'must be comma-separated key=value pairs with percent-encoded values, e.g. k1=v1,k2=v%20two';
  raw.split(',').forEach((entry, i) => {
    const text = entry.trim();
    if (text === '') return;
    const eq = text.indexOf('=');
    const k = eq < 0 ? '' : text.slice(0, eq).trim();
    if (k === '') {
      // Without a '=' the entry may be a bare credential: only show it when values are not secret.
      envProblem(ld, name, key, secret ? `entry ${i + 1} (not shown: headers may carry credentials)` : `entry ${i + 1} ${JSON.stringify(text)}`, format);
      ok = false;
      return;
    }
    const v = text.slice(eq + 1).trim();
    try {
      out.set(k, decodeURIComponent(v));
    } catch {
      envProblem(ld, name, key, secret ? `value of ${JSON.stringify(k)} (not shown: headers may carry credentials)` : `entry ${JSON.stringify(text)}`, format);
      ok = false;
    }
  });
  return ok ? out : null;
}

/** Applies the environment over `raw` (the file content); returns whether OTEL_SDK_DISABLED is true. */
function applyEnv(ld: Loader, raw: Obj, env: NodeJS.ProcessEnv): boolean {
  const get = (name: string): string | undefined => {
    const v = env[name]?.trim();
    return v === undefined || v === '' ? undefined : v; // empty means unset (OTel spec)
  };
  for (const { name, key } of ENV_SCALARS) {
    const rawValue = get(name);
    if (rawValue === undefined) continue;
    const value = parseEnvScalar(ld, name, key, rawValue);
    if (value !== undefined && setIn(raw, key, value)) {
      ld.envKeys.set(keyOf(key), { name, raw: rawValue });
      ld.badKeys.delete(keyOf(key)); // a bad file value here is already reported; check the env value instead
    }
  }
  for (const { name, key, secret } of ENV_MAPS) {
    const rawValue = get(name);
    if (rawValue === undefined) continue;
    const entries = parseEnvMap(ld, name, key, rawValue, secret);
    if (!entries) continue;
    const target = getIn(raw, key) ?? {};
    if (!isObj(target) || !setIn(raw, key, target)) continue; // the file has a type error here; schema reports it
    for (const [k, v] of entries) {
      if (secret) for (const existing of Object.keys(target)) if (existing.toLowerCase() === k.toLowerCase()) delete target[existing];
      target[k] = v;
      ld.envKeys.set(keyOf([...key, k]), { name, raw: secret ? '' : v });
      ld.badKeys.delete(keyOf([...key, k]));
    }
  }
  for (const signal of SIGNALS) applySignalEnv(ld, signal, get);
  const disabled = get('OTEL_SDK_DISABLED');
  if (disabled === undefined) return false;
  if (/^true$/i.test(disabled)) return true;
  if (!/^false$/i.test(disabled)) envProblem(ld, 'OTEL_SDK_DISABLED', '', JSON.stringify(disabled), 'must be true or false');
  return false;
}

/** Reads OTEL_EXPORTER_OTLP_<SIGNAL>_* into ld.signals[signal], validated like the generic variables. */
function applySignalEnv(ld: Loader, signal: Signal, get: (name: string) => string | undefined): void {
  const own = ld.signals[signal];
  for (const { suffix, field } of SIGNAL_SCALARS) {
    const name = signalVar(signal, suffix);
    const rawValue = get(name);
    if (rawValue === undefined) continue;
    const value = parseEnvScalar(ld, name, ['export', field], rawValue, `export.${signal}.${field}`);
    if (value === undefined) continue;
    (own.values as Obj)[field] = value;
    own.vars.push(name);
  }
  const name = signalVar(signal, 'HEADERS');
  const rawValue = get(name);
  if (rawValue === undefined) return;
  const key = `export.${signal}.headers`;
  const entries = parseEnvMap(ld, name, ['export', 'headers'], rawValue, true, key);
  if (!entries) return;
  let ok = true;
  for (const [k, v] of entries) {
    // the checks checkSemantics makes on export.headers, which these never reach
    const entryKey = keyOf(['export', signal, 'headers', k]);
    if (!HTTP_TOKEN.test(k)) envProblem(ld, name, entryKey, `header name ${JSON.stringify(k)}`, "must be an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)");
    else if (/[\r\n\0]/.test(v)) envProblem(ld, name, entryKey, 'value (not shown: headers may carry credentials)', 'must not contain CR, LF or NUL');
    else continue;
    ok = false;
  }
  if (!ok) return;
  for (const [k, v] of entries) {
    for (const existing of own.headers.keys()) if (existing.toLowerCase() === k.toLowerCase()) own.headers.delete(existing);
    own.headers.set(k, v);
  }
  own.vars.push(name);
}

function reportSchemaErrors(ld: Loader, errors: readonly ErrorObject[]): void {
  const seen = new Set<string>();
  for (const e of errors) {
    const segs = pointerToSegs(e.instancePath);
    if (e.keyword === 'additionalProperties') {
      const extra = String((e.params as { additionalProperty: string }).additionalProperty);
      const full = [...segs, extra];
      const allowed = Object.keys((e.parentSchema as SchemaNode).properties ?? {});
      const close = allowed.filter((a) => editDistance(a, extra) <= (extra.length <= 3 ? 1 : extra.length <= 8 ? 2 : 3));
      const hint = close.length > 0 ? `; did you mean "${keyOf([...segs, close[0]!])}"?` : '';
      ld.problems.push({
        key: keyOf(full),
        source: sourceOf(ld, full),
        message: `${sourceOf(ld, full)}: unknown key "${keyOf(full)}" (allowed: ${allowed.join(', ')})${hint}`,
      });
      ld.badKeys.add(keyOf(full));
      continue;
    }
    const key = keyOf(segs);
    if (seen.has(key)) continue; // type + range errors on one value become one message
    seen.add(key);
    const node = e.parentSchema as SchemaNode;
    const secret = segs.length === 3 && segs[0] === 'export' && segs[1] === 'headers';
    report(ld, segs, e.data, allowedBy(node), secret ? { valueText: `${typeof e.data} value (not shown: headers may carry credentials)` } : {});
  }
}

function nearestPowersOfTwo(n: number): string {
  const lo = 2 ** Math.floor(Math.log2(n));
  return `nearest: ${lo} or ${lo * 2}`;
}

/**
 * Checks that need more than one key or more than JSON Schema can say. `c` has
 * passed the schema except at ld.badKeys. Runs twice: on the file alone (with
 * an env-less view of `ld`) and on file + environment.
 */
function checkSemantics(ld: Loader, c: Obj): void {
  const at = (segs: readonly Seg[]): unknown => getIn(c, segs);
  const ok = (segs: readonly Seg[]): boolean => !isBad(ld, segs);

  const ring = ['capture', 'ringBufferBytes'];
  const ringV = at(ring) as number;
  if (ok(ring) && (ringV & (ringV - 1)) !== 0) {
    const n = nodeAt(ring)!;
    report(ld, ring, ringV, `must be a power of two from ${n.minimum} to ${n.maximum} (${nearestPowersOfTwo(ringV)})`);
  }
  const wake = ['capture', 'wakeupBytes'];
  const wakeV = at(wake) as number;
  if (ok(ring) && ok(wake) && wakeV > ringV / 2) {
    report(ld, wake, wakeV, `must be an integer from ${nodeAt(wake)!.minimum} to capture.ringBufferBytes/2 = ${ringV / 2}`, { sourceFrom: ring });
  }

  for (const kind of ['pids', 'cgroups', 'ports'] as const) {
    const base = ['filter', kind];
    if (!ok(base)) continue;
    const inc = at([...base, 'include']);
    const exc = at([...base, 'exclude']);
    if (Array.isArray(inc) && Array.isArray(exc) && inc.length > 0 && exc.length > 0 && ok([...base, 'include']) && ok([...base, 'exclude'])) {
      report(ld, base, undefined, `set filter.${kind}.include or filter.${kind}.exclude, not both`, {
        valueText: `include ${show(inc)} together with exclude ${show(exc)}`,
      });
    }
    if (kind !== 'cgroups') continue;
    for (const side of ['include', 'exclude'] as const) {
      const list = at([...base, side]);
      if (!Array.isArray(list)) continue;
      list.forEach((entry: unknown, i) => {
        const segs = [...base, side, i];
        if (!ok(segs)) return;
        const valid =
          typeof entry === 'number'
            ? Number.isSafeInteger(entry) && entry >= 1
            : typeof entry === 'string' && (entry === '/' || /^(\/[^/\0\n]+)+$/.test(entry)) && !/\/\.\.?(\/|$)/.test(entry);
        if (!valid) report(ld, segs, entry, 'must be an absolute cgroup v2 path like /system.slice/nginx.service (no empty, "." or ".." parts) or a positive integer cgroup id');
      });
    }
  }

  for (const name of ['endpoint', 'tracesEndpoint', 'metricsEndpoint', 'logsEndpoint']) {
    const segs = ['export', name];
    const v = at(segs);
    if (!ok(segs) || typeof v !== 'string' || v === '') continue;
    let url: URL | undefined;
    try {
      url = new URL(v);
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.hostname === '') {
      report(ld, segs, v, 'must be an http:// or https:// URL such as http://localhost:4317, or empty for no export');
    }
  }

  const templates = at(['http', 'routes', 'templates']);
  if (Array.isArray(templates)) {
    templates.forEach((tpl: unknown, i) => {
      const segs = ['http', 'routes', 'templates', i];
      if (!ok(segs) || typeof tpl !== 'string') return;
      try {
        parseRouteTemplate(tpl);
      } catch (e) {
        report(ld, segs, tpl, `must be a route template like /users/{id} or /static/* (${(e as Error).message})`);
      }
    });
  }

  const headers = at(['export', 'headers']);
  if (ok(['export', 'headers']) && isObj(headers)) {
    for (const [name, value] of Object.entries(headers)) {
      const segs = ['export', 'headers', name];
      if (!ok(segs)) continue;
      if (!HTTP_TOKEN.test(name)) {
        report(ld, segs, name, "must be an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)", { valueText: `header name ${JSON.stringify(name)}` });
      } else if (typeof value === 'string' && /[\r\n\0]/.test(value)) {
        report(ld, segs, value, 'must not contain CR, LF or NUL', { valueText: 'value (not shown: headers may carry credentials)' });
      }
    }
  }

  const batchMax = ['export', 'batch', 'maxSpans'];
  const batchQueue = ['export', 'batch', 'queueSpans'];
  const maxV = at(batchMax) as number;
  const queueV = at(batchQueue) as number;
  if (ok(batchMax) && ok(batchQueue) && maxV > queueV) {
    report(ld, batchMax, maxV, `must be an integer from ${nodeAt(batchMax)!.minimum} to export.batch.queueSpans = ${queueV}`, { sourceFrom: batchQueue });
  }

  const health = ['health', 'address'];
  const addr = at(health);
  if (ok(health) && typeof addr === 'string' && parseHostPort(addr) === null) report(ld, health, addr, HOST_PORT_ALLOWED);

  for (const name of ['grpcAddress', 'httpAddress']) {
    const segs = ['receiver', name];
    const v = at(segs);
    if (ok(segs) && typeof v === 'string' && v !== '' && parseHostPort(v) === null) report(ld, segs, v, `${HOST_PORT_ALLOWED}, or empty for no server`);
  }
  const cert = ['receiver', 'tls', 'certFile'];
  const key = ['receiver', 'tls', 'keyFile'];
  if (ok(cert) && ok(key) && (at(cert) === '') !== (at(key) === '')) {
    // name the one that is set: the other is just missing
    const [set, missing] = at(cert) === '' ? [key, 'certFile'] : [cert, 'keyFile'];
    report(ld, set, at(set), `needs receiver.tls.${missing} as well (both or neither)`);
  }
  const clientCert = ['export', 'clientCertificate'];
  const clientKey = ['export', 'clientKey'];
  if (ok(clientCert) && ok(clientKey) && (at(clientCert) === '') !== (at(clientKey) === '')) {
    const [set, missing] = at(clientCert) === '' ? [clientKey, 'clientCertificate'] : [clientCert, 'clientKey'];
    report(ld, set, at(set), `needs export.${missing} as well (both or neither)`);
  }
}

/** A signal's client certificate and key, after its own variables, must be both set or both empty. */
function checkSignalClientCert(ld: Loader, c: Obj): void {
  for (const signal of SIGNALS) {
    const v = ld.signals[signal].values;
    if (v.clientCertificate === undefined && v.clientKey === undefined) continue;
    if (isBad(ld, ['export', 'clientCertificate']) || isBad(ld, ['export', 'clientKey'])) continue; // reported already
    const certV = v.clientCertificate ?? getIn(c, ['export', 'clientCertificate']);
    const keyV = v.clientKey ?? getIn(c, ['export', 'clientKey']);
    if ((certV === '') === (keyV === '')) continue;
    // name the per-signal variable that was set: the other half is missing
    const [field, missing] = v.clientCertificate !== undefined && certV !== '' ? ['clientCertificate', 'CLIENT_KEY'] : ['clientKey', 'CLIENT_CERTIFICATE'];
    const suffix = field === 'clientCertificate' ? 'CLIENT_CERTIFICATE' : 'CLIENT_KEY';
    const name = signalVar(signal, suffix);
    envProblem(ld, name, `export.${signal}.${field}`, JSON.stringify(field === 'clientCertificate' ? certV : keyV), `needs ${signalVar(signal, missing)} or OTEL_EXPORTER_OTLP_${missing} as well (both or neither)`);
  }
}

/** OTLP spec: per-signal endpoint as-is; base endpoint as-is for gRPC, + /v1/<signal> for HTTP (the signal's own protocol). */
function signalUrl(e: ExportOptions, signal: Signal, protocol: ExportProtocol): string {
  const own = signal === 'traces' ? e.tracesEndpoint : signal === 'metrics' ? e.metricsEndpoint : e.logsEndpoint;
  if (own !== '') return own;
  if (e.endpoint === '') return '';
  if (protocol === 'grpc') return e.endpoint;
  const url = new URL(e.endpoint);
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/v1/${signal}`;
  return url.href;
}

/** One signal's exporter: the generic export.* settings with that signal's own variables over them. */
function computeSignal(e: ExportOptions, sdkDisabled: boolean, signal: Signal, own: SignalEnv): TracesExport | null {
  const v = own.values;
  const protocol = v.protocol ?? e.protocol;
  const url = signalUrl(e, signal, protocol);
  if (sdkDisabled || url === '') return null;
  const headers = { ...e.headers };
  for (const [k, value] of own.headers) {
    for (const existing of Object.keys(headers)) if (existing.toLowerCase() === k.toLowerCase()) delete headers[existing];
    headers[k] = value;
  }
  const certificate = v.certificate ?? e.certificate;
  const clientCertificate = v.clientCertificate ?? e.clientCertificate;
  const clientKey = v.clientKey ?? e.clientKey;
  return {
    url,
    protocol,
    headers,
    timeoutMs: v.timeoutMs ?? e.timeoutMs,
    compression: v.compression ?? e.compression,
    insecure: v.insecure ?? e.insecure,
    ...(certificate !== '' ? { certificate } : {}),
    ...(clientCertificate !== '' && clientKey !== '' ? { clientCertificate, clientKey } : {}),
  };
}

/** Rebuilds mappings in schema key order (env overlay and defaults insert keys in arbitrary order). */
function canonical(value: unknown, node: SchemaNode | undefined): unknown {
  if (!isObj(value) || !node?.properties) return value;
  const out: Obj = {};
  for (const [k, sub] of Object.entries(node.properties)) if (Object.hasOwn(value, k)) out[k] = canonical(value[k], sub);
  return out;
}

interface Provenance {
  sourceOf: (segs: readonly Seg[]) => string;
  sdkDisabled: boolean;
  /** Per-signal variables that applied to each computed export.<signal>. */
  signalVars: Record<Signal, readonly string[]>;
}
const provenance = new WeakMap<Config, Provenance>();

/**
 * Loads the configuration: schema defaults, then `file` (YAML) if given, then
 * `env` (default: process.env). Throws ConfigError listing every problem found.
 */
export function loadConfig(opts: { file?: string; env?: NodeJS.ProcessEnv } = {}): Config {
  const signals = Object.fromEntries(SIGNALS.map((s) => [s, { values: {}, headers: new Map(), vars: [] }])) as unknown as Record<Signal, SignalEnv>;
  const ld: Loader = { file: opts.file, fileObj: {}, envKeys: new Map(), problems: [], badKeys: new Set(), signals };
  const { root, validate } = schema();
  if (opts.file !== undefined) {
    ld.fileObj = readFile(ld, opts.file);
    dropNullSections(ld.fileObj, root);
  }
  // The file must be valid on its own, even where the environment overrides it.
  const fileCfg = structuredClone(ld.fileObj);
  if (!validate(fileCfg)) reportSchemaErrors(ld, validate.errors ?? []); // also fills in the defaults
  checkSemantics({ ...ld, envKeys: new Map() }, fileCfg);
  // Then the environment, value by value, and the checks again on the result (env-made problems).
  const raw = structuredClone(fileCfg);
  const sdkDisabled = applyEnv(ld, raw, opts.env ?? process.env);
  checkSemantics(ld, raw);
  checkSignalClientCert(ld, raw);
  if (ld.problems.length > 0) throw new ConfigError(ld.problems);

  const config = canonical(raw, root) as Config;
  // YAML booleans are fine for k8s.enabled: normalise to the string form
  config.k8s.enabled = String(config.k8s.enabled) as K8sOptions['enabled'];
  for (const signal of SIGNALS) config.export[signal] = computeSignal(config.export, sdkDisabled, signal, signals[signal]);
  provenance.set(config, {
    sourceOf: (segs) => sourceOf(ld, segs),
    sdkDisabled,
    signalVars: Object.fromEntries(SIGNALS.map((s) => [s, [...signals[s].vars]])) as unknown as Record<Signal, readonly string[]>,
  });
  return config;
}

/** The built-in defaults (config/default.yaml documents the same values). */
export function defaultConfig(): Config {
  return loadConfig({ env: {} });
}

// ---------------------------------------------------------------------------
// Describe

/** Hides userinfo and query values, which can carry credentials. */
function redactUrl(s: string): string {
  let url: URL;
  try {
    url = new URL(s);
  } catch {
    return s;
  }
  if (url.username) url.username = '***';
  if (url.password) url.password = '***';
  for (const k of [...url.searchParams.keys()]) url.searchParams.set(k, '***');
  return url.href.replace(/%2A%2A%2A/g, '***');
}

/**
 * One `key = value` line per setting for startup logging, with `(from <source>)`
 * on values that did not come from the defaults. Header values are never
 * printed (names only); URL credentials and query values are masked.
 */
export function describeConfig(c: Config): string {
  const prov = provenance.get(c);
  const from = (segs: readonly Seg[]): string => {
    const s = prov?.sourceOf(segs) ?? 'defaults';
    return s === 'defaults' ? '' : `  (from ${s})`;
  };
  const lines: string[] = [];
  const walk = (value: unknown, segs: Seg[]): void => {
    const key = keyOf(segs);
    if (key === 'export.traces' || key === 'export.metrics' || key === 'export.logs') return;
    if (key === 'export.headers' && isObj(value)) {
      const names = Object.keys(value).map((n) => `${n}${from([...segs, n]).replace('  (', ' (')}`);
      lines.push(`${key} = ${names.length > 0 ? `${names.join(', ')} (values hidden)` : '(none)'}`);
      return;
    }
    if (key === 'export.resourceAttributes' && isObj(value)) {
      const pairs = Object.entries(value).map(([k, v]) => `${k}=${JSON.stringify(v)}${from([...segs, k]).replace('  (', ' (')}`);
      lines.push(`${key} = ${pairs.length > 0 ? pairs.join(', ') : '(none)'}`);
      return;
    }
    if (isObj(value)) {
      for (const [k, v] of Object.entries(value)) walk(v, [...segs, k]);
      return;
    }
    const shown = typeof value === 'string' && /^export\.(endpoint|tracesEndpoint|metricsEndpoint|logsEndpoint)$/.test(key) ? JSON.stringify(redactUrl(value)) : JSON.stringify(value);
    lines.push(`${key} = ${shown}${from(segs)}`);
  };
  walk(c, []);
  for (const signal of SIGNALS) {
    const t = c.export[signal];
    const vars = prov?.signalVars[signal] ?? [];
    lines.push(
      t
        ? `export.${signal} = ${t.protocol} ${redactUrl(t.url)} (timeout ${t.timeoutMs} ms, compression ${t.compression}, insecure ${t.insecure}, ${t.certificate ? `CA ${t.certificate}` : 'system CAs'}, ${t.clientCertificate ? `client cert ${t.clientCertificate}, ` : ''}${Object.keys(t.headers).length} header(s))${vars.length > 0 ? `  (from ${vars.join(', ')})` : ''}`
        : `export.${signal} = off (${prov?.sdkDisabled ? 'OTEL_SDK_DISABLED=true' : 'no endpoint'})`,
    );
  }
  return lines.join('\n');
}
