/**
 * counters.ts (test helper) — an agent's /healthz detail (Agent.stats()) boiled down to the
 * counters that say where a missing or orphaned span may have gone, for failure messages and
 * test logs. Pure.
 */

/** The non-zero numbers of `o`, flattened to dotted keys. */
export function nonZero(o: unknown, prefix = '', out: Record<string, number> = {}): Record<string, number> {
  if (typeof o === 'number') {
    if (o !== 0) out[prefix] = o;
  } else if (o && typeof o === 'object') {
    for (const [k, v] of Object.entries(o)) nonZero(v, prefix ? `${prefix}.${k}` : k, out);
  }
  return out;
}

/** Kernel, decode, backlog, connection/HTTP, trace, injection and export counters that are not zero. */
export function lossCounters(stats: Record<string, unknown>): Record<string, number> {
  const conns = (stats['connections'] ?? {}) as Record<string, unknown>;
  return nonZero({
    kernel: stats['kernel'],
    decode: stats['decode'],
    backlog: stats['backlog'],
    connections: { ...conns, trace: undefined },
    trace: conns['trace'],
    inject: stats['inject'],
    export: stats['export'],
  });
}
