// Tests for src/receiver/grpc.ts: gRPC detection by content-type, :path parsing, grpc-status
// names and parsing, grpc-message percent-decoding, Trailers-Only, the call status rules, the
// HTTP-status and RST_STREAM mappings of PROTOCOL-HTTP2.md and the OTel error rule per span
// kind. Table-driven, pure. (gRPC over real HTTP/2 traffic is covered in http2.test.ts.)

import test from 'ava';
import {
  GRPC_STATUS_NAMES,
  grpcCallStatus,
  grpcMessage,
  grpcMethod,
  grpcStatus,
  grpcStatusFromHttp,
  grpcStatusFromReset,
  grpcStatusName,
  isGrpc,
  isGrpcError,
  isTrailersOnly,
  type GrpcMethod,
  type Headers,
} from '../../src/receiver/grpc.js';

const IS_GRPC: Array<[string | undefined, boolean]> = [
  ['application/grpc', true],
  ['application/grpc+proto', true],
  ['application/grpc+json', true],
  ['application/grpc;charset=utf-8', true],
  ['Application/GRPC', true],
  ['  application/grpc  ', true],
  ['application/grpc-web', false],
  ['application/grpc-web+proto', false],
  ['application/grpcx', false],
  ['application/json', false],
  ['text/plain', false],
  ['', false],
  [undefined, false],
];

for (const [ct, expected] of IS_GRPC) {
  test(`isGrpc(content-type ${JSON.stringify(ct)}) = ${expected}`, (t) => {
    const headers: Headers = ct === undefined ? [[':path', '/a.B/C']] : [[':method', 'POST'], ['content-type', ct]];
    t.is(isGrpc(headers), expected);
  });
}

test('isGrpc: the header name is matched case-insensitively; non-arrays are not gRPC', (t) => {
  t.true(isGrpc([['Content-Type', 'application/grpc']]));
  t.false(isGrpc(undefined as unknown as Headers));
  t.false(isGrpc([['content-type']] as unknown as Headers));
});

const METHODS: Array<[string, GrpcMethod | undefined]> = [
  ['/pkg.Service/Method', { service: 'pkg.Service', method: 'Method', rpcMethod: 'pkg.Service/Method' }],
  ['/grpc.health.v1.Health/Check', { service: 'grpc.health.v1.Health', method: 'Check', rpcMethod: 'grpc.health.v1.Health/Check' }],
  ['/Service/Method', { service: 'Service', method: 'Method', rpcMethod: 'Service/Method' }],
  ['/a.b_c.D2/get_thing', { service: 'a.b_c.D2', method: 'get_thing', rpcMethod: 'a.b_c.D2/get_thing' }],
  ['pkg.Service/Method', undefined],
  ['/pkg.Service', undefined],
  ['/pkg.Service/', undefined],
  ['//Method', undefined],
  ['/pkg.Service/Method/extra', undefined],
  ['/pkg.Service/Method?x=1', undefined],
  ['/pkg..Service/Method', undefined],
  ['/.Service/Method', undefined],
  ['/pkg Service/Method', undefined],
  ['/', undefined],
  ['', undefined],
  [`/${'a'.repeat(1100)}/M`, undefined],
];

for (const [path, expected] of METHODS) {
  test(`grpcMethod(${JSON.stringify(path.length > 40 ? path.slice(0, 40) + '…' : path)})`, (t) => {
    t.deepEqual(grpcMethod(path), expected);
  });
}

test('grpcMethod(non-string) is undefined', (t) => {
  t.is(grpcMethod(42 as unknown as string), undefined);
});

test('status names: 17 canonical codes in order, unknown codes named by their number', (t) => {
  t.deepEqual(GRPC_STATUS_NAMES, [
    'OK',
    'CANCELLED',
    'UNKNOWN',
    'INVALID_ARGUMENT',
    'DEADLINE_EXCEEDED',
    'NOT_FOUND',
    'ALREADY_EXISTS',
    'PERMISSION_DENIED',
    'RESOURCE_EXHAUSTED',
    'FAILED_PRECONDITION',
    'ABORTED',
    'OUT_OF_RANGE',
    'UNIMPLEMENTED',
    'INTERNAL',
    'UNAVAILABLE',
    'DATA_LOSS',
    'UNAUTHENTICATED',
  ]);
  t.is(grpcStatusName(17), '17');
  t.is(grpcStatusName(999), '999');
});

const STATUS: Array<[string | undefined, { code: number; name: string } | undefined]> = [
  ['0', { code: 0, name: 'OK' }],
  ['5', { code: 5, name: 'NOT_FOUND' }],
  ['16', { code: 16, name: 'UNAUTHENTICATED' }],
  [' 14 ', { code: 14, name: 'UNAVAILABLE' }],
  ['17', { code: 17, name: '17' }],
  ['2147483647', { code: 2147483647, name: '2147483647' }],
  ['2147483648', undefined],
  ['-1', undefined],
  ['+1', undefined],
  ['1.0', undefined],
  ['0x1', undefined],
  ['', undefined],
  ['OK', undefined],
  [undefined, undefined],
];

for (const [value, expected] of STATUS) {
  test(`grpcStatus(grpc-status: ${JSON.stringify(value)})`, (t) => {
    const headers: Headers = value === undefined ? [['grpc-message', 'x']] : [['grpc-message', 'x'], ['grpc-status', value]];
    t.deepEqual(grpcStatus(headers), expected);
  });
}

test('grpcStatus takes the first grpc-status', (t) => {
  t.deepEqual(grpcStatus([['grpc-status', '3'], ['grpc-status', '4']]), { code: 3, name: 'INVALID_ARGUMENT' });
});

const MESSAGES: Array<[string | undefined, string | undefined]> = [
  ['plain text', 'plain text'],
  ['user%20not%20found', 'user not found'],
  ['100%25 done', '100% done'],
  ['caf%C3%A9', 'café'],
  ['bad %zz escape %4', 'bad %zz escape %4'],
  ['', ''],
  [undefined, undefined],
];

for (const [value, expected] of MESSAGES) {
  test(`grpcMessage(${JSON.stringify(value)})`, (t) => {
    t.is(grpcMessage(value === undefined ? [] : [['grpc-message', value]]), expected);
  });
}

test('Trailers-Only and the call status: trailers win, else a Trailers-Only response, else unknown', (t) => {
  const resp: Headers = [[':status', '200'], ['content-type', 'application/grpc']];
  const trailersOnly: Headers = [...resp, ['grpc-status', '12']];
  t.true(isTrailersOnly(trailersOnly, true));
  t.false(isTrailersOnly(trailersOnly, false), 'without END_STREAM it is not Trailers-Only');
  t.false(isTrailersOnly(resp, true), 'END_STREAM without grpc-status');
  t.deepEqual(grpcCallStatus(resp, false, [['grpc-status', '0']]), { code: 0, name: 'OK' });
  t.deepEqual(grpcCallStatus(trailersOnly, true, undefined), { code: 12, name: 'UNIMPLEMENTED' });
  t.deepEqual(grpcCallStatus(trailersOnly, false, [['grpc-status', '4']]), { code: 4, name: 'DEADLINE_EXCEEDED' });
  t.is(grpcCallStatus(resp, false, undefined), undefined);
  t.is(grpcCallStatus(resp, true, undefined), undefined);
  t.is(grpcCallStatus(undefined, false, undefined), undefined);
  t.is(grpcCallStatus(resp, false, [['x-other', '1']]), undefined, 'trailers without grpc-status');
});

const FROM_HTTP: Array<[number, string]> = [
  [400, 'INTERNAL'],
  [401, 'UNAUTHENTICATED'],
  [403, 'PERMISSION_DENIED'],
  [404, 'UNIMPLEMENTED'],
  [429, 'UNAVAILABLE'],
  [502, 'UNAVAILABLE'],
  [503, 'UNAVAILABLE'],
  [504, 'UNAVAILABLE'],
  [500, 'UNKNOWN'],
  [200, 'UNKNOWN'],
  [302, 'UNKNOWN'],
];

for (const [status, name] of FROM_HTTP) {
  test(`grpcStatusFromHttp(${status}) = ${name}`, (t) => {
    t.is(grpcStatusFromHttp(status).name, name);
    t.is(GRPC_STATUS_NAMES[grpcStatusFromHttp(status).code], name);
  });
}

const FROM_RESET: Array<[number, string]> = [
  [0x0, 'INTERNAL'],
  [0x1, 'INTERNAL'],
  [0x2, 'INTERNAL'],
  [0x3, 'INTERNAL'],
  [0x7, 'UNAVAILABLE'],
  [0x8, 'CANCELLED'],
  [0xb, 'RESOURCE_EXHAUSTED'],
  [0xc, 'PERMISSION_DENIED'],
  [0xd, 'INTERNAL'],
  [-1, 'INTERNAL'],
];

for (const [code, name] of FROM_RESET) {
  test(`grpcStatusFromReset(${code}) = ${name}`, (t) => {
    t.is(grpcStatusFromReset(code).name, name);
  });
}

test('isGrpcError: CLIENT every code except OK; SERVER only UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS', (t) => {
  const client = Array.from({ length: 17 }, (_, c) => isGrpcError(c, 'client'));
  const server = Array.from({ length: 17 }, (_, c) => isGrpcError(c, 'server'));
  t.deepEqual(client, [false, ...Array<boolean>(16).fill(true)]);
  t.deepEqual(
    GRPC_STATUS_NAMES.filter((_, c) => server[c]),
    ['UNKNOWN', 'DEADLINE_EXCEEDED', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS'],
  );
  t.true(isGrpcError(99, 'client'));
  t.false(isGrpcError(99, 'server'));
});
