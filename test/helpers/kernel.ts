/**
 * kernel.ts (test helper) — the rule for tests that need the real kernel, root, or a
 * built artefact: outside CI they skip with a printed reason; under CI=true they fail,
 * because CI must run everything.
 */
import { existsSync } from 'node:fs';
import type { ExecutionContext } from 'ava';
import { bpfObjectPath, repoRoot } from '../../src/paths.js';

export const IN_CI = process.env.CI === 'true';

/** Why kernel tests cannot run here, or undefined when they can. */
export function kernelUnavailable(): string | undefined {
  if (process.geteuid?.() !== 0) return 'needs root (BPF)';
  if (!existsSync('/sys/kernel/btf/vmlinux')) return 'kernel has no BTF';
  if (!existsSync(bpfObjectPath('syscalls.bpf.o'))) return 'BPF object not built (make setup)';
  if (!existsSync(`${repoRoot()}/native/build/Release/sidelight.node`)) return 'addon not built (make setup)';
  return undefined;
}

/**
 * Call first in a test that needs something; returns false when the test must stop
 * (it was marked failed under CI, or it logged its skip reason otherwise).
 */
export function need(t: ExecutionContext, reason: string | undefined): boolean {
  if (reason === undefined) return true;
  if (IN_CI) {
    t.fail(`cannot run under CI: ${reason}`);
    return false;
  }
  t.log(`SKIPPED: ${reason}`);
  t.pass();
  return false;
}
