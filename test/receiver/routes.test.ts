import test from 'ava';
import { collapseSegment, MAX_SEGMENTS, parseRouteTemplate, RouteTemplater } from '../../src/receiver/routes.js';

const heuristic = new RouteTemplater({ heuristic: true, templates: [] });

const HEURISTIC_CASES: Array<[string, string]> = [
  ['/', '/'],
  ['/hello.txt', '/hello.txt'],
  ['/users/42', '/users/{id}'],
  ['/users/42/orders/7', '/users/{id}/orders/{id}'],
  ['/api/v1/items/', '/api/v1/items/'],
  ['/o/123e4567-e89b-12d3-a456-426614174000', '/o/{uuid}'],
  ['/o/123E4567-E89B-12D3-A456-426614174000/x', '/o/{uuid}/x'],
  ['/blob/d41d8cd98f00b204e9800998ecf8427e', '/blob/{hash}'],
  ['/commit/3f2a9c1b', '/commit/{hash}'],
  ['/deadbeef', '/deadbeef'], // 8 hex letters, no digit: a word
  ['/abcdefabcdefabcd', '/{hash}'], // 16 hex characters
  ['/reset/eyJhbGciOiJIUzI1NiJ9xYz', '/reset/{token}'],
  ['/user-profile-settings-page', '/user-profile-settings-page'], // long, no digits
  ['/v2/api3', '/v2/api3'],
  ['*', ''],
];

for (const [path, want] of HEURISTIC_CASES) {
  test(`heuristic: ${path} → ${want || '(none)'}`, (t) => {
    t.is(heuristic.route(path), want === '' ? undefined : want);
  });
}

test('paths deeper than MAX_SEGMENTS end in /*', (t) => {
  const path = '/a'.repeat(MAX_SEGMENTS + 5);
  t.is(heuristic.route(path), `${'/a'.repeat(MAX_SEGMENTS)}/*`);
});

test('templates win over the heuristic, first match in order, route as written', (t) => {
  const r = new RouteTemplater({ heuristic: true, templates: ['/users/{userId}', '/users/{userId}/orders/{order}', '/static/*', '/'] });
  t.is(r.route('/users/alice'), '/users/{userId}');
  t.is(r.route('/users/alice/orders/9'), '/users/{userId}/orders/{order}');
  t.is(r.route('/static'), '/static/*', '* matches zero segments');
  t.is(r.route('/static/css/a.css'), '/static/*');
  t.is(r.route('/'), '/');
  t.is(r.route('/users/'), '/users/', 'a placeholder needs a non-empty segment; heuristic keeps it');
  t.is(r.route('/other/5'), '/other/{id}', 'no template: heuristic');
});

test('templates only: no match means no route', (t) => {
  const r = new RouteTemplater({ heuristic: false, templates: ['/api/{x}'] });
  t.is(r.route('/api/1'), '/api/{x}');
  t.is(r.route('/api/1/2'), undefined);
  t.is(r.route('/hello'), undefined);
});

const BAD_TEMPLATES: Array<[string, RegExp]> = [
  ['', /1 to 512 characters/],
  ['users/{id}', /must start with "\/"/],
  ['/a/*/b', /only as the last segment/],
  ['/a/x{id}', /whole segment/],
  ['/a//b', /empty segment/],
  ['/a?b=1', /"\?"/],
  ['/{1x}', /whole segment/],
];

for (const [tpl, msg] of BAD_TEMPLATES) {
  test(`bad template ${JSON.stringify(tpl)} is rejected with a reason`, (t) => {
    t.throws(() => parseRouteTemplate(tpl), { message: msg });
    t.throws(() => new RouteTemplater({ heuristic: true, templates: ['/ok', tpl] }), { message: /http\.routes\.templates\[1\]/ });
  });
}

test('collapseSegment leaves names alone', (t) => {
  for (const s of ['index.html', 'v1', 'health', 'favicon.ico', 'café']) t.is(collapseSegment(s), s);
});
