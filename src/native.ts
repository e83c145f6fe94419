/**
 * native.ts — the TypeScript face of the addon native/build/Release/sidelight.node: its
 * typed interface, the loader, and the error type its failures become.
 *
 * Owns one cached module handle (loaded on first loadNative(); a native module cannot be
 * unloaded). The addon does no validation beyond argument types (TypeError): option ranges
 * and policy belong to the callers. Native failures are plain Errors with `errno` (positive)
 * and `step`; wrapNative()/toNativeError() turn them into SidelightNativeError.
 *
 * Threading: every NativeObject method must be called on the JS thread that opened it;
 * onBatch/onError run on that thread too (the addon's poll thread never runs JS).
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from './paths.js';

/** Size and field offsets of one struct of bpf/sidelight.h (padding fields omitted). */
export interface StructLayout {
  size: number;
  offsets: Record<string, number>;
}

/** What the addon's C++ compiler sees in bpf/sidelight.h. */
export interface NativeLayout {
  sl_event: StructLayout;
  sl_conn: StructLayout;
  sl_config: StructLayout;
  sl_tcp_summary: StructLayout;
  sl_pickup: StructLayout;
  /** #defines and enum values: SL_MAX_CAPTURE, SL_COMM_LEN, SL_CNT__MAX, SL_EV_DATA, ... */
  constants: Record<string, number>;
}

export interface AttachResult {
  name: string;
  ok: boolean;
  /** 0 when ok */
  errno: number;
  /** '' when ok; else the errno text, plus libbpf's last log line about it */
  error: string;
}

export interface MapInfo {
  /** enum bpf_map_type, see BpfMapType */
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
}

export interface ProgramStats {
  name: string;
  runTimeNs: bigint;
  runCount: bigint;
  recursionMisses: bigint;
}

export interface NativeObject {
  /** Program names in the object. */
  programs(): string[];
  /**
   * Attach every program by its SEC() (bpf_program__attach) except those named in `skip`,
   * which are neither attached nor reported. Never throws for one program: one result per
   * program tried. Already attached programs report ok again without a second link.
   */
  attach(skip: string[]): AttachResult[];
  /**
   * Attach `program` (a bare SEC("uprobe")/SEC("uretprobe") program) as a uprobe, or a
   * uretprobe when `retprobe`, on symbol `funcName` of the ELF file `binaryPath`, for every
   * process that maps it (pid -1). Returns a handle for detachUprobe(). Throws (step
   * 'attach_uprobe', with errno and libbpf's last log line) when it cannot attach.
   */
  attachUprobe(program: string, binaryPath: string, funcName: string, retprobe: boolean): number;
  /** Destroy the link of one attachUprobe() handle; false if the handle is unknown. close() destroys them all. */
  detachUprobe(handle: number): boolean;
  /**
   * Attach a cgroup program (sockops, ...) to the cgroup v2 directory `cgroupPath` with a
   * bpf_link, destroyed by close(). Throws (step 'attach_cgroup'; EEXIST if already attached).
   */
  attachCgroup(program: string, cgroupPath: string): void;
  /**
   * Attach an sk_msg verdict program to a sockmap/sockhash of this object; detached by
   * close(). Throws (step 'attach_sockmap'; EEXIST if already attached).
   */
  attachSockMap(program: string, map: string): void;
  /**
   * Run the iterator program `program` (a SEC("iter/...") program of this object) once: attach
   * it as an iterator link, create the iterator, read its whole output, close both. Returns at
   * most `maxBytes` of the output as one ArrayBuffer; `truncated` says more was left unread.
   * Blocks the calling thread for the kernel's walk. Throws (step 'iter', with errno) when the
   * program is missing, cannot be attached as an iterator, or the read fails.
   */
  runIter(program: string, maxBytes: number): { data: ArrayBuffer; truncated: boolean };
  /**
   * Start the poll thread on ring buffer map `ringMap`. It waits at most pollTimeoutMs
   * (returning earlier when the kernel signals data or the ring is already non-empty), drains
   * the ring and calls onBatch(batch, length) with batches laid out as repeated
   * [u32 little-endian record length][record bytes], no padding, in the first `length` bytes
   * of `batch`. A batch closes when the ring is drained or it reaches maxBatchBytes (a single
   * larger record is a batch of its own). At most 16 batches wait for the JS thread; beyond
   * that the poll thread blocks and records back up into the kernel ring buffer (whose drops
   * the BPF side counts).
   * reuseBatches (0..64, default 0): up to that many batch buffers (of maxBatchBytes each) are
   * reused. Give each batch back with recycle(batch) once nothing reads it any more: the next
   * batch is then copied straight into it, with no allocation. After recycle() the buffer and
   * every view of it must not be read again (the poll thread overwrites it). A batch not given
   * back is simply not reused. With 0, batch.byteLength === length.
   * A poll-thread failure is reported once through onError (step 'ringbuf') and ends polling.
   * A throw from onBatch/onError becomes a process 'uncaughtException'.
   * While polling, the event loop is kept alive (until stop()/close()); keep a reference to
   * this object: if it is garbage-collected it is closed, and polling stops.
   * Throws (step 'ringbuf') if not a ring buffer map or already started.
   */
  start(
    ringMap: string,
    pollTimeoutMs: number,
    maxBatchBytes: number,
    onBatch: (batch: ArrayBuffer, length: number) => void,
    onError: (err: Error) => void,
    reuseBatches?: number,
  ): void;
  /**
   * Give a batch delivered by onBatch back to be refilled (see start()). Returns false, and
   * does nothing, when it is not one of the reused buffers, is given back already, or polling
   * has stopped.
   */
  recycle(batch: ArrayBuffer): boolean;
  /**
   * Stop and join the poll thread. Batches (or an error) still queued for the JS thread are
   * DROPPED: after stop() returns, onBatch/onError are never called again. Idempotent; may be
   * called from inside onBatch. start() may be called again afterwards.
   */
  stop(): void;
  /**
   * setPaused(true): the poll thread stops draining the ring after the drain in progress
   * (batches already queued are still delivered), so records back up in the kernel ring
   * buffer, whose drops the BPF side counts. setPaused(false) resumes. No-op when stopped.
   */
  setPaused(paused: boolean): void;
  /** Insert or replace (BPF_ANY). For per-CPU maps `value` holds one 8-byte aligned slot per possible CPU. */
  mapUpdate(map: string, key: Uint8Array, value: Uint8Array): void;
  /** false if the key was absent. */
  mapDelete(map: string, key: Uint8Array): boolean;
  /** One value (per-CPU maps: one per possible CPU, views over one buffer); null if absent. */
  mapLookup(map: string, key: Uint8Array): Uint8Array[] | null;
  mapInfo(map: string): MapInfo;
  /** Run stats from bpf_prog_info; zero unless enableStats() (or another process) turned them on. */
  programStats(): ProgramStats[];
  /** bpf_enable_stats(BPF_STATS_RUN_TIME); the fd stays open until close(). */
  enableStats(): { ok: boolean; errno: number };
  /** stop(), destroy links, close the object. Idempotent; after it, other methods throw EBADF. */
  close(): void;
}

export interface NativeBinding {
  layout(): NativeLayout;
  /** "major.minor" of the libbpf the addon runs with. */
  libbpfVersion(): string;
  /**
   * Open the BPF object file, copy `rodata` into the .rodata map's initial value (its size
   * must match exactly: step 'rodata'), set max_entries of the maps named in mapSizes
   * (step 'map_sizes'), then load (step 'load': the message ends with the last ~4 KiB of the
   * libbpf log, e.g. the verifier's, also available as `.log`).
   */
  open(objectPath: string, rodata: Uint8Array | null, mapSizes: Record<string, number>): NativeObject;
}

/** enum bpf_map_type values the agent cares about (MapInfo.type). */
export const BpfMapType = {
  Hash: 1,
  Array: 2,
  PercpuHash: 5,
  PercpuArray: 6,
  LruHash: 9,
  LruPercpuHash: 10,
  Ringbuf: 27,
} as const;

/** Where the addon is expected: <repo root>/native/build/Release/sidelight.node. */
export function nativeAddonPath(): string {
  return join(repoRoot(), 'native', 'build', 'Release', 'sidelight.node');
}

let binding: NativeBinding | undefined;

/** Load (once) and return the addon. Throws a plain Error if it is missing or cannot load. */
export function loadNative(): NativeBinding {
  if (binding) return binding;
  const path = nativeAddonPath();
  if (!existsSync(path)) {
    throw new Error(`native addon not built: run make setup (${path} does not exist)`);
  }
  const require = createRequire(import.meta.url);
  try {
    binding = require(path) as NativeBinding;
  } catch (e) {
    throw new Error(`native addon ${path} failed to load: ${(e as Error).message}`, { cause: e });
  }
  return binding;
}

/** Errno names for the kernel-internal and libbpf codes that os.constants.errno lacks. */
const EXTRA_ERRNO_NAMES: Record<number, string> = {
  512: 'ERESTARTSYS',
  524: 'ENOTSUPP', // kernel-internal "operation is not supported", common from BPF
  4000: 'LIBBPF_ERRNO__LIBELF',
  4001: 'LIBBPF_ERRNO__FORMAT',
  4002: 'LIBBPF_ERRNO__KVERSION',
  4003: 'LIBBPF_ERRNO__ENDIAN',
  4004: 'LIBBPF_ERRNO__INTERNAL',
  4005: 'LIBBPF_ERRNO__RELOC',
  4006: 'LIBBPF_ERRNO__LOAD',
  4007: 'LIBBPF_ERRNO__VERIFY',
  4008: 'LIBBPF_ERRNO__PROG2BIG',
  4009: 'LIBBPF_ERRNO__KVER',
  4010: 'LIBBPF_ERRNO__PROGTYPE',
  4011: 'LIBBPF_ERRNO__WRNGPID',
  4012: 'LIBBPF_ERRNO__INVSEQ',
  4013: 'LIBBPF_ERRNO__NLPARSE',
};
/** Where two names share a number, the one strerror()/libbpf users expect. */
const PREFERRED = new Set(['EAGAIN', 'EOPNOTSUPP', 'EDEADLK']);
let errnoNames: Map<number, string> | undefined;

/** 'EPERM' for 1, 'ENOTSUPP' for 524, 'ERRNO_<n>' when unknown. */
export function errnoName(errno: number): string {
  if (!errnoNames) {
    errnoNames = new Map();
    for (const [name, n] of Object.entries(osConstants.errno)) {
      if (!errnoNames.has(n) || PREFERRED.has(name)) errnoNames.set(n, name);
    }
  }
  return errnoNames.get(errno) ?? EXTRA_ERRNO_NAMES[errno] ?? `ERRNO_${errno}`;
}

/** A failure reported by the addon. */
export class SidelightNativeError extends Error {
  /** positive errno (or a libbpf code, 4000+) */
  readonly errno: number;
  /** what the addon was doing: 'open', 'rodata', 'map_sizes', 'load', 'ringbuf', 'map_update', ... */
  readonly step: string;
  /** errnoName(errno), e.g. 'EPERM' */
  readonly code: string;
  /** tail of the libbpf log, for 'open'/'load' failures */
  readonly log: string | undefined;

  constructor(message: string, errno: number, step: string, options?: { cause?: unknown; log?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'SidelightNativeError';
    this.errno = errno;
    this.step = step;
    this.code = errnoName(errno);
    this.log = options?.log;
  }
}

/** True for an Error thrown (or passed to onError) by the addon. */
export function isNativeFailure(e: unknown): e is Error & { errno: number; step: string; log?: string } {
  if (!(e instanceof Error) || e instanceof SidelightNativeError) return false;
  const f = e as Error & { errno?: unknown; step?: unknown };
  return typeof f.errno === 'number' && typeof f.step === 'string';
}

/** Convert an addon failure to SidelightNativeError; anything else (TypeError, ...) is returned as is. */
export function toNativeError(e: unknown): unknown {
  if (!isNativeFailure(e)) return e;
  const opts: { cause: unknown; log?: string } = { cause: e };
  if (typeof e.log === 'string') opts.log = e.log;
  return new SidelightNativeError(e.message, e.errno, e.step, opts);
}

/** Run a native call, rethrowing its failures as SidelightNativeError. */
export function wrapNative<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw toNativeError(e);
  }
}
