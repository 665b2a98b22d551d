/**
 * OpenTelemetry traces, exported over OTLP/HTTP JSON to a loopback collector: the request
 * span, its database children, W3C trace context continued, job spans, and no query
 * parameter, body or credential in anything exported. Runs on PGlite and PostgreSQL.
 */
import { spawn } from 'node:child_process';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { trace } from '@opentelemetry/api';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createJobQueue, JobError, type JobQueue } from '../../src/platform/jobs.js';
import { packageVersion } from '../../src/platform/paths.js';
import { sanitizeSql, startTelemetry, summarizeSql, type Telemetry } from '../../src/platform/telemetry.js';
import { ADMIN_EMAIL, ADMIN_PASSWORD, bearer, createTestApp, TEST_ENCRYPTION_KEY, TEST_SECRET_KEY, testConfig, type TestApp } from '../support/app.js';
import { createEmptyDatabase, isPostgres, silentLogger } from '../support/db.js';
import { freePort } from '../support/net.js';
import { startSentryReceiver } from '../support/sentry-receiver.js';
import { SPAN_KIND, startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from '../support/otlp-receiver.js';

describe('configuration', () => {
  it('derives the traces URL from the base endpoint, and lets the traces endpoint override it', () => {
    expect(testConfig().otel.tracesUrl).toBeUndefined();
    expect(testConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }).otel.tracesUrl).toBe('http://collector:4318/v1/traces');
    expect(testConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'https://otlp.example.test/otlp/' }).otel.tracesUrl).toBe('https://otlp.example.test/otlp/v1/traces');
    expect(
      testConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://tempo:4318/custom' }).otel.tracesUrl,
    ).toBe('http://tempo:4318/custom');
  });

  it('reads the service name, export headers and sampler, with the documented defaults', () => {
    expect(testConfig().otel).toMatchObject({ serviceName: 'loanbook', headers: {}, sampler: 'parentbased_always_on', samplerRatio: 1 });
    const c = testConfig({
      OTEL_SERVICE_NAME: 'loanbook-eu',
      OTEL_EXPORTER_OTLP_HEADERS: 'X-Api-Key=abc%3D%3D, x-team=ops',
      OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
      OTEL_TRACES_SAMPLER_ARG: '0.25',
    });
    expect(c.otel).toMatchObject({ serviceName: 'loanbook-eu', headers: { 'x-api-key': 'abc==', 'x-team': 'ops' }, sampler: 'parentbased_traceidratio', samplerRatio: 0.25 });
  });

  it('refuses malformed values with a message that says what is expected', () => {
    expect(() => testConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' })).toThrow(/OTEL_EXPORTER_OTLP_ENDPOINT: must be an http\(s\) URL/);
    expect(() => testConfig({ OTEL_EXPORTER_OTLP_HEADERS: 'no-equals-sign' })).toThrow(/OTEL_EXPORTER_OTLP_HEADERS: must be comma-separated key=value pairs/);
    expect(() => testConfig({ OTEL_TRACES_SAMPLER_ARG: '1.5' })).toThrow(/OTEL_TRACES_SAMPLER_ARG: must be a ratio from 0 to 1/);
    expect(() => testConfig({ OTEL_TRACES_SAMPLER: 'sometimes' })).toThrow(/OTEL_TRACES_SAMPLER/);
    expect(() => testConfig({ SENTRY_DSN: 'https://sentry.example.test/42' })).toThrow(/SENTRY_DSN: must be a Sentry DSN/);
    expect(testConfig({ SENTRY_DSN: 'https://abc123@o1.ingest.sentry.io/4242' }).sentryDsn).toBe('https://abc123@o1.ingest.sentry.io/4242');
  });
});

describe('SQL text in spans', () => {
  it('keeps placeholders, identifiers and casts, and replaces every literal', () => {
    expect(sanitizeSql(`select "t1"."col2" from "users" as t1 where email_hash = $1 and n > 42 and s = 'alice@example.com' limit $10`)).toBe(
      `select "t1"."col2" from "users" as t1 where email_hash = $1 and n > ? and s = ? limit $10`,
    );
    expect(sanitizeSql(`insert into x (a, b) values (E'it''s', -12.5e3), ($$secret$$, $tag$x$tag$) returning id::int8`)).toBe(
      'insert into x (a, b) values (?, ?), (?, ?) returning id::int8',
    );
  });

  it('names the operation and, for plain DML, its table', () => {
    expect(summarizeSql('select * from "users" where id = $1')).toEqual({ operation: 'SELECT', collection: 'users' });
    expect(summarizeSql('insert into "jobs" ("id") values ($1)')).toEqual({ operation: 'INSERT', collection: 'jobs' });
    expect(summarizeSql('update pgboss.job set state = $1')).toEqual({ operation: 'UPDATE', collection: 'pgboss.job' });
    expect(summarizeSql('begin')).toEqual({ operation: 'BEGIN', collection: undefined });
  });
});

describe('tracing off (no OTLP endpoint)', () => {
  it('registers nothing and installs no query wrapper', async () => {
    const telemetry = await startTelemetry(testConfig(), silentLogger);
    expect(telemetry.tracing).toBe(false);
    expect(telemetry.errorReporter).toBeUndefined();
    expect(trace.getTracer('probe').startSpan('probe').isRecording()).toBe(false);
    const app = await createTestApp();
    try {
      // The wrapper is an own property over pg.Pool.prototype.query.
      expect(Object.hasOwn(app.db.database.pool, 'query')).toBe(false);
      const res = await app.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(await app.adminToken()) });
      expect(res.statusCode).toBe(200);
    } finally {
      await app.close();
      await telemetry.shutdown();
    }
  });
});

describe('tracing on', () => {
  let receiver: OtlpReceiver;
  let telemetry: Telemetry;
  let t: TestApp;
  let jobs: JobQueue;

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    const env = { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_SERVICE_NAME: 'loanbook-test' };
    telemetry = await startTelemetry(testConfig(env), silentLogger);
    t = await createTestApp({ env });
    jobs = createJobQueue({ database: t.db.database, logger: silentLogger, concurrency: 1, pollIntervalMs: 20, retryLimit: 0 });
    jobs.work('telemetry.probe', async (job) => {
      if (job.payload.fail === true) throw new JobError('refused on purpose', { retryable: false });
      await sql`select count(*) from jobs where kind = ${String(job.payload.marker)}`.execute(t.db.database.db);
      return { ok: true };
    });
    await jobs.start();
  });

  afterAll(async () => {
    await jobs?.stop({ graceMs: 0 });
    await t?.close();
    await telemetry?.shutdown();
    await receiver?.close();
  });

  /** Flushes until the span the predicate names has arrived. */
  async function exported(predicate: (s: ReceivedSpan) => boolean): Promise<ReceivedSpan> {
    return vi.waitFor(
      async () => {
        await telemetry.flush();
        const span = receiver.spans().find(predicate);
        if (!span) throw new Error('span not exported yet');
        return span;
      },
      { timeout: 10_000, interval: 50 },
    );
  }

  it('exports a server span per request with database children in the same trace, and no parameter anywhere', async () => {
    const token = await t.token(ADMIN_EMAIL, ADMIN_PASSWORD);
    const res = await t.app.inject({ method: 'GET', url: '/v1/me?verbose=1', headers: bearer(token) });
    expect(res.statusCode).toBe(200);
    const requestId = res.headers['x-request-id'];

    const server = await exported((s) => s.kind === SPAN_KIND.server && s.attributes['loanbook.request_id'] === requestId);
    expect(server.name).toBe('GET /v1/me');
    expect(server.attributes).toMatchObject({
      'http.request.method': 'GET',
      'http.route': '/v1/me',
      'url.path': '/v1/me',
      'url.scheme': 'http',
      'http.response.status_code': 200,
    });
    expect(server.statusCode).toBe(0);
    expect(server.resource).toMatchObject({
      'service.name': 'loanbook-test',
      'service.version': packageVersion,
      'deployment.environment.name': 'test',
    });
    expect(server.scope).toBe('loanbook');

    expect(Object.hasOwn(t.db.database.pool, 'query')).toBe(true);
    const queries = receiver.spans().filter((s) => s.parentSpanId === server.spanId);
    expect(queries.length).toBeGreaterThan(0);
    for (const q of queries) {
      expect(q.kind).toBe(SPAN_KIND.client);
      expect(q.traceId).toBe(server.traceId);
      expect(q.attributes['db.system.name']).toBe('postgresql');
      expect(typeof q.attributes['db.query.text']).toBe('string');
      expect(q.attributes['db.operation.name']).toMatch(/^[A-Z]+$/);
    }

    // The sign-in: its queries looked the user up by email and checked the password.
    const signIn = await exported((s) => s.kind === SPAN_KIND.server && s.name === 'POST /v1/auth/token');
    expect(receiver.spans().some((s) => s.parentSpanId === signIn.spanId && s.kind === SPAN_KIND.client)).toBe(true);
    const everything = receiver.bodies.join('\n');
    for (const secret of [ADMIN_EMAIL, ADMIN_PASSWORD, token, 'verbose=1']) expect(everything).not.toContain(secret);
  });

  it('keeps the request’s context when its body arrives after the headers (real socket, Expect: 100-continue)', async () => {
    await t.app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = t.app.server.address() as AddressInfo;
    const body = JSON.stringify({ email: ADMIN_EMAIL, password: ADMIN_PASSWORD });
    const answer = await new Promise<{ status: number | undefined; requestId: unknown }>((resolve, reject) => {
      const req = request({
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/v1/auth/token',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), expect: '100-continue' },
      });
      // The body leaves only once the server has taken the request (Fastify has entered the
      // span's context): it arrives as later socket events, half of it after the other.
      req.on('continue', () => {
        req.write(body.slice(0, 5));
        setImmediate(() => req.end(body.slice(5)));
      });
      req.on('response', (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode, requestId: res.headers['x-request-id'] }));
      });
      req.on('error', reject);
    });
    expect(answer.status).toBe(200);
    const server = await exported((s) => s.kind === SPAN_KIND.server && s.attributes['loanbook.request_id'] === answer.requestId);
    const children = receiver.spans().filter((s) => s.parentSpanId === server.spanId);
    // The handler's own queries, made after the body was parsed: the user looked up by email index.
    expect(children.map((c) => c.attributes['db.collection.name'])).toContain('users');
  });

  it('continues the trace of an incoming W3C traceparent', async () => {
    const traceId = '0af7651916cd43dd8448eb211c80319c';
    const parentId = 'b7ad6b7169203331';
    const res = await t.app.inject({
      method: 'GET',
      url: '/v1/me',
      headers: { ...bearer(await t.adminToken()), traceparent: `00-${traceId}-${parentId}-01` },
    });
    expect(res.statusCode).toBe(200);
    const server = await exported((s) => s.kind === SPAN_KIND.server && s.attributes['loanbook.request_id'] === res.headers['x-request-id']);
    expect(server.traceId).toBe(traceId);
    expect(server.parentSpanId).toBe(parentId);
    expect(receiver.spans().filter((s) => s.parentSpanId === server.spanId && s.traceId === traceId).length).toBeGreaterThan(0);
  });

  it('marks 5xx spans as errors and leaves 4xx spans unset', async () => {
    const res = await t.app.inject({ method: 'POST', url: '/v1/auth/token', payload: { email: ADMIN_EMAIL, password: 'wrong-password-0000' } });
    expect(res.statusCode).toBe(401);
    const server = await exported((s) => s.kind === SPAN_KIND.server && s.attributes['loanbook.request_id'] === res.headers['x-request-id']);
    expect(server.attributes['http.response.status_code']).toBe(401);
    expect(server.statusCode).toBe(0);
    expect(receiver.bodies.join('\n')).not.toContain('wrong-password-0000');
  });

  it('exports a consumer span per job attempt, with the handler’s queries as children (parameters left out)', async () => {
    const marker = 'parameter-value-5b1e9c';
    const { id } = await jobs.send('telemetry.probe', { marker }, { createdBy: null });
    const span = await exported((s) => s.kind === SPAN_KIND.consumer && s.attributes['messaging.message.id'] === id);
    expect(span.name).toBe('process telemetry.probe');
    expect(span.parentSpanId).toBeUndefined();
    expect(span.attributes).toMatchObject({ 'messaging.destination.name': 'telemetry.probe', 'loanbook.job.outcome': 'succeeded', 'loanbook.job.attempt': 1 });
    expect(span.statusCode).toBe(0);
    const children = receiver.spans().filter((s) => s.parentSpanId === span.spanId);
    expect(children.map((c) => c.attributes['db.query.text'])).toContain('select count(*) from jobs where kind = $1');
    expect(receiver.bodies.join('\n')).not.toContain(marker);

    const failed = await jobs.send('telemetry.probe', { fail: true }, { createdBy: null });
    const failedSpan = await exported((s) => s.kind === SPAN_KIND.consumer && s.attributes['messaging.message.id'] === failed.id);
    expect(failedSpan.attributes['loanbook.job.outcome']).toBe('failed');
    expect(failedSpan.statusCode).toBe(2);
  });
});

describe('loanbook serve', () => {
  it('exports the spans it still holds when SIGTERM stops it, logs the trace id, and starts error reporting from SENTRY_DSN', async () => {
    const receiver = await startOtlpReceiver();
    const sentry = await startSentryReceiver();
    const dataDir = mkdtempSync(join(tmpdir(), 'lb-telemetry-'));
    const empty = isPostgres ? await createEmptyDatabase() : undefined;
    const port = await freePort();
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve'], {
      cwd: fileURLToPath(new URL('../..', import.meta.url)),
      env: {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        ENV: 'development',
        // Debug: the access log line of a probe is written at debug.
        LOG_LEVEL: 'debug',
        DATA_DIR: dataDir,
        PORT: String(port),
        SECRET_KEY: TEST_SECRET_KEY,
        ENCRYPTION_KEY: TEST_ENCRYPTION_KEY,
        ADMIN_EMAIL,
        ADMIN_PASSWORD,
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
        SENTRY_DSN: sentry.dsn,
        ...(empty?.url ? { DATABASE_URL: empty.url } : {}),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (output += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (output += d));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      await vi.waitFor(() => expect(output).toContain('loanbook listening'), { timeout: 60_000, interval: 50 });
      expect(output).toContain('tracing on');
      expect(output).toContain('error reporting on');
      const res = await fetch(`http://127.0.0.1:${port}/health/live`);
      expect(res.status).toBe(200);
      const requestId = res.headers.get('x-request-id');
      // The batch processor exports every 5 s; the stop path must not leave the span behind.
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      const span = receiver.spans().find((s) => s.kind === SPAN_KIND.server && s.attributes['loanbook.request_id'] === requestId);
      expect(span?.name).toBe('GET /health/live');
      expect(span?.resource['service.name']).toBe('loanbook');
      const accessLog = output.split('\n').find((l) => l.includes('"request completed"') && l.includes(`"request_id":"${requestId}"`));
      expect(accessLog).toContain(`"trace_id":"${span?.traceId}"`);
    } finally {
      child.kill('SIGKILL');
      await receiver.close();
      await sentry.close();
      await empty?.destroy();
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 120_000);
});
