/**
 * Helpers for the platform HTTP tests: a bare server from the real factory (for routes
 * the application does not have, such as one that throws), a log capture, and a tiny
 * raw-socket client for what app.inject() cannot send (invalid HTTP, pipelining).
 */
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { createHttpServer, installAuthorization, installCompression, registerDocsRoutes, type App, type HttpOptions } from '../../src/platform/http.js';
import { createLogger, type Logger } from '../../src/platform/logger.js';
import { testConfig } from '../support/app.js';
import { silentLogger } from '../support/db.js';

/** The platform plugins in the order buildApp installs them, with `register` adding routes and hooks. */
export async function createBareServer(register: (app: App) => void, logger: Logger = silentLogger, overrides: Partial<HttpOptions> = {}): Promise<App> {
  const config = testConfig();
  const app = await createHttpServer({
    logger,
    ...config.http,
    ...overrides,
    trustProxy: config.trustProxy,
    allowedOrigins: config.allowedOrigins,
    authenticator: { authenticate: async (token) => (token === 'good' ? { userId: 'u1', role: 'admin', sessionId: 's1' } : null) },
    openapi: { title: 'bare', version: '0.0.0', description: 'test server' },
  });
  installAuthorization(app);
  await installCompression(app);
  register(app);
  await registerDocsRoutes(app);
  await app.ready();
  return app;
}

export interface LogCapture {
  readonly logger: Logger;
  /** Every line written so far, parsed. */
  lines(): Record<string, unknown>[];
  /** The raw text written so far. */
  text(): string;
}

export function captureLogs(level: 'info' | 'debug' = 'info'): LogCapture {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer | string, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  const logger = createLogger({ level }, stream);
  const text = () => chunks.join('');
  return {
    logger,
    text,
    lines: () =>
      text()
        .split('\n')
        .filter((l) => l.length > 0)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

export interface RawResponse {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: string;
}

/** Splits a byte stream into HTTP/1.1 responses (Content-Length bodies only). */
export function parseResponses(raw: string): RawResponse[] {
  const out: RawResponse[] = [];
  let rest = raw;
  while (rest.length > 0) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) throw new Error(`incomplete response: ${JSON.stringify(rest.slice(0, 200))}`);
    const [statusLine = '', ...headerLines] = rest.slice(0, end).split('\r\n');
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine)?.[1]);
    const headers: Record<string, string> = {};
    for (const line of headerLines) {
      const i = line.indexOf(':');
      headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    const length = Number(headers['content-length'] ?? '0');
    out.push({ status, headers, body: rest.slice(end + 4, end + 4 + length) });
    rest = rest.slice(end + 4 + length);
  }
  return out;
}

export function portOf(app: App): number {
  return (app.server.address() as AddressInfo).port;
}

export interface RawConnection {
  write(data: string): void;
  /** Everything the server sent, once it closed the connection. */
  readonly closed: Promise<string>;
}

export function openRaw(port: number): RawConnection {
  const socket = connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  const closed = new Promise<string>((resolve) => {
    // A reset after the server's answer still leaves what it sent.
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('utf8')));
  });
  return { write: (data) => void socket.write(data), closed };
}

export function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}
