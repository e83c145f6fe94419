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
import { BPF_NAMES, encodeConfig, FilterMode, TLS_PROGRAM_NAMES, TLS_PROGRAMS } from './receiver/layout.js';
import { SYSTEM_LIBSSL } from './receiver/tls.js';

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

function readSysctl(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
}

function kernelAtLeast(rel: string, major: number, minor: number): boolean {
  const m = /^(\d+)\.(\d+)/.exec(rel);
  if (!m) return false;
  const a = Number(m[1]);
  const b = Number(m[2]);
  return a > major || (a === major && b >= minor);
}

/**
 * What each capability is for, measured on Linux 6.18 as a non-root user (test/e2e/privilege.test.ts,
 * docs/security.md). Required: the agent cannot attach without it. Optional: the agent runs, with
 * the stated loss, for processes of other users (a process of the agent's own uid is always readable).
 */
export const CAPABILITY_NEEDS: ReadonlyArray<{ cap: keyof typeof CAPS; required: boolean; why: string; without: string }> = [
  {
    cap: 'CAP_BPF',
    required: true,
    why: 'create BPF maps and load programs',
    without: 'the BPF object cannot be loaded (bpf(): Operation not permitted)',
  },
  {
    cap: 'CAP_PERFMON',
    required: true,
    why: 'load tracing programs and attach them to the raw syscall tracepoints',
    without: 'the tp_btf programs cannot be loaded or attached (Operation not permitted)',
  },
  {
    cap: 'CAP_SYS_PTRACE',
    required: false,
    why: "read other users' /proc/<pid>/exe and /proc/<pid>/environ (ptrace access check)",
    without:
      "processes of other users lose process.executable.path, Go detection and OTEL_SERVICE_NAME/OTEL_RESOURCE_ATTRIBUTES read from /proc (service.name falls back to the kernel's first sighting, else the executable name)",
  },
  {
    cap: 'CAP_DAC_READ_SEARCH',
    required: false,
    why: "open other users' /proc/<pid>/environ (mode 0400) and executables that are not world-readable",
    without:
      "processes of other users lose OTEL_SERVICE_NAME/OTEL_RESOURCE_ATTRIBUTES from /proc/<pid>/environ (with CAP_SYS_PTRACE alone service.name becomes the executable name)",
  },
];

/** One `cap NAME` check item per capability the agent uses, each naming what is lost without it. */
export function capabilityItems(caps: bigint, euid: number): CheckItem[] {
  const sysAdmin = hasCap(caps, CAPS.CAP_SYS_ADMIN);
  const who = euid === 0 ? 'root' : `uid ${euid}`;
  return CAPABILITY_NEEDS.map(({ cap, required, why, without }) => {
    const have = hasCap(caps, CAPS[cap]);
    // before 5.8 (and still accepted after) CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON
    const covered = !have && required && sysAdmin;
    return {
      name: `cap ${cap}`,
      ok: have || covered,
      required,
      detail: have
        ? `${why}: granted (${who})`
        : covered
          ? `${why}: covered by CAP_SYS_ADMIN (${who})`
          : `MISSING ${cap} (${who}, CapEff 0x${caps.toString(16)}): ${without}; grant ${cap} to ${why}`,
    };
  });
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
  for (const item of capabilityItems(caps, isRoot ? 0 : (process.geteuid?.() ?? -1))) items.push(item);
  const missingRequired = items.filter((i) => i.name.startsWith('cap ') && i.required && !i.ok).map((i) => i.name.slice(4));
  const missingOptional = items.filter((i) => i.name.startsWith('cap ') && !i.required && !i.ok).map((i) => i.name.slice(4));
  const who = isRoot ? 'root' : `uid ${process.geteuid?.()}`;
  add(
    'privileges',
    missingRequired.length === 0,
    true,
    missingRequired.length === 0
      ? `${who}; CapEff 0x${caps.toString(16)}` +
          (missingOptional.length ? `; missing ${missingOptional.join(', ')} (process metadata of other users is partly unreadable, see above)` : '')
      : `need CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); missing ${missingRequired.join(', ')}; have CapEff 0x${caps.toString(16)} as ${who}: run as root or grant them`,
  );
  // per-probe run time (probes[].runTimeNs in /healthz) needs BPF_ENABLE_STATS: CAP_SYS_ADMIN or the sysctl
  const statsSysctl = readSysctl('/proc/sys/kernel/bpf_stats_enabled');
  add(
    'bpf run-time stats',
    true,
    false,
    hasCap(caps, CAPS.CAP_SYS_ADMIN) || statsSysctl === '1'
      ? 'available'
      : 'unavailable without CAP_SYS_ADMIN or sysctl kernel.bpf_stats_enabled=1 (per-probe time in /healthz reads 0; nothing else is affected)',
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
        for (const r of obj.attach(TLS_PROGRAM_NAMES)) {
          add(`probe ${r.name}`, r.ok, true, r.ok ? 'attaches' : `${r.error} (errno ${r.errno})`);
        }
        if (config.tls.enabled) {
          // TLS plaintext needs uprobes (CONFIG_UPROBE_EVENTS); not required for the rest
          const lib = SYSTEM_LIBSSL.find((p) => existsSync(p));
          if (!lib) {
            add('probe tls', true, false, 'no system libssl.so.3; OpenSSL users are found at runtime');
          } else {
            try {
              obj.detachUprobe(wrapNative(() => obj.attachUprobe(TLS_PROGRAMS.read, lib, 'SSL_read', false)));
              add('probe tls', true, false, `uprobes attach (${lib}:SSL_read)`);
            } catch (e) {
              add('probe tls', false, false, `${(e as Error).message}: TLS plaintext will not be captured`);
            }
          }
        }
      } finally {
        obj.close();
      }
    } catch (e) {
      const err = e as SidelightNativeError;
      const hint =
        err.errno === 1
          ? ` — permission denied: grant ${missingRequired.length ? missingRequired.join(', ') : 'CAP_BPF, CAP_PERFMON'} (or run as root)`
          : '';
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
