/**
 * metricexporter.ts — a PushMetricExporter over our own transport (transport.ts), so metric
 * exports get the same classification as spans: outcome codes counted, partial success
 * (`rejected_data_points`) counted and logged at most once per `logIntervalMs`. Serialization
 * is @opentelemetry/otlp-transformer's. One attempt per export: the metric loop sends a
 * fresh cumulative snapshot next interval anyway, so a lost round loses no totals.
 * exportBatch() sends many workloads (ResourceMetrics) in one request: the transformer
 * serializes one resource per request, so protobuf bodies are concatenated (a repeated field
 * of concatenated messages merges) and JSON bodies merged.
 *
 * Created once at start, shut down once. Exports may overlap (per-workload rounds are
 * sequential in the loop, the self-telemetry loop runs beside it); stats are plain counters.
 */
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { JsonMetricsSerializer, ProtobufMetricsSerializer } from '@opentelemetry/otlp-transformer';
import type { PushMetricExporter, ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { createTransport, type OtlpTransport, type TransportConfig } from './transport.js';

export interface MetricExporterStats {
  exports: number;
  failures: number;
  /** failed exports by outcome code */
  errorsByCode: Record<string, number>;
  /** data points the server rejected in partial successes */
  rejectedDataPoints: number;
  partialSuccesses: number;
}

export class OtlpMetricExporter implements PushMetricExporter {
  private readonly transport: OtlpTransport;
  private readonly json: boolean;
  private readonly onError: (m: string) => void;
  private readonly logIntervalMs: number;
  private lastLog = -Infinity;
  private readonly pending = new Set<Promise<void>>();
  readonly stats: MetricExporterStats = { exports: 0, failures: 0, errorsByCode: {}, rejectedDataPoints: 0, partialSuccesses: 0 };

  constructor(c: TransportConfig, onError: (m: string) => void = () => {}, logIntervalMs = 10_000, transport: OtlpTransport = createTransport(c, 'metrics')) {
    this.transport = transport;
    this.json = c.protocol === 'http/json';
    this.onError = onError;
    this.logIntervalMs = logIntervalMs;
  }

  export(metrics: ResourceMetrics, resultCallback: (result: ExportResult) => void): void {
    this.exportBatch([metrics], resultCallback);
  }

  /** Several workloads in one request. */
  exportBatch(metrics: ResourceMetrics[], resultCallback: (result: ExportResult) => void): void {
    const p = this.send(metrics).then(resultCallback);
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p));
  }

  private serialize(metrics: ResourceMetrics[]): Uint8Array | undefined {
    if (!this.json) {
      const parts: Uint8Array[] = [];
      for (const m of metrics) {
        const b = ProtobufMetricsSerializer.serializeRequest(m);
        if (b) parts.push(b);
      }
      return parts.length === 0 ? undefined : parts.length === 1 ? parts[0] : Buffer.concat(parts);
    }
    const resourceMetrics: unknown[] = [];
    for (const m of metrics) {
      const b = JsonMetricsSerializer.serializeRequest(m);
      if (b) resourceMetrics.push(...(JSON.parse(Buffer.from(b).toString('utf8')) as { resourceMetrics: unknown[] }).resourceMetrics);
    }
    return resourceMetrics.length ? Buffer.from(JSON.stringify({ resourceMetrics })) : undefined;
  }

  private async send(metrics: ResourceMetrics[]): Promise<ExportResult> {
    const ser = this.json ? JsonMetricsSerializer : ProtobufMetricsSerializer;
    let body: Uint8Array | undefined;
    try {
      body = this.serialize(metrics);
    } catch (e) {
      return this.fail('SERIALIZE_ERROR', `serialize: ${(e as Error).message}`);
    }
    if (!body) return this.fail('SERIALIZE_ERROR', 'serialize: nothing to send');
    const r = await this.transport.send(body);
    if (!r.ok) return this.fail(r.code, r.error ?? r.code);
    this.stats.exports++;
    if (r.body && r.body.length > 0) {
      try {
        const p = ser.deserializeResponse(r.body).partialSuccess;
        const rejected = Number(p?.rejectedDataPoints ?? 0);
        if (p && (rejected > 0 || p.errorMessage)) {
          this.stats.partialSuccesses++;
          this.stats.rejectedDataPoints += rejected;
          const now = Date.now();
          if (now - this.lastLog >= this.logIntervalMs) {
            this.lastLog = now;
            this.onError(`metric export: partial success, ${rejected} data points rejected: ${p.errorMessage || 'no reason given'}`);
          }
        }
      } catch {
        /* an unreadable response still means the data was accepted */
      }
    }
    return { code: ExportResultCode.SUCCESS };
  }

  private fail(code: string, message: string): ExportResult {
    this.stats.failures++;
    this.stats.errorsByCode[code] = (this.stats.errorsByCode[code] ?? 0) + 1;
    return { code: ExportResultCode.FAILED, error: new Error(message) };
  }

  async forceFlush(): Promise<void> {
    await Promise.all([...this.pending]);
  }

  async shutdown(): Promise<void> {
    await this.forceFlush();
    await this.transport.shutdown();
  }
}
