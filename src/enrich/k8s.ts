/**
 * k8s.ts — Kubernetes metadata for the processes on this node: the pods scheduled here
 * (by UID, container ID and pod IP), and cluster-wide Services (by ClusterIP) and
 * EndpointSlices (by endpoint IP) for naming the peers of CLIENT spans.
 *
 * Owns one @kubernetes/client-node ListWatch informer per resource — Pods restricted to
 * this node (`fieldSelector=spec.nodeName=<node>`), Services and discovery.k8s.io/v1
 * EndpointSlices — and the indexes built from their add/update/delete callbacks; plus a
 * cache of owner lookups: a pod owned by a ReplicaSet or a Job is resolved to its
 * Deployment or CronJob by GETting that ReplicaSet/Job once (bounded, with a TTL, one
 * request in flight per owner, at most `ownerConcurrency` at once) — owners are read from
 * ownerReferences, never guessed from names. Pods on other nodes that are endpoints of a
 * Service (a CLIENT span's peer) get their workload the same way: the pod is GET once
 * (`remoteWorkload`, cached under the same bound and TTL as owners), then its ReplicaSet or
 * Job from the owner cache; until both answers are in, the peer has no workload. Objects are reduced to the few fields used
 * before the informer stores them (lists are paged), and every table has a bound and a
 * counter (`stats`).
 *
 * Resilience: when the API server is down or flapping, lookups keep answering from the last
 * known state; `ready` turns false and the counters say why. The informer reports a failed
 * list or watch once and stops; this module restarts it with exponential backoff and
 * jitter (`backoffInitialMs`..`backoffMaxMs`). A watch whose resourceVersion is too old
 * (410 Gone, as an event or a status) makes the informer relist: both are counted
 * (`expired`, `relists`). A client-side watch timeout reconnects from the last version.
 *
 * Data model: PodInfo/ServiceInfo objects are frozen snapshots. Any change (a watch event,
 * an owner resolved later) replaces the object, so a caller that caches a Resource per
 * process can tell it is stale by identity (`k8s.podByUid(uid) !== cached.pod`).
 *
 * Lifetime: construct, start() once (resolves when every informer has synced, or after
 * `syncTimeoutMs` with ready=false and retrying in the background; rejects only on
 * configuration errors), stop() once (idempotent; aborts requests, no timer left).
 * Everything runs on the main thread from informer callbacks; lookups are synchronous map
 * reads. The client library is loaded by start() only (it costs ~0.5 s, which a node without
 * Kubernetes does not pay): importing this module for its options and helpers is cheap.
 */
import { existsSync } from 'node:fs';
// types only: the client library (~0.5 s to load) is imported by start(), so a node without
// Kubernetes never loads it and this module is cheap to import (options, env detection)
import type {
  AppsV1Api,
  BatchV1Api,
  CoreV1Api,
  ConfigurationOptions,
  KubeConfig,
  KubernetesListObject,
  KubernetesObject,
  ListWatch,
  ObservableMiddleware,
  Watch,
} from '@kubernetes/client-node';
import { log } from '../log.js';
import { describePeer, type PeerDescription } from './k8s-resource.js';

// ---------------------------------------------------------------------------------- model

/** Workload controllers of a pod, by kind (names). */
export interface PodOwners {
  deployment?: string;
  replicaset?: string;
  statefulset?: string;
  daemonset?: string;
  job?: string;
  cronjob?: string;
}

export interface PodContainer {
  name: string;
  /** 64 hex digits, the runtime prefix (`containerd://`) stripped; absent until started */
  id?: string;
  /** the prefix that was stripped: containerd, cri-o, docker, ... */
  runtime?: string;
  init?: boolean;
}

/** One pod on this node, as the informer last saw it (frozen; replaced on every change). */
export interface PodInfo {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  /** status.podIP */
  readonly ip?: string;
  /** status.podIPs (IPv4 and IPv6 on dual-stack) */
  readonly ips: readonly string[];
  readonly nodeName?: string;
  /** host network pods share the node's IP: never looked up by IP */
  readonly hostNetwork: boolean;
  readonly phase?: string;
  readonly labels: Readonly<Record<string, string>>;
  /** without kubectl.kubernetes.io/last-applied-configuration and values over 1 KiB (counted) */
  readonly annotations: Readonly<Record<string, string>>;
  readonly containers: readonly PodContainer[];
  readonly owners: Readonly<PodOwners>;
  /** static pods: the kubelet's config hash, which is the pod UID their cgroups carry */
  readonly mirrorUid?: string;
}

export interface ServicePort {
  name?: string;
  port: number;
  protocol: string;
}

export interface ServiceInfo {
  readonly namespace: string;
  readonly name: string;
  readonly uid?: string;
  readonly type?: string;
  /** spec.clusterIPs without "None" (headless services have none) */
  readonly clusterIPs: readonly string[];
  readonly ports: readonly ServicePort[];
}

export interface PodRef {
  namespace: string;
  name: string;
  uid?: string;
}

/** An IP found among a Service's EndpointSlice endpoints. */
export interface EndpointInfo {
  service: ServiceInfo;
  /** the pod, when it runs on this node (full metadata, owners included) */
  pod?: PodInfo;
  /** the endpoint's targetRef when it is a Pod (on any node) */
  podRef?: PodRef;
}

export interface K8sStats {
  /** live pods indexed (this node) */
  pods: number;
  /** deleted pods still answered for deletedPodRetentionMs */
  podsRetained: number;
  services: number;
  endpointSlices: number;
  /** (address, slice) pairs indexed */
  endpoints: number;
  /** owner lookups cached */
  owners: number;
  /** objects not stored because a bound was reached */
  podsDropped: number;
  /** deleted pods forgotten before their retention ended (more than maxPods retained) */
  podsRetainedEvicted: number;
  servicesDropped: number;
  endpointSlicesDropped: number;
  endpointsDropped: number;
  annotationsDropped: number;
  /** objects the informer delivered that lacked a name/namespace/uid */
  malformed: number;
  /** exceptions in Sidelight's own index code (bugs), caught and reported */
  internalErrors: number;
  /** lists started (a paged list counts once), and those after the first successful sync */
  lists: number;
  relists: number;
  /** watch requests started, events received */
  watches: number;
  watchEvents: number;
  /** 410 Gone on a watch (event or status): the informer relists */
  expired: number;
  /** list/watch failures reported by an informer (each one restarts it after a backoff) */
  apiErrors: number;
  restarts: number;
  /** times ready went from true to false */
  notReady: number;
  ownerLookups: number;
  /** pods on other nodes (endpoints of Services) fetched to name their workload; entries cached */
  remotePodLookups: number;
  remotePods: number;
  /** remote pod lookups not queued because REMOTE_QUEUE_MAX lookups were waiting */
  remotePodQueueFull: number;
  ownerCacheHits: number;
  ownerNotFound: number;
  ownerLookupErrors: number;
  ownerEvicted: number;
  podLookups: number;
  podMisses: number;
}

/** Kubernetes access for enrichment: a small interface (a fake implements it in tests). */
export interface K8sMetadata {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** by metadata.uid, or a static pod's config hash (the UID in its cgroup path) */
  podByUid(uid: string): PodInfo | undefined;
  /** by container ID (64 hex, with or without a `runtime://` prefix) */
  podByContainerId(id: string): PodInfo | undefined;
  /** by pod IP (running pods on this node, host-network pods excluded) */
  podByIp(ip: string): PodInfo | undefined;
  /** ClusterIP → Service */
  serviceByIp(ip: string): ServiceInfo | undefined;
  /** endpoint IP → its Service (and pod); `port` prefers the slice that serves it */
  endpointByIp(ip: string, port?: number): EndpointInfo | undefined;
  /** the top-level controller of a pod on another node (looked up in the background; undefined until known) */
  remoteWorkload?(ref: PodRef): { name: string; kind: string } | undefined;
  /** every informer has synced and none is failing */
  readonly ready: boolean;
  readonly stats: K8sStats;
}

// -------------------------------------------------------------------------------- options

/** Options of KubernetesMetadata. Bounds are checked by resolveK8sOptions(). */
export interface K8sMetadataOptions {
  /** This node's name: only pods with spec.nodeName equal to it are watched. From the downward API (env NODE_NAME, or K8S_NODE_NAME). */
  nodeName: string;
  /** k8s.cluster.name on every resource (Kubernetes has no API for a cluster's name). */
  clusterName?: string;
  /** Path to a kubeconfig file. Default: the in-cluster service account. */
  kubeconfig?: string;
  /** An already-loaded KubeConfig (tests, embedding); wins over `kubeconfig`. */
  client?: KubeConfig;
  /** DNS domain of the cluster, for the server address of ClusterIP peers. Default cluster.local. */
  clusterDomain?: string;
  /** Watch Services and EndpointSlices cluster-wide to name CLIENT peers. Default true. */
  peers?: boolean;
  /** Pods of this node indexed; 16..65536, default 1024 (the kubelet's default limit is 110). */
  maxPods?: number;
  /** Services indexed; 0..1000000, default 10000 (~1.1 KiB each, measured: ~11 MiB at the bound). */
  maxServices?: number;
  /** EndpointSlices stored; 0..1000000, default 20000 (their addresses count against maxEndpoints). */
  maxEndpointSlices?: number;
  /** Endpoint addresses indexed over all slices; 0..10000000, default 100000 (~0.3 KiB each, measured: ~32 MiB at the bound). */
  maxEndpoints?: number;
  /** ReplicaSet/Job owner lookups cached; 16..1000000, default 4096. */
  maxOwners?: number;
  /** An owner lookup older than this is fetched again on the pod's next change (the old answer serves meanwhile), ms; 1000..86400000, default 600000 (10 min). */
  ownerCacheTtlMs?: number;
  /** Failed owner lookups are retried this often, ms; 100..3600000, default 30000. */
  ownerRetryMs?: number;
  /** Owner GETs in flight at once; 1..64, default 4. */
  ownerConcurrency?: number;
  /** A deleted pod is still found by UID/container ID for this long (its last spans), ms; 0..600000, default 30000. */
  deletedPodRetentionMs?: number;
  /** Timeout of one list page or GET, ms; 100..600000, default 10000. */
  requestTimeoutMs?: number;
  /** Objects per list page; 10..10000, default 500. */
  listPageSize?: number;
  /** start() waits at most this long for the first sync, ms; 0..600000, default 10000. */
  syncTimeoutMs?: number;
  /** First wait before restarting a failed informer, ms; 10..600000, default 1000. */
  backoffInitialMs?: number;
  /** Longest wait between reconnection attempts (ours and the informer's), ms; 10..600000, default 30000. */
  backoffMaxMs?: number;
  /** Where background messages go, one line each: problems (warn) and recoveries (info). Default: the agent log. */
  logger?: K8sLogger;
}

export interface K8sLogger {
  warn(message: string): void;
  info(message: string): void;
}

export type ResolvedK8sOptions = Required<Omit<K8sMetadataOptions, 'clusterName' | 'kubeconfig' | 'client'>> &
  Pick<K8sMetadataOptions, 'clusterName' | 'kubeconfig' | 'client'>;

export const K8S_DEFAULTS = {
  clusterDomain: 'cluster.local',
  peers: true,
  maxPods: 1024,
  maxServices: 10_000,
  maxEndpointSlices: 20_000,
  maxEndpoints: 100_000,
  maxOwners: 4096,
  ownerCacheTtlMs: 600_000,
  ownerRetryMs: 30_000,
  ownerConcurrency: 4,
  deletedPodRetentionMs: 30_000,
  requestTimeoutMs: 10_000,
  listPageSize: 500,
  syncTimeoutMs: 10_000,
  backoffInitialMs: 1000,
  backoffMaxMs: 30_000,
} as const;

const RANGES: Record<string, [number, number]> = {
  maxPods: [16, 65_536],
  maxServices: [0, 1_000_000],
  maxEndpointSlices: [0, 1_000_000],
  maxEndpoints: [0, 10_000_000],
  maxOwners: [16, 1_000_000],
  ownerCacheTtlMs: [1000, 86_400_000],
  ownerRetryMs: [100, 3_600_000],
  ownerConcurrency: [1, 64],
  deletedPodRetentionMs: [0, 600_000],
  requestTimeoutMs: [100, 600_000],
  listPageSize: [10, 10_000],
  syncTimeoutMs: [0, 600_000],
  backoffInitialMs: [10, 600_000],
  backoffMaxMs: [10, 600_000],
};

const NODE_NAME_RE = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

/** Every problem with the options, as `k8s.<key>: <value> is not allowed: <rule>` lines. */
export function validateK8sOptions(o: K8sMetadataOptions): string[] {
  const errors: string[] = [];
  if (typeof o.nodeName !== 'string' || !NODE_NAME_RE.test(o.nodeName)) {
    errors.push(
      `k8s.nodeName: ${JSON.stringify(o.nodeName)} is not allowed: must be the node's name (a DNS subdomain); set NODE_NAME from the downward API (fieldRef spec.nodeName)`,
    );
  }
  for (const [key, [min, max]] of Object.entries(RANGES)) {
    const v = (o as unknown as Record<string, unknown>)[key];
    if (v === undefined) continue;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      errors.push(`k8s.${key}: ${JSON.stringify(v)} is not allowed: must be an integer from ${min} to ${max}`);
    }
  }
  const lo = o.backoffInitialMs ?? K8S_DEFAULTS.backoffInitialMs;
  const hi = o.backoffMaxMs ?? K8S_DEFAULTS.backoffMaxMs;
  if (lo > hi) errors.push(`k8s.backoffInitialMs: ${lo} is not allowed: must be at most backoffMaxMs (${hi})`);
  if (o.clusterDomain !== undefined && !/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(o.clusterDomain)) {
    errors.push(`k8s.clusterDomain: ${JSON.stringify(o.clusterDomain)} is not allowed: must be a DNS domain such as cluster.local`);
  }
  if (o.peers !== undefined && typeof o.peers !== 'boolean') errors.push(`k8s.peers: ${JSON.stringify(o.peers)} is not allowed: must be true or false`);
  return errors;
}

/** Defaults applied and validated; throws one Error listing every problem. */
export function resolveK8sOptions(o: K8sMetadataOptions): ResolvedK8sOptions {
  const errors = validateK8sOptions(o);
  if (errors.length > 0) throw new Error(errors.join('\n'));
  const defined = Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
  return { ...K8S_DEFAULTS, logger: log, ...(defined as Partial<K8sMetadataOptions>), nodeName: o.nodeName };
}

/** This node's name from the environment: K8S_NODE_NAME, else NODE_NAME (downward API). */
export function nodeNameFromEnv(env: NodeJS.ProcessEnv = process.env): string | undefined {
  return env.K8S_NODE_NAME?.trim() || env.NODE_NAME?.trim() || undefined;
}

const SERVICE_ACCOUNT_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token';

/**
 * Whether in-cluster credentials are present (for `k8s.enabled: auto`): the API server's
 * address in KUBERNETES_SERVICE_HOST/PORT and a service account token.
 */
export function inCluster(env: NodeJS.ProcessEnv = process.env, tokenPath = SERVICE_ACCOUNT_TOKEN): boolean {
  return Boolean(env.KUBERNETES_SERVICE_HOST && env.KUBERNETES_SERVICE_PORT && existsSync(tokenPath));
}

type ClientLibrary = typeof import('@kubernetes/client-node');

function loadKubeConfig(o: ResolvedK8sOptions, lib: ClientLibrary): KubeConfig {
  if (o.client) return o.client;
  const kc = new lib.KubeConfig();
  if (o.kubeconfig) {
    try {
      kc.loadFromFile(o.kubeconfig);
    } catch (e) {
      throw new Error(`kubernetes: cannot load kubeconfig ${o.kubeconfig}: ${(e as Error).message}`);
    }
    return kc;
  }
  if (!inCluster()) {
    throw new Error(
      'kubernetes: not running in a cluster (KUBERNETES_SERVICE_HOST/PORT unset or no service account token) and no kubeconfig given',
    );
  }
  kc.loadFromCluster();
  return kc;
}

// ------------------------------------------------------------------------ object parsing

type Json = Record<string, unknown>;
const obj = (v: unknown): Json | undefined => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Json) : undefined);
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

/** Annotation values longer than this are not kept. */
export const MAX_ANNOTATION_BYTES = 1024;
const DROPPED_ANNOTATIONS = new Set(['kubectl.kubernetes.io/last-applied-configuration']);
const MIRROR_ANNOTATION = 'kubernetes.io/config.mirror';

interface OwnerRef {
  kind: string;
  name: string;
  uid: string;
}

interface PodRecord {
  /** owners: the direct controller only; deployment/cronjob are merged from the owner cache */
  info: PodInfo;
  ref?: OwnerRef;
}

interface SliceRecord {
  namespace: string;
  name: string;
  service: string;
  ports: number[];
  /** address → the endpoint's pod (when its targetRef is a Pod) */
  endpoints: Map<string, PodRef | undefined>;
}

function stringMap(v: unknown, limitBytes?: number, onDrop?: () => void): Record<string, string> {
  const out: Record<string, string> = {};
  const o = obj(v);
  if (!o) return out;
  for (const [k, val] of Object.entries(o)) {
    if (typeof val !== 'string') continue;
    if (limitBytes !== undefined && (DROPPED_ANNOTATIONS.has(k) || val.length > limitBytes)) {
      onDrop?.();
      continue;
    }
    out[k] = val;
  }
  return out;
}

function controllerRef(refs: unknown): OwnerRef | undefined {
  const list = arr(refs).map(obj).filter((r): r is Json => r !== undefined);
  const r = list.find((x) => x.controller === true) ?? list[0];
  const kind = str(r?.kind);
  const name = str(r?.name);
  if (!kind || !name) return undefined;
  return { kind, name, uid: str(r?.uid) ?? '' };
}

function splitContainerId(raw: unknown): { id?: string; runtime?: string } {
  const s = str(raw);
  if (!s) return {};
  const i = s.indexOf('://');
  return i < 0 ? { id: s } : { id: s.slice(i + 3), runtime: s.slice(0, i) };
}

const OWNER_FIELD: Record<string, keyof PodOwners> = {
  ReplicaSet: 'replicaset',
  Job: 'job',
  StatefulSet: 'statefulset',
  DaemonSet: 'daemonset',
};

function freeze<T extends object>(o: T): Readonly<T> {
  return Object.freeze(o);
}

function parsePod(o: unknown, onAnnotationDrop: () => void): PodRecord | undefined {
  const p = obj(o);
  const m = obj(p?.metadata);
  const namespace = str(m?.namespace);
  const name = str(m?.name);
  const uid = str(m?.uid);
  if (!namespace || !name || !uid) return undefined;
  const spec = obj(p?.spec);
  const status = obj(p?.status);
  const ips = arr(status?.podIPs)
    .map((x) => str(obj(x)?.ip))
    .filter((x): x is string => x !== undefined);
  const podIP = str(status?.podIP);
  if (podIP && !ips.includes(podIP)) ips.unshift(podIP);
  const containers: PodContainer[] = [];
  const seen = new Set<string>();
  const addStatuses = (list: unknown, init: boolean): void => {
    for (const cs of arr(list)) {
      const c = obj(cs);
      const cname = str(c?.name);
      if (!cname || seen.has(cname)) continue;
      seen.add(cname);
      const { id, runtime } = splitContainerId(c?.containerID);
      containers.push(freeze({ name: cname, ...(id ? { id } : {}), ...(runtime ? { runtime } : {}), ...(init ? { init } : {}) }));
    }
  };
  addStatuses(status?.containerStatuses, false);
  addStatuses(status?.initContainerStatuses, true);
  addStatuses(status?.ephemeralContainerStatuses, false);
  // containers not started yet are known by name only
  for (const c of arr(spec?.containers)) {
    const cname = str(obj(c)?.name);
    if (cname && !seen.has(cname)) {
      seen.add(cname);
      containers.push(freeze({ name: cname }));
    }
  }
  const annotations = stringMap(m?.annotations, MAX_ANNOTATION_BYTES, onAnnotationDrop);
  const ref = controllerRef(m?.ownerReferences);
  const owners: PodOwners = {};
  const field = ref ? OWNER_FIELD[ref.kind] : undefined;
  if (ref && field) owners[field] = ref.name;
  const mirrorUid = annotations[MIRROR_ANNOTATION];
  const nodeName = str(spec?.nodeName);
  const phase = str(status?.phase);
  const info: PodInfo = freeze({
    namespace,
    name,
    uid,
    ...(ips[0] ? { ip: ips[0] } : {}),
    ips: freeze(ips),
    ...(nodeName ? { nodeName } : {}),
    hostNetwork: spec?.hostNetwork === true,
    ...(phase ? { phase } : {}),
    labels: freeze(stringMap(m?.labels)),
    annotations: freeze(annotations),
    containers: freeze(containers),
    owners: freeze(owners),
    ...(mirrorUid ? { mirrorUid } : {}),
  });
  return { info, ...(ref && (ref.kind === 'ReplicaSet' || ref.kind === 'Job') ? { ref } : {}) };
}

function parseService(o: unknown): ServiceInfo | undefined {
  const s = obj(o);
  const m = obj(s?.metadata);
  const namespace = str(m?.namespace);
  const name = str(m?.name);
  if (!namespace || !name) return undefined;
  const spec = obj(s?.spec);
  const ips = new Set<string>();
  for (const ip of [spec?.clusterIP, ...arr(spec?.clusterIPs)]) {
    const v = str(ip);
    if (v && v !== 'None') ips.add(v);
  }
  const ports: ServicePort[] = [];
  for (const p of arr(spec?.ports)) {
    const po = obj(p);
    if (typeof po?.port !== 'number') continue;
    const pname = str(po.name);
    ports.push(freeze({ ...(pname ? { name: pname } : {}), port: po.port, protocol: str(po.protocol) ?? 'TCP' }));
  }
  const uid = str(m?.uid);
  const type = str(spec?.type);
  return freeze({
    namespace,
    name,
    ...(uid ? { uid } : {}),
    ...(type ? { type } : {}),
    clusterIPs: freeze([...ips]),
    ports: freeze(ports),
  });
}

const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

function parseSlice(o: unknown): SliceRecord | undefined {
  const s = obj(o);
  const m = obj(s?.metadata);
  const namespace = str(m?.namespace);
  const name = str(m?.name);
  const service = str(obj(m?.labels)?.[SERVICE_NAME_LABEL]);
  if (!namespace || !name) return undefined;
  const endpoints = new Map<string, PodRef | undefined>();
  for (const e of arr(s?.endpoints)) {
    const ep = obj(e);
    const t = obj(ep?.targetRef);
    const podRef: PodRef | undefined =
      str(t?.kind) === 'Pod' && str(t?.name)
        ? { namespace: str(t?.namespace) ?? namespace, name: str(t?.name)!, ...(str(t?.uid) ? { uid: str(t?.uid)! } : {}) }
        : undefined;
    for (const a of arr(ep?.addresses)) {
      const ip = str(a);
      if (ip) endpoints.set(ip, podRef);
    }
  }
  const ports = arr(s?.ports)
    .map((p) => obj(p)?.port)
    .filter((p): p is number => typeof p === 'number');
  // a slice without the service-name label belongs to no Service we can name: kept empty
  return { namespace, name, service: service ?? '', ports, endpoints: service ? endpoints : new Map() };
}

// ---------------------------------------------------------------------------------- feeds

interface Stored<R> extends KubernetesObject {
  metadata: { name: string; namespace: string; resourceVersion: string };
  record?: R;
}

interface ListPage {
  metadata?: { resourceVersion?: string; _continue?: string };
  items: unknown[];
}

interface FeedSpec<R> {
  name: string;
  path: string;
  fieldSelector?: string;
  max: number;
  list(limit: number, cont: string | undefined): Promise<ListPage>;
  parse(o: unknown): R | undefined;
  upsert(key: string, rec: R, old: R | undefined): void;
  remove(key: string, rec: R): void;
  /** count an object not stored because of the bound */
  dropped(): void;
}

/** Host of one feed's hooks: the metadata object. */
interface FeedHost {
  readonly stats: K8sStats;
  readonly options: ResolvedK8sOptions;
  feedStateChanged(): void;
  report(message: string, level?: keyof K8sLogger): void;
}

type ObservedWatchClass = new (kc: KubeConfig, feed: Feed<unknown>) => Watch;
let observedWatchClass: ObservedWatchClass | undefined;

/**
 * The Watch of @kubernetes/client-node, observed: counts watch requests and 410s, hands the
 * informer reduced objects (dropping new ones past the bound), says when a watch is
 * established, and starts nothing once the feed is stopped. Defined once the library is loaded.
 */
function observedWatch(lib: ClientLibrary): ObservedWatchClass {
  observedWatchClass ??= class ObservedWatch extends lib.Watch {
    private readonly feed: Feed<unknown>;

    constructor(kc: KubeConfig, feed: Feed<unknown>) {
      super(kc);
      this.feed = feed;
    }

    override async watch(
      path: string,
      queryParams: Record<string, string | number | boolean | undefined>,
      callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
      done: (err: unknown) => void,
    ): Promise<AbortController> {
      if (this.feed.stopped) return new AbortController();
      this.feed.host.stats.watches++;
      let returned = false;
      let failedEarly = false;
      let controller: AbortController;
      try {
        controller = await super.watch(
          path,
          queryParams,
          (phase, apiObj, watchObj) => {
            const o = this.feed.onWatchEvent(phase, apiObj);
            if (o === undefined) return;
            // the informer's handler is async: a throw in it must not become an unhandled rejection
            const r: unknown = callback(phase, o, watchObj);
            if (r instanceof Promise) r.catch((e: unknown) => this.feed.internalError(e));
          },
          (err) => {
            if (!returned && err) failedEarly = true;
            if ((err as { statusCode?: number } | null)?.statusCode === 410) this.feed.host.stats.expired++;
            done(err);
          },
        );
      } catch (e) {
        // e.g. credentials that cannot be read: report through the informer's error path
        // (the informer calls watch() from callbacks nobody awaits)
        setImmediate(() => done(e));
        return new AbortController();
      }
      returned = true;
      if (this.feed.stopped) {
        // stopped while connecting: the informer's stop() had no request to abort yet
        controller.abort();
        return controller;
      }
      this.feed.current = controller;
      if (!failedEarly) this.feed.healthy();
      return controller;
    }
  };
  return observedWatchClass;
}

/** One resource: its ListWatch, its records by namespace/name, its health. */
class Feed<R> {
  readonly host: FeedHost;
  readonly spec: FeedSpec<R>;
  readonly records = new Map<string, R>();
  readonly firstSync: Promise<void>;
  synced = false;
  failed = false;
  stopped = false;
  /** the open watch request, aborted by stop() */
  current: AbortController | undefined;
  private readonly lw: ListWatch<Stored<R>>;
  private resolveFirstSync!: () => void;
  private backoffMs: number;
  private restartTimer: NodeJS.Timeout | undefined;
  private readonly delays = new Set<() => void>();

  constructor(host: FeedHost, lib: ClientLibrary, kc: KubeConfig, spec: FeedSpec<R>) {
    this.host = host;
    this.spec = spec;
    this.backoffMs = host.options.backoffInitialMs;
    this.firstSync = new Promise((r) => (this.resolveFirstSync = r));
    const watch = new (observedWatch(lib))(kc, this as Feed<unknown>);
    this.lw = new lib.ListWatch<Stored<R>>(spec.path, watch, () => this.list(), false, undefined, spec.fieldSelector, {
      delayFn: (ms) => this.delay(ms),
    });
    this.lw.on('add', (o) => this.onUpsert(o));
    this.lw.on('update', (o) => this.onUpsert(o));
    this.lw.on('delete', (o) => this.onDelete(o));
    this.lw.on('error', (err) => this.onError(err));
  }

  start(): void {
    this.lw.start().catch((e: unknown) => this.onError(e));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    for (const wake of this.delays) wake();
    this.delays.clear();
    await this.lw.stop();
    this.current?.abort();
    this.resolveFirstSync();
  }

  /** The informer's reconnect delay: never longer than backoffMaxMs, cut short by stop(). */
  private delay(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.stopped) return resolve();
      const wake = (): void => {
        clearTimeout(t);
        this.delays.delete(wake);
        resolve();
      };
      const t = setTimeout(wake, Math.min(ms, this.host.options.backoffMaxMs));
      t.unref();
      this.delays.add(wake);
    });
  }

  healthy(): void {
    this.backoffMs = this.host.options.backoffInitialMs;
    if (this.failed) {
      this.failed = false;
      this.host.feedStateChanged();
    }
  }

  private toStored(o: unknown): Stored<R> | undefined {
    const m = obj(obj(o)?.metadata);
    const name = str(m?.name);
    const namespace = str(m?.namespace);
    if (!name || !namespace) return undefined;
    const record = this.spec.parse(o);
    return { metadata: { name, namespace, resourceVersion: str(m?.resourceVersion) ?? '' }, ...(record !== undefined ? { record } : {}) };
  }

  /** The informer's list function: paged, reduced, bounded. */
  private async list(): Promise<KubernetesListObject<Stored<R>>> {
    const stats = this.host.stats;
    stats.lists++;
    if (this.synced) stats.relists++;
    const items: Stored<R>[] = [];
    let rv = '';
    let cont: string | undefined;
    do {
      const page = await this.spec.list(this.host.options.listPageSize, cont);
      if (this.stopped) throw new Error('stopped');
      // with `continue`, every page is the same snapshot: the first page's version is the list's
      if (!rv) rv = page.metadata?.resourceVersion ?? '';
      for (const item of page.items) {
        const s = this.toStored(item);
        if (!s?.record) {
          stats.malformed++;
          continue;
        }
        if (items.length >= this.spec.max) {
          this.spec.dropped();
          continue;
        }
        items.push(s);
      }
      cont = page.metadata?._continue || undefined;
    } while (cont);
    this.synced = true;
    this.healthy();
    this.host.feedStateChanged();
    this.resolveFirstSync();
    return { metadata: { resourceVersion: rv }, items };
  }

  /** A watch event, before the informer stores it: reduce, bound, count. */
  onWatchEvent(phase: string, o: unknown): unknown {
    const stats = this.host.stats;
    stats.watchEvents++;
    if (phase === 'ERROR') {
      if (obj(o)?.code === 410) stats.expired++;
      else this.host.report(`kubernetes: ${this.spec.name} watch error: ${str(obj(o)?.message) ?? JSON.stringify(o)}`);
      return o;
    }
    if (phase === 'BOOKMARK') return o;
    const s = this.toStored(o);
    if (phase === 'DELETED') return s;
    if (!s?.record) {
      stats.malformed++;
      return undefined;
    }
    const key = `${s.metadata.namespace}/${s.metadata.name}`;
    if (!this.records.has(key) && this.records.size >= this.spec.max) {
      this.spec.dropped();
      return undefined;
    }
    return s;
  }

  private onUpsert(o: Stored<R>): void {
    if (o.record === undefined) return;
    const key = `${o.metadata.namespace}/${o.metadata.name}`;
    try {
      const old = this.records.get(key);
      this.records.set(key, o.record);
      this.spec.upsert(key, o.record, old);
    } catch (e) {
      this.internalError(e);
    }
  }

  private onDelete(o: Stored<R>): void {
    const key = `${o.metadata.namespace}/${o.metadata.name}`;
    try {
      const old = this.records.get(key);
      if (old === undefined) return;
      this.records.delete(key);
      this.spec.remove(key, old);
    } catch (e) {
      this.internalError(e);
    }
  }

  /** A bug, not the API server: counted and reported, the informer keeps running. */
  internalError(e: unknown): void {
    this.host.stats.internalErrors++;
    this.host.report(`kubernetes: ${this.spec.name}: internal error: ${(e as Error)?.stack ?? String(e)}`);
  }

  private onError(err: unknown): void {
    if (this.stopped) return;
    this.host.stats.apiErrors++;
    const wasFailed = this.failed;
    this.failed = true;
    if (!wasFailed) this.host.feedStateChanged();
    const e = err as { message?: string; code?: number; statusCode?: number; cause?: { code?: string } } | undefined;
    const detail = e?.cause?.code ?? (e?.statusCode ?? e?.code ?? '');
    this.host.report(`kubernetes: ${this.spec.name} list/watch failed${detail ? ` (${detail})` : ''}: ${e?.message ?? String(err)}; retrying in ~${this.backoffMs} ms`);
    if (this.restartTimer) return;
    // full jitter over the upper half: spread agents of a whole cluster reconnecting at once
    const wait = Math.round(this.backoffMs / 2 + Math.random() * (this.backoffMs / 2));
    this.backoffMs = Math.min(this.backoffMs * 2, this.host.options.backoffMaxMs);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (this.stopped) return;
      this.host.stats.restarts++;
      this.start();
    }, wait);
    this.restartTimer.unref();
  }
}

// ----------------------------------------------------------------------------- the class

interface OwnerEntry {
  /** the Deployment (of a ReplicaSet) or CronJob (of a Job); undefined when it has none / is gone */
  parent?: string;
  at: number;
}

/** Owner/remote-pod lookups waiting at most (beyond: not queued, counted, asked again later). */
const REMOTE_QUEUE_MAX = 256;

const ownerKey = (namespace: string, ref: OwnerRef): string => `${ref.kind}/${namespace}/${ref.name}/${ref.uid}`;

function errorCode(e: unknown): number | undefined {
  const x = e as { code?: unknown; statusCode?: unknown } | undefined;
  return typeof x?.code === 'number' ? x.code : typeof x?.statusCode === 'number' ? x.statusCode : undefined;
}

/** K8sMetadata on @kubernetes/client-node informers. */
export class KubernetesMetadata implements K8sMetadata, FeedHost {
  readonly options: ResolvedK8sOptions;
  readonly stats: K8sStats = {
    pods: 0,
    podsRetained: 0,
    services: 0,
    endpointSlices: 0,
    endpoints: 0,
    owners: 0,
    podsDropped: 0,
    podsRetainedEvicted: 0,
    servicesDropped: 0,
    endpointSlicesDropped: 0,
    endpointsDropped: 0,
    annotationsDropped: 0,
    malformed: 0,
    internalErrors: 0,
    lists: 0,
    relists: 0,
    watches: 0,
    watchEvents: 0,
    expired: 0,
    apiErrors: 0,
    restarts: 0,
    notReady: 0,
    ownerLookups: 0,
    remotePodLookups: 0,
    remotePods: 0,
    remotePodQueueFull: 0,
    ownerCacheHits: 0,
    ownerNotFound: 0,
    ownerLookupErrors: 0,
    ownerEvicted: 0,
    podLookups: 0,
    podMisses: 0,
  };

  private feeds: Feed<unknown>[] = [];
  private lib: ClientLibrary | undefined;
  private apps: AppsV1Api | undefined;
  private batch: BatchV1Api | undefined;
  // pods: uid → info (live, and deleted ones retained for a while) and the secondary keys
  private readonly pods = new Map<string, PodInfo>();
  private readonly podRecords = new Map<string, PodRecord>();
  private readonly byContainer = new Map<string, string>();
  private readonly byPodIp = new Map<string, string>();
  private readonly byMirror = new Map<string, string>();
  /** deleted pod uid → when to forget it (insertion order is expiry order) */
  private readonly retained = new Map<string, number>();
  // services by namespace/name, and ClusterIP → namespace/name
  private readonly services = new Map<string, ServiceInfo>();
  private readonly byClusterIp = new Map<string, string>();
  // endpoint slices by namespace/name, and address → slice keys
  private readonly slices = new Map<string, SliceRecord>();
  private readonly byEndpointIp = new Map<string, string[]>();
  // owners
  private readonly ownerCache = new Map<string, OwnerEntry>();
  private readonly ownerInflight = new Set<string>();
  /** pods on other nodes: ns/name/uid → their controller (undefined: none, or not found) */
  private readonly remotePods = new Map<string, { ref?: OwnerRef; at: number }>();
  private core: CoreV1Api | undefined;
  private readonly ownerFailed = new Map<string, { namespace: string; ref: OwnerRef }>();
  private readonly ownerQueue: (() => Promise<void>)[] = [];
  private ownerActive = 0;
  private readonly abort = new AbortController();
  private retryTimer: NodeJS.Timeout | undefined;
  private started = false;
  private stopped = false;
  private wasReady = false;

  constructor(options: K8sMetadataOptions) {
    this.options = resolveK8sOptions(options);
  }

  get ready(): boolean {
    return this.started && !this.stopped && this.feeds.length > 0 && this.feeds.every((f) => f.synced && !f.failed);
  }

  get clusterName(): string | undefined {
    return this.options.clusterName;
  }

  /** Start the informers; resolves once synced or after syncTimeoutMs (then retrying in the background). */
  async start(): Promise<void> {
    if (this.started) throw new Error('kubernetes: start() called twice');
    this.started = true;
    const o = this.options;
    const lib = await import('@kubernetes/client-node');
    if (this.stopped) return;
    this.lib = lib;
    const kc = loadKubeConfig(o, lib);
    const core = kc.makeApiClient(lib.CoreV1Api);
    this.core = core;
    this.apps = kc.makeApiClient(lib.AppsV1Api);
    this.batch = kc.makeApiClient(lib.BatchV1Api);
    const fieldSelector = `spec.nodeName=${o.nodeName}`;
    const feeds: Feed<unknown>[] = [
      this.feed<PodRecord>(kc, {
        name: 'pods',
        path: '/api/v1/pods',
        fieldSelector,
        max: o.maxPods,
        list: (limit, cont) =>
          core.listPodForAllNamespaces({ fieldSelector, limit, ...(cont ? { _continue: cont } : {}) }, this.requestOptions()),
        parse: (p) => parsePod(p, () => this.stats.annotationsDropped++),
        upsert: (_k, rec, old) => this.upsertPod(rec, old),
        remove: (_k, rec) => this.removePod(rec),
        dropped: () => this.stats.podsDropped++,
      }),
    ];
    if (o.peers) {
      const discovery = kc.makeApiClient(lib.DiscoveryV1Api);
      feeds.push(
        this.feed<ServiceInfo>(kc, {
          name: 'services',
          path: '/api/v1/services',
          max: o.maxServices,
          list: (limit, cont) => core.listServiceForAllNamespaces({ limit, ...(cont ? { _continue: cont } : {}) }, this.requestOptions()),
          parse: parseService,
          upsert: (key, svc, old) => this.upsertService(key, svc, old),
          remove: (key, svc) => this.removeService(key, svc),
          dropped: () => this.stats.servicesDropped++,
        }),
        this.feed<SliceRecord>(kc, {
          name: 'endpointslices',
          path: '/apis/discovery.k8s.io/v1/endpointslices',
          max: o.maxEndpointSlices,
          list: (limit, cont) =>
            discovery.listEndpointSliceForAllNamespaces({ limit, ...(cont ? { _continue: cont } : {}) }, this.requestOptions()),
          parse: parseSlice,
          upsert: (key, rec, old) => this.upsertSlice(key, rec, old),
          remove: (key, rec) => this.removeSlice(key, rec),
          dropped: () => this.stats.endpointSlicesDropped++,
        }),
      );
    }
    this.feeds = feeds;
    this.retryTimer = setInterval(() => this.retryOwners(), o.ownerRetryMs);
    this.retryTimer.unref();
    const synced = Promise.all(feeds.map((f) => f.firstSync)).then(() => true);
    for (const f of feeds) f.start();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), o.syncTimeoutMs);
    });
    const ok = await Promise.race([synced, timedOut]);
    clearTimeout(timer);
    if (!ok && !this.stopped) {
      this.report(
        `kubernetes: not synced after ${o.syncTimeoutMs} ms (${feeds.filter((f) => !f.synced).map((f) => f.spec.name).join(', ')}); ` +
          'spans carry no Kubernetes attributes until the API server answers (retrying)',
      );
    }
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.retryTimer) clearInterval(this.retryTimer);
    this.ownerQueue.length = 0;
    this.abort.abort();
    await Promise.all(this.feeds.map((f) => f.stop()));
  }

  private feed<R>(kc: KubeConfig, spec: FeedSpec<R>): Feed<unknown> {
    return new Feed<R>(this, this.lib!, kc, spec) as unknown as Feed<unknown>;
  }

  /** Per request: a timeout, and abort on stop(). */
  private requestOptions(): ConfigurationOptions {
    const signal = AbortSignal.any([this.abort.signal, AbortSignal.timeout(this.options.requestTimeoutMs)]);
    const { Observable } = this.lib!;
    const mw: ObservableMiddleware = {
      pre: (ctx) => {
        ctx.setSignal(signal);
        return new Observable(Promise.resolve(ctx));
      },
      post: (res) => new Observable(Promise.resolve(res)),
    };
    return { middleware: [mw], middlewareMergeStrategy: 'append' };
  }

  report(message: string, level: keyof K8sLogger = 'warn'): void {
    if (this.stopped) return;
    try {
      this.options.logger[level](message);
    } catch {
      /* a broken logger must not break the informers */
    }
  }

  feedStateChanged(): void {
    const now = this.ready;
    if (this.wasReady && !now) {
      this.stats.notReady++;
      this.report('kubernetes: API server unreachable; serving the last known pods, services and endpoints');
    } else if (!this.wasReady && now && this.stats.notReady > 0) {
      this.report('kubernetes: API server reachable again; metadata is current', 'info');
    }
    this.wasReady = now;
  }

  // ------------------------------------------------------------------------- lookups

  podByUid(uid: string): PodInfo | undefined {
    this.stats.podLookups++;
    this.expireRetained();
    const p = this.pods.get(uid) ?? this.pods.get(this.byMirror.get(uid) ?? '');
    if (!p) this.stats.podMisses++;
    return p;
  }

  podByContainerId(id: string): PodInfo | undefined {
    this.stats.podLookups++;
    this.expireRetained();
    const i = id.indexOf('://');
    const uid = this.byContainer.get(i < 0 ? id : id.slice(i + 3));
    const p = uid === undefined ? undefined : this.pods.get(uid);
    if (!p) this.stats.podMisses++;
    return p;
  }

  podByIp(ip: string): PodInfo | undefined {
    this.stats.podLookups++;
    const uid = this.byPodIp.get(ip);
    const p = uid === undefined ? undefined : this.pods.get(uid);
    if (!p) this.stats.podMisses++;
    return p;
  }

  serviceByIp(ip: string): ServiceInfo | undefined {
    const key = this.byClusterIp.get(ip);
    return key === undefined ? undefined : this.services.get(key);
  }

  endpointByIp(ip: string, port?: number): EndpointInfo | undefined {
    const keys = this.byEndpointIp.get(ip);
    if (!keys || keys.length === 0) return undefined;
    let best: SliceRecord | undefined;
    let bestScore = -1;
    for (const k of keys) {
      const s = this.slices.get(k);
      if (!s) continue;
      const score = port !== undefined && s.ports.includes(port) ? 1 : 0;
      // deterministic: the port's slice first, then the smallest namespace/service
      if (score > bestScore || (score === bestScore && best && `${s.namespace}/${s.service}` < `${best.namespace}/${best.service}`)) {
        best = s;
        bestScore = score;
      }
    }
    if (!best) return undefined;
    const service = this.services.get(`${best.namespace}/${best.service}`) ?? freeze({ namespace: best.namespace, name: best.service, clusterIPs: [], ports: [] });
    const podRef = best.endpoints.get(ip);
    const local = podRef?.uid !== undefined ? this.pods.get(podRef.uid) : this.podByIpQuiet(ip);
    return { service, ...(local ? { pod: local } : {}), ...(podRef ? { podRef } : {}) };
  }

  /** Name a CLIENT span's peer (see k8s-resource.ts describePeer and docs/kubernetes.md). */
  describePeer(ip: string, port?: number): PeerDescription | undefined {
    return describePeer(this, ip, port, { clusterDomain: this.options.clusterDomain });
  }

  private podByIpQuiet(ip: string): PodInfo | undefined {
    const uid = this.byPodIp.get(ip);
    return uid === undefined ? undefined : this.pods.get(uid);
  }

  // ---------------------------------------------------------------------- pod index

  private upsertPod(rec: PodRecord, old: PodRecord | undefined): void {
    const uid = rec.info.uid;
    // same name, new UID (a StatefulSet pod recreated): the old one is a deleted pod
    if (old && old.info.uid !== uid) this.removePod(old);
    else if (old) this.unindexPod(old, false);
    // a pod re-added (relist) is no longer a deleted one
    if (this.retained.delete(uid)) this.stats.podsRetained = this.retained.size;
    this.podRecords.set(uid, rec);
    this.pods.set(uid, this.withOwners(rec));
    for (const c of rec.info.containers) if (c.id) this.byContainer.set(c.id, uid);
    // IPs of host-network pods are the node's; finished pods' IPs are reused
    if (!rec.info.hostNetwork && rec.info.phase !== 'Succeeded' && rec.info.phase !== 'Failed') {
      for (const ip of rec.info.ips) this.byPodIp.set(ip, uid);
    }
    if (rec.info.mirrorUid) this.byMirror.set(rec.info.mirrorUid, uid);
    this.stats.pods = this.podRecords.size;
  }

  /** Drop an old version's keys (only those still pointing at it). */
  private unindexPod(old: PodRecord, everything: boolean): void {
    const uid = old.info.uid;
    for (const ip of old.info.ips) if (this.byPodIp.get(ip) === uid) this.byPodIp.delete(ip);
    for (const c of old.info.containers) if (c.id && this.byContainer.get(c.id) === uid) this.byContainer.delete(c.id);
    if (old.info.mirrorUid && this.byMirror.get(old.info.mirrorUid) === uid) this.byMirror.delete(old.info.mirrorUid);
    if (everything) {
      this.pods.delete(uid);
      this.podRecords.delete(uid);
    }
  }

  private removePod(rec: PodRecord): void {
    const uid = rec.info.uid;
    this.podRecords.delete(uid);
    // its IP may be given to a new pod at once; its UID and container IDs cannot
    for (const ip of rec.info.ips) if (this.byPodIp.get(ip) === uid) this.byPodIp.delete(ip);
    this.stats.pods = this.podRecords.size;
    if (this.options.deletedPodRetentionMs === 0) {
      this.unindexPod(rec, true);
      return;
    }
    this.retained.delete(uid);
    this.retained.set(uid, Date.now() + this.options.deletedPodRetentionMs);
    while (this.retained.size > this.options.maxPods) {
      this.forgetRetained(this.retained.keys().next().value!);
      this.stats.podsRetainedEvicted++;
    }
    this.stats.podsRetained = this.retained.size;
  }

  private expireRetained(): void {
    if (this.retained.size === 0) return;
    const now = Date.now();
    for (const [uid, until] of this.retained) {
      if (until > now) break;
      this.forgetRetained(uid);
    }
    this.stats.podsRetained = this.retained.size;
  }

  private forgetRetained(uid: string): void {
    this.retained.delete(uid);
    if (this.podRecords.has(uid)) return; // back alive
    const info = this.pods.get(uid);
    if (info) this.unindexPod({ info }, true);
  }

  // -------------------------------------------------------------------- remote pods

  remoteWorkload(ref: PodRef): { name: string; kind: string } | undefined {
    const key = `${ref.namespace}/${ref.name}/${ref.uid ?? ''}`;
    const e = this.remotePods.get(key);
    if (e === undefined || Date.now() - e.at > this.options.ownerCacheTtlMs) this.requestRemotePod(key, ref);
    const owner = e?.ref;
    if (owner === undefined) return undefined;
    if (owner.kind !== 'ReplicaSet' && owner.kind !== 'Job') return { name: owner.name, kind: owner.kind };
    const oe = this.ownerCache.get(ownerKey(ref.namespace, owner));
    if (oe === undefined) {
      this.requestOwner(ref.namespace, owner);
      return undefined;
    }
    if (oe.parent !== undefined) return { name: oe.parent, kind: owner.kind === 'ReplicaSet' ? 'Deployment' : 'CronJob' };
    return { name: owner.name, kind: owner.kind };
  }

  private requestRemotePod(key: string, ref: PodRef): void {
    const ikey = `pod/${key}`;
    if (this.stopped || !this.core || this.ownerInflight.has(ikey)) return;
    // a burst of new remote peers must not queue unboundedly: asked again on a later lookup
    if (this.ownerQueue.length >= REMOTE_QUEUE_MAX) {
      this.stats.remotePodQueueFull++;
      return;
    }
    this.ownerInflight.add(ikey);
    this.ownerQueue.push(() => this.lookupRemotePod(key, ikey, ref));
    this.pumpOwners();
  }

  /** GET the pod once; its controller (and for a ReplicaSet/Job, that one's owner) names the workload. */
  private async lookupRemotePod(key: string, ikey: string, ref: PodRef): Promise<void> {
    let entry: { ref?: OwnerRef; at: number } | undefined;
    try {
      this.stats.remotePodLookups++;
      const p = await this.core!.readNamespacedPod({ name: ref.name, namespace: ref.namespace }, this.requestOptions());
      if (this.stopped) return;
      const uid = p.metadata?.uid;
      const owner = ref.uid && uid && uid !== ref.uid ? undefined : controllerRef(p.metadata?.ownerReferences);
      entry = { ...(owner ? { ref: owner } : {}), at: Date.now() };
      if (owner && (owner.kind === 'ReplicaSet' || owner.kind === 'Job')) this.requestOwner(ref.namespace, owner);
    } catch (e) {
      if (this.stopped) return;
      if (errorCode(e) === 404) {
        this.stats.ownerNotFound++;
        entry = { at: Date.now() };
      } else {
        this.stats.ownerLookupErrors++;
        // asked again after ownerRetryMs
        entry = { at: Date.now() - this.options.ownerCacheTtlMs + this.options.ownerRetryMs };
        this.report(`kubernetes: get pod ${ref.namespace}/${ref.name}: ${(e as Error).message ?? String(e)}; retrying in ${this.options.ownerRetryMs} ms`);
      }
    } finally {
      this.ownerInflight.delete(ikey);
    }
    this.remotePods.delete(key);
    while (this.remotePods.size >= this.options.maxOwners) {
      this.remotePods.delete(this.remotePods.keys().next().value!);
      this.stats.ownerEvicted++;
    }
    this.remotePods.set(key, entry);
    this.stats.remotePods = this.remotePods.size;
  }

  // ------------------------------------------------------------------------- owners

  /** The pod's info with its Deployment/CronJob from the owner cache (looked up when missing). */
  private withOwners(rec: PodRecord): PodInfo {
    const ref = rec.ref;
    if (!ref) return rec.info;
    const key = ownerKey(rec.info.namespace, ref);
    const e = this.ownerCache.get(key);
    if (e === undefined) {
      this.requestOwner(rec.info.namespace, ref);
      return rec.info;
    }
    this.stats.ownerCacheHits++;
    // older than the TTL: fetched again in the background, the old answer serves meanwhile
    if (Date.now() - e.at > this.options.ownerCacheTtlMs) this.requestOwner(rec.info.namespace, ref);
    if (e.parent === undefined) return rec.info;
    const field: keyof PodOwners = ref.kind === 'ReplicaSet' ? 'deployment' : 'cronjob';
    return freeze({ ...rec.info, owners: freeze({ ...rec.info.owners, [field]: e.parent }) });
  }

  private ownerPut(key: string, parent: string | undefined): void {
    this.ownerCache.delete(key);
    while (this.ownerCache.size >= this.options.maxOwners) {
      this.ownerCache.delete(this.ownerCache.keys().next().value!);
      this.stats.ownerEvicted++;
    }
    this.ownerCache.set(key, { ...(parent !== undefined ? { parent } : {}), at: Date.now() });
    this.stats.owners = this.ownerCache.size;
  }

  private requestOwner(namespace: string, ref: OwnerRef): void {
    const key = ownerKey(namespace, ref);
    if (this.stopped || this.ownerInflight.has(key)) return;
    this.ownerInflight.add(key);
    this.ownerQueue.push(() => this.lookupOwner(key, namespace, ref));
    this.pumpOwners();
  }

  private pumpOwners(): void {
    while (this.ownerActive < this.options.ownerConcurrency && this.ownerQueue.length > 0) {
      const task = this.ownerQueue.shift()!;
      this.ownerActive++;
      void task().finally(() => {
        this.ownerActive--;
        this.pumpOwners();
      });
    }
  }

  /** GET the ReplicaSet or Job once; its controller is the Deployment or CronJob. */
  private async lookupOwner(key: string, namespace: string, ref: OwnerRef): Promise<void> {
    const parentKind = ref.kind === 'ReplicaSet' ? 'Deployment' : 'CronJob';
    try {
      this.stats.ownerLookups++;
      const owner =
        ref.kind === 'ReplicaSet'
          ? await this.apps!.readNamespacedReplicaSet({ name: ref.name, namespace }, this.requestOptions())
          : await this.batch!.readNamespacedJob({ name: ref.name, namespace }, this.requestOptions());
      if (this.stopped) return;
      const uid = owner.metadata?.uid;
      let parent: string | undefined;
      if (ref.uid && uid && uid !== ref.uid) {
        // a newer object under the same name: the pod's owner is gone
        this.stats.ownerNotFound++;
      } else {
        const p = controllerRef(owner.metadata?.ownerReferences);
        if (p?.kind === parentKind) parent = p.name;
      }
      this.ownerPut(key, parent);
      this.ownerFailed.delete(key);
    } catch (e) {
      if (this.stopped) return;
      if (errorCode(e) === 404) {
        this.stats.ownerNotFound++;
        this.ownerPut(key, undefined);
        this.ownerFailed.delete(key);
      } else {
        this.stats.ownerLookupErrors++;
        this.ownerFailed.set(key, { namespace, ref });
        this.report(`kubernetes: get ${ref.kind} ${namespace}/${ref.name}: ${(e as Error).message ?? String(e)}; retrying in ${this.options.ownerRetryMs} ms`);
        return;
      }
    } finally {
      this.ownerInflight.delete(key);
    }
    // every pod of that owner gets a new info object with the parent in it
    for (const rec of this.podRecords.values()) {
      if (rec.ref && ownerKey(rec.info.namespace, rec.ref) === key) this.pods.set(rec.info.uid, this.withOwners(rec));
    }
  }

  private retryOwners(): void {
    if (this.stopped || this.ownerFailed.size === 0) return;
    for (const [key, { namespace, ref }] of [...this.ownerFailed]) {
      // only owners some live pod still has
      let used = false;
      for (const rec of this.podRecords.values()) {
        if (rec.ref && ownerKey(rec.info.namespace, rec.ref) === key) {
          used = true;
          break;
        }
      }
      if (used) this.requestOwner(namespace, ref);
      else this.ownerFailed.delete(key);
    }
  }

  // -------------------------------------------------------------------- service index

  private upsertService(key: string, svc: ServiceInfo, old: ServiceInfo | undefined): void {
    if (old) for (const ip of old.clusterIPs) if (this.byClusterIp.get(ip) === key) this.byClusterIp.delete(ip);
    this.services.set(key, svc);
    for (const ip of svc.clusterIPs) this.byClusterIp.set(ip, key);
    this.stats.services = this.services.size;
  }

  private removeService(key: string, svc: ServiceInfo): void {
    for (const ip of svc.clusterIPs) if (this.byClusterIp.get(ip) === key) this.byClusterIp.delete(ip);
    this.services.delete(key);
    this.stats.services = this.services.size;
  }

  // ------------------------------------------------------------- endpoint slice index

  private upsertSlice(key: string, rec: SliceRecord, old: SliceRecord | undefined): void {
    if (old) this.unindexSlice(key, old);
    // index addresses within the global bound; the record keeps only what is indexed
    const budget = this.options.maxEndpoints - this.stats.endpoints;
    if (rec.endpoints.size > budget) {
      let i = 0;
      for (const ip of [...rec.endpoints.keys()]) {
        if (i++ < budget) continue;
        rec.endpoints.delete(ip);
        this.stats.endpointsDropped++;
      }
    }
    for (const ip of rec.endpoints.keys()) {
      const keys = this.byEndpointIp.get(ip);
      if (keys) {
        if (!keys.includes(key)) keys.push(key);
      } else this.byEndpointIp.set(ip, [key]);
    }
    this.stats.endpoints += rec.endpoints.size;
    this.slices.set(key, rec);
    this.stats.endpointSlices = this.slices.size;
  }

  private unindexSlice(key: string, rec: SliceRecord): void {
    for (const ip of rec.endpoints.keys()) {
      const keys = this.byEndpointIp.get(ip);
      if (!keys) continue;
      const rest = keys.filter((k) => k !== key);
      if (rest.length === 0) this.byEndpointIp.delete(ip);
      else this.byEndpointIp.set(ip, rest);
    }
    this.stats.endpoints -= rec.endpoints.size;
  }

  private removeSlice(key: string, rec: SliceRecord): void {
    this.unindexSlice(key, rec);
    this.slices.delete(key);
    this.stats.endpointSlices = this.slices.size;
  }
}
