/**
 * senders.ts — who sent a request, and how much they may send. A sender is identified by its
 * connection: when the peer address is this node's (loopback or a local interface), the
 * process owning the peer socket is found through /proc/net/tcp{,6} (socket inode) and
 * /proc/<pid>/fd, and its resource comes from the same ProcessCache as the eBPF spans'; a
 * peer on a pod IP is that pod (Kubernetes metadata). The workload attributes that
 * identity gives are added to received resources, never over the sender's own.
 *
 * Owns three bounded tables, each with a counter for what it evicts: connection → pid
 * (`maxConnections`, negative answers cached too), per-sender token buckets (`maxSenders`),
 * and the pids that export SDK hop spans (for de-duplication; entries expire after
 * `sdkSenderTtlMs`). Synchronous /proc reads on the first request of a connection; main thread.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import type { Resource } from '@opentelemetry/resources';
import type { K8sMetadata, PodInfo } from '../enrich/k8s.js';
import { k8sResourceAttributes } from '../enrich/k8s-resource.js';
import type { ProcessRef } from '../receiver/span.js';

export type Attrs = Record<string, string | number | boolean>;

export interface Sender {
  /** token-bucket key: `pid:<n>` for a local process, else the peer address */
  key: string;
  pid?: number;
  /** workload attributes to add where absent */
  attributes: Attrs;
}

export interface SenderOptions {
  maxConnections: number;
  maxSenders: number;
  /** per-sender bytes per second; 0: unlimited */
  senderBytesPerSecond: number;
  /** all senders together, bytes per second; 0: unlimited */
  totalBytesPerSecond: number;
  sdkSenderTtlMs?: number;
  procRoot?: string;
}

export interface SenderStats {
  connectionsResolved: number;
  connectionsUnresolved: number;
  connectionsEvicted: number;
  procScans: number;
  sendersEvicted: number;
  throttledSender: number;
  throttledTotal: number;
  sdkSenders: number;
  sdkSendersEvicted: number;
}

/** Resource keys Sidelight copies onto received resources: the workload identity it puts on eBPF spans. */
const IDENTITY = /^(k8s\.|container\.|service\.|process\.pid$|process\.executable\.|host\.name$)/;

/** 127.0.0.1, ::ffff:10.0.0.1 → 10.0.0.1, ::1 */
export function normalizeIp(ip: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return m ? m[1]! : ip.toLowerCase();
}

/** "0100007F:1F90" (v4) or 32-hex (v6) /proc/net/tcp address → [ip, port]. */
export function parseProcAddress(field: string): [string, number] | undefined {
  const [hex, portHex] = field.split(':');
  if (!hex || !portHex) return undefined;
  const port = parseInt(portHex, 16);
  const bytes: number[] = [];
  for (let w = 0; w < hex.length; w += 8) {
    const word = hex.slice(w, w + 8);
    for (let b = 6; b >= 0; b -= 2) bytes.push(parseInt(word.slice(b, b + 2), 16));
  }
  if (bytes.length === 4) return [bytes.join('.'), port];
  if (bytes.length !== 16) return undefined;
  if (bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 255 && bytes[11] === 255) return [bytes.slice(12).join('.'), port];
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  return [normalizeV6(groups.join(':')), port];
}

function normalizeV6(s: string): string {
  // canonical compression of the longest zero run, as Node prints peer addresses
  const parts = s.split(':').map((p) => p.replace(/^0+(?=.)/, ''));
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < parts.length; ) {
    if (parts[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < parts.length && parts[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return parts.join(':');
  return `${parts.slice(0, best).join(':')}::${parts.slice(best + bestLen).join(':')}`;
}

function isLocalAddress(ip: string): boolean {
  if (ip.startsWith('127.') || ip === '::1') return true;
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) if (normalizeIp(a.address) === ip) return true;
  return false;
}

interface Bucket {
  tokens: number;
  at: number;
}

export class Senders {
  private readonly opts: SenderOptions;
  private readonly procRoot: string;
  private readonly processes: { resource(p: ProcessRef): Resource } | undefined;
  private k8s: Pick<K8sMetadata, 'podByIp' | 'podByUid'> | undefined;
  private clusterName: string | undefined;
  private readonly conns = new Map<string, number | null>();
  private readonly buckets = new Map<string, Bucket>();
  private total: Bucket = { tokens: 0, at: 0 };
  private readonly sdk = new Map<number, number>();
  readonly stats: SenderStats = {
    connectionsResolved: 0,
    connectionsUnresolved: 0,
    connectionsEvicted: 0,
    procScans: 0,
    sendersEvicted: 0,
    throttledSender: 0,
    throttledTotal: 0,
    sdkSenders: 0,
    sdkSendersEvicted: 0,
  };

  constructor(opts: SenderOptions, processes?: { resource(p: ProcessRef): Resource }) {
    this.opts = opts;
    this.procRoot = opts.procRoot ?? '/proc';
    this.processes = processes;
    this.total.tokens = opts.totalBytesPerSecond;
  }

  setKubernetes(k8s: Pick<K8sMetadata, 'podByIp' | 'podByUid'> | undefined, clusterName?: string): void {
    this.k8s = k8s;
    this.clusterName = clusterName;
  }

  /** The sender of a request on the connection peer → our port. */
  identify(peerAddress: string, peerPort: number, localPort: number): Sender {
    const ip = normalizeIp(peerAddress);
    const pid = isLocalAddress(ip) ? this.pidOf(ip, peerPort, localPort) : undefined;
    if (pid !== undefined && this.processes) {
      const r = this.processes.resource({ tgid: pid, tid: pid, comm: '', cgroupId: 0n });
      const attributes: Attrs = {};
      for (const [k, v] of Object.entries(r.attributes)) if (IDENTITY.test(k) && (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean')) attributes[k] = v;
      return { key: `pid:${pid}`, pid, attributes };
    }
    const pod = this.k8s?.podByIp(ip);
    return { key: ip, ...(pid !== undefined ? { pid } : {}), attributes: pod ? this.podAttributes(pod) : {} };
  }

  /** Attributes for a resource that names its pod itself (k8s.pod.uid, else k8s.pod.ip). */
  podByResource(uid: string | undefined, ip: string | undefined): Attrs {
    if (!this.k8s) return {};
    const pod = (uid ? this.k8s.podByUid(uid) : undefined) ?? (ip ? this.k8s.podByIp(ip) : undefined);
    return pod ? this.podAttributes(pod) : {};
  }

  private podAttributes(pod: PodInfo): Attrs {
    const container = pod.containers.length === 1 ? pod.containers[0]!.name : undefined;
    return k8sResourceAttributes(pod, container, undefined, this.clusterName ? { clusterName: this.clusterName } : {});
  }

  /** pid owning the TCP socket ip:port connected to our localPort; cached per connection. */
  private pidOf(ip: string, port: number, localPort: number): number | undefined {
    const key = `${ip}:${port}:${localPort}`;
    const hit = this.conns.get(key);
    if (hit !== undefined) return hit ?? undefined;
    const inode = this.inodeOf(ip, port, localPort);
    const pid = inode !== undefined ? this.pidOfInode(inode) : undefined;
    if (pid !== undefined) this.stats.connectionsResolved++;
    else this.stats.connectionsUnresolved++;
    if (this.conns.size >= this.opts.maxConnections) {
      const oldest = this.conns.keys().next();
      if (!oldest.done) {
        this.conns.delete(oldest.value);
        this.stats.connectionsEvicted++;
      }
    }
    this.conns.set(key, pid ?? null);
    return pid;
  }

  private inodeOf(ip: string, port: number, localPort: number): string | undefined {
    for (const f of ['net/tcp', 'net/tcp6']) {
      let text: string;
      try {
        text = readFileSync(`${this.procRoot}/${f}`, 'utf8');
      } catch {
        continue;
      }
      for (const line of text.split('\n').slice(1)) {
        const cols = line.trim().split(/\s+/);
        if (cols.length < 10) continue;
        const local = parseProcAddress(cols[1]!);
        const remote = parseProcAddress(cols[2]!);
        if (!local || !remote || local[1] !== port || remote[1] !== localPort || local[0] !== ip) continue;
        if (cols[9] !== '0') return cols[9];
      }
    }
    return undefined;
  }

  private pidOfInode(inode: string): number | undefined {
    this.stats.procScans++;
    const want = `socket:[${inode}]`;
    let pids: string[];
    try {
      pids = readdirSync(this.procRoot).filter((d) => /^\d+$/.test(d));
    } catch {
      return undefined;
    }
    for (const pid of pids) {
      if (Number(pid) === process.pid) continue;
      let fds: string[];
      try {
        fds = readdirSync(`${this.procRoot}/${pid}/fd`);
      } catch {
        continue;
      }
      for (const fd of fds) {
        try {
          if (readlinkSync(`${this.procRoot}/${pid}/fd/${fd}`) === want) return Number(pid);
        } catch {
          /* closed meanwhile */
        }
      }
    }
    return undefined;
  }

  /**
   * Takes `bytes` from the sender's and the total bucket. Returns 0 when allowed, else the ms
   * to wait (the caller answers ResourceExhausted / 429 with that as the retry delay).
   */
  admit(key: string, bytes: number, now = Date.now()): number {
    const per = this.opts.senderBytesPerSecond;
    const tot = this.opts.totalBytesPerSecond;
    let b: Bucket | undefined;
    if (per > 0) {
      b = this.buckets.get(key);
      if (!b) {
        if (this.buckets.size >= this.opts.maxSenders) {
          const oldest = this.buckets.keys().next();
          if (!oldest.done) {
            this.buckets.delete(oldest.value);
            this.stats.sendersEvicted++;
          }
        }
        b = { tokens: per, at: now };
        this.buckets.set(key, b);
      }
      refill(b, per, now);
      if (b.tokens < Math.min(bytes, per)) {
        this.stats.throttledSender++;
        return Math.ceil(((Math.min(bytes, per) - b.tokens) / per) * 1000);
      }
    }
    if (tot > 0) {
      refill(this.total, tot, now);
      if (this.total.tokens < Math.min(bytes, tot)) {
        this.stats.throttledTotal++;
        return Math.ceil(((Math.min(bytes, tot) - this.total.tokens) / tot) * 1000);
      }
      this.total.tokens -= bytes;
    }
    if (b) b.tokens -= bytes;
    return 0;
  }

  /** A process exported SDK SERVER/CLIENT spans: its eBPF duplicates are suppressed from now on. */
  noteSdkSender(pid: number, now = Date.now()): void {
    if (!this.sdk.has(pid) && this.sdk.size >= this.opts.maxSenders) {
      const oldest = this.sdk.keys().next();
      if (!oldest.done) {
        this.sdk.delete(oldest.value);
        this.stats.sdkSendersEvicted++;
      }
    }
    this.sdk.delete(pid);
    this.sdk.set(pid, now);
    this.stats.sdkSenders = this.sdk.size;
  }

  isSdkSender(pid: number, now = Date.now()): boolean {
    const at = this.sdk.get(pid);
    if (at === undefined) return false;
    if (now - at > (this.opts.sdkSenderTtlMs ?? 10 * 60_000)) {
      this.sdk.delete(pid);
      this.stats.sdkSenders = this.sdk.size;
      return false;
    }
    return true;
  }
}

function refill(b: Bucket, rate: number, now: number): void {
  b.tokens = Math.min(rate, b.tokens + ((now - b.at) / 1000) * rate);
  b.at = now;
}
