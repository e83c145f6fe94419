/**
 * cgroups.ts — the container (and pod) of a cgroup v2 id, for processes that are gone
 * before /proc/<pid>/cgroup could be read (short-lived clients: a curl in a pod exits long
 * before its span is exported).
 *
 * The kernel stamps every event with the task's cgroup v2 id, which is the inode number of
 * its directory in the cgroup2 hierarchy. This index maps those ids to what the directory's
 * path says (parsed by container.ts), so a dead process still gets its container.id and pod.
 *
 * Owns a bounded map id → CgroupContainer (only directories that name a container or a pod;
 * `maxEntries`, oldest evicted, counted). It is filled by walking the hierarchy: on a miss,
 * at most once per `minRescanMs`, visiting at most `maxDirs` directories to depth `maxDepth`
 * (a walk that hits a bound is counted as truncated). Cgroup ids are not reused while the
 * system runs, so entries of removed cgroups stay right until evicted. Synchronous
 * readdir/stat on the main thread, like the /proc reads in process.ts.
 */
import { readdirSync, statSync } from 'node:fs';
import { parseCgroup, type CgroupContainer } from './container.js';

export interface CgroupIndexOptions {
  /** where the cgroup v2 hierarchy is mounted (see agent.ts cgroup2Root()) */
  root: string;
  maxEntries?: number;
  maxDirs?: number;
  maxDepth?: number;
  minRescanMs?: number;
  /** for tests */
  now?: () => number;
}

export interface CgroupIndexStats {
  lookups: number;
  hits: number;
  misses: number;
  walks: number;
  truncatedWalks: number;
  dirsVisited: number;
  evicted: number;
}

export class CgroupIndex {
  private readonly byId = new Map<bigint, CgroupContainer>();
  private readonly opts: Required<Omit<CgroupIndexOptions, 'now'>>;
  private readonly now: () => number;
  private lastWalk = Number.NEGATIVE_INFINITY;
  readonly stats: CgroupIndexStats = { lookups: 0, hits: 0, misses: 0, walks: 0, truncatedWalks: 0, dirsVisited: 0, evicted: 0 };

  constructor(opts: CgroupIndexOptions) {
    this.opts = {
      root: opts.root.replace(/\/+$/, ''),
      maxEntries: opts.maxEntries ?? 16_384,
      maxDirs: opts.maxDirs ?? 50_000,
      maxDepth: opts.maxDepth ?? 12,
      minRescanMs: opts.minRescanMs ?? 5_000,
    };
    this.now = opts.now ?? Date.now;
  }

  get size(): number {
    return this.byId.size;
  }

  /** The container/pod the cgroup id names, or undefined (not a container, or not found). */
  container(cgroupId: bigint): CgroupContainer | undefined {
    if (cgroupId === 0n) return undefined;
    this.stats.lookups++;
    let hit = this.byId.get(cgroupId);
    if (hit === undefined && this.now() - this.lastWalk >= this.opts.minRescanMs) {
      this.walk();
      hit = this.byId.get(cgroupId);
    }
    if (hit === undefined) this.stats.misses++;
    else this.stats.hits++;
    return hit;
  }

  /** Walk the hierarchy once (bounded), indexing every directory that names a container or pod. */
  walk(): void {
    this.lastWalk = this.now();
    this.stats.walks++;
    const { root, maxDirs, maxDepth } = this.opts;
    let visited = 0;
    let truncated = false;
    // iterative DFS: [relative path, depth]
    const stack: Array<[string, number]> = [['', 0]];
    while (stack.length > 0) {
      const [rel, depth] = stack.pop()!;
      if (visited >= maxDirs) {
        truncated = true;
        break;
      }
      visited++;
      if (rel !== '') this.index(rel);
      if (depth >= maxDepth) {
        truncated = true;
        continue;
      }
      let names: string[];
      try {
        names = readdirSync(`${root}${rel}`, { withFileTypes: true })
          .filter((d) => d.isDirectory())
          .map((d) => d.name);
      } catch {
        continue; // removed while walking, or no access
      }
      for (const n of names) stack.push([`${rel}/${n}`, depth + 1]);
    }
    this.stats.dirsVisited += visited;
    if (truncated) this.stats.truncatedWalks++;
  }

  private index(rel: string): void {
    const c = parseCgroup(`0::${rel}`);
    if (c.containerId === undefined && c.podUid === undefined) return;
    let id: bigint;
    try {
      id = statSync(`${this.opts.root}${rel}`, { bigint: true }).ino;
    } catch {
      return;
    }
    if (this.byId.has(id)) {
      this.byId.set(id, c);
      return;
    }
    if (this.byId.size >= this.opts.maxEntries) {
      const oldest = this.byId.keys().next();
      if (!oldest.done) {
        this.byId.delete(oldest.value);
        this.stats.evicted++;
      }
    }
    this.byId.set(id, c);
  }
}
