/**
 * check.ts — `sidelight check`: can the agent run here, and if not, exactly why.
 * Looks at the kernel, BTF, privileges, tracefs, the build artefacts, and then really
 * loads and attaches every probe (and detaches them) to report each one's fate.
 * Stateless; leaves nothing attached.
 */
import { existsSync, readFileSync } from 'node:fs';
import { release } from 'node:os';
import { defaultConfig, type Config } from './config.js';
import { loadNative, wrapNative, SidelightNativeError } from './native.js';
import { bpfObjectPath } from './paths.js';
import { BPF_NAMES, encodeConfig, FilterMode } from './receiver/layout.js';

export interface CheckItem {
  name: string;
  ok: boolean;
  /** false: informational; a failure does not stop the agent */
  required: boolean;
  detail: string;
}

export interface CheckReport {
  canRun: boolean;
  items: CheckItem[];
}

/** Linux capability numbers (include/uapi/linux/capability.h). */
export const CAPS = {
  CAP_DAC_READ_SEARCH: 2,
  CAP_SYS_PTRACE: 19,
  CAP_SYS_ADMIN: 21,
  CAP_SYS_RESOURCE: 24,
  CAP_PERFMON: 38,
  CAP_BPF: 39,
} as const;

export function effectiveCaps(statusText = readFileSync('/proc/self/status', 'utf8')): bigint {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(statusText);
  return m ? BigInt(`0x${m[1]}`) : 0n;
}

export function hasCap(caps: bigint, cap: number): boolean {
  return ((caps >> BigInt(cap)) & 1n) === 1n;
}

function kernelAtLeast(rel: string, major: number, minor: number): boolean {
  const m = /^(\d+)\.(\d+)/.exec(rel);
  if (!m) return false;
  const a = Number(m[1]);
  const b = Number(m[2]);
  return a > major || (a === major && b >= minor);
}

export function runCheck(config: Config = defaultConfig()): CheckReport {
  const items: CheckItem[] = [];
  const add = (name: string, ok: boolean, required: boolean, detail: string): void => {
    items.push({ name, ok, required, detail });
  };

  const rel = release();
  add('kernel', kernelAtLeast(rel, 5, 8), true, `${rel} (needs >= 5.8 for the BPF ring buffer)`);
  add('btf', existsSync('/sys/kernel/btf/vmlinux'), true, '/sys/kernel/btf/vmlinux (needed for CO-RE)');

  const caps = effectiveCaps();
  const isRoot = process.geteuid?.() === 0;
  const bpfCaps = hasCap(caps, CAPS.CAP_BPF) && hasCap(caps, CAPS.CAP_PERFMON);
  const sysAdmin = hasCap(caps, CAPS.CAP_SYS_ADMIN);
  const missing = Object.entries(CAPS)
    .filter(([n, v]) => n !== 'CAP_SYS_ADMIN' && n !== 'CAP_SYS_RESOURCE' && !hasCap(caps, v))
    .map(([n]) => n);
  add(
    'privileges',
    bpfCaps || sysAdmin,
    true,
    bpfCaps || sysAdmin
      ? `${isRoot ? 'root' : `uid ${process.geteuid?.()}`}; CapEff 0x${caps.toString(16)}` +
          (missing.length ? `; missing ${missing.join(', ')} (process metadata of other users may be unreadable)` : '')
      : `need CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); have CapEff 0x${caps.toString(16)}: run as root or grant them`,
  );

  const mounts = existsSync('/proc/self/mounts') ? readFileSync('/proc/self/mounts', 'utf8') : '';
  const tracefs = /\stracefs\s/.test(mounts);
  add('tracefs', true, false, tracefs ? 'mounted' : 'not mounted (not needed: probes use raw tracepoints)');
  const cg2 = /\scgroup2\s/.test(mounts);
  add('cgroup2', true, false, cg2 ? 'cgroup v2 mounted' : 'no cgroup v2 mount (cgroup filters unavailable)');

  const objPath = bpfObjectPath(BPF_NAMES.object);
  const haveObj = existsSync(objPath);
  add('bpf object', haveObj, true, haveObj ? objPath : `${objPath} missing: run make setup`);

  let native: ReturnType<typeof loadNative> | undefined;
  try {
    native = loadNative();
    add('addon', true, true, `libbpf ${native.libbpfVersion()}`);
  } catch (e) {
    add('addon', false, true, (e as Error).message);
  }

  if (native && haveObj) {
    const rodata = encodeConfig({
      selfTgid: process.pid,
      captureBytes: config.capture.bytes,
      wakeupBytes: config.capture.wakeupBytes,
      pidMode: FilterMode.Off,
      cgroupMode: FilterMode.Off,
      portMode: FilterMode.Off,
    });
    try {
      const n = native;
      const obj = wrapNative(() => n.open(objPath, rodata, { [BPF_NAMES.ringbuf]: config.capture.ringBufferBytes }));
      try {
        add('load', true, true, `${obj.programs().length} programs verified and loaded`);
        for (const r of obj.attach([])) {
          add(`probe ${r.name}`, r.ok, true, r.ok ? 'attaches' : `${r.error} (errno ${r.errno})`);
        }
      } finally {
        obj.close();
      }
    } catch (e) {
      const err = e as SidelightNativeError;
      const hint = err.errno === 1 ? ' — permission denied: run as root or grant CAP_BPF, CAP_PERFMON' : '';
      add('load', false, true, `${err.step ?? 'load'}: ${err.message}${hint}`);
    }
  }
  return { canRun: items.every((i) => i.ok || !i.required), items };
}

export function formatReport(r: CheckReport): string {
  const lines = r.items.map((i) => `${i.ok ? 'ok  ' : i.required ? 'FAIL' : 'warn'}  ${i.name.padEnd(22)} ${i.detail}`);
  lines.push(r.canRun ? 'sidelight can run here' : 'sidelight cannot run here: see FAIL lines above');
  return lines.join('\n');
}
