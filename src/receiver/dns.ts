/**
 * dns.ts — DNS lookups as CLIENT spans: queries and answers seen on UDP datagrams (and
 * TCP connections) to the configured resolver ports, decoded with dns-packet, matched by
 * network namespace, socket endpoints, message id and question; a query with no answer
 * within `timeoutMs` ends with error.type "timeout" (sweep()).
 *
 * Span: name `DNS <type> <name>`, dns.question.name, dns.question.type, dns.answers
 * (A/AAAA data), dns.response_code (NOERROR, NXDOMAIN, ...), sidelight.dns.cnames,
 * sidelight.dns.truncated (TC bit), network.transport, server.address/port (the
 * resolver). rcode other than NOERROR: error.type = the rcode name, status error.
 * Parent: the server request the querying thread is serving (trace.ts rules), else none.
 *
 * Owns the pending-query table (bounded by maxPending, oldest dropped and counted) and the
 * per-connection TCP reassembly buffers (bounded). Single-threaded.
 */
import dnsPacket from 'dns-packet';
import {
  ATTR_ERROR_TYPE,
  ATTR_NETWORK_PEER_ADDRESS,
  ATTR_NETWORK_PEER_PORT,
  ATTR_NETWORK_TRANSPORT,
  ATTR_NETWORK_TYPE,
  ATTR_SERVER_ADDRESS,
  ATTR_SERVER_PORT,
} from '@opentelemetry/semantic-conventions';
import type { MonotonicClock } from './clock.js';
import type { KernelEvent } from './decode.js';
import { Direction, EventType } from './layout.js';
import type { AttrValue, ProcessRef, SidelightSpan } from './span.js';
import { withIds } from './spanbuild.js';
import type { TraceCtx, TraceRegistry } from './trace.js';

export const ATTR_DNS_QUESTION_NAME = 'dns.question.name';
export const ATTR_DNS_QUESTION_TYPE = 'dns.question.type';
export const ATTR_DNS_ANSWERS = 'dns.answers';
export const ATTR_DNS_RESPONSE_CODE = 'dns.response_code';
export const ATTR_DNS_CNAMES = 'sidelight.dns.cnames';
export const ATTR_DNS_TRUNCATED = 'sidelight.dns.truncated';

export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

export interface DnsTrackerOptions {
  ports: number[];
  timeoutMs: number;
  maxPending: number;
  /** TCP connections with DNS reassembly state */
  maxTcpStreams?: number;
}

export interface DnsStats {
  queries: number;
  responses: number;
  spans: number;
  timeouts: number;
  /** answers whose query was not seen (sent before the agent started, or dropped) */
  unmatchedResponses: number;
  /** datagrams that are not DNS messages */
  parseErrors: number;
  /** answers cut by the capture size: answers may be missing from the span */
  partialAnswers: number;
  pendingEvicted: number;
  /** TCP DNS streams given up (capture gap or oversize message) */
  tcpDesync: number;
}

/** The result of a (possibly partial) decode. */
export interface DnsMessage {
  id: number;
  response: boolean;
  rcode: string;
  truncated: boolean;
  question?: { name: string; type: string };
  answers: Array<{ type: string; name: string; data: unknown }>;
  /** answers could not all be decoded (message cut short) */
  partial: boolean;
}

/** dns-packet exports its question codec, but its type declarations omit it. */
const questionCodec = (dnsPacket as unknown as { question: { decode(b: Buffer, offset: number): { name: string; type: string } } }).question;

const RCODES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED', 'YXDOMAIN', 'YXRRSET', 'NXRRSET', 'NOTAUTH', 'NOTZONE'];

/** Decode a DNS message; a message cut short keeps its header and question. */
export function decodeDns(buf: Uint8Array): DnsMessage | undefined {
  if (buf.length < 12) return undefined;
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  try {
    const m = dnsPacket.decode(b);
    const q = m.questions?.[0];
    return {
      id: m.id ?? 0,
      response: m.type === 'response',
      rcode: (m as { rcode?: string }).rcode ?? 'NOERROR',
      truncated: (m as { flag_tc?: boolean }).flag_tc === true,
      ...(q ? { question: { name: q.name, type: q.type } } : {}),
      answers: (m.answers ?? []).map((a) => ({ type: a.type, name: a.name, data: (a as { data?: unknown }).data })),
      partial: false,
    };
  } catch {
    // header + first question by hand, if those at least are whole
    const flags = b.readUInt16BE(2);
    if (((flags >> 11) & 0xf) !== 0 || b.readUInt16BE(4) === 0) return undefined; // opcode QUERY, >= 1 question
    let question: DnsMessage['question'];
    try {
      const q = questionCodec.decode(b, 12);
      question = { name: q.name, type: q.type };
    } catch {
      return undefined;
    }
    return {
      id: b.readUInt16BE(0),
      response: (flags & 0x8000) !== 0,
      rcode: RCODES[flags & 0xf] ?? String(flags & 0xf),
      truncated: (flags & 0x0200) !== 0,
      question,
      answers: [],
      partial: true,
    };
  }
}

interface Pending {
  key: string;
  id: number;
  name: string;
  type: string;
  start: bigint;
  process: ProcessRef;
  transport: 'udp' | 'tcp';
  ev: KernelEvent;
  ctx: TraceCtx;
}

interface TcpStream {
  out: Buffer;
  in: Buffer;
  lastSeen: bigint;
}

const MAX_TCP_BUFFER = 65_538;

export class DnsTracker {
  private readonly opts: DnsTrackerOptions;
  private readonly ports: Set<number>;
  private readonly clock: MonotonicClock;
  private readonly traces: TraceRegistry;
  private readonly emit: (s: SidelightSpan) => void;
  private readonly pending = new Map<string, Pending>();
  private readonly tcp = new Map<bigint, TcpStream>();
  readonly stats: DnsStats = {
    queries: 0,
    responses: 0,
    spans: 0,
    timeouts: 0,
    unmatchedResponses: 0,
    parseErrors: 0,
    partialAnswers: 0,
    pendingEvicted: 0,
    tcpDesync: 0,
  };

  constructor(opts: DnsTrackerOptions, clock: MonotonicClock, traces: TraceRegistry, emit: (s: SidelightSpan) => void) {
    this.opts = opts;
    this.ports = new Set(opts.ports);
    this.clock = clock;
    this.traces = traces;
    this.emit = emit;
  }

  get size(): number {
    return this.pending.size;
  }

  /** Does this kernel event belong to DNS? (UDP is only captured for DNS ports.) */
  claims(ev: KernelEvent): boolean {
    if (ev.proto === IPPROTO_UDP) return true;
    return ev.proto === IPPROTO_TCP && this.ports.has(ev.conn.remote.port);
  }

  onEvent(ev: KernelEvent): void {
    if (ev.type === EventType.Close) {
      this.tcp.delete(ev.sock);
      return;
    }
    if (ev.type !== EventType.Data) return;
    if (ev.proto === IPPROTO_UDP) {
      // a datagram smaller than its capture cannot be cut; one bigger than SL_MAX_CAPTURE can
      this.onMessage(ev, ev.data, 'udp');
      return;
    }
    this.onTcpData(ev);
  }

  /** DNS over TCP: each message is prefixed by its 16-bit length. */
  private onTcpData(ev: KernelEvent): void {
    let st = this.tcp.get(ev.sock);
    if (!st) {
      if (this.tcp.size >= (this.opts.maxTcpStreams ?? 4096)) {
        const oldest = this.tcp.keys().next();
        if (!oldest.done) this.tcp.delete(oldest.value);
      }
      st = { out: Buffer.alloc(0), in: Buffer.alloc(0), lastSeen: ev.tsEnd };
      this.tcp.set(ev.sock, st);
    }
    st.lastSeen = ev.tsEnd;
    if (ev.data.length < ev.ret) {
      // bytes we did not capture: framing lost for this connection
      this.stats.tcpDesync++;
      this.tcp.delete(ev.sock);
      return;
    }
    const egress = ev.direction === Direction.Egress;
    let buf = Buffer.concat([egress ? st.out : st.in, ev.data]);
    while (buf.length >= 2) {
      const len = buf.readUInt16BE(0);
      if (buf.length < 2 + len) break;
      this.onMessage(ev, buf.subarray(2, 2 + len), 'tcp');
      buf = buf.subarray(2 + len);
    }
    if (buf.length > MAX_TCP_BUFFER) {
      this.stats.tcpDesync++;
      this.tcp.delete(ev.sock);
      return;
    }
    const rest = Buffer.from(buf); // detach from the batch memory
    if (egress) st.out = rest;
    else st.in = rest;
  }

  private key(ev: KernelEvent, id: number, name: string, type: string): string {
    const c = ev.conn;
    return `${c.netns}|${c.local.address}:${c.local.port}|${c.remote.address}:${c.remote.port}|${id}|${type}|${name.toLowerCase()}`;
  }

  private onMessage(ev: KernelEvent, bytes: Uint8Array, transport: 'udp' | 'tcp'): void {
    const m = decodeDns(bytes);
    if (!m || !m.question) {
      this.stats.parseErrors++;
      return;
    }
    const key = this.key(ev, m.id, m.question.name, m.question.type);
    if (!m.response) {
      if (ev.direction !== Direction.Egress) return; // a query received: we are not the client
      this.stats.queries++;
      if (this.pending.has(key)) return; // a retry of a query in flight: the span covers both
      if (this.pending.size >= this.opts.maxPending) {
        const oldest = this.pending.keys().next();
        if (!oldest.done) this.pending.delete(oldest.value);
        this.stats.pendingEvicted++;
      }
      this.pending.set(key, {
        key,
        id: m.id,
        name: m.question.name,
        type: m.question.type,
        start: ev.tsStart,
        process: { tgid: ev.tgid, tid: ev.tid, comm: ev.comm, cgroupId: ev.cgroupId },
        transport,
        ev,
        ctx: this.traces.threadChild(ev.tgid, ev.tid),
      });
      return;
    }
    if (ev.direction !== Direction.Ingress) return;
    this.stats.responses++;
    const p = this.pending.get(key);
    if (!p) {
      this.stats.unmatchedResponses++;
      return;
    }
    this.pending.delete(key);
    if (m.partial) this.stats.partialAnswers++;
    this.emit(this.buildSpan(p, ev.tsEnd, m));
  }

  /** End queries unanswered for longer than timeoutMs. */
  sweep(): void {
    const cutoff = this.clock.nowMono() - BigInt(this.opts.timeoutMs) * 1_000_000n;
    for (const [key, p] of this.pending) {
      if (p.start >= cutoff) continue;
      this.pending.delete(key);
      this.stats.timeouts++;
      this.emit(this.buildSpan(p, p.start + BigInt(this.opts.timeoutMs) * 1_000_000n, undefined));
    }
    for (const [sock, st] of this.tcp) if (st.lastSeen < cutoff - 60_000_000_000n) this.tcp.delete(sock);
  }

  private buildSpan(p: Pending, endMono: bigint, m: DnsMessage | undefined): SidelightSpan {
    const c = p.ev.conn;
    const attrs: Record<string, AttrValue> = {
      [ATTR_DNS_QUESTION_NAME]: p.name,
      [ATTR_DNS_QUESTION_TYPE]: p.type,
      [ATTR_NETWORK_TRANSPORT]: p.transport,
      [ATTR_NETWORK_TYPE]: c.family === 4 ? 'ipv4' : 'ipv6',
      [ATTR_SERVER_ADDRESS]: c.remote.address,
      [ATTR_SERVER_PORT]: c.remote.port,
      [ATTR_NETWORK_PEER_ADDRESS]: c.remote.address,
      [ATTR_NETWORK_PEER_PORT]: c.remote.port,
    };
    let status: SidelightSpan['status'] = { code: 'unset' };
    if (!m) {
      attrs[ATTR_ERROR_TYPE] = 'timeout';
      status = { code: 'error', message: `no answer within ${this.opts.timeoutMs} ms` };
    } else {
      attrs[ATTR_DNS_RESPONSE_CODE] = m.rcode;
      const ips = m.answers.filter((a) => a.type === 'A' || a.type === 'AAAA').map((a) => String(a.data));
      if (ips.length) attrs[ATTR_DNS_ANSWERS] = ips;
      const cnames = m.answers.filter((a) => a.type === 'CNAME').map((a) => String(a.data));
      if (cnames.length) attrs[ATTR_DNS_CNAMES] = cnames;
      if (m.truncated) attrs[ATTR_DNS_TRUNCATED] = true;
      if (m.rcode !== 'NOERROR') {
        attrs[ATTR_ERROR_TYPE] = m.rcode;
        status = { code: 'error' };
      }
    }
    this.stats.spans++;
    return withIds(
      {
        kind: 'client',
        name: `DNS ${p.type} ${p.name}`,
        startUnixNs: this.clock.toUnixNs(p.start),
        endUnixNs: this.clock.toUnixNs(endMono),
        attributes: attrs,
        status,
        process: p.process,
      },
      p.ctx,
      p.start,
    );
  }
}
