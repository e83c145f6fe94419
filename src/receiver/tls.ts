/**
 * tls.ts — where the TLS uprobes go (bpf/tls.bpf.h), and how TLS ciphertext looks.
 *
 * TlsAttacher finds OpenSSL users: shared libraries named libssl.so* mapped by a process, and
 * executables that export SSL_write in .dynsym (Node links OpenSSL statically and exports
 * it); plus the usual system paths of libssl.so.3 (so a curl or python started later, with
 * no libssl user running now, is covered from its first call) and `tls.paths`. It attaches
 * the SSL_* uprobes once per file, keyed by (device, inode) — the kernel's uprobes are per
 * inode, so one attach covers every process mapping the file, now and later.
 * Processes are looked at: all at start(), each new process on its first connect/accept
 * (scanPid, from the PROC record), and every rescanMs the pids not yet seen.
 *
 * Bounds: at most maxBinaries files probed (more: counted in binariesOverLimit); at most
 * MAX_SCAN_PER_PASS new processes read per periodic pass (the rest wait for the next, counted
 * in scanDeferred); the (dev, inode) → verdict cache and the seen-pid set are bounded (oldest dropped; a dropped
 * entry only means a file or pid is looked at again). A file whose attach fails is not
 * retried (counted). Synchronous /proc reads on the agent's thread: one maps file per new
 * process. stop() detaches everything. Single-threaded.
 */
import { readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { elfDynamicFunctions } from '../enrich/elf.js';
import { TLS_PROGRAMS } from './layout.js';

/** The part of NativeObject this needs (tests may pass the real object). */
export interface UprobeAttach {
  attachUprobe(program: string, binaryPath: string, funcName: string, retprobe: boolean): number;
  detachUprobe(handle: number): boolean;
}

export interface TlsOptions {
  /** files probed at most */
  maxBinaries: number;
  /** look at new processes this often, ms (0: only on their first connect/accept) */
  rescanMs: number;
  /** extra files to probe (absolute paths) */
  paths: string[];
  /** where procfs is mounted (default /proc) */
  procRoot?: string;
  warn: (msg: string) => void;
}

export interface TlsStats {
  /** files with SSL_* probes attached */
  binaries: number;
  /** probes (links) attached */
  probes: number;
  /** files whose attach failed (not retried) */
  attachFailed: number;
  /** OpenSSL files not probed: maxBinaries reached */
  binariesOverLimit: number;
  /** processes whose memory maps were read (the agent's own too: its executable may be a Node
   * that others run; the BPF side never traces the agent itself) */
  processesScanned: number;
  /** new processes left for the next periodic pass (more than MAX_SCAN_PER_PASS were new) */
  scanDeferred: number;
}

/** The SSL_* functions probed, with their entry program; every one also gets the return probe but SSL_free. */
const FUNCTIONS: readonly { fn: string; prog: string; ret: boolean }[] = [
  { fn: 'SSL_read', prog: TLS_PROGRAMS.read, ret: true },
  { fn: 'SSL_write', prog: TLS_PROGRAMS.write, ret: true },
  { fn: 'SSL_read_ex', prog: TLS_PROGRAMS.readEx, ret: true },
  { fn: 'SSL_write_ex', prog: TLS_PROGRAMS.writeEx, ret: true },
  { fn: 'SSL_free', prog: TLS_PROGRAMS.free, ret: false },
];
const FUNCTION_NAMES = FUNCTIONS.map((f) => f.fn);

/** Where distributions keep the system OpenSSL. */
export const SYSTEM_LIBSSL: readonly string[] = [
  '/usr/lib/x86_64-linux-gnu/libssl.so.3',
  '/lib/x86_64-linux-gnu/libssl.so.3',
  '/usr/lib64/libssl.so.3',
  '/usr/lib/libssl.so.3',
  '/lib/libssl.so.3',
];

const MAX_VERDICTS = 65536;
const MAX_SEEN_PIDS = 65536;
/** New processes looked at per periodic pass (each costs one /proc/<pid>/maps read). */
const MAX_SCAN_PER_PASS = 512;

type Verdict = 'probed' | 'not-openssl' | 'failed' | 'over-limit';

export class TlsAttacher {
  private readonly obj: UprobeAttach;
  private readonly opts: TlsOptions;
  private readonly proc: string;
  /** "dev:inode" → verdict (insertion-ordered, bounded) */
  private readonly verdicts = new Map<string, Verdict>();
  /** pids already scanned (insertion-ordered, bounded) */
  private readonly seenPids = new Map<number, true>();
  private readonly handles: number[] = [];
  private timer: NodeJS.Timeout | undefined;
  readonly stats: TlsStats = {
    binaries: 0,
    probes: 0,
    attachFailed: 0,
    binariesOverLimit: 0,
    processesScanned: 0,
    scanDeferred: 0,
  };

  constructor(obj: UprobeAttach, opts: TlsOptions) {
    this.obj = obj;
    this.opts = opts;
    this.proc = opts.procRoot ?? '/proc';
  }

  /** Probe the system libssl, the configured paths and every running process's OpenSSL. */
  start(): void {
    for (const p of [...SYSTEM_LIBSSL, ...this.opts.paths]) this.consider(p, p);
    this.scanAll();
    if (this.opts.rescanMs > 0) {
      this.timer = setInterval(() => this.scanAll(), this.opts.rescanMs);
      this.timer.unref();
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    for (const h of this.handles.splice(0)) this.obj.detachUprobe(h);
  }

  /** Every process not scanned yet. */
  scanAll(): void {
    let pids: string[];
    try {
      pids = readdirSync(this.proc).filter((d) => /^\d+$/.test(d));
    } catch (e) {
      this.opts.warn(`tls: cannot list ${this.proc}: ${(e as Error).message}`);
      return;
    }
    let budget = MAX_SCAN_PER_PASS;
    for (const p of pids) {
      const pid = Number(p);
      if (this.seenPids.has(pid)) continue;
      if (budget-- <= 0) {
        this.stats.scanDeferred++;
        continue;
      }
      this.scanPid(pid);
    }
  }

  /** Read one process's memory map and probe the OpenSSL files it maps. */
  scanPid(pid: number): void {
    this.seenPids.delete(pid);
    if (this.seenPids.size >= MAX_SEEN_PIDS) {
      const oldest = this.seenPids.keys().next();
      if (!oldest.done) this.seenPids.delete(oldest.value);
    }
    this.seenPids.set(pid, true);
    let maps: string;
    let exe: string | undefined;
    try {
      maps = readFileSync(`${this.proc}/${pid}/maps`, 'latin1');
    } catch {
      return; // gone, or a kernel thread
    }
    try {
      exe = readlinkSync(`${this.proc}/${pid}/exe`);
    } catch {
      exe = undefined;
    }
    this.stats.processesScanned++;
    const done = new Set<string>();
    for (const line of maps.split('\n')) {
      // address perms offset dev inode path
      const m = /^\S+ \S+ \S+ (\S+) (\d+)\s+(\/.*)$/.exec(line);
      if (!m || m[2] === '0') continue;
      const path = m[3]!;
      const isLib = /\/libssl\.so[.\d]*$/.test(path);
      if (!isLib && path !== exe) continue;
      const key = `${m[1]}:${m[2]}`;
      if (done.has(key)) continue;
      done.add(key);
      if (this.verdicts.has(key)) continue;
      // through the process's root: right for processes in containers too
      this.consider(`${this.proc}/${pid}/root${path}`, path, key);
    }
  }

  /** Probe one file if it exports the SSL_* functions; `key` is its "dev:inode" if known. */
  private consider(path: string, display: string, knownKey?: string): void {
    let key = knownKey;
    if (key === undefined) {
      try {
        const st = statSync(path);
        key = `stat:${st.dev}:${st.ino}`;
      } catch {
        return; // not on this system
      }
    }
    if (this.verdicts.has(key)) return;
    // the same file seen by path (stat) and through maps (dev:inode) must not be probed twice
    let statKey: string | undefined;
    if (knownKey !== undefined) {
      try {
        const st = statSync(path);
        statKey = `stat:${st.dev}:${st.ino}`;
        const v = this.verdicts.get(statKey);
        if (v !== undefined) {
          this.remember(key, v);
          return;
        }
      } catch {
        return;
      }
    }
    const fns = elfDynamicFunctions(path, FUNCTION_NAMES);
    let verdict: Verdict;
    if (!fns || !fns.has('SSL_write') || !fns.has('SSL_read')) verdict = 'not-openssl';
    else if (this.stats.binaries >= this.opts.maxBinaries) {
      verdict = 'over-limit';
      this.stats.binariesOverLimit++;
    } else verdict = this.attach(path, display, fns) ? 'probed' : 'failed';
    this.remember(key, verdict);
    if (statKey !== undefined) this.remember(statKey, verdict);
  }

  private remember(key: string, v: Verdict): void {
    if (this.verdicts.size >= MAX_VERDICTS) {
      const oldest = this.verdicts.keys().next();
      if (!oldest.done) this.verdicts.delete(oldest.value);
    }
    this.verdicts.set(key, v);
  }

  private attach(path: string, display: string, fns: Set<string>): boolean {
    const mine: number[] = [];
    try {
      for (const f of FUNCTIONS) {
        if (!fns.has(f.fn)) continue;
        mine.push(this.obj.attachUprobe(f.prog, path, f.fn, false));
        if (f.ret) mine.push(this.obj.attachUprobe(TLS_PROGRAMS.ret, path, f.fn, true));
      }
    } catch (e) {
      for (const h of mine) this.obj.detachUprobe(h);
      this.stats.attachFailed++;
      this.opts.warn(`tls: cannot probe ${display}: ${(e as Error).message}`);
      return false;
    }
    this.handles.push(...mine);
    this.stats.binaries++;
    this.stats.probes += mine.length;
    return true;
  }
}

/**
 * Do these bytes start a TLS record (RFC 8446 §5.1): content type change_cipher_spec (20),
 * alert (21), handshake (22) or application_data (23), then legacy version 3.0..3.4?
 * A handshake record (22) is how every TLS connection starts. Shorter input is judged on
 * what there is (nginx peeks at one byte to tell TLS from plain HTTP): no HTTP/1 or
 * HTTP/2 message starts with a byte below 0x20.
 */
export function looksLikeTlsRecord(b: Uint8Array): boolean {
  if (b.length === 0 || b[0]! < 20 || b[0]! > 23) return false;
  if (b.length >= 2 && b[1] !== 3) return false;
  return b.length < 3 || b[2]! <= 4;
}
