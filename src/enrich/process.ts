/**
 * process.ts — process metadata from /proc turned into one OpenTelemetry Resource per
 * observed process: service.name (the process's own OTEL_SERVICE_NAME, or service.name in
 * its OTEL_RESOURCE_ATTRIBUTES, else its executable name), the rest of its
 * OTEL_RESOURCE_ATTRIBUTES, process.pid, process.executable.name/path, host.name and
 * telemetry.distro.*.
 *
 * Owns a bounded cache keyed by pid (`maxProcesses`, oldest evicted, counted). Entries are
 * re-read after `ttlMs` so a reused pid gets fresh metadata. A process that is already gone
 * (short-lived clients) gets a resource from the event's comm. Resource objects are reused
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
import {
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
}

interface Entry {
  info: ProcessInfo;
  resource: Resource;
  readAt: number;
}

export interface ProcessCacheStats {
  lookups: number;
  procReads: number;
  procMissing: number;
  evicted: number;
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

/** Read selected variables from /proc/<pid>/environ (NUL-separated). */
export function readEnviron(path: string, names: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  let raw: Buffer;
  try {
    raw = readFileSync(path);
  } catch {
    return out;
  }
  for (const entry of raw.toString('utf8').split('\0')) {
    const eq = entry.indexOf('=');
    if (eq <= 0) continue;
    const k = entry.slice(0, eq);
    if (names.includes(k)) out[k] = entry.slice(eq + 1);
  }
  return out;
}

const ENV_NAMES = ['OTEL_SERVICE_NAME', 'OTEL_RESOURCE_ATTRIBUTES'] as const;
const MISSING_TTL_MS = 5_000;

export class ProcessCache {
  private readonly entries = new Map<number, Entry>();
  private readonly opts: Required<Omit<ProcessCacheOptions, 'extraAttributes'>> & { extraAttributes: Record<string, string> };
  readonly stats: ProcessCacheStats = { lookups: 0, procReads: 0, procMissing: 0, evicted: 0 };

  constructor(opts: ProcessCacheOptions) {
    this.opts = {
      maxProcesses: opts.maxProcesses,
      ttlMs: opts.ttlMs ?? 60_000,
      extraAttributes: opts.extraAttributes ?? {},
      procRoot: opts.procRoot ?? '/proc',
      hostName: opts.hostName ?? hostname(),
    };
  }

  get size(): number {
    return this.entries.size;
  }

  /** Look up (or read) the process; safe to call for every span. */
  info(p: ProcessRef): ProcessInfo {
    return this.entry(p).info;
  }

  resource(p: ProcessRef): Resource {
    return this.entry(p).resource;
  }

  private entry(p: ProcessRef): Entry {
    this.stats.lookups++;
    const now = Date.now();
    const hit = this.entries.get(p.tgid);
    // a process we could not read is retried sooner: it may have just exec'd
    const ttl = hit?.info.fromProc ? this.opts.ttlMs : MISSING_TTL_MS;
    if (hit && now - hit.readAt < ttl) return hit;
    const info = this.read(p);
    // keep what we knew if the process is gone now
    if (!info.fromProc && hit?.info.fromProc) {
      hit.readAt = now;
      return hit;
    }
    const e: Entry = { info, resource: resourceFromAttributes(this.attributes(info)), readAt: now };
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
      return { pid: p.tgid, executableName: p.comm, resourceAttributes: {}, fromProc: false };
    }
    exePath = exePath.replace(/ \(deleted\)$/, '');
    const env = readEnviron(`${dir}/environ`, ENV_NAMES);
    const attrs = env.OTEL_RESOURCE_ATTRIBUTES ? parseResourceAttributes(env.OTEL_RESOURCE_ATTRIBUTES) : {};
    const serviceName = env.OTEL_SERVICE_NAME?.trim() || attrs[ATTR_SERVICE_NAME] || undefined;
    return {
      pid: p.tgid,
      executableName: basename(exePath),
      executablePath: exePath,
      ...(serviceName ? { serviceName } : {}),
      resourceAttributes: attrs,
      fromProc: true,
    };
  }

  private attributes(info: ProcessInfo): Record<string, AttrValue> {
    const a: Record<string, AttrValue> = {
      ...this.opts.extraAttributes,
      ...info.resourceAttributes,
    };
    a[ATTR_SERVICE_NAME] = info.serviceName ?? info.executableName;
    a[ATTR_PROCESS_PID] = info.pid;
    a[ATTR_PROCESS_EXECUTABLE_NAME] = info.executableName;
    if (info.executablePath) a[ATTR_PROCESS_EXECUTABLE_PATH] = info.executablePath;
    a[ATTR_HOST_NAME] = this.opts.hostName;
    a[ATTR_TELEMETRY_DISTRO_NAME] = AGENT_NAME;
    a[ATTR_TELEMETRY_DISTRO_VERSION] = AGENT_VERSION;
    return a;
  }
}
