/**
 * JSON log lines: credentials and personal data are redacted wherever we log them,
 * and request logs carry request_id and correlation_id.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { App } from '../../src/platform/http.js';
import { REDACT_PATHS } from '../../src/platform/logger.js';
import { captureLogs, createBareServer, type LogCapture } from './http-support.js';

const SECRET = 'S3NSITIVE-VALUE-7f1c';

const SENSITIVE_FIELDS = [
  'authorization',
  'cookie',
  'set-cookie',
  'x-api-key',
  'api_key',
  'password',
  'new_password',
  'current_password',
  'token',
  'access_token',
  'refresh_token',
  'secret',
  'secretKey',
  'encryptionKey',
  'email',
  'applicant_name',
  'full_name',
  'first_name',
  'last_name',
  'national_id',
  'ssn',
  'date_of_birth',
  'phone',
  'address',
  'account_number',
  'iban',
];

describe('logger redaction', () => {
  it('writes one JSON object per line with level label, message, service and ISO time', () => {
    const logs = captureLogs();
    logs.logger.info({ loan_id: 'L-1' }, 'booked');
    const [line] = logs.lines();
    expect(line).toMatchObject({ level: 'info', message: 'booked', service: 'loanbook', name: 'loanbook', loan_id: 'L-1' });
    expect(typeof line?.time).toBe('string');
    expect(new Date(String(line?.time)).toISOString()).toBe(line?.time);
  });

  it.each(SENSITIVE_FIELDS)('redacts %s at the top level and one and two levels down', (field) => {
    const logs = captureLogs();
    logs.logger.info({ [field]: SECRET }, 'top');
    logs.logger.info({ user: { [field]: SECRET } }, 'one');
    logs.logger.info({ request: { body: { [field]: SECRET } } }, 'two');
    expect(logs.text()).not.toContain(SECRET);
    const [top, one, two] = logs.lines() as [Record<string, unknown>, Record<string, Record<string, unknown>>, Record<string, Record<string, Record<string, unknown>>>];
    expect(top[field]).toBe('[redacted]');
    expect(one.user?.[field]).toBe('[redacted]');
    expect(two.request?.body?.[field]).toBe('[redacted]');
  });

  it('redacts the Authorization and Cookie request headers but keeps the harmless ones', () => {
    const logs = captureLogs();
    logs.logger.info(
      {
        req: { method: 'GET', url: '/v1/me', headers: { authorization: `Bearer ${SECRET}`, cookie: `sid=${SECRET}`, accept: 'application/json' } },
        res: { statusCode: 200, headers: { 'set-cookie': `sid=${SECRET}`, 'content-type': 'application/json' } },
      },
      'request',
    );
    expect(logs.text()).not.toContain(SECRET);
    const [line] = logs.lines() as [{ req: { headers: Record<string, string> }; res: { headers: Record<string, string> } }];
    expect(line.req.headers).toEqual({ authorization: '[redacted]', cookie: '[redacted]', accept: 'application/json' });
    expect(line.res.headers).toEqual({ 'set-cookie': '[redacted]', 'content-type': 'application/json' });
  });

  it('redacts in child loggers and in the bindings-merged object', () => {
    const logs = captureLogs();
    const child = logs.logger.child({ request_id: 'r-1' });
    child.warn({ applicant: { email: SECRET, national_id: SECRET }, amount: '1200.00' }, 'applicant seen');
    expect(logs.text()).not.toContain(SECRET);
    expect(logs.lines()[0]).toMatchObject({
      request_id: 'r-1',
      applicant: { email: '[redacted]', national_id: '[redacted]' },
      amount: '1200.00',
    });
  });

  it('leaves non-sensitive fields alone', () => {
    const logs = captureLogs();
    logs.logger.info({ loan_id: 'L-9', status: 'active', amounts: { principal: '1000.00' }, role: 'admin' }, 'ok');
    expect(logs.lines()[0]).toMatchObject({ loan_id: 'L-9', status: 'active', amounts: { principal: '1000.00' }, role: 'admin' });
  });

  it('every redaction path is one pino accepts (the list compiles)', () => {
    expect(REDACT_PATHS.length).toBeGreaterThan(SENSITIVE_FIELDS.length * 3 - 1);
    expect(() => captureLogs()).not.toThrow();
  });

  it('writes nothing at level silent', () => {
    const logs = captureLogs();
    logs.logger.level = 'silent';
    logs.logger.error({ email: SECRET }, 'x');
    expect(logs.text()).toBe('');
  });
});

describe('request logs', () => {
  let app: App;
  let logs: LogCapture;

  beforeAll(async () => {
    logs = captureLogs();
    app = await createBareServer((a) => {
      a.post(
        '/echo',
        { config: { auth: 'public' }, schema: { body: z.object({ email: z.string(), password: z.string(), loan_id: z.string() }) } },
        async (request) => {
          request.log.info({ body: request.body, headers: request.headers }, 'received');
          return { ok: true };
        },
      );
    }, logs.logger);
  });
  afterAll(async () => app?.close());

  it('carry request_id and correlation_id, with the body and headers redacted', async () => {
    const res = await app.inject({
      method: 'POST',
      url: '/echo',
      headers: { 'x-request-id': 'req-77', 'x-correlation-id': 'corr-77', authorization: `Bearer ${SECRET}`, cookie: `sid=${SECRET}` },
      payload: { email: `${SECRET}@example.test`, password: SECRET, loan_id: 'L-77' },
    });
    expect(res.statusCode).toBe(200);
    expect(logs.text()).not.toContain(SECRET);
    const line = logs.lines().find((l) => l.message === 'received') as
      | { request_id: string; correlation_id: string; body: Record<string, string>; headers: Record<string, string> }
      | undefined;
    expect(line?.request_id).toBe('req-77');
    expect(line?.correlation_id).toBe('corr-77');
    expect(line?.body).toEqual({ email: '[redacted]', password: '[redacted]', loan_id: 'L-77' });
    expect(line?.headers.authorization).toBe('[redacted]');
    expect(line?.headers.cookie).toBe('[redacted]');
    expect(line?.headers['x-request-id']).toBe('req-77');
  });
});
