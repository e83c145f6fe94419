/**
 * kernel-to-js.ts — micro-benchmark: records per second from the real eBPF object
 * (build/syscalls.bpf.o) through the addon's ring-buffer poll thread into JavaScript, decoded
 * by the receiver's decodeBatch (src/receiver/decode.ts). No agent: this process opens, loads
 * and attaches the object itself with default capture settings, and is the only consumer.
 * Needs root. Run by bench/bench.ts; prints one JSON object on stdout.
 *
 *   node --import tsx bench/micro/kernel-to-js.ts SOCKPUMP_BINARY ITERATIONS LIVE_SECONDS [RING_MIB=256]
 *
 * The producer is sockpump (bench/tools/sockpump.c), a separate process doing write()+read()
 * of 100 bytes over one loopback TCP connection: two records per iteration.
 *  - drain: the reader is NOT started while the producer runs, so every record waits in the
 *    ring (RING_MIB, large enough for them all: ~240 bytes a record); then start() and time
 *    until the last one is decoded in JS. This is the
 *    ceiling of the kernel → JS path (epoll wakeup, ring_buffer__consume, batch copy, TSFN
 *    hand-off, ArrayBuffer, DataView decode), without producers competing for the 2 vCPUs.
 *  - live: reader and producer run together for LIVE_SECONDS; delivered records/s and ring
 *    buffer drops. On 2 vCPUs this is bounded by the producer's syscall rate.
 */
import { spawnSync } from 'node:child_process';
import { loadNative, wrapNative, type NativeObject } from '../../src/native.js';
import { bpfObjectPath } from '../../src/paths.js';
import { decodeBatch, type DecodeStats } from '../../src/receiver/decode.js';
import { BPF_NAMES, COUNTER_NAMES, encodeConfig, FilterMode, TLS_PROGRAM_NAMES } from '../../src/receiver/layout.js';

const [pump, iterArg, liveArg, ringArg] = process.argv.slice(2);
if (!pump || !iterArg || !liveArg) {
  process.stderr.write('usage: kernel-to-js.ts SOCKPUMP ITERATIONS LIVE_SECONDS [RING_MIB=256]\n');
  process.exit(2);
}
const iterations = Number(iterArg);
const liveSeconds = Number(liveArg);
const RING = Number(ringArg ?? 256) * 1024 * 1024;
const MAX_BATCH = 1 << 20; // config default capture.maxBatchBytes
const POLL_MS = 100; // config default capture.pollIntervalMs

function open(): NativeObject {
  const native = loadNative();
  const rodata = encodeConfig({
    selfTgid: process.pid,
    captureBytes: 512,
    wakeupBytes: 256 * 1024,
    pidMode: FilterMode.Off,
    cgroupMode: FilterMode.Off,
    portMode: FilterMode.Off,
  });
  const obj = wrapNative(() => native.open(bpfObjectPath(BPF_NAMES.object), rodata, { [BPF_NAMES.ringbuf]: RING }));
  obj.enableStats();
  // the TLS uprobes attach per binary (src/receiver/tls.ts), not here
  const failed = obj.attach(TLS_PROGRAM_NAMES).filter((r) => !r.ok);
  if (failed.length) throw new Error(`attach failed: ${JSON.stringify(failed)}`);
  return obj;
}

function counter(obj: NativeObject, name: (typeof COUNTER_NAMES)[number]): number {
  const i = COUNTER_NAMES.indexOf(name);
  const key = new Uint8Array(4);
  new DataView(key.buffer).setUint32(0, i, true);
  let sum = 0n;
  for (const v of obj.mapLookup(BPF_NAMES.counters, key) ?? []) sum += new DataView(v.buffer, v.byteOffset, 8).getBigUint64(0, true);
  return Number(sum);
}

function runPump(args: string[]): { iterations: number; syscalls: number; seconds: number } {
  const r = spawnSync(pump!, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`sockpump failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as { iterations: number; syscalls: number; seconds: number };
}

class Reader {
  records = 0;
  batches = 0;
  bytes = 0;
  fromPump = 0;
  pumpPid = -1;
  lastAt = 0n;
  readonly stats: DecodeStats = { records: 0, malformed: 0 };
  onBatch = (ab: ArrayBuffer): void => {
    this.batches++;
    this.bytes += ab.byteLength;
    decodeBatch(ab, (ev) => {
      this.records++;
      if (ev.tgid === this.pumpPid) this.fromPump++;
    }, this.stats);
    this.lastAt = process.hrtime.bigint();
  };
}

async function drain(): Promise<Record<string, number>> {
  const obj = open();
  try {
    const events0 = counter(obj, 'events');
    const full0 = counter(obj, 'ringbuf_full');
    const p = runPump(['-n', String(iterations), '-s', '100']);
    const produced = counter(obj, 'events') - events0;
    const dropped = counter(obj, 'ringbuf_full') - full0;
    const r = new Reader();
    const cpu0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    await new Promise<void>((resolve, reject) => {
      obj.start(BPF_NAMES.ringbuf, POLL_MS, MAX_BATCH, (ab) => {
        r.onBatch(ab);
        if (r.records >= produced) resolve();
      }, reject);
      // if some records never come (they should), stop after 1 s without a batch
      const check = setInterval(() => {
        if (r.lastAt && process.hrtime.bigint() - r.lastAt > 1_000_000_000n) {
          clearInterval(check);
          resolve();
        }
      }, 100);
      check.unref();
    });
    const secs = Number(r.lastAt - t0) / 1e9;
    const cpu = process.cpuUsage(cpu0);
    return {
      pumpSyscalls: p.syscalls,
      recordsProduced: produced,
      ringbufDrops: dropped,
      recordsDecoded: r.records,
      malformed: r.stats.malformed,
      seconds: secs,
      recordsPerSec: r.records / secs,
      MBPerSec: r.bytes / secs / 1e6,
      batches: r.batches,
      recordsPerBatch: r.records / Math.max(1, r.batches),
      readerCpuNsPerRecord: ((cpu.user + cpu.system) * 1000) / Math.max(1, r.records),
    };
  } finally {
    obj.close();
  }
}

async function live(): Promise<Record<string, number>> {
  const obj = open();
  try {
    const full0 = counter(obj, 'ringbuf_full');
    const events0 = counter(obj, 'events');
    const r = new Reader();
    obj.start(BPF_NAMES.ringbuf, POLL_MS, MAX_BATCH, r.onBatch, (e) => process.stderr.write(`poll error: ${e.message}\n`));
    const cpu0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    const { spawn } = await import('node:child_process');
    const child = spawn(pump!, ['-d', String(liveSeconds), '-s', '100'], { stdio: ['ignore', 'pipe', 'inherit'] });
    r.pumpPid = child.pid ?? -1;
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    await new Promise((res) => child.once('exit', res));
    await new Promise((res) => setTimeout(res, 2 * POLL_MS + 50)); // the last batches
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    const cpu = process.cpuUsage(cpu0);
    const p = JSON.parse(out) as { syscalls: number; seconds: number };
    return {
      seconds: p.seconds,
      pumpSyscalls: p.syscalls,
      pumpSyscallsPerSec: p.syscalls / p.seconds,
      recordsProduced: counter(obj, 'events') - events0,
      recordsDecoded: r.records,
      recordsFromPump: r.fromPump,
      recordsPerSec: r.records / p.seconds,
      ringbufDrops: counter(obj, 'ringbuf_full') - full0,
      readerCpuPercent: (((cpu.user + cpu.system) / 1e6) / secs) * 100,
      batchesPerSec: r.batches / secs,
    };
  } finally {
    obj.close();
  }
}

const result = { drain: await drain(), live: await live() };
process.stdout.write(`${JSON.stringify(result)}\n`);
