/**
 * A loopback Sentry: the envelope endpoint (POST /api/<project id>/envelope/) of Sentry's
 * ingestion protocol. It checks the DSN's public key (sentry_key, in the query string or
 * the X-Sentry-Auth header) and project id, inflates gzip bodies, and splits the envelope
 * (a header line, then items: a header line and a payload of `length` bytes, or up to the
 * next newline when the header has no length).
 */
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';

export interface EnvelopeItem {
  readonly type: string;
  readonly payload: unknown;
}

export interface SentryReceiver {
  /** A DSN pointing here. */
  readonly dsn: string;
  /** Every accepted envelope as received (decompressed text). */
  readonly bodies: readonly string[];
  /** Requests refused for a wrong key or project. */
  readonly refused: number;
  items(): EnvelopeItem[];
  /** The payloads of the `event` items (error events). */
  events(): Record<string, unknown>[];
  close(): Promise<void>;
}

const PUBLIC_KEY = 'loopbackpublickey0123456789abcd';
const PROJECT_ID = '4242';

/** Splits an envelope into its items (https://develop.sentry.dev/sdk/envelopes/). */
export function parseEnvelope(body: Buffer): EnvelopeItem[] {
  let pos = body.indexOf(0x0a);
  if (pos < 0) return [];
  pos += 1;
  const items: EnvelopeItem[] = [];
  while (pos < body.length) {
    const headerEnd = body.indexOf(0x0a, pos);
    const headerLine = body.subarray(pos, headerEnd < 0 ? body.length : headerEnd).toString('utf8');
    if (headerLine.trim() === '') {
      pos = headerEnd < 0 ? body.length : headerEnd + 1;
      continue;
    }
    const header = JSON.parse(headerLine) as { type: string; length?: number };
    pos = headerEnd < 0 ? body.length : headerEnd + 1;
    let payload: Buffer;
    if (typeof header.length === 'number') {
      payload = body.subarray(pos, pos + header.length);
      pos += header.length;
      if (body[pos] === 0x0a) pos += 1;
    } else {
      const end = body.indexOf(0x0a, pos);
      payload = body.subarray(pos, end < 0 ? body.length : end);
      pos = end < 0 ? body.length : end + 1;
    }
    const text = payload.toString('utf8');
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // Attachments need not be JSON.
    }
    items.push({ type: header.type, payload: parsed });
  }
  return items;
}

function sentryKey(req: IncomingMessage, url: URL): string | undefined {
  const fromQuery = url.searchParams.get('sentry_key');
  if (fromQuery !== null) return fromQuery;
  const header = req.headers['x-sentry-auth'];
  return typeof header === 'string' ? /sentry_key=([^,\s]+)/.exec(header)?.[1] : undefined;
}

export async function startSentryReceiver(): Promise<SentryReceiver> {
  const bodies: string[] = [];
  const items: EnvelopeItem[] = [];
  let refused = 0;
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const m = /^\/api\/(\d+)\/envelope\/$/.exec(url.pathname);
    if (req.method !== 'POST' || !m) {
      res.writeHead(404).end();
      return;
    }
    if (m[1] !== PROJECT_ID || sentryKey(req, url) !== PUBLIC_KEY) {
      refused++;
      res.writeHead(403, { 'content-type': 'application/json' }).end('{"detail":"invalid key"}');
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      try {
        const raw = Buffer.concat(chunks);
        const body = req.headers['content-encoding'] === 'gzip' ? gunzipSync(raw) : raw;
        items.push(...parseEnvelope(body));
        bodies.push(body.toString('utf8'));
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      } catch {
        res.writeHead(400).end();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    dsn: `http://${PUBLIC_KEY}@127.0.0.1:${port}/${PROJECT_ID}`,
    bodies,
    get refused() {
      return refused;
    },
    items: () => [...items],
    events: () => items.filter((i) => i.type === 'event').map((i) => i.payload as Record<string, unknown>),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
