/**
 * The HTTP platform, driven through the real application (createTestApp) and, for
 * behaviour the application has no route for (a handler that throws, shutdown, invalid
 * HTTP on a socket), through the same server factory the application uses.
 */
import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import type { InjectOptions, LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { AppError } from '../../src/platform/errors.js';
import { BASELINE_SECURITY_HEADERS, createHttpServer, type App } from '../../src/platform/http.js';
import { bearer, createTestApp, testConfig, type TestApp } from '../support/app.js';
import { dbTarget, silentLogger } from '../support/db.js';
import { captureLogs, createBareServer, deferred, openRaw, parseResponses, portOf, type LogCapture } from './http-support.js';

const ALLOWED = 'https://app.example.test';
const ALLOWED_DEV = 'http://localhost:5173';
const FOREIGN = 'https://evil.example';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const CSP = "default-src 'none';frame-ancestors 'none';base-uri 'none';form-action 'none'";
const HSTS = 'max-age=31536000; includeSubDomains';
const SQL_MESSAGE = 'duplicate key value violates unique constraint "users_email_key": insert into users (email) values ($1)';

interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  instance?: string;
  request_id?: string;
  errors?: { pointer: string; location: string; detail: string }[];
}

/** Asserts an RFC 9457 body whose members agree with the response, and returns it. */
function problemOf(res: LightMyRequestResponse, status: number, code: string): Problem {
  expect(res.statusCode).toBe(status);
  expect(res.headers['content-type']).toBe('application/problem+json');
  const body = res.json<Problem>();
  expect(body.type).toBe(`/problems/${code}`);
  expect(body.code).toBe(code);
  expect(body.status).toBe(status);
  expect(typeof body.title).toBe('string');
  expect(body.title.length).toBeGreaterThan(0);
  expect(typeof body.detail).toBe('string');
  expect(body.request_id).toBe(res.headers['x-request-id']);
  return body;
}

function expectSecurityHeaders(res: LightMyRequestResponse): void {
  expect(res.headers['content-security-policy']).toBe(CSP);
  expect(res.headers['x-frame-options']).toBe('DENY');
  expect(res.headers['x-content-type-options']).toBe('nosniff');
  expect(res.headers['referrer-policy']).toBe('no-referrer');
  expect(res.headers['cache-control']).toBe('no-store');
  expect(res.headers['x-powered-by']).toBeUndefined();
}

/** `{"email": [[…]]}` nesting exactly `depth` levels (the object counts as one). */
function nestedBody(depth: number): string {
  return `{"email":${'['.repeat(depth - 1)}${']'.repeat(depth - 1)},"password":"x"}`;
}

describe(`HTTP platform (${dbTarget})`, () => {
  let t: TestApp;
  let adminToken: string;

  beforeAll(async () => {
    t = await createTestApp({
      env: {
        ALLOWED_ORIGINS: `${ALLOWED}, ${ALLOWED_DEV}`,
        HTTP_REQUEST_TIMEOUT_MS: '20000',
        HTTP_HEADERS_TIMEOUT_MS: '5000',
      },
    });
    adminToken = await t.adminToken();
  });
  afterAll(async () => t?.close());

  describe('problem+json errors', () => {
    it('rejects an unknown body field with validation_failed naming it as #/extra', async () => {
      const res = await t.app.inject({
        method: 'POST',
        url: '/v1/auth/token',
        payload: { email: 'a@example.test', password: 'pw', extra: 1 },
      });
      const body = problemOf(res, 400, 'validation_failed');
      expect(body.title).toBe('Request validation failed');
      expect(body.instance).toBe('/v1/auth/token');
      expect(body.errors).toEqual([{ pointer: '#/extra', location: 'body', detail: 'unknown field' }]);
    });

    it('names every missing body field by JSON pointer', async () => {
      const res = await t.app.inject({ method: 'POST', url: '/v1/auth/token', payload: {} });
      const body = problemOf(res, 400, 'validation_failed');
      expect(body.detail).toBe('2 problems in the request body.');
      expect(body.errors?.map((e) => [e.pointer, e.location])).toEqual([
        ['#/email', 'body'],
        ['#/password', 'body'],
      ]);
    });

    it('points into the query string and the path with their own locations', async () => {
      const query = await t.app.inject({ method: 'GET', url: '/v1/users?limit=500&bogus=1', headers: bearer(adminToken) });
      const q = problemOf(query, 400, 'validation_failed');
      expect(q.errors?.map((e) => [e.pointer, e.location])).toEqual([
        ['#/limit', 'query'],
        ['#/bogus', 'query'],
      ]);
      expect(q.errors?.[1]?.detail).toBe('unknown field');

      const path = await t.app.inject({ method: 'GET', url: '/v1/users/not-a-uuid', headers: bearer(adminToken) });
      const p = problemOf(path, 400, 'validation_failed');
      expect(p.errors?.map((e) => [e.pointer, e.location])).toEqual([['#/id', 'path']]);
    });

    it('answers malformed JSON with malformed_json and no parser text', async () => {
      const res = await t.app.inject({
        method: 'POST',
        url: '/v1/auth/token',
        headers: { 'content-type': 'application/json' },
        payload: '{"email": "a@example.test", "password":',
      });
      const body = problemOf(res, 400, 'malformed_json');
      expect(body.detail).toBe('Malformed JSON');
      expect(res.body).not.toMatch(/Unexpected|position|JSON\.parse|SyntaxError/);
    });

    it('refuses a __proto__ key in a body as malformed_json', async () => {
      const res = await t.app.inject({
        method: 'POST',
        url: '/v1/auth/token',
        headers: { 'content-type': 'application/json' },
        payload: '{"email":"a@example.test","password":"x","__proto__":{"admin":true}}',
      });
      problemOf(res, 400, 'malformed_json');
    });

    it('answers an empty JSON body with malformed_json', async () => {
      const res = await t.app.inject({
        method: 'POST',
        url: '/v1/auth/token',
        headers: { 'content-type': 'application/json' },
        payload: '',
      });
      const body = problemOf(res, 400, 'malformed_json');
      expect(body.detail).toBe('The body is empty; send a JSON object.');
    });

    it.each([
      ['text/plain', 'email=a@example.test'],
      ['application/x-www-form-urlencoded', 'email=a%40example.test&password=x'],
      ['application/xml', '<login/>'],
      ['multipart/form-data; boundary=x', '--x--'],
    ])('answers a %s body with 415', async (contentType, payload) => {
      const res = await t.app.inject({ method: 'POST', url: '/v1/auth/token', headers: { 'content-type': contentType }, payload });
      const body = problemOf(res, 415, 'unsupported_media_type');
      expect(body.title).toBe('Unsupported media type');
      expectSecurityHeaders(res);
    });

    it('accepts application/json with a charset parameter', async () => {
      const res = await t.app.inject({
        method: 'POST',
        url: '/v1/auth/token',
        headers: { 'content-type': 'application/json; charset=utf-8' },
        payload: JSON.stringify({ email: 'admin@example.test', password: 'correct-horse-battery-0001' }),
      });
      expect(res.statusCode).toBe(200);
    });

    it('answers an unknown path with a 404 problem and no Allow header', async () => {
      for (const method of ['GET', 'POST', 'DELETE'] as const) {
        const res = await t.app.inject({ method, url: '/no/such/thing?x=1' });
        const body = problemOf(res, 404, 'not_found');
        expect(body.instance).toBe('/no/such/thing');
        expect(body.detail).toBe(`No route for ${method} /no/such/thing.`);
        expect(res.headers.allow).toBeUndefined();
      }
      const head = await t.app.inject({ method: 'HEAD', url: '/no/such/thing' });
      expect(head.statusCode).toBe(404);
      expect(head.headers['content-type']).toBe('application/problem+json');
    });

    it.each([
      ['DELETE', '/v1/me', 'GET, HEAD'],
      ['PUT', '/v1/users', 'GET, HEAD, POST'],
      ['POST', `/v1/users/${randomUUID()}`, 'GET, HEAD, PATCH, DELETE'],
      ['GET', '/v1/auth/token', 'POST'],
    ] as const)('answers %s %s with a 405 problem and Allow: %s', async (method, url, allow) => {
      const res = await t.app.inject({ method, url });
      const body = problemOf(res, 405, 'method_not_allowed');
      expect(res.headers.allow).toBe(allow);
      expect(body.detail).toBe(`${method} is not supported here; use ${allow}.`);
      expectSecurityHeaders(res);
    });

    it('serves the problem catalogue at /problems/{code}', async () => {
      const res = await t.app.inject({ method: 'GET', url: '/problems/validation_failed' });
      expect(res.statusCode).toBe(200);
      expect(res.json()).toMatchObject({ type: '/problems/validation_failed', code: 'validation_failed', status: 400 });
      problemOf(await t.app.inject({ method: 'GET', url: '/problems/no_such_code' }), 404, 'not_found');
    });

    it('answers an undecodable URL with a 400 problem carrying the baseline headers', async () => {
      const res = await t.app.inject({ method: 'GET', url: '/v1/%zz' });
      const body = problemOf(res, 400, 'bad_request');
      expect(body.detail).toBe('The URL cannot be decoded.');
      expect(res.headers['x-request-id']).toMatch(UUID);
      expectSecurityHeaders(res);
      for (const [k, v] of Object.entries(BASELINE_SECURITY_HEADERS)) expect(res.headers[k]).toBe(v);
    });

    it('answers an over-long path parameter with a 414 problem', async () => {
      const res = await t.app.inject({ method: 'GET', url: `/v1/users/${'a'.repeat(300)}`, headers: bearer(adminToken) });
      problemOf(res, 414, 'uri_too_long');
      expectSecurityHeaders(res);
    });

    it('the baseline header set is what helmet and the hooks send on routed responses', async () => {
      const routed = await t.app.inject({ method: 'GET', url: '/no/such/thing' });
      for (const [k, v] of Object.entries(BASELINE_SECURITY_HEADERS)) expect(routed.headers[k]).toBe(v);
    });
  });

  describe('limits', () => {
    it('refuses a body over 1 MiB with a 413 problem', async () => {
      const payload = JSON.stringify({ email: 'a@example.test', password: 'x'.repeat(1024 * 1024) });
      const res = await t.app.inject({ method: 'POST', url: '/v1/auth/token', headers: { 'content-type': 'application/json' }, payload });
      const body = problemOf(res, 413, 'payload_too_large');
      expect(body.title).toBe('Payload too large');
      expectSecurityHeaders(res);
    });

    it('counts the limit in bytes: exactly 1 MiB is read, one byte more is refused', async () => {
      const frame = (pad: number) => `{"email":"a@example.test","password":"${'x'.repeat(pad)}"}`;
      const pad = 1024 * 1024 - frame(0).length;
      const exact = await t.app.inject({
        method: 'POST',
        url: '/v1/auth/token',
        headers: { 'content-type': 'application/json' },
        payload: frame(pad),
      });
      expect(Buffer.byteLength(frame(pad))).toBe(1024 * 1024);
      // Read and validated (the password is longer than 256), not refused for size.
      const exactBody = problemOf(exact, 400, 'validation_failed');
      expect(exactBody.errors?.[0]?.pointer).toBe('#/password');

      const over = await t.app.inject({
        method: 'POST',
        url: '/v1/auth/token',
        headers: { 'content-type': 'application/json' },
        payload: frame(pad + 1),
      });
      problemOf(over, 413, 'payload_too_large');
    });

    it('refuses an over-limit body sent without Content-Length (streamed)', async () => {
      const chunk = Buffer.alloc(64 * 1024, 'x');
      const stream = Readable.from(
        (function* () {
          yield Buffer.from('{"email":"a@example.test","password":"');
          for (let i = 0; i < 20; i++) yield chunk;
          yield Buffer.from('"}');
        })(),
      );
      const res = await t.app.inject({
        method: 'POST',
        url: '/v1/auth/token',
        headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' },
        payload: stream,
      });
      problemOf(res, 413, 'payload_too_large');
    });

    it('accepts nesting up to 32 levels and refuses 33 with json_too_deep', async () => {
      const at32 = await t.app.inject({
        method: 'POST',
        url: '/v1/auth/token',
        headers: { 'content-type': 'application/json' },
        payload: nestedBody(32),
      });
      // Parsed, then refused by the schema: email is not a string.
      const ok = problemOf(at32, 400, 'validation_failed');
      expect(ok.errors?.[0]?.pointer).toBe('#/email');

      const at33 = await t.app.inject({
        method: 'POST',
        url: '/v1/auth/token',
        headers: { 'content-type': 'application/json' },
        payload: nestedBody(33),
      });
      const deep = problemOf(at33, 400, 'json_too_deep');
      expect(deep.detail).toBe('The body nests deeper than 32 levels.');
    });

    it('refuses 100 000 levels of nesting without crashing, and keeps serving', async () => {
      for (const payload of ['['.repeat(100_000) + ']'.repeat(100_000), '{"a":'.repeat(100_000) + '1' + '}'.repeat(100_000)]) {
        const res = await t.app.inject({
          method: 'POST',
          url: '/v1/auth/token',
          headers: { 'content-type': 'application/json' },
          payload,
        });
        problemOf(res, 400, 'json_too_deep');
      }
      const unbalanced = await t.app.inject({
        method: 'POST',
        url: '/v1/auth/token',
        headers: { 'content-type': 'application/json' },
        payload: '['.repeat(500_000),
      });
      problemOf(unbalanced, 400, 'json_too_deep');
      expect((await t.app.inject({ method: 'GET', url: '/health/live' })).statusCode).toBe(200);
    });

    it('does not count brackets inside strings towards the depth', async () => {
      const res = await t.app.inject({
        method: 'POST',
        url: '/v1/auth/token',
        headers: { 'content-type': 'application/json' },
        payload: JSON.stringify({ email: 'admin@example.test', password: `\\"${'[{'.repeat(100)}` }),
      });
      // Reached the service: wrong password, not json_too_deep.
      problemOf(res, 401, 'invalid_credentials');
    });

    it('applies the configured header and request timeouts to the Node server', () => {
      expect(t.config.http.requestTimeoutMs).toBe(20_000);
      expect(t.config.http.headersTimeoutMs).toBe(5_000);
      expect(t.app.server.requestTimeout).toBe(20_000);
      expect(t.app.server.headersTimeout).toBe(5_000);
      expect(t.app.server.keepAliveTimeout).toBe(t.config.http.keepAliveTimeoutMs);
      expect(t.app.server.keepAliveTimeout).toBe(5_000);
    });
  });

  describe('security headers', () => {
    it('are on every response, errors included, and X-Powered-By never is', async () => {
      const cases: [number, InjectOptions][] = [
        [200, { method: 'GET', url: '/health/live' }],
        [401, { method: 'GET', url: '/v1/me' }],
        [401, { method: 'GET', url: '/v1/me', headers: { authorization: 'Bearer not-a-token' } }],
        // "Basic" is not a bearer token at all: the same single 401 as every bad credential.
        [401, { method: 'GET', url: '/v1/me', headers: { authorization: 'Basic abc' } }],
        [404, { method: 'GET', url: '/nope' }],
        [405, { method: 'DELETE', url: '/v1/me' }],
        [413, { method: 'POST', url: '/v1/auth/token', headers: { 'content-type': 'application/json' }, payload: `"${'x'.repeat(1024 * 1024 + 1)}"` }],
        [400, { method: 'POST', url: '/v1/auth/token', headers: { 'content-type': 'application/json' }, payload: '{' }],
        [415, { method: 'POST', url: '/v1/auth/token', headers: { 'content-type': 'text/plain' }, payload: 'x' }],
      ];
      for (const [status, request] of cases) {
        const res = await t.app.inject(request);
        expect(res.statusCode, JSON.stringify([request.method, request.url])).toBe(status);
        expectSecurityHeaders(res);
        expect(res.headers['strict-transport-security']).toBeUndefined();
      }
    });

    it('a 401 problem carries WWW-Authenticate and the generic detail', async () => {
      const res = await t.app.inject({ method: 'GET', url: '/v1/me', headers: { authorization: 'Bearer abc.def.ghi' } });
      const body = problemOf(res, 401, 'unauthenticated');
      expect(body.detail).toBe('The access token is missing, malformed, expired or revoked.');
      expect(res.headers['www-authenticate']).toBe('Bearer realm="loanbook"');
    });

    it('sends no HSTS over plain http, even when an untrusted client claims X-Forwarded-Proto: https', async () => {
      expect(t.config.trustProxy).toBe(false);
      for (const headers of [{}, { 'x-forwarded-proto': 'https' }]) {
        const res = await t.app.inject({ method: 'GET', url: '/health/live', headers });
        expect(res.statusCode).toBe(200);
        expect(res.headers['strict-transport-security']).toBeUndefined();
      }
    });
  });

  describe('HSTS behind a trusted proxy', () => {
    let trusted: TestApp;
    let cidr: TestApp;
    beforeAll(async () => {
      // Same database, different proxy settings: TRUST_PROXY is read at start-up.
      trusted = await createTestApp({ db: t.db, env: { TRUST_PROXY: '127.0.0.1' } });
      cidr = await createTestApp({ db: t.db, env: { TRUST_PROXY: '10.0.0.0/8' } });
    });
    afterAll(async () => {
      await trusted?.close();
      await cidr?.close();
    });

    it('is sent when the trusted proxy says https, on successes and errors', async () => {
      expect(trusted.config.trustProxy).toBe('127.0.0.1');
      for (const url of ['/health/live', '/nope', '/v1/me']) {
        const res = await trusted.app.inject({ method: 'GET', url, headers: { 'x-forwarded-proto': 'https' } });
        expect(res.headers['strict-transport-security'], url).toBe(HSTS);
        expectSecurityHeaders(res);
      }
    });

    it('is not sent when the trusted proxy says http or says nothing', async () => {
      for (const headers of [{ 'x-forwarded-proto': 'http' }, {}]) {
        const res = await trusted.app.inject({ method: 'GET', url: '/health/live', headers });
        expect(res.headers['strict-transport-security']).toBeUndefined();
      }
    });

    it('trusts only the configured proxy addresses', async () => {
      const fromLoopback = await cidr.app.inject({ method: 'GET', url: '/health/live', headers: { 'x-forwarded-proto': 'https' } });
      expect(fromLoopback.headers['strict-transport-security']).toBeUndefined();
      const fromProxy = await cidr.app.inject({
        method: 'GET',
        url: '/health/live',
        remoteAddress: '10.1.2.3',
        headers: { 'x-forwarded-proto': 'https' },
      });
      expect(fromProxy.headers['strict-transport-security']).toBe(HSTS);
    });

    it('leaves the default timeouts on the server when none are configured', () => {
      expect(trusted.app.server.requestTimeout).toBe(30_000);
      expect(trusted.app.server.headersTimeout).toBe(10_000);
    });
  });

  describe('CORS', () => {
    it('echoes an allowed Origin on a simple request, and varies on Origin', async () => {
      for (const origin of [ALLOWED, ALLOWED_DEV]) {
        const res = await t.app.inject({ method: 'GET', url: '/health/live', headers: { origin } });
        expect(res.statusCode).toBe(200);
        expect(res.headers['access-control-allow-origin']).toBe(origin);
        expect(String(res.headers.vary)).toMatch(/\bOrigin\b/);
        expect(res.headers['access-control-allow-credentials']).toBeUndefined();
        expect(String(res.headers['access-control-expose-headers'])).toContain('X-Request-Id');
      }
    });

    it('lets an allowed Origin read error problems', async () => {
      const res = await t.app.inject({ method: 'GET', url: '/v1/me', headers: { origin: ALLOWED } });
      expect(res.statusCode).toBe(401);
      expect(res.headers['access-control-allow-origin']).toBe(ALLOWED);
    });

    it.each([FOREIGN, 'null', `${ALLOWED}.evil.example`, 'http://app.example.test', `${ALLOWED}:8443`, 'https://localhost:5173'])(
      'never reflects a foreign Origin (%s)',
      async (origin) => {
        const res = await t.app.inject({ method: 'GET', url: '/health/live', headers: { origin } });
        expect(res.statusCode).toBe(200);
        expect(res.headers['access-control-allow-origin']).toBeUndefined();
        expect(res.headers['access-control-expose-headers']).toBeUndefined();
      },
    );

    it('answers an allowed preflight with 204 and the allowed methods and headers', async () => {
      const res = await t.app.inject({
        method: 'OPTIONS',
        url: '/v1/users',
        headers: { origin: ALLOWED, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' },
      });
      expect(res.statusCode).toBe(204);
      expect(res.headers['access-control-allow-origin']).toBe(ALLOWED);
      expect(res.headers['access-control-allow-methods']).toBe('GET, POST, PUT, PATCH, DELETE');
      expect(res.headers['access-control-allow-headers']).toBe(
        'Authorization, Content-Type, Idempotency-Key, X-Request-Id, X-Correlation-Id',
      );
      expect(res.headers['access-control-max-age']).toBe('600');
      expectSecurityHeaders(res);
    });

    it('never reflects a foreign Origin on a preflight', async () => {
      const res = await t.app.inject({
        method: 'OPTIONS',
        url: '/v1/users',
        headers: { origin: FOREIGN, 'access-control-request-method': 'POST' },
      });
      expect(res.headers['access-control-allow-origin']).toBeUndefined();
      expect(res.headers['access-control-allow-methods']).toBeUndefined();
      problemOf(res, 404, 'not_found');
    });

    it('answers an allowed Origin’s OPTIONS without Access-Control-Request-Method as a problem', async () => {
      const res = await t.app.inject({ method: 'OPTIONS', url: '/v1/users', headers: { origin: ALLOWED } });
      const body = problemOf(res, 400, 'validation_failed');
      expect(body.errors).toEqual([{ pointer: '#/access-control-request-method', location: 'header', detail: 'required' }]);
      expect(res.headers['access-control-allow-methods']).toBeUndefined();
    });

    it('answers a plain OPTIONS (no Origin) with a 404 problem', async () => {
      problemOf(await t.app.inject({ method: 'OPTIONS', url: '/v1/users' }), 404, 'not_found');
    });
  });

  describe('compression', () => {
    it('gzips a response over 1 KiB when asked, and it decompresses to the same JSON', async () => {
      const plain = await t.app.inject({ method: 'GET', url: '/openapi.json' });
      expect(plain.headers['content-encoding']).toBeUndefined();
      const res = await t.app.inject({ method: 'GET', url: '/openapi.json', headers: { 'accept-encoding': 'gzip' } });
      expect(res.statusCode).toBe(200);
      expect(res.headers['content-encoding']).toBe('gzip');
      expect(String(res.headers.vary)).toMatch(/accept-encoding/i);
      const text = gunzipSync(res.rawPayload).toString('utf8');
      expect(text.length).toBeGreaterThan(1024);
      expect(res.rawPayload.length).toBeLessThan(text.length);
      const doc = JSON.parse(text) as { openapi: string };
      expect(doc.openapi).toBe('3.1.0');
      expect(doc).toEqual(plain.json());
      expectSecurityHeaders(res);
    });

    it('leaves responses under 1 KiB uncompressed', async () => {
      const res = await t.app.inject({ method: 'GET', url: '/health/live', headers: { 'accept-encoding': 'gzip' } });
      expect(res.headers['content-encoding']).toBeUndefined();
      expect(res.json()).toMatchObject({ status: 'ok' });
    });
  });

  describe('request and correlation ids', () => {
    it('echoes a valid X-Request-Id and puts it in problem bodies', async () => {
      const res = await t.app.inject({ method: 'GET', url: '/nope', headers: { 'x-request-id': 'req-abc_1.2:3' } });
      expect(res.headers['x-request-id']).toBe('req-abc_1.2:3');
      expect(res.json<Problem>().request_id).toBe('req-abc_1.2:3');
      // Without a correlation id, the request id stands in for it.
      expect(res.headers['x-correlation-id']).toBe('req-abc_1.2:3');
    });

    it('generates a UUID when none is sent, different for each request', async () => {
      const a = await t.app.inject({ method: 'GET', url: '/health/live' });
      const b = await t.app.inject({ method: 'GET', url: '/health/live' });
      expect(a.headers['x-request-id']).toMatch(UUID);
      expect(b.headers['x-request-id']).toMatch(UUID);
      expect(a.headers['x-request-id']).not.toBe(b.headers['x-request-id']);
      expect(a.headers['x-correlation-id']).toBe(a.headers['x-request-id']);
    });

    it.each([
      ['has spaces', 'bad id'],
      ['oversized', 'a'.repeat(129)],
      ['has markup', '<script>'],
      ['has a quote', 'a"b'],
      ['is empty', ''],
    ])('replaces an incoming id that %s', async (_why, id) => {
      const res = await t.app.inject({ method: 'GET', url: '/nope', headers: { 'x-request-id': id } });
      expect(res.headers['x-request-id']).toMatch(UUID);
      expect(res.json<Problem>().request_id).toBe(res.headers['x-request-id']);
    });

    it('keeps an id of exactly 128 characters', async () => {
      const id = 'a'.repeat(128);
      const res = await t.app.inject({ method: 'GET', url: '/health/live', headers: { 'x-request-id': id } });
      expect(res.headers['x-request-id']).toBe(id);
    });

    it('carries X-Correlation-Id through, separate from the request id', async () => {
      const res = await t.app.inject({
        method: 'GET',
        url: '/v1/me',
        headers: { 'x-request-id': 'hop-2', 'x-correlation-id': 'journey-42' },
      });
      expect(res.headers['x-request-id']).toBe('hop-2');
      expect(res.headers['x-correlation-id']).toBe('journey-42');
      expect(res.json<Problem>().request_id).toBe('hop-2');
    });

    it('replaces an invalid correlation id with the request id', async () => {
      const res = await t.app.inject({
        method: 'GET',
        url: '/health/live',
        headers: { 'x-request-id': 'hop-3', 'x-correlation-id': 'x'.repeat(200) },
      });
      expect(res.headers['x-correlation-id']).toBe('hop-3');
    });

    it('echoes the ids on a 413 and a 415 as well', async () => {
      const res = await t.app.inject({
        method: 'POST',
        url: '/v1/auth/token',
        headers: { 'content-type': 'text/plain', 'x-request-id': 'r-415', 'x-correlation-id': 'c-415' },
        payload: 'x',
      });
      expect(res.headers['x-request-id']).toBe('r-415');
      expect(res.headers['x-correlation-id']).toBe('c-415');
      expect(res.json<Problem>().request_id).toBe('r-415');
    });
  });
});

describe('HTTP platform: failures inside handlers', () => {
  let app: App;
  let logs: LogCapture;

  beforeAll(async () => {
    logs = captureLogs();
    app = await createBareServer((a) => {
      const cfg = { config: { auth: 'public' as const } };
      a.get('/boom', cfg, async () => {
        throw new Error(SQL_MESSAGE);
      });
      a.get('/pg-error', cfg, async () => {
        throw Object.assign(new Error(SQL_MESSAGE), {
          code: '23505',
          detail: 'Key (email)=(someone@example.test) already exists.',
          table: 'users',
          constraint: 'users_email_key',
        });
      });
      a.get('/thrown-string', cfg, async () => {
        // eslint-disable-next-line @typescript-eslint/only-throw-error -- what a careless dependency might do
        throw 'select password_hash from users';
      });
      a.get('/thrown-null', cfg, async () => {
        // eslint-disable-next-line @typescript-eslint/only-throw-error -- not even a value to report
        throw null;
      });
      a.get('/sync-throw', cfg, () => {
        throw new Error(SQL_MESSAGE);
      });
      a.get('/thrown-object', cfg, async () => {
        // eslint-disable-next-line @typescript-eslint/only-throw-error -- an error-like object, as some drivers throw
        throw { message: SQL_MESSAGE, statusCode: 500, stack: 'at query (db.ts:1:1)' };
      });
      a.get('/client-ish', cfg, async () => {
        throw Object.assign(new Error(`syntax error at or near "from": ${SQL_MESSAGE}`), { statusCode: 400 });
      });
      a.get('/app-error-with-cause', cfg, async () => {
        throw new AppError('not_found', { cause: new Error(SQL_MESSAGE) });
      });
      a.get('/bad-response', { ...cfg, schema: { response: { 200: z.object({ id: z.uuid() }) } } }, async () => ({
        id: 'select * from users',
      }));
      a.get('/admin-only', { config: { auth: ['admin'] } }, async () => ({ ok: true }));
    }, logs.logger);
  });
  afterAll(async () => app?.close());

  const leaks = /select|insert into|users_email_key|Key \(email\)|someone@example|password_hash|syntax error|\bat \w+ \(|\.ts:\d+|stack/i;

  it.each(['/boom', '/pg-error', '/thrown-string', '/thrown-null', '/sync-throw', '/thrown-object'])('answers %s with only the generic internal_error', async (url) => {
    const res = await app.inject({ method: 'GET', url, headers: { 'x-request-id': `leak-${url.slice(1)}` } });
    expect(res.statusCode).toBe(500);
    expect(res.headers['content-type']).toBe('application/problem+json');
    expect(res.json()).toEqual({
      type: '/problems/internal_error',
      title: 'Internal server error',
      status: 500,
      detail: 'Internal server error',
      code: 'internal_error',
      instance: url,
      request_id: `leak-${url.slice(1)}`,
    });
    expect(res.body).not.toMatch(leaks);
    expectSecurityHeaders(res);
  });

  it('logs the real error once, server side, with the request id', async () => {
    await app.inject({ method: 'GET', url: '/boom', headers: { 'x-request-id': 'log-me', 'x-correlation-id': 'corr-me' } });
    const lines = logs.lines().filter((l) => l.request_id === 'log-me');
    // The error line, then the access-log line with the route and status (no error text).
    expect(lines.map((l) => l.message)).toEqual(['unhandled error', 'request completed']);
    expect(lines[1]).toMatchObject({ level: 'info', method: 'GET', route: '/boom', status: 500, correlation_id: 'corr-me' });
    expect(JSON.stringify(lines[1])).not.toContain(SQL_MESSAGE);
    const [line] = lines as [Record<string, unknown>];
    expect(line.level).toBe('error');
    expect(line.message).toBe('unhandled error');
    expect(line.correlation_id).toBe('corr-me');
    const err = line.err as { message: string; stack: string };
    expect(err.message).toBe(SQL_MESSAGE);
    expect(err.stack).toContain('Error: duplicate key value');
  });

  it('keeps the status of a 4xx from a dependency but not its text', async () => {
    const res = await app.inject({ method: 'GET', url: '/client-ish' });
    const body = problemOf(res, 400, 'validation_failed');
    expect(body.detail).toBe('The request is invalid.');
    expect(res.body).not.toMatch(leaks);
  });

  it('never renders the cause of a catalogued error', async () => {
    const res = await app.inject({ method: 'GET', url: '/app-error-with-cause' });
    const body = problemOf(res, 404, 'not_found');
    expect(body.detail).toBe('Not found');
    expect(res.body).not.toMatch(leaks);
  });

  it('answers a response that does not match its schema with internal_error, not the issues', async () => {
    const res = await app.inject({ method: 'GET', url: '/bad-response' });
    const body = problemOf(res, 500, 'internal_error');
    expect(body.detail).toBe('Internal server error');
    expect(res.body).not.toMatch(leaks);
    expect(res.body).not.toMatch(/uuid|Invalid/i);
  });

  it('enforces declared roles: no token is a 401 problem', async () => {
    problemOf(await app.inject({ method: 'GET', url: '/admin-only' }), 401, 'unauthenticated');
    const ok = await app.inject({ method: 'GET', url: '/admin-only', headers: { authorization: 'Bearer good' } });
    expect(ok.statusCode).toBe(200);
  });
});

describe('HTTP platform: every route declares its auth', () => {
  async function server(): Promise<App> {
    const config = testConfig();
    return createHttpServer({
      logger: silentLogger,
      ...config.http,
      trustProxy: false,
      allowedOrigins: [],
      authenticator: { authenticate: async () => null },
      openapi: { title: 't', version: '0', description: 'd' },
    });
  }

  it('refuses a route registered without config.auth', async () => {
    const app = await server();
    try {
      expect(() => app.get('/undeclared', async () => 'x')).toThrow('route GET /undeclared must declare config.auth');
      expect(() => app.route({ method: ['POST', 'PUT'], url: '/also', config: {}, handler: async () => 'x' })).toThrow(
        'route POST,PUT /also must declare config.auth',
      );
    } finally {
      await app.close();
    }
  });

  it('accepts public and role-list routes', async () => {
    const app = await server();
    try {
      app.get('/open', { config: { auth: 'public' } }, async () => 'x');
      app.get('/closed', { config: { auth: ['admin'] } }, async () => 'x');
      await app.ready();
      expect((await app.inject({ method: 'GET', url: '/open' })).statusCode).toBe(200);
    } finally {
      await app.close();
    }
  });
});

describe('HTTP platform: on the wire', () => {
  it('answers bytes that are not HTTP with a 400 problem and the baseline headers', async () => {
    const app = await createBareServer(() => undefined);
    try {
      await app.listen({ port: 0, host: '127.0.0.1' });
      const conn = openRaw(portOf(app));
      conn.write('THIS IS NOT HTTP\r\n\r\n');
      const [res, ...more] = parseResponses(await conn.closed);
      expect(more).toHaveLength(0);
      expect(res?.status).toBe(400);
      expect(res?.headers['content-type']).toBe('application/problem+json');
      for (const [k, v] of Object.entries(BASELINE_SECURITY_HEADERS)) expect(res?.headers[k]).toBe(v);
      const body = JSON.parse(res?.body ?? '') as Problem;
      expect(body).toMatchObject({ type: '/problems/bad_request', status: 400, code: 'bad_request' });
      expect(body.request_id).toBe(res?.headers['x-request-id']);
      expect(body.request_id).toMatch(UUID);
    } finally {
      await app.close();
    }
  });

  it('answers oversized headers with a 431 problem', async () => {
    const app = await createBareServer(() => undefined);
    try {
      await app.listen({ port: 0, host: '127.0.0.1' });
      const conn = openRaw(portOf(app));
      conn.write(`GET /health HTTP/1.1\r\nHost: t\r\nX-Big: ${'a'.repeat(20 * 1024)}\r\n\r\n`);
      const [res] = parseResponses(await conn.closed);
      expect(res?.status).toBe(431);
      expect(res?.headers['content-type']).toBe('application/problem+json');
      expect(res?.headers['x-frame-options']).toBe('DENY');
      expect(JSON.parse(res?.body ?? '')).toMatchObject({ code: 'request_header_fields_too_large', status: 431 });
    } finally {
      await app.close();
    }
  });

  it('answers a request that arrives during shutdown with a 503 problem, after finishing the one in flight', async () => {
    const entered = deferred();
    const release = deferred();
    const closing = deferred();
    const refused = deferred();
    const app = await createBareServer((a) => {
      a.get('/slow', { config: { auth: 'public' } }, async () => {
        entered.resolve();
        await release.promise;
        return { finished: true };
      });
      a.get('/fast', { config: { auth: 'public' } }, async () => ({ fast: true }));
      a.addHook('preClose', async () => closing.resolve());
      a.addHook('onSend', async (_request, reply, payload) => {
        if (reply.statusCode === 503) refused.resolve();
        return payload;
      });
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const conn = openRaw(portOf(app));
    conn.write('GET /slow HTTP/1.1\r\nHost: t\r\n\r\n');
    await entered.promise;
    const closed = app.close();
    await closing.promise;
    // Same kept-alive connection, after shutdown began.
    conn.write('GET /fast HTTP/1.1\r\nHost: t\r\nX-Request-Id: late-1\r\n\r\n');
    await refused.promise;
    release.resolve();
    const [first, second, ...more] = parseResponses(await conn.closed);
    await closed;

    expect(more).toHaveLength(0);
    expect(first?.status).toBe(200);
    expect(JSON.parse(first?.body ?? '')).toEqual({ finished: true });
    expect(second?.status).toBe(503);
    expect(second?.headers['content-type']).toBe('application/problem+json');
    expect(second?.headers.connection).toBe('close');
    expect(second?.headers['retry-after']).toBe('1');
    expect(second?.headers['x-frame-options']).toBe('DENY');
    expect(second?.headers['cache-control']).toBe('no-store');
    expect(JSON.parse(second?.body ?? '')).toMatchObject({
      type: '/problems/service_unavailable',
      status: 503,
      code: 'service_unavailable',
      request_id: 'late-1',
    });
  });
});
