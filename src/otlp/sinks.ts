/**
 * sinks.ts — where finished spans go: an OTLP exporter (gRPC, HTTP/protobuf or HTTP/JSON,
 * the OpenTelemetry JS exporters configured from the resolved config) or the terminal
 * (one readable line per span, the default when no endpoint is configured).
 *
 * A sink is created once at start and shut down once at exit. export() resolves, never
 * rejects: failures come back as an outcome the pipeline counts.
 */
import { readFileSync } from 'node:fs';
import { credentials, Metadata } from '@grpc/grpc-js';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { OTLPTraceExporter as GrpcExporter } from '@opentelemetry/exporter-trace-otlp-grpc';
import { OTLPTraceExporter as JsonExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as ProtoExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { CompressionAlgorithm } from '@opentelemetry/otlp-exporter-base';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import {
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_NETWORK_PEER_ADDRESS,
  ATTR_NETWORK_PEER_PORT,
  ATTR_URL_FULL,
  ATTR_URL_PATH,
} from '@opentelemetry/semantic-conventions';
import type { SidelightSpan } from '../receiver/span.js';
import { AGENT_NAME, AGENT_VERSION } from '../version.js';

export interface TracesExportConfig {
  url: string;
  protocol: 'grpc' | 'http/protobuf' | 'http/json';
  headers: Record<string, string>;
  timeoutMs: number;
  compression: 'gzip' | 'none';
  insecure: boolean;
  certificate?: string;
}

export interface ExportOutcome {
  ok: boolean;
  error?: string;
  /** worth trying again (OTLP retry rules); false for rejected data */
  retryable?: boolean;
}

/** gRPC codes the OTLP spec calls retryable (RESOURCE_EXHAUSTED needs RetryInfo: not here). */
const GRPC_RETRYABLE = new Set([1, 4, 10, 11, 14, 15]);
const HTTP_RETRYABLE = new Set([429, 502, 503, 504]);

/** Per the OTLP spec; a failure without a status (connection refused, reset) is retryable. */
export function isRetryable(protocol: TracesExportConfig['protocol'], code: unknown): boolean {
  if (typeof code !== 'number') return true;
  return protocol === 'grpc' ? GRPC_RETRYABLE.has(code) : HTTP_RETRYABLE.has(code);
}

export interface SpanSink {
  readonly name: string;
  export(spans: ReadableSpan[]): Promise<ExportOutcome>;
  shutdown(): Promise<void>;
}

const USER_AGENT = `${AGENT_NAME}/${AGENT_VERSION}`;

/** Constructor options for the OTLP exporters (traces and metrics alike), from our config. */
export function exporterOptions(c: TracesExportConfig) {
  const compression = c.compression === 'gzip' ? CompressionAlgorithm.GZIP : CompressionAlgorithm.NONE;
  const ca = c.certificate ? readFileSync(c.certificate) : undefined;
  const metadata = new Metadata();
  for (const [k, v] of Object.entries(c.headers)) metadata.set(k, v);
  const secure = c.url.startsWith('https://') && !c.insecure;
  return {
    grpc: {
      url: c.url,
      metadata,
      compression,
      timeoutMillis: c.timeoutMs,
      userAgent: USER_AGENT,
      credentials: secure ? credentials.createSsl(ca ?? null) : credentials.createInsecure(),
    },
    http: {
      url: c.url,
      headers: c.headers,
      compression,
      timeoutMillis: c.timeoutMs,
      userAgent: USER_AGENT,
      ...(ca ? { httpAgentOptions: { ca } } : {}),
    },
  };
}

export function createOtlpExporter(c: TracesExportConfig): SpanExporter {
  const o = exporterOptions(c);
  if (c.protocol === 'grpc') return new GrpcExporter(o.grpc);
  return c.protocol === 'http/json' ? new JsonExporter(o.http) : new ProtoExporter(o.http);
}

export class OtlpSink implements SpanSink {
  readonly name: string;
  private readonly exporter: SpanExporter;
  private readonly protocol: TracesExportConfig['protocol'];

  constructor(c: TracesExportConfig, exporter: SpanExporter = createOtlpExporter(c)) {
    this.name = `otlp ${c.protocol} ${c.url}`;
    this.exporter = exporter;
    this.protocol = c.protocol;
  }

  export(spans: ReadableSpan[]): Promise<ExportOutcome> {
    return new Promise((resolve) => {
      try {
        this.exporter.export(spans, (r: ExportResult) =>
          resolve(
            r.code === ExportResultCode.SUCCESS
              ? { ok: true }
              : {
                  ok: false,
                  error: r.error?.message ?? 'export failed',
                  retryable: isRetryable(this.protocol, (r.error as { code?: unknown } | undefined)?.code),
                },
          ),
        );
      } catch (e) {
        resolve({ ok: false, error: (e as Error).message, retryable: false });
      }
    });
  }

  async shutdown(): Promise<void> {
    await this.exporter.shutdown();
  }
}

function ms(ns: bigint): string {
  const v = Number(ns) / 1e6;
  return v >= 100 ? `${v.toFixed(0)}ms` : `${v.toFixed(2)}ms`;
}

/** One readable line per span, for people watching a terminal. */
export function formatSpanLine(s: SidelightSpan, serviceName: string): string {
  const a = s.attributes;
  const when = new Date(Number(s.startUnixNs / 1_000_000n)).toISOString().slice(11, 23);
  const kind = s.kind.toUpperCase().padEnd(6);
  const method = String(a[ATTR_HTTP_REQUEST_METHOD] ?? s.name);
  const what = a[ATTR_URL_FULL] ?? a[ATTR_URL_PATH] ?? '';
  const status = a[ATTR_HTTP_RESPONSE_STATUS_CODE] ?? '';
  const peer = a[ATTR_NETWORK_PEER_ADDRESS] !== undefined ? `${String(a[ATTR_NETWORK_PEER_ADDRESS])}:${String(a[ATTR_NETWORK_PEER_PORT])}` : '';
  const err = s.status.code === 'error' ? ' ERROR' : '';
  return (
    `${when} ${kind} ${serviceName} (pid ${s.process.tgid}) ${method} ${String(what)} ${String(status)}${err} ` +
    `${ms(s.endUnixNs - s.startUnixNs)} peer=${peer} trace=${s.traceId ?? '-'} span=${s.spanId ?? '-'}`
  );
}

