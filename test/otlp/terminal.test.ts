/**
 * The terminal trace-tree view (terminal.ts): children held until their root finishes, then
 * printed as one indented tree; orphans printed after holdMs; bounds counted.
 */
import test from 'ava';
import { renderTree, TraceTreeView } from '../../src/otlp/terminal.js';
import type { SidelightSpan } from '../../src/receiver/span.js';

const T = '4bf92f3577b34da6a3ce929d0e0e4736';
function span(id: string, parent: string | undefined, startMs: number, durMs: number, extra: Partial<SidelightSpan> = {}): SidelightSpan {
  const start = 1_700_000_000_000_000_000n + BigInt(startMs) * 1_000_000n;
  return {
    kind: parent ? 'client' : 'server',
    name: 'GET',
    startUnixNs: start,
    endUnixNs: start + BigInt(durMs) * 1_000_000n,
    attributes: { 'http.request.method': 'GET', 'url.path': `/${id}`, 'http.response.status_code': 200 },
    status: { code: 'unset' },
    process: { tgid: 7, tid: 7, comm: 'app', cgroupId: 0n },
    traceId: T,
    spanId: id.padStart(16, '0'),
    ...(parent ? { parentSpanId: parent.padStart(16, '0') } : {}),
    ...extra,
  };
}

test('children wait for the root; the tree prints once, indented, ordered by start, errors marked', (t) => {
  const out: string[] = [];
  const v = new TraceTreeView({ write: (s) => out.push(s), holdMs: 60_000, lingerMs: 0 });
  v.push(span('c2', 'a', 30, 5, { status: { code: 'error', message: 'boom' } }), 'front');
  v.push(span('d', 'c1', 12, 2), 'back');
  v.push(span('c1', 'a', 10, 8), 'front');
  t.deepEqual(out, [], 'nothing printed before the root');
  t.is(v.held, 1);
  v.push(span('a', undefined, 0, 50), 'front');
  t.is(out.length, 1);
  const lines = out[0]!.trimEnd().split('\n');
  t.regex(lines[0]!, new RegExp(`^trace ${T} 4 spans 50.00ms 1 ERROR$`));
  t.regex(lines[1]!, /^ {2}\S+ SERVER front \(pid 7\) GET \/a 200 50\.00ms/);
  t.regex(lines[2]!, /^ {2}├─ \S+ CLIENT front \(pid 7\) GET \/c1 200 8\.00ms/);
  t.regex(lines[3]!, /^ {2}│ {2}└─ \S+ CLIENT back \(pid 7\) GET \/d 200 2\.00ms/);
  t.regex(lines[4]!, /^ {2}└─ \S+ CLIENT front .* GET \/c2 200 ERROR 5\.00ms/);
  t.is(lines.length, 5);
  t.is(v.held, 0);
  t.like(v.stats, { printed: 1, orphaned: 0 });
});

test('a root waits lingerMs for children reported after it (a CLIENT root can end before its SERVER child on the node)', (t) => {
  const out: string[] = [];
  const v = new TraceTreeView({ write: (s) => out.push(s), holdMs: 60_000, lingerMs: 200 });
  v.push(span('a', undefined, 0, 10), 'curl');
  t.deepEqual(out, [], 'not at once');
  v.push(span('b', 'a', 2, 5), 'server');
  v.sweep(Date.now() + 100);
  t.deepEqual(out, []);
  v.sweep(Date.now() + 250);
  t.is(out.length, 1);
  t.regex(out[0]!, new RegExp(`^trace ${T} 2 spans 10\\.00ms\n {2}\\S+ SERVER curl .*\n {2}└─ \\S+ CLIENT server `));
  t.like(v.stats, { printed: 1, orphaned: 0 });
  t.is(v.held, 0);
  // a root alone: printed at stop as what it is, not as an orphan
  v.push({ ...span('c', undefined, 0, 1), traceId: '1'.repeat(32) }, 'solo');
  v.stop();
  t.is(out.length, 2);
  t.false(out[1]!.startsWith('trace '));
  t.like(v.stats, { printed: 2, orphaned: 0 });
});

test('a single-span trace prints as one line (lingerMs 0: at once)', (t) => {
  const out: string[] = [];
  const v = new TraceTreeView({ write: (s) => out.push(s), lingerMs: 0 });
  v.push(span('a', undefined, 0, 3), 'svc');
  t.is(out.length, 1);
  t.regex(out[0]!, /^\S+ SERVER svc \(pid 7\) GET \/a 200 3\.00ms .*trace=4bf9.*\n$/);
  t.false(out[0]!.startsWith('trace '));
});

test('spans whose root never comes are printed after holdMs, marked', (t) => {
  const out: string[] = [];
  const v = new TraceTreeView({ write: (s) => out.push(s), holdMs: 100 });
  v.push(span('b', 'remote', 0, 4), 'svc');
  v.sweep(Date.now() + 50);
  t.is(out.length, 0);
  v.sweep(Date.now() + 150);
  t.is(out.length, 1);
  t.regex(out[0]!, /^trace \S+ 1 spans 4\.00ms \(root not seen\)\n {2}\S+ CLIENT .*\(parent 0000000000remote not seen\)\n$/);
  t.like(v.stats, { printed: 1, orphaned: 1 });
});

test('bounds: the oldest held trace printed early; spans past the per-trace bound printed alone; all counted', (t) => {
  const out: string[] = [];
  const v = new TraceTreeView({ write: (s) => out.push(s), maxTraces: 2, maxSpansPerTrace: 2, holdMs: 60_000 });
  const other = (tr: string, id: string): SidelightSpan => ({ ...span(id, 'p', 0, 1), traceId: tr.repeat(32).slice(0, 32) });
  v.push(other('1', 'x1'), 's');
  v.push(other('2', 'x2'), 's');
  v.push(other('3', 'x3'), 's');
  t.is(v.stats.evicted, 1);
  t.is(out.length, 1);
  t.true(out[0]!.startsWith(`trace ${'1'.repeat(32)}`));
  v.push(other('3', 'y3'), 's');
  v.push(other('3', 'z3'), 's');
  t.is(v.stats.overflowed, 1);
  v.stop();
  t.is(v.held, 0);
  t.is(out.length, 4, 'evicted, overflowed, and the two traces still held at stop');
});

test('renderTree survives a parent cycle (bad input): each span once', (t) => {
  const a = span('a', 'b', 0, 1);
  const b = span('b', 'a', 0, 1);
  const text = renderTree([{ span: a, service: 's' }, { span: b, service: 's' }], true);
  t.is(text.trimEnd().split('\n').length, 3);
});
