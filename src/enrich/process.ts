/**
 * process.ts — process metadata from /proc turned into one OpenTelemetry Resource per
 * observed process: service.name (the process's own OTEL_SERVICE_NAME, or service.name in
 * its OTEL_RESOURCE_ATTRIBUTES, else its executable name), the rest of its
 * OTEL_RESOURCE_ATTRIBUTES, process.pid, process.executable.name/path, host.name and
 * telemetry.distro.*.
 *
 * Owns a bounded cache keyed by pid (`maxProcesses`, oldest evicted, counted). Entries are
 * re-read after `ttlMs` so a reused pid gets fresh metadata. A process that is already gone
 * (short-lived clients) gets a resource from the kernel's process record or the event's comm,
 * and its container/pod from the event's cgroup id (cgroups.ts). Resource objects are reused
 * so the OTLP transformer groups spans per process. Synchronous /proc reads, main thread.
 */
import { readFileSync, readlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import { basename } from 'node:path';
import { resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import {
  ATTR_SERVICE_NAME,
  ATTR_TELEMETRY_DISTRO_NAME,
  ATTR_TELEMETRY_DISTRO_VERSION,
} from '@opentelemetry/semantic-conventions';
import type { AttrValue, ProcessRef } from '../receiver/span.js';
import type { CgroupIndex } from './cgroups.js';
import { readContainer, type CgroupContainer } from './container.js';
import { isGoBinary } from './elf.js';
import type { K8sMetadata, PodInfo } from './k8s.js';
import { k8sResourceAttributes, mergeAbsent, podForContainer, type ProcessPod } from './k8s-resource.js';
import {
  ATTR_CONTAINER_ID,
  ATTR_HOST_NAME,
  ATTR_PROCESS_EXECUTABLE_NAME,
  ATTR_PROCESS_EXECUTABLE_PATH,
  ATTR_PROCESS_PID,
} from '../semconv.js';
import { AGENT_NAME, AGENT_VERSION } from '../version.js';

export interface ProcessCacheOptions {
  maxProcesses: number;
  ttlMs?: number;
  /** resource attributes for every process (config + the agent's OTEL_RESOURCE_ATTRIBUTES); the process's own win */
  extraAttributes?: Record<string, string>;
  procRoot?: string;
  hostName?: string;
  /** pod lookups (set once the agent has started its Kubernetes metadata; see setKubernetes) */
  k8s?: Pick<K8sMetadata, 'podByContainerId' | 'podByUid'>;
  /** k8s.cluster.name */
  clusterName?: string;
  /** container/pod by the event's cgroup v2 id, for processes gone from /proc (cgroups.ts) */
  cgroups?: Pick<CgroupIndex, 'container'>;
}

export interface ProcessInfo {
  pid: number;
  executableName: string;
  executablePath?: string;
  /** from the process environment */
  serviceName?: string;
  resourceAttributes: Record<string, string>;
  /** false when /proc had nothing (process gone or not visible) */
  fromProc: boolean;
  /** a Go binary (goroutines move between threads: no thread-based parenting) */
  go?: boolean;
  /** from /proc/<pid>/cgroup */
  container?: CgroupContainer;
}

interface Entry {
  info: ProcessInfo;
  resource: Resource;
  readAt: number;
  /** the pod the resource was built from: a different object now means rebuild */
  pod: PodInfo | undefined;
}

export interface ProcessCacheStats {
  lookups: number;
  procReads: number;
  /** processes not readable in /proc (gone, or not visible) */
  procMissing: number;
  /** of those, described from the kernel's process record instead */
  fromKernel: number;
  evicted: number;
}

/** What the kernel told us about a process (SL_EV_PROC). */
export interface ProcessHint {
  executableName: string;
  env: Record<string, string>;
}

/** Parse a NUL-separated environment block, keeping only `names`. */
export function parseEnvBlock(block: Uint8Array | Buffer, names: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of Buffer.from(block.buffer, block.byteOffset, block.byteLength).toString('utf8').split('\0')) {
    const eq = entry.indexOf('=');
    if (eq <= 0) continue;
    const k = entry.slice(0, eq);
    if (names.includes(k)) out[k] = entry.slice(eq + 1);
  }
  return out;
}

/** Is this thread one of Node's libuv pool workers (by its name in /proc)? */
export function isLibuvWorker(tgid: number, tid: number, procRoot = '/proc'): boolean {
  try {
    return readFileSync(`${procRoot}/${tgid}/task/${tid}/comm`, 'utf8').startsWith('libuv-worker');
  } catch {
    return false;
  }
}

/** Parse `k=v,k2=v2` (W3C baggage-like, percent-encoded values) as OTEL_RESOURCE_ATTRIBUTES. */
export function parseResourceAttributes(value: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of value.split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) continue;
    const k = part.slice(0, eq).trim();
    const raw = part.slice(eq + 1).trim();
    let v = raw;
    try {
      v = decodeURIComponent(raw);
    } catch {
      /* keep the raw value */
    }
    if (k) out[k] = v;
  }
  return out;
}

/** Read selected variables from /proc/<pid>/environ (NUL-separated); undefined when it cannot be read. */
export function readEnviron(path: string, names: readonly string[]): Record<string, string> | undefined {
  try {
    return parseEnvBlock(readFileSync(path), names);
  } catch {
    return undefined;
  }
}

export const ENV_NAMES = ['OTEL_SERVICE_NAME', 'OTEL_RESOURCE_ATTRIBUTES'] as const;
const MISSING_TTL_MS = 5_000;

export class ProcessCache {
  private readonly entries = new Map<number, Entry>();
  private readonly hints = new Map<number, ProcessHint>();
  private readonly opts: Required<Omit<ProcessCacheOptions, 'extraAttributes' | 'k8s' | 'clusterName' | 'cgroups'>> & { extraAttributes: Record<string, string> };
  private readonly cgroups: Pick<CgroupIndex, 'container'> | undefined;
  private k8s: Pick<K8sMetadata, 'podByContainerId' | 'podByUid'> | undefined;
  private clusterName: string | undefined;
  readonly stats: ProcessCacheStats = { lookups: 0, procReads: 0, procMissing: 0, fromKernel: 0, evicted: 0 };

  constructor(opts: ProcessCacheOptions) {
    this.opts = {
      maxProcesses: opts.maxProcesses,
      ttlMs: opts.ttlMs ?? 60_000,
      extraAttributes: opts.extraAttributes ?? {},
      procRoot: opts.procRoot ?? '/proc',
      hostName: opts.hostName ?? hostname(),
    };
    this.k8s = opts.k8s;
    this.clusterName = opts.clusterName;
    this.cgroups = opts.cgroups;
  }

  /** Enrich with Kubernetes metadata from now on (resources are rebuilt as their pods are found). */
  setKubernetes(k8s: Pick<K8sMetadata, 'podByContainerId' | 'podByUid'> | undefined, clusterName?: string): void {
    this.k8s = k8s;
    this.clusterName = clusterName;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Remember the kernel's description of a process (used if /proc has nothing). */
  hint(tgid: number, executableName: string, envBlock: Uint8Array): void {
    this.hints.delete(tgid);
    if (this.hints.size >= this.opts.maxProcesses) {
      const oldest = this.hints.keys().next();
      if (!oldest.done) this.hints.delete(oldest.value);
    }
    this.hints.set(tgid, { executableName, env: parseEnvBlock(envBlock, ENV_NAMES) });
    // a fresh process under a reused pid: forget what we knew of the old one
    this.entries.delete(tgid);
  }

  /** true when thread ids cannot tie work to a request in this process (a Go binary). */
  threadsUntrusted(tgid: number): boolean {
    return this.entry({ tgid, tid: tgid, comm: '', cgroupId: 0n }).info.go === true;
  }

  /** Look up (or read) the process; safe to call for every span. */
  info(p: ProcessRef): ProcessInfo {
    return this.entry(p).info;
  }

  resource(p: ProcessRef): Resource {
    const e = this.entry(p);
    // its pod changed (found after sync, owners resolved, relabelled): same info, new resource
    const c = e.info.container;
    if (this.k8s && (c?.containerId !== undefined || c?.podUid !== undefined)) {
      const where = this.podOf(e.info);
      if (where?.pod !== e.pod) {
        e.pod = where?.pod;
        e.resource = resourceFromAttributes(this.attributes(e.info, where));
      }
    }
    return e.resource;
  }

  private entry(p: ProcessRef): Entry {
    this.stats.lookups++;
    const now = Date.now();
    const hit = this.entries.get(p.tgid);
    // a process we could not read is retried sooner: it may have just exec'd
    const ttl = hit?.info.fromProc ? this.opts.ttlMs : MISSING_TTL_MS;
    if (hit && now - hit.readAt < ttl) {
      // a gone process first seen through a bare lookup (threadsUntrusted: no comm, no
      // cgroup id): fill in what this event knows
      if (!hit.info.fromProc) {
        let changed = false;
        if (hit.info.executableName === '' && p.comm !== '') {
          hit.info.executableName = p.comm;
          changed = true;
        }
        const c = !hit.info.container && p.cgroupId !== 0n ? this.cgroups?.container(p.cgroupId) : undefined;
        if (c) {
          hit.info.container = c;
          changed = true;
        }
        if (changed) {
          const where = this.podOf(hit.info);
          hit.pod = where?.pod;
          hit.resource = resourceFromAttributes(this.attributes(hit.info, where));
        }
      }
      return hit;
    }
    const info = this.read(p);
    // keep what we knew if the process is gone now
    if (!info.fromProc && hit?.info.fromProc) {
      hit.readAt = now;
      return hit;
    }
    const where = this.podOf(info);
    const e: Entry = { info, resource: resourceFromAttributes(this.attributes(info, where)), readAt: now, pod: where?.pod };
    this.entries.delete(p.tgid);
    if (this.entries.size >= this.opts.maxProcesses) {
      const oldest = this.entries.keys().next();
      if (!oldest.done) {
        this.entries.delete(oldest.value);
        this.stats.evicted++;
      }
    }
    this.entries.set(p.tgid, e);
    return e;
  }

  private read(p: ProcessRef): ProcessInfo {
    this.stats.procReads++;
    const dir = `${this.opts.procRoot}/${p.tgid}`;
    let exePath: string | undefined;
    try {
      exePath = readlinkSync(`${dir}/exe`);
    } catch {
      exePath = undefined;
    }
    if (exePath === undefined) {
      this.stats.procMissing++;
      // gone: its cgroup (kept in the event) still names its container and pod
      const c = this.cgroups?.container(p.cgroupId);
      const container = c ? { container: c } : {};
      const hint = this.hints.get(p.tgid);
      if (!hint) return { pid: p.tgid, executableName: p.comm, resourceAttributes: {}, fromProc: false, ...container };
      this.stats.fromKernel++;
      return { ...this.fromEnv(p.tgid, hint.env), executableName: hint.executableName || p.comm, fromProc: false, ...container };
    }
    exePath = exePath.replace(/ \(deleted\)$/, '');
    return {
      // environ needs more privilege than exe (CAP_SYS_PTRACE alone cannot read another
      // user's): then the environment the kernel sent with the process record stands in
      ...this.fromEnv(p.tgid, readEnviron(`${dir}/environ`, ENV_NAMES) ?? this.hints.get(p.tgid)?.env ?? {}),
      executableName: basename(exePath),
      executablePath: exePath,
      // through /proc/<pid>/exe: works across mount namespaces and for deleted binaries
      go: isGoBinary(`${dir}/exe`),
      container: readContainer(p.tgid, this.opts.procRoot),
    };
  }

  private fromEnv(pid: number, env: Record<string, string>): Omit<ProcessInfo, 'executableName'> {
    const attrs = env.OTEL_RESOURCE_ATTRIBUTES ? parseResourceAttributes(env.OTEL_RESOURCE_ATTRIBUTES) : {};
    const serviceName = env.OTEL_SERVICE_NAME?.trim() || attrs[ATTR_SERVICE_NAME] || undefined;
    return { pid, ...(serviceName ? { serviceName } : {}), resourceAttributes: attrs, fromProc: true };
  }

  /** The process's pod and container (two map lookups: cheap enough for every span). */
  private podOf(info: ProcessInfo): ProcessPod | undefined {
    return this.k8s && info.container ? podForContainer(this.k8s, info.container) : undefined;
  }

  private attributes(info: ProcessInfo, where?: ProcessPod): Record<string, AttrValue> {
    const a: Record<string, AttrValue> = {
      ...this.opts.extraAttributes,
      ...info.resourceAttributes,
    };
    if (where) {
      // k8s.*, container.id, service.* from the pod; what the process or the config set wins
      const k = k8sResourceAttributes(where.pod, where.containerName, info.serviceName, {
        clusterName: this.clusterName ?? this.opts.extraAttributes['k8s.cluster.name'],
        ...(where.containerId ? { containerId: where.containerId } : {}),
      });
      mergeAbsent(a, k);
      a[ATTR_SERVICE_NAME] = k[ATTR_SERVICE_NAME]!;
    } else {
      a[ATTR_SERVICE_NAME] = info.serviceName ?? info.executableName;
      if (info.container?.containerId && !(ATTR_CONTAINER_ID in a)) a[ATTR_CONTAINER_ID] = info.container.containerId;
    }
    a[ATTR_PROCESS_PID] = info.pid;
    a[ATTR_PROCESS_EXECUTABLE_NAME] = info.executableName;
    if (info.executablePath) a[ATTR_PROCESS_EXECUTABLE_PATH] = info.executablePath;
    a[ATTR_HOST_NAME] = this.opts.hostName;
    a[ATTR_TELEMETRY_DISTRO_NAME] = AGENT_NAME;
    a[ATTR_TELEMETRY_DISTRO_VERSION] = AGENT_VERSION;
    return a;
  }
}
