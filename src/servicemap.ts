/**
 * servicemap.ts — `sidelight map`: fetches the running agent's service map from its health
 * server (GET /map, a ServiceMap from otlp/servicegraph.ts) and renders it as text, Graphviz
 * DOT or Mermaid. The renderers are pure functions of the map; fetchMap is one request
 * with a timeout. No state.
 */
import type { ServiceMap } from './otlp/servicegraph.js';

export const MAP_FORMATS = ['text', 'dot', 'mermaid'] as const;
export type MapFormat = (typeof MAP_FORMATS)[number];

type MapEdge = ServiceMap['edges'][number];

function name(side: string, e: MapEdge): string {
  return e.overflow ? '(overflow)' : side;
}

function ms(s: number | undefined): string {
  return s === undefined ? '-' : `${(s * 1000).toFixed(2)}ms`;
}

function label(e: MapEdge): string {
  return `${e.requests} req, ${e.failed} failed`;
}

/** One line per edge: `client -> server  requests=N failed=N client=…ms server=…ms [virtual_node]`. */
export function formatText(m: ServiceMap): string {
  if (m.edges.length === 0) return `no edges yet (${m.pending} span(s) waiting for their other end)\n`;
  const rows = m.edges.map((e) => [
    `${name(e.client, e)} -> ${name(e.server, e)}`,
    `requests=${e.requests}`,
    `failed=${e.failed}`,
    `client=${ms(e.clientMeanSeconds)}`,
    `server=${ms(e.serverMeanSeconds)}`,
    e.connectionType ? `[${e.connectionType}]` : '',
  ]);
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n';
}

function dotQuote(s: string): string {
  return `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

/** Graphviz: `sidelight map --format dot | dot -Tsvg > map.svg`. Virtual nodes are dashed. */
export function formatDot(m: ServiceMap): string {
  const lines = ['digraph sidelight {', '  rankdir=LR;', '  node [shape=box];'];
  const virtual = new Set<string>();
  for (const e of m.edges) {
    if (e.connectionType !== 'virtual_node') continue;
    // the side the span did not come from is the virtual one; the other is a service
    virtual.add(e.serverMeanSeconds === undefined ? e.server : e.client);
  }
  for (const v of [...virtual].sort()) lines.push(`  ${dotQuote(v)} [style=dashed];`);
  for (const e of m.edges) {
    const attrs = [`label=${dotQuote(label(e))}`];
    if (e.failed > 0) attrs.push('color=red');
    lines.push(`  ${dotQuote(name(e.client, e))} -> ${dotQuote(name(e.server, e))} [${attrs.join(', ')}];`);
  }
  lines.push('}');
  return lines.join('\n') + '\n';
}

/** Mermaid flowchart; node ids are n0, n1, ... and the names are quoted labels. */
export function formatMermaid(m: ServiceMap): string {
  const ids = new Map<string, string>();
  const id = (n: string): string => {
    let v = ids.get(n);
    if (!v) ids.set(n, (v = `n${ids.size}`));
    return v;
  };
  const esc = (s: string): string => s.replace(/"/g, '#quot;');
  const lines = ['flowchart LR'];
  const declared = new Set<string>();
  const node = (n: string): string => {
    const i = id(n);
    if (declared.has(i)) return i;
    declared.add(i);
    return `${i}["${esc(n)}"]`;
  };
  for (const e of m.edges) {
    const arrow = e.connectionType === 'virtual_node' ? '-.->' : '-->';
    lines.push(`  ${node(name(e.client, e))} ${arrow}|"${label(e)}"| ${node(name(e.server, e))}`);
  }
  return lines.join('\n') + '\n';
}

export function renderMap(m: ServiceMap, format: MapFormat): string {
  return format === 'dot' ? formatDot(m) : format === 'mermaid' ? formatMermaid(m) : formatText(m);
}

/** GET http://<address>/map; throws an Error naming the address on failure. */
export async function fetchMap(address: string, timeoutMs = 5000): Promise<ServiceMap> {
  const url = `http://${address}/map`;
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  } catch (e) {
    const c = (e as { cause?: { code?: string; errors?: Array<{ code?: string }> } }).cause;
    const cause = c?.code ?? c?.errors?.[0]?.code;
    throw new Error(`cannot reach the agent at ${url}: ${cause ?? (e as Error).message} (is \`sidelight run\` running? set --address or health.address)`);
  }
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  const body = (await res.json()) as ServiceMap;
  if (!body || !Array.isArray(body.edges)) throw new Error(`${url}: not a service map`);
  return body;
}
