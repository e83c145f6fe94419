#!/usr/bin/env node
// trace-view.mjs — renders one trace, as Jaeger's query API returns it (GET /api/traces/<id>:
// {"data":[{traceID, spans, processes}]}), as a static HTML page in the style of a trace
// viewer's timeline: the span tree (indented by parent), service, kind, operation, and a bar
// per span on the trace's time axis. Used by scripts/trace-screenshot.sh for the README image,
// because the Jaeger built from the Go module proxy serves only a placeholder UI.
//
// Usage: node scripts/trace-view.mjs TRACE.json [SOURCE-LABEL] > page.html
// Pure function of its input; no network. Bad input: a message naming the file, exit 2.
import { readFileSync } from 'node:fs';

const [file, source = 'Jaeger query API'] = process.argv.slice(2);
if (!file) {
  console.error('usage: trace-view.mjs TRACE.json [SOURCE-LABEL]');
  process.exit(2);
}
let trace;
try {
  const doc = JSON.parse(readFileSync(file, 'utf8'));
  trace = doc.data?.[0];
  if (!trace?.spans?.length) throw new Error('no data[0].spans');
} catch (e) {
  console.error(`trace-view: ${file}: not a Jaeger /api/traces/<id> response (${e.message})`);
  process.exit(2);
}

const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);
const tag = (s, k) => s.tags?.find((t) => t.key === k)?.value;
const svc = (s) => trace.processes?.[s.processID]?.serviceName ?? '?';

// tree: CHILD_OF parent inside the trace, else a root; children by start time
const byId = new Map(trace.spans.map((s) => [s.spanID, { s, children: [] }]));
const roots = [];
for (const n of byId.values()) {
  const p = n.s.references?.find((r) => r.refType === 'CHILD_OF');
  (p && byId.get(p.spanID) ? byId.get(p.spanID).children : roots).push(n);
}
const sortT = (a, b) => a.s.startTime - b.s.startTime;
roots.sort(sortT);
const rows = [];
const walk = (n, depth) => {
  rows.push({ ...n, depth });
  n.children.sort(sortT).forEach((c) => walk(c, depth + 1));
};
roots.forEach((r) => walk(r, 0));

const t0 = Math.min(...trace.spans.map((s) => s.startTime));
const t1 = Math.max(...trace.spans.map((s) => s.startTime + s.duration));
const total = Math.max(1, t1 - t0);
const ms = (us) => (us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${us} µs`);
const palette = ['#17b8be', '#f8dca1', '#b7885e', '#ffcb99', '#f89570', '#829ae3', '#e79fd5', '#1e96be', '#89dac1', '#b3ad9e'];
const services = [...new Set(rows.map((r) => svc(r.s)))];
const color = (name) => palette[services.indexOf(name) % palette.length];
const rootRow = rows[0];
const title = `${svc(rootRow.s)}: ${rootRow.s.operationName} ${tag(rootRow.s, 'url.full') ?? tag(rootRow.s, 'url.path') ?? ''}`;
const started = new Date(t0 / 1000).toISOString().replace('T', ' ').replace('Z', ' UTC');
const ticks = [0, 0.25, 0.5, 0.75, 1];

const row = (r) => {
  const s = r.s;
  const left = ((s.startTime - t0) / total) * 100;
  const width = Math.max(0.4, (s.duration / total) * 100);
  const kind = tag(s, 'span.kind') ?? '';
  const what = tag(s, 'url.path') ?? tag(s, 'url.full') ?? '';
  const status = tag(s, 'http.response.status_code');
  return `<div class="row">
  <div class="name" style="padding-left:${12 + r.depth * 18}px">
    <span class="svc" style="border-color:${color(svc(s))}">${esc(svc(s))}</span>
    <span class="kind">${esc(kind)}</span>
    <span class="op">${esc(s.operationName)} <span class="path">${esc(what)}</span></span>
  </div>
  <div class="lane">
    ${ticks.map((x) => `<i class="tick" style="left:${x * 100}%"></i>`).join('')}
    <div class="bar" style="left:${left}%;width:${width}%;background:${color(svc(s))}"></div>
    <span class="dur" style="left:calc(${left + width}% + 6px)">${ms(s.duration)}${status ? ` · ${esc(status)}` : ''}</span>
  </div>
</div>`;
};

process.stdout.write(`<!doctype html>
<html><head><meta charset="utf-8"><title>${esc(title)}</title>
<style>
  body { margin: 0; font: 13px/1.4 "DejaVu Sans", Helvetica, Arial, sans-serif; color: #222; background: #fff; }
  header { padding: 14px 18px 10px; border-bottom: 1px solid #ddd; background: #fafafa; }
  h1 { margin: 0 0 6px; font-size: 18px; font-weight: 600; }
  .meta span { margin-right: 22px; color: #555; } .meta b { color: #222; font-weight: 600; }
  .axis, .row { display: flex; border-bottom: 1px solid #eee; }
  .axis { background: #f4f4f4; font-size: 11px; color: #666; height: 26px; }
  .name { width: 470px; flex: none; box-sizing: border-box; padding: 7px 8px; white-space: nowrap; overflow: hidden; border-right: 1px solid #e4e4e4; }
  .lane { position: relative; flex: 1; height: 34px; margin-right: 110px; }
  .axis .lane { height: 26px; }
  .tick { position: absolute; top: 0; bottom: 0; border-left: 1px solid #ececec; }
  .axis .tick span { position: absolute; top: 6px; left: 4px; white-space: nowrap; }
  .bar { position: absolute; top: 9px; height: 16px; border-radius: 2px; }
  .dur { position: absolute; top: 9px; font-size: 11px; color: #444; white-space: nowrap; }
  .svc { font-weight: 600; border-left: 4px solid; padding-left: 6px; }
  .kind { display: inline-block; margin: 0 6px; padding: 0 5px; border-radius: 3px; background: #eef; color: #446; font-size: 11px; }
  .path { color: #666; }
  footer { padding: 8px 18px; color: #888; font-size: 11px; }
</style></head><body>
<header>
  <h1>${esc(title)}</h1>
  <div class="meta"><span>Trace <b>${esc(trace.traceID)}</b></span><span>Start <b>${esc(started)}</b></span><span>Duration <b>${ms(total)}</b></span><span>Services <b>${services.length}</b></span><span>Spans <b>${trace.spans.length}</b></span><span>Depth <b>${Math.max(...rows.map((r) => r.depth)) + 1}</b></span></div>
</header>
<div class="axis"><div class="name">Service · kind · operation</div><div class="lane">${ticks.map((x) => `<i class="tick" style="left:${x * 100}%"><span>${ms(Math.round(x * total))}</span></i>`).join('')}</div></div>
${rows.map(row).join('\n')}
<footer>Spans recorded by Sidelight (eBPF, no instrumentation in the services), rendered from ${esc(source)}.</footer>
</body></html>
`);
