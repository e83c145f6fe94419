/**
 * paths.ts — locates the repository root (the directory holding package.json) whether the
 * code runs from src/ (tsx, tests) or from dist/ (compiled), and the build artefacts in it.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | undefined;

export function repoRoot(): string {
  if (root) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return (root = dir);
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the sidelight package root (package.json)');
    dir = up;
  }
}

/** Compiled BPF object, e.g. bpfObjectPath('syscalls.bpf.o'). SIDELIGHT_BPF_DIR overrides the folder. */
export function bpfObjectPath(name: string): string {
  return join(process.env.SIDELIGHT_BPF_DIR ?? join(repoRoot(), 'build'), name);
}
