/**
 * container.ts — which container (and which Kubernetes pod) a process runs in, read from
 * /proc/<pid>/cgroup.
 *
 * parseCgroup() is a pure function over the file's text: cgroup v1 (`N:controllers:path`,
 * one line per hierarchy) and v2 (`0::path`) lines, systemd and cgroupfs drivers, for
 * containerd (`cri-containerd-<id>.scope`, `/kubepods/<qos>/pod<uid>/<id>`), CRI-O
 * (`crio-<id>.scope`, `crio-<id>`), Docker (`docker-<id>.scope`, `/docker/<id>`), Podman
 * (`libpod-<id>.scope`, `libpod-<id>`) and nerdctl (`nerdctl-<id>.scope`). Monitor scopes
 * (`crio-conmon-<id>`, `libpod-conmon-<id>`) are not containers. Pod UIDs are taken from
 * `pod<uid>` path segments; the systemd driver writes them with underscores
 * (`kubepods-burstable-pod1234_5678...slice`), returned here with dashes, as the API has
 * them. Static pods' cgroups carry the kubelet's 32-hex config hash instead of a UUID; it is
 * returned as is (it equals the mirror pod's `kubernetes.io/config.mirror` annotation).
 *
 * When nested (kind, docker-in-docker), the innermost container wins. A bare 64-hex id under
 * `/kubepods` is reported as containerd: since dockershim's removal that layout is
 * containerd's (or cri-dockerd's) cgroupfs driver; the pod's `containerID` prefix from the
 * API (`containerd://`, `cri-o://`, `docker://`) is the authoritative runtime.
 *
 * Owns nothing; holds no state. Input is bounded (first 64 KiB, 256 lines) and nothing here
 * throws on junk: unrecognised text yields `{}`. readContainer() does one synchronous,
 * bounded read of /proc/<pid>/cgroup (main thread, like process.ts).
 */
import { closeSync, openSync, readSync } from 'node:fs';

/** The container runtime a cgroup path names. */
export type ContainerRuntime = 'containerd' | 'cri-o' | 'docker' | 'podman' | 'unknown';

/** What a process's cgroup says about where it runs. Every field is absent when unknown. */
export interface CgroupContainer {
  /** 64 lowercase hex digits, no runtime prefix (as in the pod's `containerID` after `://`). */
  containerId?: string;
  /** Kubernetes pod UID with dashes (or a static pod's 32-hex config hash). */
  podUid?: string;
  /** Set when containerId is. */
  runtime?: ContainerRuntime;
}

/** Largest input examined, in characters (a real file is a few hundred bytes to ~2 KiB). */
export const MAX_CGROUP_BYTES = 64 * 1024;
/** Most lines examined (cgroup v1 has one per hierarchy: about 13). */
export const MAX_CGROUP_LINES = 256;

const ID = '[0-9a-f]{64}';
/** `<prefix>-<id>` or `<prefix>-<id>.scope` (systemd driver, and CRI-O/podman cgroupfs). */
const PREFIXED_ID_RE = new RegExp(`^(cri-containerd|crio|docker|libpod|nerdctl)-(${ID})(?:\\.scope)?$`);
const BARE_ID_RE = new RegExp(`^${ID}$`);
/** A UUID with dashes (cgroupfs) or underscores (systemd), or a static pod's 32-hex hash. */
const UID = '[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32}';
/** cgroupfs: `pod<uid>`; systemd: `kubepods[-<qos>]-pod<uid>.slice` (kind: `kubelet-kubepods-...`). */
const POD_CGROUPFS_RE = new RegExp(`^pod(${UID})$`);
const POD_SYSTEMD_RE = new RegExp(`^(?:[a-z0-9]+-)*kubepods(?:-[a-z]+)*-pod(${UID})\\.slice$`);

const PREFIX_RUNTIME: Record<string, ContainerRuntime> = {
  'cri-containerd': 'containerd',
  crio: 'cri-o',
  docker: 'docker',
  libpod: 'podman',
  nerdctl: 'containerd',
};

interface LineResult {
  containerId?: string;
  runtime?: ContainerRuntime;
  podUid?: string;
}

function podUidOf(segment: string): string | undefined {
  const m = POD_CGROUPFS_RE.exec(segment) ?? POD_SYSTEMD_RE.exec(segment);
  return m?.[1]?.replaceAll('_', '-');
}

/**
 * One cgroup path → container id/runtime (innermost) and pod UID. Segments are split on
 * `/` and then on `:` (containerd's systemd driver on cgroup v1 can write
 * `kubepods-...-pod<uid>.slice:cri-containerd:<id>` as one segment).
 */
function parsePath(path: string): LineResult {
  const segments: string[] = [];
  for (const s of path.split('/')) {
    if (s === '') continue;
    if (s.includes(':')) segments.push(...s.split(':'));
    else segments.push(s);
  }
  const out: LineResult = {};
  // the pod is found anywhere on the path; the container is the innermost match
  for (let i = segments.length - 1; i >= 0; i--) {
    const seg = segments[i]!;
    if (out.podUid === undefined) {
      const uid = podUidOf(seg);
      if (uid !== undefined) out.podUid = uid;
    }
    if (out.containerId !== undefined) continue;
    const p = PREFIXED_ID_RE.exec(seg);
    if (p) {
      out.containerId = p[2]!;
      out.runtime = PREFIX_RUNTIME[p[1]!] ?? 'unknown';
      continue;
    }
    if (BARE_ID_RE.test(seg)) {
      const prev = segments[i - 1];
      out.containerId = seg;
      // `.../cri-containerd:<id>` (colon form) and `/docker/<id>` name the runtime
      if (prev !== undefined && Object.hasOwn(PREFIX_RUNTIME, prev)) out.runtime = PREFIX_RUNTIME[prev]!;
      else out.runtime = segments.slice(0, i).some((s) => s === 'kubepods' || podUidOf(s) !== undefined) ? 'containerd' : 'unknown';
    }
  }
  return out;
}

/**
 * Parse the text of /proc/<pid>/cgroup. The cgroup v2 line (`0::`) is preferred when it
 * names a container; otherwise the first v1 line that does. A pod UID without a container
 * (a process in the pod's cgroup but not in a container, e.g. conmon) is still returned.
 */
export function parseCgroup(text: string): CgroupContainer {
  try {
    if (typeof text !== 'string') return {};
    const lines = text.slice(0, MAX_CGROUP_BYTES).split('\n', MAX_CGROUP_LINES);
    let best: LineResult | undefined;
    let bestIsV2 = false;
    let podOnly: string | undefined;
    for (const raw of lines) {
      const line = raw.trim();
      // `hierarchy-id:controllers:path`; the path may itself contain ':'
      const c1 = line.indexOf(':');
      if (c1 <= 0) continue;
      const c2 = line.indexOf(':', c1 + 1);
      if (c2 < 0) continue;
      const hierarchy = line.slice(0, c1);
      if (!/^\d+$/.test(hierarchy)) continue;
      const path = line.slice(c2 + 1);
      if (!path.startsWith('/')) continue;
      const r = parsePath(path);
      const isV2 = hierarchy === '0' && c2 === c1 + 1;
      if (r.containerId !== undefined && (best === undefined || (isV2 && !bestIsV2))) {
        best = r;
        bestIsV2 = isV2;
      }
      if (podOnly === undefined && r.podUid !== undefined) podOnly = r.podUid;
    }
    const out: CgroupContainer = {};
    if (best?.containerId !== undefined) {
      out.containerId = best.containerId;
      out.runtime = best.runtime ?? 'unknown';
    }
    const podUid = best?.podUid ?? podOnly;
    if (podUid !== undefined) out.podUid = podUid;
    return out;
  } catch {
    return {};
  }
}

/** Read and parse /proc/<pid>/cgroup; `{}` when it cannot be read (process gone, no access). */
export function readContainer(pid: number, procRoot = '/proc'): CgroupContainer {
  if (!Number.isInteger(pid) || pid <= 0) return {};
  let fd: number | undefined;
  try {
    fd = openSync(`${procRoot}/${pid}/cgroup`, 'r');
    const buf = Buffer.allocUnsafe(MAX_CGROUP_BYTES);
    let n = 0;
    // procfs files are generated per read: loop until EOF or the bound
    for (;;) {
      const got = readSync(fd, buf, n, buf.length - n, null);
      if (got <= 0) break;
      n += got;
      if (n >= buf.length) break;
    }
    return parseCgroup(buf.toString('utf8', 0, n));
  } catch {
    return {};
  } finally {
    if (fd !== undefined) {
      try {
        closeSync(fd);
      } catch {
        /* nothing to do */
      }
    }
  }
}
