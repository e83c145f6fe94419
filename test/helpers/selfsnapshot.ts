/**
 * selfsnapshot.ts — a SelfSnapshot (src/otlp/selfmetrics.ts) with every required count at
 * zero and nothing exported, for tests that set only the part they check.
 */
import type { SelfSnapshot } from '../../src/otlp/selfmetrics.js';

export function emptySelfSnapshot(over: Partial<SelfSnapshot> = {}): SelfSnapshot {
  return {
    kernel: {},
    probes: [],
    eventsReceived: 0,
    malformedEvents: 0,
    spansCreated: 0,
    parserGaveUp: 0,
    pendingOverflow: 0,
    connections: 0,
    traces: null,
    metrics: null,
    ...over,
  };
}
