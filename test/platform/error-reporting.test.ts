/**
 * Error reporting to a loopback Sentry (its envelope protocol): a request answered 500
 * produces exactly one event, tagged with the request id and free of credentials, body
 * and personal data; 4xx answers and expected job failures produce none; an unexpected
 * job failure produces one. Nothing starts without SENTRY_DSN. Runs on PGlite and PostgreSQL.
 */
import * as Sentry from '@sentry/node';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { buildApp, type BuiltApp } from '../../src/app.js';
import { scrubEvent, scrubText, startErrorReporting, type ErrorReporter } from '../../src/platform/error-reporting.js';
import { startTelemetry, type Telemetry } from '../../src/platform/telemetry.js';
import { createJobQueue, JobError, type JobQueue } from '../../src/platform/jobs.js';
import { packageVersion } from '../../src/platform/paths.js';
import { testConfig } from '../support/app.js';
import { createTestDatabase, silentLogger, type TestDatabase } from '../support/db.js';
import { SPAN_KIND, startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from '../support/otlp-receiver.js';
import { startSentryReceiver, type SentryReceiver } from '../support/sentry-receiver.js';

describe('scrubbing', () => {
  it('replaces emails, tokens and long numbers in text, and keeps ids', () => {
    expect(scrubText('charging alice.o+x@example.co.uk card 4111 1111 1111 1111, ssn 123-45-6789, phone +44 20 7946 0958')).toBe(
      'charging [email] card [number], ssn [number], phone [number]',
    );
    expect(scrubText('Bearer abc.def-ghi and eyJhbGciOi.eyJzdWIi.c2lnbmF0dXJl and DE89370400440532013000')).toBe('Bearer [token] and [token] and [iban]');
    expect(scrubText('loan 550e8400-e29b-41d4-a716-446655440000 in 2024, 12 payments')).toBe('loan 550e8400-e29b-41d4-a716-446655440000 in 2024, 12 payments');
  });

  it('keeps only the method, the path and harmless headers of a request, and drops the user', () => {
    const event = scrubEvent({
      type: undefined,
      request: {
        method: 'POST',
        url: 'https://api.example.test/v1/loans?email=a@b.test',
        data: '{"ssn":"123-45-6789"}',
        cookies: { session: 's' },
        query_string: 'email=a@b.test',
        headers: { Authorization: 'Bearer x', cookie: 'session=s', 'user-agent': 'curl/8', 'x-request-id': 'r1', 'x-api-key': 'k' },
      },
      user: { id: 'u1', ip_address: '10.0.0.1', email: 'a@b.test' },
      extra: { note: 'mail bob@example.test', nested: [{ card: '4111111111111111' }] },
    });
    expect(event.request).toEqual({ method: 'POST', url: 'https://api.example.test/v1/loans', headers: { 'user-agent': 'curl/8', 'x-request-id': 'r1' } });
    expect(event.user).toBeUndefined();
    expect(event.extra).toEqual({ note: 'mail [email]', nested: [{ card: '[number]' }] });
  });
});

describe('error reporting off (no SENTRY_DSN)', () => {
  it('starts nothing', async () => {
    expect(await startErrorReporting(testConfig(), silentLogger)).toBeUndefined();
    expect(Sentry.getClient()).toBeUndefined();
  });
});

describe('error reporting on (with tracing)', () => {
  let receiver: SentryReceiver;
  let collector: OtlpReceiver;
  let telemetry: Telemetry;
  let reporter: ErrorReporter;
  let db: TestDatabase;
  let built: BuiltApp;
  let jobs: JobQueue;

  beforeAll(async () => {
    receiver = await startSentryReceiver();
    collector = await startOtlpReceiver();
    const config = testConfig({ SENTRY_DSN: receiver.dsn, OTEL_EXPORTER_OTLP_ENDPOINT: collector.url });
    telemetry = await startTelemetry(config, silentLogger);
    if (telemetry.errorReporter === undefined) throw new Error('error reporting did not start');
    reporter = telemetry.errorReporter;
    db = await createTestDatabase();
    built = await buildApp({
      config,
      logger: silentLogger,
      database: db.database,
      errorReporter: reporter,
      extraRoutes: (app) => {
        app.post('/test/boom', { config: { auth: 'public' } }, async () => {
          throw new Error('exploded while charging alice@example.com card 4111 1111 1111 1111');
        });
      },
    });
    await built.app.ready();
    jobs = createJobQueue({ database: db.database, logger: silentLogger, concurrency: 1, pollIntervalMs: 20, retryLimit: 0, errorReporter: reporter });
    jobs.work('errors.probe', async (job) => {
      if (job.payload.expected === true) throw new JobError('the input is wrong', { retryable: false });
      throw new TypeError('cannot read properties of undefined');
    });
    await jobs.start();
  });

  afterAll(async () => {
    await jobs?.stop({ graceMs: 0 });
    await built?.app.close();
    await db?.destroy();
    await telemetry?.shutdown();
    await receiver?.close();
    await collector?.close();
  });

  async function exportedSpan(predicate: (s: ReceivedSpan) => boolean): Promise<ReceivedSpan> {
    return vi.waitFor(
      async () => {
        await telemetry.flush();
        const span = collector.spans().find(predicate);
        if (!span) throw new Error('span not exported yet');
        return span;
      },
      { timeout: 10_000, interval: 50 },
    );
  }

  async function eventsAfterFlush(): Promise<Record<string, unknown>[]> {
    expect(await reporter.flush(5000)).toBe(true);
    return receiver.events();
  }

  it('reports a 500 once, tagged with the request id, without credentials, body or personal data', async () => {
    const before = receiver.events().length;
    const res = await built.app.inject({
      method: 'POST',
      url: '/test/boom?email=query-secret@example.com',
      headers: { authorization: 'Bearer secret-token-value-0123456789', cookie: 'session=cookie-secret-value', 'content-type': 'application/json' },
      payload: { card_number: 'body-secret-value' },
    });
    expect(res.statusCode).toBe(500);
    expect(res.json()).toMatchObject({ code: 'internal_error' });

    const events = await vi.waitFor(
      async () => {
        const all = (await eventsAfterFlush()).slice(before);
        if (all.length === 0) throw new Error('no event yet');
        return all;
      },
      { timeout: 10_000, interval: 50 },
    );
    expect(events).toHaveLength(1);
    const event = events[0]!;
    expect(event.tags).toMatchObject({ request_id: res.headers['x-request-id'], 'http.route': '/test/boom', 'http.method': 'POST' });
    const span = await exportedSpan((s) => s.kind === SPAN_KIND.server && s.attributes['loanbook.request_id'] === res.headers['x-request-id']);
    expect(span.statusCode).toBe(2);
    expect((event.tags as Record<string, unknown>).trace_id).toBe(span.traceId);
    expect(event).toMatchObject({ environment: 'test', release: `loanbook@${packageVersion}`, level: 'error' });
    const exception = (event.exception as { values: { type: string; value: string }[] }).values.at(-1)!;
    expect(exception).toMatchObject({ type: 'Error', value: 'exploded while charging [email] card [number]' });
    expect(event.request).toBeUndefined();
    expect(event.user).toBeUndefined();
    const everything = receiver.bodies.join('\n');
    for (const secret of ['secret-token-value', 'cookie-secret-value', 'body-secret-value', 'query-secret', 'alice@example.com', '4111 1111']) {
      expect(everything).not.toContain(secret);
    }
    expect(receiver.refused).toBe(0);
  });

  it('reports no 4xx', async () => {
    const before = receiver.events().length;
    const invalid = await built.app.inject({ method: 'POST', url: '/v1/auth/token', payload: {} });
    expect(invalid.statusCode).toBe(400);
    const unauthenticated = await built.app.inject({ method: 'GET', url: '/v1/me' });
    expect(unauthenticated.statusCode).toBe(401);
    const missing = await built.app.inject({ method: 'GET', url: '/v1/no-such-thing' });
    expect(missing.statusCode).toBe(404);
    expect((await eventsAfterFlush()).slice(before)).toHaveLength(0);
  });

  it('reports a job that failed unexpectedly, not one that failed as expected', async () => {
    const before = receiver.events().length;
    const expected = await jobs.send('errors.probe', { expected: true }, { createdBy: null });
    await vi.waitFor(async () => expect((await jobs.get(expected.id))?.state).toBe('failed'), { timeout: 10_000, interval: 20 });
    expect((await eventsAfterFlush()).slice(before)).toHaveLength(0);

    const broken = await jobs.send('errors.probe', {}, { createdBy: null });
    await vi.waitFor(async () => expect((await jobs.get(broken.id))?.state).toBe('failed'), { timeout: 10_000, interval: 20 });
    const events = (await eventsAfterFlush()).slice(before);
    expect(events).toHaveLength(1);
    expect(events[0]!.tags).toMatchObject({ 'job.kind': 'errors.probe', 'job.id': broken.id, 'job.attempt': 1 });
    const span = await exportedSpan((s) => s.kind === SPAN_KIND.consumer && s.attributes['messaging.message.id'] === broken.id);
    expect((events[0]!.tags as Record<string, unknown>).trace_id).toBe(span.traceId);
    expect((events[0]!.exception as { values: { type: string }[] }).values.at(-1)!.type).toBe('TypeError');
  });
});
