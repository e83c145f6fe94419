/**
 * bpf.ts (test helper) — what the kernel holds: BPF program ids a process references
 * through its file descriptors, the ids loaded system-wide, and a wait for programs to be
 * freed (the kernel frees them shortly after their last reference goes, after an RCU period).
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/** BPF program ids referenced by a process's file descriptors (programs and links). */
export function progIdsHeldBy(pid: number): Set<number> {
  const ids = new Set<number>();
  for (const fd of readdirSync(`/proc/${pid}/fdinfo`)) {
    try {
      const m = /^prog_id:\s*(\d+)$/m.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'));
      if (m) ids.add(Number(m[1]));
    } catch {
      /* fd closed meanwhile */
    }
  }
  return ids;
}

function loadedProgs(): Array<{ id: number; name?: string }> {
  return JSON.parse(execFileSync('bpftool', ['prog', 'show', '--json'], { encoding: 'utf8' })) as Array<{ id: number; name?: string }>;
}

/** Ids of every BPF program loaded in the kernel. */
export function loadedProgIds(): Set<number> {
  return new Set(loadedProgs().map((p) => p.id));
}

/** Names of the loaded programs among `ids`, sorted. */
export function loadedNames(ids: Set<number>): string[] {
  return loadedProgs().filter((p) => ids.has(p.id)).map((p) => p.name ?? '?').sort();
}

/** Programs of `ids` still loaded after waiting up to 5 s for the kernel to free them. */
export async function stillLoaded(ids: Set<number>): Promise<number[]> {
  const end = Date.now() + 5000;
  for (;;) {
    const loaded = loadedProgIds();
    const left = [...ids].filter((id) => loaded.has(id));
    if (left.length === 0 || Date.now() > end) return left;
    await new Promise((r) => setTimeout(r, 100));
  }
}

export interface MapOccupancy {
  id: number;
  type: string;
  maxEntries: number;
  /** entries present now (hash maps only; undefined for arrays and ring buffers) */
  entries: number | undefined;
}

/** BPF maps a process references through its file descriptors, by name, with their occupancy. */
export function mapsHeldBy(pid: number): Record<string, MapOccupancy> {
  const ids = new Set<number>();
  for (const fd of readdirSync(`/proc/${pid}/fdinfo`)) {
    try {
      const m = /^map_id:\s*(\d+)$/m.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'));
      if (m) ids.add(Number(m[1]));
    } catch {
      /* fd closed meanwhile */
    }
  }
  const out: Record<string, MapOccupancy> = {};
  for (const id of ids) {
    const info = JSON.parse(execFileSync('bpftool', ['map', 'show', 'id', String(id), '--json'], { encoding: 'utf8' })) as {
      name?: string;
      type: string;
      max_entries: number;
    };
    let entries: number | undefined;
    if (info.type === 'hash' || info.type === 'lru_hash') {
      const dump = execFileSync('bpftool', ['map', 'dump', 'id', String(id), '--json'], { encoding: 'utf8', maxBuffer: 1 << 28 });
      // distinct keys: bpftool walks the map with get_next_key, which restarts from the first
      // bucket when the key it stands on is deleted meanwhile (an LRU eviction), so a map that
      // changes during the dump can list a key twice
      const rows = JSON.parse(dump) as { key?: unknown }[];
      entries = new Set(rows.map((r) => JSON.stringify(r.key ?? r))).size;
    }
    out[info.name ?? `map${id}`] = { id, type: info.type, maxEntries: info.max_entries, entries };
  }
  return out;
}
