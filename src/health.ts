// Health check HTTP server for the Sidelight agent.
//
// Serves GET/HEAD /healthz (liveness) and /readyz (readiness) from a caller-owned
// HealthState that is read on every request, so the agent flips `live`/`ready` in
// place and the next probe sees it; and, when the state has `metrics`, GET /metrics
// (Prometheus text, the agent's self-telemetry, rendered per request). Also owns the parsing of `host:port` /
// `[v6]:port` listen addresses (config.ts validates health.address with it).
//
// Lifetime: one server per agent, started after config is loaded and closed on
// shutdown. The server is deliberately not unref()'d; close() also drops
// keep-alive connections so shutdown never hangs on an idle probe client.

import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { isIP, isIPv6, type AddressInfo } from 'node:net';

/** Prometheus text exposition format 0.0.4. */
const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** What the health endpoints report. Read at request time; mutate it in place. */
export interface HealthState {
  /** The process is working; false makes GET /healthz return 503 (restart me). */
  live: boolean;
  /** The agent is attached and exporting; false makes GET /readyz return 503. */
  ready: boolean;
  /** Extra fields merged into every JSON response body (e.g. probe counts, last error). */
  detail: () => Record<string, unknown>;
  /** The current service map, served as GET /map (absent: 404). */
  map?: () => unknown;
  /** Prometheus text exposition for GET /metrics (the agent's self-telemetry); absent: 404. */
  metrics?: () => string;
}

/** A running health server. */
export interface HealthServer {
  /** The address actually bound, as host:port or [v6]:port (resolves port 0). */
  address: string;
  /** Stops listening and drops open connections. Safe to call more than once. */
  close(): Promise<void>;
}

/** A parsed listen address. `host` has no brackets (IPv6 is returned as `::1`). */
export interface HostPort {
  host: string;
  port: number;
}

/** Human description of what parseHostPort accepts; used in config error messages. */
export const HOST_PORT_ALLOWED =
  'must be host:port or [ipv6]:port with a port from 0 to 65535, e.g. 127.0.0.1:13133, 0.0.0.0:13133 or [::1]:13133';

const HOSTNAME_RE = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/**
 * Parses `host:port` or `[ipv6]:port`. The host is required (write 0.0.0.0 or
 * [::] to listen on all interfaces); an unbracketed IPv6 address is rejected as
 * ambiguous. Returns null when the address is not valid.
 */
export function parseHostPort(address: string): HostPort | null {
  let host: string;
  let portText: string;
  if (address.startsWith('[')) {
    const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(address);
    if (!m || !isIPv6(m[1]!)) return null;
    host = m[1]!;
    portText = m[2]!;
  } else {
    const m = /^([^:]+):(\d{1,5})$/.exec(address);
    if (!m) return null;
    host = m[1]!;
    portText = m[2]!;
    if (isIP(host) !== 4 && !HOSTNAME_RE.test(host)) return null;
    if (/^[0-9.]+$/.test(host) && isIP(host) !== 4) return null; // 1.2.3 or 999.1.1.1
  }
  const port = Number(portText);
  if (port > 65535) return null;
  return { host, port };
}

function formatHostPort(host: string, port: number): string {
  return isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
}

function send(req: IncomingMessage, res: ServerResponse, status: number, body: Record<string, unknown>, extraHeaders: Record<string, string> = {}): void {
  const text = JSON.stringify(body) + '\n';
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    ...extraHeaders,
  });
  // Node drops the body of HEAD responses by itself; end() it either way.
  res.end(req.method === 'HEAD' ? undefined : text);
}

function probeBody(ok: boolean, state: HealthState): Record<string, unknown> {
  const body: Record<string, unknown> = { status: ok ? 'ok' : 'unavailable' };
  try {
    Object.assign(body, state.detail());
  } catch (err) {
    // A broken detail() must not change what the probe reports.
    body['detailError'] = err instanceof Error ? err.message : String(err);
  }
  body['status'] = ok ? 'ok' : 'unavailable'; // detail() cannot override the verdict
  return body;
}

function handle(state: HealthState, req: IncomingMessage, res: ServerResponse): void {
  const path = (req.url ?? '/').split('?', 1)[0];
  if (path === '/map' && state.map && (req.method === 'GET' || req.method === 'HEAD')) {
    send(req, res, 200, state.map() as Record<string, unknown>);
    return;
  }
  const metrics = path === '/metrics' && state.metrics !== undefined;
  const known = path === '/healthz' || path === '/readyz' || metrics;
  if (!known) {
    send(req, res, 404, { status: 'not found', paths: ['/healthz', '/readyz'] });
    return;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    send(req, res, 405, { status: 'method not allowed', allowed: ['GET', 'HEAD'] }, { allow: 'GET, HEAD' });
    return;
  }
  if (metrics) {
    let text: string;
    try {
      text = state.metrics!();
    } catch (err) {
      send(req, res, 500, { status: 'error', error: err instanceof Error ? err.message : String(err) });
      return;
    }
    res.writeHead(200, { 'content-type': PROMETHEUS_CONTENT_TYPE, 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : text);
    return;
  }
  const ok = path === '/healthz' ? state.live === true : state.ready === true;
  send(req, res, ok ? 200 : 503, probeBody(ok, state));
}

/**
 * Starts the health server on `address` (host:port or [v6]:port; port 0 picks a
 * free port). Resolves once listening; rejects with an Error naming the address
 * (and carrying the errno `code`, e.g. EADDRINUSE, EACCES) when binding fails.
 */
export async function startHealthServer(address: string, state: HealthState): Promise<HealthServer> {
  const hp = parseHostPort(address);
  if (!hp) throw new Error(`health server: invalid address ${JSON.stringify(address)}: ${HOST_PORT_ALLOWED}`);

  const server = createServer((req, res) => handle(state, req, res));
  server.requestTimeout = 5000;
  server.headersTimeout = 5000;

  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      const why =
        err.code === 'EADDRINUSE' ? 'address already in use'
        : err.code === 'EACCES' ? 'permission denied'
        : err.code === 'EADDRNOTAVAIL' ? 'address not available on this host'
        : err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN' ? 'host name does not resolve'
        : err.message;
      const wrapped = new Error(`health server: cannot listen on ${address}: ${why}${err.code ? ` (${err.code})` : ''}`, { cause: err });
      Object.assign(wrapped, { code: err.code });
      reject(wrapped);
    };
    server.once('error', onError);
    server.listen({ host: hp.host, port: hp.port }, () => {
      server.off('error', onError);
      resolve();
    });
  });

  // After a successful bind, a server error (e.g. EMFILE on accept) must not crash the agent.
  server.on('error', (err) => process.emitWarning(`health server on ${address}: ${err.message}`));

  const info = server.address() as AddressInfo;
  let closing: Promise<void> | undefined;
  return {
    address: formatHostPort(info.address, info.port),
    close(): Promise<void> {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
