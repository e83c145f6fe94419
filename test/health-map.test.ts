// GET /map on the health server (src/health.ts): served only when the agent gives a map,
// read at request time; fetchMap (src/servicemap.ts) against it.
import test from 'ava';
import { startHealthServer } from '../src/health.js';
import type { ServiceMap } from '../src/otlp/servicegraph.js';
import { fetchMap } from '../src/servicemap.js';

const state = (map?: () => unknown) => ({ live: true, ready: true, detail: () => ({}), ...(map ? { map } : {}) });

test('GET /map returns the current map, read at request time', async (t) => {
  let map: ServiceMap = { edges: [], pending: 0 };
  const s = await startHealthServer('127.0.0.1:0', state(() => map));
  t.teardown(() => s.close());
  t.deepEqual(await fetchMap(s.address), { edges: [], pending: 0 });
  map = { edges: [{ client: 'a', server: 'b', connectionType: '', requests: 2, failed: 1, clientMeanSeconds: 0.5, lastUnixMs: 7 }], pending: 1 };
  const got = await fetchMap(s.address);
  t.deepEqual(got.edges, map.edges);
  t.is(got.pending, 1);
});

test('without a map, /map is 404 and fetchMap says so', async (t) => {
  const s = await startHealthServer('127.0.0.1:0', state());
  t.teardown(() => s.close());
  await t.throwsAsync(fetchMap(s.address), { message: `http://${s.address}/map: HTTP 404` });
});
