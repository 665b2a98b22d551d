/**
 * A loopback OpenTelemetry collector: OTLP/HTTP with the JSON encoding (POST /v1/traces,
 * an ExportTraceServiceRequest body, optionally gzip-compressed), answered 200 `{}` as
 * the specification's full-success response. Protobuf bodies are refused with 415 so a
 * misconfigured exporter fails the test instead of passing it with nothing decoded.
 */
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';

/** OTLP JSON AnyValue: one of these members is set. */
export interface OtlpValue {
  readonly stringValue?: string;
  readonly intValue?: string | number;
  readonly boolValue?: boolean;
  readonly doubleValue?: number;
}

interface OtlpAttribute {
  readonly key: string;
  readonly value: OtlpValue;
}

interface OtlpSpanJson {
  readonly traceId: string;
  readonly spanId: string;
  readonly parentSpanId?: string;
  readonly name: string;
  readonly kind: number;
  readonly attributes?: readonly OtlpAttribute[];
  readonly status?: { readonly code?: number };
}

interface ExportTraceServiceRequest {
  readonly resourceSpans?: readonly {
    readonly resource?: { readonly attributes?: readonly OtlpAttribute[] };
    readonly scopeSpans?: readonly { readonly scope?: { readonly name?: string }; readonly spans?: readonly OtlpSpanJson[] }[];
  }[];
}

/** A received span with its attributes and its resource's as plain objects. */
export interface ReceivedSpan {
  readonly traceId: string;
  readonly spanId: string;
  readonly parentSpanId: string | undefined;
  readonly name: string;
  /** OTLP SpanKind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer. */
  readonly kind: number;
  /** OTLP StatusCode: 0 unset, 1 ok, 2 error. */
  readonly statusCode: number;
  readonly attributes: Readonly<Record<string, string | number | boolean>>;
  readonly resource: Readonly<Record<string, string | number | boolean>>;
  readonly scope: string | undefined;
}

export const SPAN_KIND = { internal: 1, server: 2, client: 3, producer: 4, consumer: 5 } as const;

export interface OtlpReceiver {
  /** Base URL, as OTEL_EXPORTER_OTLP_ENDPOINT takes it. */
  readonly url: string;
  /** Every export body as received (decompressed text), for "never appears" assertions. */
  readonly bodies: readonly string[];
  spans(): ReceivedSpan[];
  close(): Promise<void>;
}

function plain(attributes: readonly OtlpAttribute[] | undefined): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const { key, value } of attributes ?? []) {
    if (value.stringValue !== undefined) out[key] = value.stringValue;
    else if (value.intValue !== undefined) out[key] = Number(value.intValue);
    else if (value.boolValue !== undefined) out[key] = value.boolValue;
    else if (value.doubleValue !== undefined) out[key] = value.doubleValue;
  }
  return out;
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const raw = Buffer.concat(chunks);
  return req.headers['content-encoding'] === 'gzip' ? gunzipSync(raw) : raw;
}

export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const bodies: string[] = [];
  const requests: ExportTraceServiceRequest[] = [];
  const server = createServer((req, res) => {
    const reply = (status: number, body: string) => res.writeHead(status, { 'content-type': 'application/json' }).end(body);
    if (req.method !== 'POST' || req.url !== '/v1/traces') {
      reply(404, '{}');
      return;
    }
    if (!(req.headers['content-type'] ?? '').startsWith('application/json')) {
      reply(415, '{}');
      return;
    }
    readBody(req)
      .then((body) => {
        const text = body.toString('utf8');
        requests.push(JSON.parse(text) as ExportTraceServiceRequest);
        bodies.push(text);
        reply(200, '{}');
      })
      .catch(() => reply(400, '{}'));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    bodies,
    spans: () =>
      requests.flatMap((r) =>
        (r.resourceSpans ?? []).flatMap((rs) => {
          const resource = plain(rs.resource?.attributes);
          return (rs.scopeSpans ?? []).flatMap((ss) =>
            (ss.spans ?? []).map((s) => ({
              traceId: s.traceId,
              spanId: s.spanId,
              parentSpanId: s.parentSpanId === undefined || s.parentSpanId === '' ? undefined : s.parentSpanId,
              name: s.name,
              kind: s.kind,
              statusCode: s.status?.code ?? 0,
              attributes: plain(s.attributes),
              resource,
              scope: ss.scope?.name,
            })),
          );
        }),
      ),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
