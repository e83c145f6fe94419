import test from 'ava';
import type { ServiceMap } from '../src/otlp/servicegraph.js';
import { formatDot, formatMermaid, formatText } from '../src/servicemap.js';

const MAP: ServiceMap = {
  pending: 0,
  edges: [
    { client: 'curl', server: 'front', connectionType: '', requests: 3, failed: 0, clientMeanSeconds: 0.004, serverMeanSeconds: 0.0025, lastUnixMs: 1 },
    { client: 'front', server: 'back "py"', connectionType: '', requests: 3, failed: 1, clientMeanSeconds: 0.002, serverMeanSeconds: 0.001, lastUnixMs: 1 },
    { client: 'front', server: '10.0.0.9', connectionType: 'virtual_node', requests: 1, failed: 0, clientMeanSeconds: 0.01, lastUnixMs: 1 },
  ],
};

test('text: one aligned line per edge', (t) => {
  t.is(
    formatText(MAP),
    [
      'curl -> front       requests=3  failed=0  client=4.00ms   server=2.50ms',
      'front -> back "py"  requests=3  failed=1  client=2.00ms   server=1.00ms',
      'front -> 10.0.0.9   requests=1  failed=0  client=10.00ms  server=-       [virtual_node]',
      '',
    ].join('\n'),
  );
  t.is(formatText({ edges: [], pending: 2 }), 'no edges yet (2 span(s) waiting for their other end)\n');
});

test('dot: quoted names, failed edges red, virtual nodes dashed', (t) => {
  t.is(
    formatDot(MAP),
    [
      'digraph sidelight {',
      '  rankdir=LR;',
      '  node [shape=box];',
      '  "10.0.0.9" [style=dashed];',
      '  "curl" -> "front" [label="3 req, 0 failed"];',
      '  "front" -> "back \\"py\\"" [label="3 req, 1 failed", color=red];',
      '  "front" -> "10.0.0.9" [label="1 req, 0 failed"];',
      '}',
      '',
    ].join('\n'),
  );
});

test('mermaid: node ids with labels declared once, dotted arrows to virtual nodes', (t) => {
  t.is(
    formatMermaid(MAP),
    [
      'flowchart LR',
      '  n0["curl"] -->|"3 req, 0 failed"| n1["front"]',
      '  n1 -->|"3 req, 1 failed"| n2["back #quot;py#quot;"]',
      '  n1 -.->|"1 req, 0 failed"| n3["10.0.0.9"]',
      '',
    ].join('\n'),
  );
});
