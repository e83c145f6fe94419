/**
 * fakek8s.ts (test helper) — a fake Kubernetes API server that speaks the real wire protocol,
 * for @kubernetes/client-node pointed at it (plain HTTP on 127.0.0.1, a free port).
 *
 * Implements exactly what Sidelight's informers and owner lookups use:
 *  - list: GET /api/v1/pods, /api/v1/services, /apis/discovery.k8s.io/v1/endpointslices,
 *    /apis/apps/v1/replicasets, /apis/batch/v1/jobs (all namespaces, or under
 *    /namespaces/<ns>/), `metadata.resourceVersion` on the list, `limit` + `continue` paging
 *    over a snapshot (a stale token gets 410 Expired), `fieldSelector` on spec.nodeName,
 *    metadata.name and metadata.namespace (`=`, `==`, `!=`, comma = and);
 *  - watch: the same paths with `?watch=true&resourceVersion=N`, streaming one JSON watch
 *    event per line (ADDED / MODIFIED / DELETED / BOOKMARK / ERROR). Events after N are
 *    replayed from a bounded history; an N older than the history gets an ERROR event
 *    carrying a Status 410 "Expired" and the stream ends, as the real server does. With a
 *    field selector, an object that starts (stops) matching is sent as ADDED (DELETED);
 *  - get: GET /.../namespaces/<ns>/<plural>/<name>, 404 Status when absent;
 *  - bearer-token auth (401 otherwise).
 * Faults: down()/up() (close the listener and every connection; listen again on the same
 * port), delayMs (every response waits), failNext(n, code) (the next n requests get an
 * error Status: 5xx, or a 410 on a watch request), expireNextWatch() (the next watch gets the 410 ERROR event), compact() (drop the
 * history and end the open watches: clients resume with a too-old resourceVersion), and
 * closeWatches() (a normal server-side watch timeout). Objects are added, updated and
 * deleted at run time with apply()/remove(), and streamed to open watches.
 *
 * Every request is recorded in `requests` (for "fetched once" assertions). One instance per
 * test; close() ends it. Single-threaded like the rest of the tests.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';

/** A Kubernetes object as JSON (the fake does not care about its schema beyond metadata). */
export interface K8sObject {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    ownerReferences?: { apiVersion?: string; kind: string; name: string; uid: string; controller?: boolean; blockOwnerDeletion?: boolean }[];
    [k: string]: unknown;
  };
  [k: string]: unknown;
}

interface ResourceDef {
  plural: string;
  kind: string;
  apiVersion: string;
  /** URL prefix: /api/v1 or /apis/<group>/<version> */
  prefix: string;
}

const RESOURCES: readonly ResourceDef[] = [
  { plural: 'pods', kind: 'Pod', apiVersion: 'v1', prefix: '/api/v1' },
  { plural: 'services', kind: 'Service', apiVersion: 'v1', prefix: '/api/v1' },
  { plural: 'endpointslices', kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', prefix: '/apis/discovery.k8s.io/v1' },
  { plural: 'replicasets', kind: 'ReplicaSet', apiVersion: 'apps/v1', prefix: '/apis/apps/v1' },
  { plural: 'jobs', kind: 'Job', apiVersion: 'batch/v1', prefix: '/apis/batch/v1' },
];
const BY_KIND = new Map(RESOURCES.map((r) => [r.kind, r]));

export interface RecordedRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  watch: boolean;
  status: number;
}

interface OpenWatch {
  def: ResourceDef;
  namespace?: string;
  selector: FieldTerm[];
  res: ServerResponse;
}

interface HistoryEntry {
  def: ResourceDef;
  rv: number;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  obj: K8sObject;
  prev?: K8sObject;
}

interface FieldTerm {
  path: string[];
  value: string;
  negate: boolean;
}

export interface FakeK8sOptions {
  /** bearer token the server accepts (default "fake-token") */
  token?: string;
  /** watch events kept for resuming watches (default 1000) */
  historyLimit?: number;
}

const clone = <T>(o: T): T => structuredClone(o);
const keyOf = (o: K8sObject): string => `${o.metadata.namespace ?? ''}/${o.metadata.name}`;

function status(code: number, reason: string, message: string): Record<string, unknown> {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

const FIELD_PATHS = new Set(['spec.nodeName', 'metadata.name', 'metadata.namespace']);

function parseFieldSelector(s: string | null): FieldTerm[] | string {
  if (!s) return [];
  const terms: FieldTerm[] = [];
  for (const part of s.split(',')) {
    const m = /^([^=!]+)(==|=|!=)(.*)$/.exec(part.trim());
    if (!m) return `invalid field selector: ${part}`;
    if (!FIELD_PATHS.has(m[1]!)) return `field label not supported: ${m[1]}`;
    terms.push({ path: m[1]!.split('.'), value: m[3]!, negate: m[2] === '!=' });
  }
  return terms;
}

function fieldValue(o: unknown, path: string[]): string {
  let cur: unknown = o;
  for (const p of path) cur = cur && typeof cur === 'object' ? (cur as Record<string, unknown>)[p] : undefined;
  return typeof cur === 'string' ? cur : '';
}

function matches(o: K8sObject | undefined, terms: FieldTerm[]): boolean {
  if (!o) return false;
  return terms.every((t) => (fieldValue(o, t.path) === t.value) !== t.negate);
}

export class FakeK8s {
  readonly token: string;
  readonly requests: RecordedRequest[] = [];
  /** every response waits this long first (the "slow API server" fault) */
  delayMs = 0;
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private readonly store = new Map<string, Map<string, K8sObject>>();
  private readonly history: HistoryEntry[] = [];
  private readonly historyLimit: number;
  private readonly watches = new Set<OpenWatch>();
  private readonly snapshots = new Map<string, { rv: number; items: K8sObject[] }>();
  private rv = 100;
  /** oldest resourceVersion a watch may resume from */
  private oldestRv = 100;
  private failures: { remaining: number; code: number } = { remaining: 0, code: 500 };
  private expireWatches = 0;
  private isDown = false;
  private portNumber = 0;

  private constructor(opts: FakeK8sOptions) {
    this.token = opts.token ?? 'fake-token';
    this.historyLimit = opts.historyLimit ?? 1000;
    for (const r of RESOURCES) this.store.set(r.plural, new Map());
    this.server = createServer((req, res) => void this.handle(req, res));
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.once('close', () => this.sockets.delete(s));
    });
  }

  static async start(opts: FakeK8sOptions = {}): Promise<FakeK8s> {
    const f = new FakeK8s(opts);
    await f.listen(0);
    return f;
  }

  get port(): number {
    return this.portNumber;
  }

  get url(): string {
    return `http://127.0.0.1:${this.portNumber}`;
  }

  /** A KubeConfig for @kubernetes/client-node: this server, plain HTTP, a bearer token. */
  kubeConfig(): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'fake', server: this.url, skipTLSVerify: true }],
      users: [{ name: 'sidelight', token: this.token }],
      contexts: [{ name: 'fake', cluster: 'fake', user: 'sidelight' }],
      currentContext: 'fake',
    });
    return kc;
  }

  /** Number of open watch streams (optionally of one resource). */
  openWatches(plural?: string): number {
    let n = 0;
    for (const w of this.watches) if (!plural || w.def.plural === plural) n++;
    return n;
  }

  /** Requests so far matching a method and a path (exact, or a RegExp), watches excluded unless asked. */
  count(method: string, path: string | RegExp, opts: { watch?: boolean } = {}): number {
    return this.requests.filter(
      (r) => r.method === method && (typeof path === 'string' ? r.path === path : path.test(r.path)) && r.watch === (opts.watch ?? false),
    ).length;
  }

  // ---------------------------------------------------------------- objects

  /** Create or replace an object (kind picks the resource); streamed to open watches. */
  apply(obj: K8sObject): K8sObject {
    const def = BY_KIND.get(obj.kind ?? '');
    if (!def) throw new Error(`fakek8s: unsupported kind ${obj.kind}`);
    const o = clone(obj);
    o.apiVersion = def.apiVersion;
    const objects = this.store.get(def.plural)!;
    const prev = objects.get(keyOf(o));
    o.metadata.uid ??= prev?.metadata.uid ?? randomUUID();
    o.metadata.creationTimestamp ??= new Date(0).toISOString();
    o.metadata.resourceVersion = String(++this.rv);
    objects.set(keyOf(o), o);
    this.record({ def, rv: this.rv, type: prev ? 'MODIFIED' : 'ADDED', obj: o, ...(prev ? { prev } : {}) });
    return clone(o);
  }

  /** Delete an object; streamed to open watches. Returns false when it did not exist. */
  remove(kind: string, namespace: string, name: string): boolean {
    const def = BY_KIND.get(kind);
    if (!def) throw new Error(`fakek8s: unsupported kind ${kind}`);
    const objects = this.store.get(def.plural)!;
    const prev = objects.get(`${namespace}/${name}`);
    if (!prev) return false;
    objects.delete(`${namespace}/${name}`);
    const o = clone(prev);
    o.metadata.resourceVersion = String(++this.rv);
    this.record({ def, rv: this.rv, type: 'DELETED', obj: o, prev });
    return true;
  }

  get(kind: string, namespace: string, name: string): K8sObject | undefined {
    const def = BY_KIND.get(kind);
    const o = def && this.store.get(def.plural)!.get(`${namespace}/${name}`);
    return o ? clone(o) : undefined;
  }

  // ----------------------------------------------------------------- faults

  /** The next `n` requests (lists, gets and watches) are answered with `code` (500, 503, 410 ...) and a Status. */
  failNext(n: number, code = 500): void {
    this.failures = { remaining: n, code };
  }

  /** The next watch request gets an ERROR event with a 410 Expired Status, then the stream ends. */
  expireNextWatch(): void {
    this.expireWatches++;
  }

  /** Forget the watch history (etcd compaction) and end open watches: resuming clients get 410. */
  compact(): void {
    // as if other writes happened and were compacted away: every client is now behind
    this.rv += 10;
    this.history.length = 0;
    this.oldestRv = this.rv + 1;
    this.snapshots.clear();
    this.closeWatches();
  }

  /** End every open watch stream cleanly (as the server's watch timeout does). */
  closeWatches(): void {
    for (const w of this.watches) w.res.end();
    this.watches.clear();
  }

  /** Send a BOOKMARK with the current resourceVersion on every open watch. */
  bookmark(): void {
    for (const w of this.watches) {
      this.send(w, 'BOOKMARK', { kind: w.def.kind, apiVersion: w.def.apiVersion, metadata: { resourceVersion: String(this.rv) } });
    }
  }

  /** The API server goes away: the listener closes and every connection is cut. */
  async down(): Promise<void> {
    if (this.isDown) return;
    this.isDown = true;
    this.watches.clear();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    this.server.closeAllConnections();
    await closed;
  }

  /** Back on the same port. */
  async up(): Promise<void> {
    if (!this.isDown) return;
    await this.listen(this.portNumber);
    this.isDown = false;
  }

  async close(): Promise<void> {
    this.closeWatches();
    if (!this.isDown) await this.down();
  }

  // --------------------------------------------------------------- protocol

  private listen(port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', () => {
        this.server.off('error', reject);
        this.portNumber = (this.server.address() as AddressInfo).port;
        resolve();
      });
    });
  }

  private record(e: HistoryEntry): void {
    this.history.push(e);
    while (this.history.length > this.historyLimit) {
      const dropped = this.history.shift()!;
      this.oldestRv = dropped.rv + 1;
    }
    for (const w of this.watches) this.deliver(w, e);
  }

  /** One change as seen through a watch's namespace and field selector. */
  private deliver(w: OpenWatch, e: HistoryEntry): void {
    if (w.def !== e.def) return;
    if (w.namespace !== undefined && e.obj.metadata.namespace !== w.namespace) return;
    const now = e.type !== 'DELETED' && matches(e.obj, w.selector);
    const before = e.prev !== undefined && matches(e.prev, w.selector);
    if (e.type === 'DELETED') {
      if (before) this.send(w, 'DELETED', e.obj);
    } else if (now && before) this.send(w, 'MODIFIED', e.obj);
    else if (now) this.send(w, 'ADDED', e.obj);
    else if (before) this.send(w, 'DELETED', e.obj);
  }

  private send(w: OpenWatch, type: string, object: unknown): void {
    if (!w.res.writableEnded) w.res.write(`${JSON.stringify({ type, object })}\n`);
  }

  private reply(req: IncomingMessage, res: ServerResponse, url: URL, watch: boolean, code: number, body: unknown): void {
    this.requests.push({ method: req.method ?? '', path: url.pathname, query: url.searchParams, watch, status: code });
    const text = JSON.stringify(body);
    res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  private route(pathname: string): { def: ResourceDef; namespace?: string; name?: string } | undefined {
    for (const def of RESOURCES) {
      if (!pathname.startsWith(`${def.prefix}/`)) continue;
      const rest = pathname.slice(def.prefix.length + 1).split('/');
      if (rest.length === 1 && rest[0] === def.plural) return { def };
      if (rest.length === 3 && rest[0] === 'namespaces' && rest[2] === def.plural) return { def, namespace: rest[1]! };
      if (rest.length === 4 && rest[0] === 'namespaces' && rest[2] === def.plural) return { def, namespace: rest[1]!, name: rest[3]! };
    }
    return undefined;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    const watch = url.searchParams.get('watch') === 'true' || url.searchParams.get('watch') === '1';
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    if (res.destroyed) return;
    if (req.headers.authorization !== `Bearer ${this.token}`) {
      this.reply(req, res, url, watch, 401, status(401, 'Unauthorized', 'Unauthorized'));
      return;
    }
    if (this.failures.remaining > 0) {
      this.failures.remaining--;
      const c = this.failures.code;
      const reason = { 410: 'Expired', 429: 'TooManyRequests', 503: 'ServiceUnavailable' }[c] ?? 'InternalError';
      this.reply(req, res, url, watch, c, status(c, reason, 'injected failure'));
      return;
    }
    if (req.method !== 'GET') {
      this.reply(req, res, url, watch, 405, status(405, 'MethodNotAllowed', `${req.method} is not supported by the fake`));
      return;
    }
    const r = this.route(url.pathname);
    if (!r) {
      this.reply(req, res, url, watch, 404, status(404, 'NotFound', `the server could not find the requested resource (${url.pathname})`));
      return;
    }
    if (url.searchParams.get('labelSelector')) {
      this.reply(req, res, url, watch, 400, status(400, 'BadRequest', 'labelSelector is not supported by the fake'));
      return;
    }
    const selector = parseFieldSelector(url.searchParams.get('fieldSelector'));
    if (typeof selector === 'string') {
      this.reply(req, res, url, watch, 400, status(400, 'BadRequest', selector));
      return;
    }
    const objects = this.store.get(r.def.plural)!;
    if (r.name !== undefined) {
      const o = objects.get(`${r.namespace}/${r.name}`);
      if (!o) {
        const what = `${r.def.plural}${r.def.prefix === '/api/v1' ? '' : `.${r.def.prefix.split('/')[2]}`}`;
        this.reply(req, res, url, watch, 404, status(404, 'NotFound', `${what} "${r.name}" not found`));
      } else this.reply(req, res, url, watch, 200, o);
      return;
    }
    if (watch) this.watch(req, res, url, r.def, r.namespace, selector);
    else this.list(req, res, url, r.def, r.namespace, selector);
  }

  private list(req: IncomingMessage, res: ServerResponse, url: URL, def: ResourceDef, namespace: string | undefined, selector: FieldTerm[]): void {
    const limit = Number(url.searchParams.get('limit') ?? 0);
    const cont = url.searchParams.get('continue');
    let snap: { rv: number; items: K8sObject[] };
    let offset = 0;
    if (cont) {
      const [id, off] = cont.split(':');
      const s = this.snapshots.get(id ?? '');
      if (!s) {
        this.reply(req, res, url, false, 410, status(410, 'Expired', 'The provided continue parameter is too old to display a consistent list result.'));
        return;
      }
      snap = s;
      offset = Number(off);
    } else {
      const items = [...this.store.get(def.plural)!.values()]
        .filter((o) => namespace === undefined || o.metadata.namespace === namespace)
        .filter((o) => matches(o, selector))
        .sort((a, b) => keyOf(a).localeCompare(keyOf(b)))
        .map(clone);
      snap = { rv: this.rv, items };
    }
    const end = limit > 0 ? Math.min(offset + limit, snap.items.length) : snap.items.length;
    const metadata: Record<string, unknown> = { resourceVersion: String(snap.rv) };
    if (end < snap.items.length) {
      const id = cont?.split(':')[0] ?? randomUUID();
      this.snapshots.set(id, snap);
      metadata.continue = `${id}:${end}`;
      metadata.remainingItemCount = snap.items.length - end;
    }
    this.reply(req, res, url, false, 200, { kind: `${def.kind}List`, apiVersion: def.apiVersion, metadata, items: snap.items.slice(offset, end) });
  }

  private watch(req: IncomingMessage, res: ServerResponse, url: URL, def: ResourceDef, namespace: string | undefined, selector: FieldTerm[]): void {
    this.requests.push({ method: req.method ?? '', path: url.pathname, query: url.searchParams, watch: true, status: 200 });
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    // the real server sends the headers at once: the client knows the watch is established
    res.flushHeaders();
    const w: OpenWatch = { def, selector, res, ...(namespace !== undefined ? { namespace } : {}) };
    const rvText = url.searchParams.get('resourceVersion') ?? '';
    const from = Number(rvText || 0);
    const expired = this.expireWatches > 0 || (rvText !== '' && rvText !== '0' && from + 1 < this.oldestRv);
    if (expired) {
      if (this.expireWatches > 0) this.expireWatches--;
      this.send(w, 'ERROR', status(410, 'Expired', `too old resource version: ${rvText} (${this.oldestRv - 1})`));
      res.end();
      return;
    }
    if (rvText === '' || rvText === '0') {
      // no resourceVersion: the current state first, as synthetic ADDED events
      for (const o of this.store.get(def.plural)!.values()) {
        if ((namespace === undefined || o.metadata.namespace === namespace) && matches(o, selector)) this.send(w, 'ADDED', o);
      }
    } else {
      for (const e of this.history) if (e.rv > from) this.deliver(w, e);
    }
    this.watches.add(w);
    res.on('close', () => this.watches.delete(w));
  }
}

// --------------------------------------------------------------- object builders

export interface PodSpec {
  namespace?: string;
  name: string;
  uid?: string;
  nodeName?: string;
  ip?: string;
  ips?: string[];
  hostNetwork?: boolean;
  phase?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  /** container name → containerID with its runtime prefix (e.g. containerd://<64 hex>) */
  containers?: Record<string, string>;
  initContainers?: Record<string, string>;
  owner?: { kind: string; name: string; uid: string };
}

/** A Pod as the API server returns it (the fields Sidelight reads, plus realistic noise). */
export function pod(p: PodSpec): K8sObject {
  const containers = p.containers ?? { app: `containerd://${'a'.repeat(64)}` };
  const ips = p.ips ?? (p.ip ? [p.ip] : []);
  return {
    kind: 'Pod',
    metadata: {
      name: p.name,
      namespace: p.namespace ?? 'default',
      ...(p.uid ? { uid: p.uid } : {}),
      labels: p.labels ?? {},
      annotations: p.annotations ?? {},
      ...(p.owner ? { ownerReferences: [{ apiVersion: 'apps/v1', ...p.owner, controller: true, blockOwnerDeletion: true }] } : {}),
      managedFields: [{ manager: 'kube-controller-manager', operation: 'Update', apiVersion: 'v1', fieldsType: 'FieldsV1', fieldsV1: {} }],
    },
    spec: {
      nodeName: p.nodeName ?? 'node-a',
      ...(p.hostNetwork ? { hostNetwork: true } : {}),
      containers: Object.keys(containers).map((name) => ({ name, image: `registry.example/${name}:1` })),
      ...(p.initContainers ? { initContainers: Object.keys(p.initContainers).map((name) => ({ name, image: 'busybox' })) } : {}),
    },
    status: {
      phase: p.phase ?? 'Running',
      hostIP: '10.0.0.1',
      ...(ips[0] ? { podIP: ips[0], podIPs: ips.map((ip) => ({ ip })) } : {}),
      containerStatuses: Object.entries(containers).map(([name, containerID]) => ({
        name,
        ...(containerID ? { containerID } : {}),
        ready: true,
        restartCount: 0,
        image: `registry.example/${name}:1`,
        imageID: '',
        state: { running: { startedAt: new Date(0).toISOString() } },
      })),
      ...(p.initContainers
        ? {
            initContainerStatuses: Object.entries(p.initContainers).map(([name, containerID]) => ({
              name,
              containerID,
              ready: true,
              restartCount: 0,
              image: 'busybox',
              imageID: '',
              state: { terminated: { exitCode: 0 } },
            })),
          }
        : {}),
    },
  };
}

export function replicaSet(namespace: string, name: string, uid: string, deployment?: { name: string; uid: string }): K8sObject {
  return {
    kind: 'ReplicaSet',
    metadata: {
      name,
      namespace,
      uid,
      ...(deployment ? { ownerReferences: [{ apiVersion: 'apps/v1', kind: 'Deployment', ...deployment, controller: true }] } : {}),
    },
    spec: { replicas: 1 },
  };
}

export function job(namespace: string, name: string, uid: string, cronJob?: { name: string; uid: string }): K8sObject {
  return {
    kind: 'Job',
    metadata: {
      name,
      namespace,
      uid,
      ...(cronJob ? { ownerReferences: [{ apiVersion: 'batch/v1', kind: 'CronJob', ...cronJob, controller: true }] } : {}),
    },
    spec: {},
  };
}

export function service(namespace: string, name: string, clusterIP: string, ports: number[] = [80]): K8sObject {
  return {
    kind: 'Service',
    metadata: { name, namespace },
    spec: {
      type: clusterIP === 'None' ? 'ClusterIP' : 'ClusterIP',
      clusterIP,
      clusterIPs: [clusterIP],
      ports: ports.map((port) => ({ name: `p${port}`, port, protocol: 'TCP', targetPort: port })),
    },
  };
}

export interface SliceEndpoint {
  ip: string;
  pod?: { name: string; uid: string; namespace?: string };
  nodeName?: string;
}

export function endpointSlice(namespace: string, serviceName: string, name: string, endpoints: SliceEndpoint[], ports: number[] = [8080]): K8sObject {
  return {
    kind: 'EndpointSlice',
    metadata: { name, namespace, labels: { 'kubernetes.io/service-name': serviceName, 'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io' } },
    addressType: 'IPv4',
    endpoints: endpoints.map((e) => ({
      addresses: [e.ip],
      conditions: { ready: true, serving: true, terminating: false },
      ...(e.nodeName ? { nodeName: e.nodeName } : {}),
      ...(e.pod ? { targetRef: { kind: 'Pod', namespace: e.pod.namespace ?? namespace, name: e.pod.name, uid: e.pod.uid } } : {}),
    })),
    ports: ports.map((port) => ({ name: `p${port}`, port, protocol: 'TCP' })),
  };
}
