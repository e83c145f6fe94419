/**
 * filesink.ts — spans to a file as OTLP JSON lines: each batch is one
 * ExportTraceServiceRequest in OTLP/JSON (@opentelemetry/otlp-transformer's JSON encoding:
 * hex ids, camelCase fields), on one line — the format the Collector's `file` exporter writes
 * and its `otlpjsonfile` receiver reads. Used behind an ExportPipeline (batching, bounded
 * queue, drops counted) for `sidelight run --output FILE` / `export.file`.
 *
 * The file is opened for append at construction (a bad path fails the agent's start, with
 * the path in the message); writes go through one stream, in order; shutdown() closes it.
 */
import { createWriteStream, openSync, type WriteStream } from 'node:fs';
import { JsonTraceSerializer } from '@opentelemetry/otlp-transformer';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import type { ExportOutcome, SpanSink } from './sinks.js';

export class FileSink implements SpanSink {
  readonly name: string;
  private readonly stream: WriteStream;
  private error: Error | undefined;

  constructor(path: string) {
    this.name = `file ${path}`;
    let fd: number;
    try {
      fd = openSync(path, 'a', 0o644);
    } catch (e) {
      throw new Error(`export.file: cannot open ${path} for writing: ${(e as Error).message}`, { cause: e });
    }
    this.stream = createWriteStream('', { fd });
    this.stream.on('error', (e) => (this.error = e));
  }

  async export(spans: ReadableSpan[]): Promise<ExportOutcome> {
    if (this.error) return { ok: false, retryable: false, code: 'WRITE_ERROR', error: `write ${this.name}: ${this.error.message}` };
    const body = JsonTraceSerializer.serializeRequest(spans);
    if (!body) return { ok: false, retryable: false, code: 'SERIALIZE_ERROR', error: 'serialize: nothing to write' };
    const line = Buffer.concat([body, Buffer.from('\n')]);
    return new Promise((resolve) =>
      this.stream.write(line, (e) =>
        resolve(e ? { ok: false, retryable: false, code: 'WRITE_ERROR', error: `write ${this.name}: ${e.message}` } : { ok: true, code: 'OK' }),
      ),
    );
  }

  shutdown(): Promise<void> {
    return new Promise((resolve) => this.stream.end(() => resolve()));
  }
}
