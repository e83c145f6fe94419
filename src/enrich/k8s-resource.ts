/**
 * k8s-resource.ts — pure functions from Kubernetes metadata to OpenTelemetry attributes:
 * the Resource attributes of a process running in a pod (k8sResourceAttributes, with the
 * service.* precedence of the semantic conventions), the pod and container of a process
 * from its cgroup (podForContainer), the merge rule of enrichment (mergeAbsent: never
 * overwrite an attribute already set), and the naming of a CLIENT span's peer
 * (describePeer: `sidelight.peer.*`, see docs/kubernetes.md).
 *
 * Owns nothing and holds no state; no I/O. Safe to call for every span, though callers
 * should cache the result per process (one Resource object per workload).
 */
import {
  ATTR_CONTAINER_ID,
  ATTR_K8S_CLUSTER_NAME,
  ATTR_K8S_CONTAINER_NAME,
  ATTR_K8S_CRONJOB_NAME,
  ATTR_K8S_DAEMONSET_NAME,
  ATTR_K8S_DEPLOYMENT_NAME,
  ATTR_K8S_JOB_NAME,
  ATTR_K8S_NAMESPACE_NAME,
  ATTR_K8S_NODE_NAME,
  ATTR_K8S_POD_IP,
  ATTR_K8S_POD_NAME,
  ATTR_K8S_POD_UID,
  ATTR_K8S_REPLICASET_NAME,
  ATTR_K8S_STATEFULSET_NAME,
  ATTR_SERVICE_INSTANCE_ID,
  ATTR_SERVICE_NAME,
  ATTR_SERVICE_NAMESPACE,
  ATTR_SERVICE_VERSION,
} from '@opentelemetry/semantic-conventions';
import type { CgroupContainer } from './container.js';
import type { K8sMetadata, PodInfo, PodOwners } from './k8s.js';

/** Pod annotations that set resource attributes (OpenTelemetry semantic conventions). */
export const ANNOTATION_SERVICE_NAME = 'resource.opentelemetry.io/service.name';
export const ANNOTATION_SERVICE_NAMESPACE = 'resource.opentelemetry.io/service.namespace';
export const ANNOTATION_SERVICE_INSTANCE_ID = 'resource.opentelemetry.io/service.instance.id';
export const ANNOTATION_SERVICE_VERSION = 'resource.opentelemetry.io/service.version';
export const LABEL_APP_INSTANCE = 'app.kubernetes.io/instance';
export const LABEL_APP_NAME = 'app.kubernetes.io/name';
export const LABEL_APP_VERSION = 'app.kubernetes.io/version';

/** Attributes describing the peer of a CLIENT span (Sidelight's own, documented in docs/kubernetes.md). */
export const ATTR_PEER_SERVICE = 'sidelight.peer.service';
export const ATTR_PEER_NAMESPACE = 'sidelight.peer.namespace';
export const ATTR_PEER_WORKLOAD = 'sidelight.peer.workload';
export const ATTR_PEER_WORKLOAD_KIND = 'sidelight.peer.workload.kind';
export const ATTR_PEER_POD = 'sidelight.peer.pod';

export interface K8sResourceOptions {
  /** k8s.cluster.name (configured: Kubernetes has no API for it) */
  clusterName?: string;
  /** container.id from the process's cgroup; else the named container's ID from the pod status */
  containerId?: string;
}

const OWNER_ATTRS: [keyof PodOwners, string][] = [
  ['deployment', ATTR_K8S_DEPLOYMENT_NAME],
  ['replicaset', ATTR_K8S_REPLICASET_NAME],
  ['statefulset', ATTR_K8S_STATEFULSET_NAME],
  ['daemonset', ATTR_K8S_DAEMONSET_NAME],
  ['cronjob', ATTR_K8S_CRONJOB_NAME],
  ['job', ATTR_K8S_JOB_NAME],
];

/** service.name fallbacks after the process env, in order (owner order matches OWNER_ATTRS). */
const OWNER_PRECEDENCE: (keyof PodOwners)[] = ['deployment', 'replicaset', 'statefulset', 'daemonset', 'cronjob', 'job'];

const nonEmpty = (v: string | undefined): string | undefined => {
  const t = v?.trim();
  return t ? t : undefined;
};

/**
 * service.name of a process in this pod, first found: the process's own OTEL_SERVICE_NAME
 * (or service.name in its OTEL_RESOURCE_ATTRIBUTES; passed in by the caller), the pod
 * annotation resource.opentelemetry.io/service.name, label app.kubernetes.io/instance,
 * label app.kubernetes.io/name, the Deployment, ReplicaSet, StatefulSet, DaemonSet, CronJob,
 * Job, the pod, the container name.
 */
export function k8sServiceName(pod: PodInfo, containerName?: string, processServiceName?: string): string {
  const first =
    nonEmpty(processServiceName) ??
    nonEmpty(pod.annotations[ANNOTATION_SERVICE_NAME]) ??
    nonEmpty(pod.labels[LABEL_APP_INSTANCE]) ??
    nonEmpty(pod.labels[LABEL_APP_NAME]);
  if (first) return first;
  for (const k of OWNER_PRECEDENCE) {
    const v = nonEmpty(pod.owners[k]);
    if (v) return v;
  }
  return nonEmpty(pod.name) ?? nonEmpty(containerName) ?? 'unknown_service';
}

/**
 * The Resource attributes of a process running in `pod` (container `containerName` when
 * known): k8s.namespace.name, k8s.pod.name/uid/ip, k8s.container.name, k8s.node.name, the
 * owners' k8s.<kind>.name, k8s.cluster.name, container.id, and service.name,
 * service.namespace (annotation, else the namespace), service.instance.id (annotation, else
 * `<namespace>.<pod>.<container>`; `<namespace>.<pod>` when the container is unknown) and
 * service.version (annotation, else label app.kubernetes.io/version). Pure.
 */
export function k8sResourceAttributes(
  pod: PodInfo,
  containerName?: string,
  processServiceName?: string,
  opts: K8sResourceOptions = {},
): Record<string, string> {
  const a: Record<string, string> = {};
  const container = nonEmpty(containerName);
  a[ATTR_K8S_NAMESPACE_NAME] = pod.namespace;
  a[ATTR_K8S_POD_NAME] = pod.name;
  a[ATTR_K8S_POD_UID] = pod.uid;
  if (pod.ip) a[ATTR_K8S_POD_IP] = pod.ip;
  if (container) a[ATTR_K8S_CONTAINER_NAME] = container;
  if (pod.nodeName) a[ATTR_K8S_NODE_NAME] = pod.nodeName;
  for (const [k, attr] of OWNER_ATTRS) {
    const v = nonEmpty(pod.owners[k]);
    if (v) a[attr] = v;
  }
  const cluster = nonEmpty(opts.clusterName);
  if (cluster) a[ATTR_K8S_CLUSTER_NAME] = cluster;
  const containerId = nonEmpty(opts.containerId) ?? (container ? pod.containers.find((c) => c.name === container)?.id : undefined);
  if (containerId) a[ATTR_CONTAINER_ID] = containerId;

  a[ATTR_SERVICE_NAME] = k8sServiceName(pod, container, processServiceName);
  a[ATTR_SERVICE_NAMESPACE] = nonEmpty(pod.annotations[ANNOTATION_SERVICE_NAMESPACE]) ?? pod.namespace;
  a[ATTR_SERVICE_INSTANCE_ID] =
    nonEmpty(pod.annotations[ANNOTATION_SERVICE_INSTANCE_ID]) ?? [pod.namespace, pod.name, ...(container ? [container] : [])].join('.');
  const version = nonEmpty(pod.annotations[ANNOTATION_SERVICE_VERSION]) ?? nonEmpty(pod.labels[LABEL_APP_VERSION]);
  if (version) a[ATTR_SERVICE_VERSION] = version;
  return a;
}

/** Set each attribute of `add` that `target` does not have yet (enrichment never overwrites). */
export function mergeAbsent<T>(target: Record<string, T>, add: Record<string, T>): Record<string, T> {
  for (const [k, v] of Object.entries(add)) if (!(k in target)) target[k] = v;
  return target;
}

/** A process's pod and container, from its cgroup. */
export interface ProcessPod {
  pod: PodInfo;
  containerName?: string;
  containerId?: string;
}

/**
 * The pod (and container) a process runs in, from what its cgroup says: by container ID
 * first (exact), else by pod UID (a process in the pod but not in a known container).
 */
export function podForContainer(meta: Pick<K8sMetadata, 'podByContainerId' | 'podByUid'>, c: CgroupContainer): ProcessPod | undefined {
  const byId = c.containerId !== undefined ? meta.podByContainerId(c.containerId) : undefined;
  const pod = byId ?? (c.podUid !== undefined ? meta.podByUid(c.podUid) : undefined);
  if (!pod) return undefined;
  const name = c.containerId !== undefined ? pod.containers.find((x) => x.id === c.containerId)?.name : undefined;
  return { pod, ...(name ? { containerName: name } : {}), ...(c.containerId ? { containerId: c.containerId } : {}) };
}

/** Who answers at an address, for a CLIENT span. `serverAddress` is not an attribute: it is a value for server.address. */
export interface PeerDescription {
  [ATTR_PEER_SERVICE]?: string;
  [ATTR_PEER_NAMESPACE]?: string;
  [ATTR_PEER_WORKLOAD]?: string;
  [ATTR_PEER_WORKLOAD_KIND]?: string;
  [ATTR_PEER_POD]?: string;
  /** `<service>.<namespace>.svc.<cluster domain>` when the address is a Service's ClusterIP */
  serverAddress?: string;
}

const WORKLOAD_KINDS: [keyof PodOwners, string][] = [
  ['deployment', 'Deployment'],
  ['statefulset', 'StatefulSet'],
  ['daemonset', 'DaemonSet'],
  ['cronjob', 'CronJob'],
  ['job', 'Job'],
  ['replicaset', 'ReplicaSet'],
];

/** The top-level controller of a pod: Deployment over its ReplicaSet, CronJob over its Job. */
export function workloadOf(pod: PodInfo): { name: string; kind: string } | undefined {
  for (const [k, kind] of WORKLOAD_KINDS) {
    const v = nonEmpty(pod.owners[k]);
    if (v) return { name: v, kind };
  }
  return undefined;
}

/**
 * Name the peer at `ip` (and `port`): a Service's ClusterIP (service, namespace and the
 * service's DNS name; the pod behind it is chosen later by NAT, unseen here); an endpoint
 * address of a Service (service, namespace, pod; workload from the pod on this node, or
 * for a pod elsewhere once meta.remoteWorkload has looked it up);
 * or a pod on this node behind no Service (namespace, pod, workload, and service = the
 * service.name that pod's own spans get, from its metadata). Undefined when unknown.
 */
export function describePeer(
  meta: Pick<K8sMetadata, 'serviceByIp' | 'endpointByIp' | 'podByIp' | 'remoteWorkload'>,
  ip: string,
  port?: number,
  opts: { clusterDomain?: string } = {},
): PeerDescription | undefined {
  const svc = meta.serviceByIp(ip);
  if (svc) {
    return {
      [ATTR_PEER_SERVICE]: svc.name,
      [ATTR_PEER_NAMESPACE]: svc.namespace,
      serverAddress: `${svc.name}.${svc.namespace}.svc.${opts.clusterDomain ?? 'cluster.local'}`,
    };
  }
  const ep = meta.endpointByIp(ip, port);
  const pod = ep?.pod ?? meta.podByIp(ip);
  if (!ep && !pod) return undefined;
  const d: PeerDescription = {};
  if (ep) {
    d[ATTR_PEER_SERVICE] = ep.service.name;
    d[ATTR_PEER_NAMESPACE] = ep.service.namespace;
  } else if (pod) {
    d[ATTR_PEER_SERVICE] = k8sServiceName(pod);
    d[ATTR_PEER_NAMESPACE] = pod.namespace;
  }
  const podName = pod?.name ?? ep?.podRef?.name;
  if (podName) d[ATTR_PEER_POD] = podName;
  const w = pod ? workloadOf(pod) : ep?.podRef ? meta.remoteWorkload?.(ep.podRef) : undefined;
  if (w) {
    d[ATTR_PEER_WORKLOAD] = w.name;
    d[ATTR_PEER_WORKLOAD_KIND] = w.kind;
  }
  return d;
}
