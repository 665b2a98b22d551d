/**
 * /metrics: Prometheus text with the names the deployment guides use, route templates
 * (never raw URLs) as labels, a duration histogram, an in-flight gauge that stays exact
 * on every path a request can take, and Node process metrics.
 */
import { request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { buildApp, type BuiltApp } from '../../src/app.js';
import type { App } from '../../src/platform/http.js';
import { ADMIN_EMAIL, ADMIN_PASSWORD, bearer, createTestApp, testConfig, type TestApp } from '../support/app.js';
import { createTestDatabase, dbTarget, silentLogger, type TestDatabase } from '../support/db.js';
import { parseMetrics, type Sample } from '../support/metrics.js';

/** The value of the one sample with exactly these labels; undefined when absent. */
function valueOf(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.entries(labels).sort();
  const hits = samples.filter(
    (s) => s.name === name && JSON.stringify(Object.entries(s.labels).sort()) === JSON.stringify(want),
  );
  if (hits.length > 1) throw new Error(`${name} has ${hits.length} samples with the same labels`);
  return hits[0]?.value;
}

async function scrape(app: App): Promise<{ text: string; samples: Sample[] }> {
  const res = await app.inject({ method: 'GET', url: '/metrics' });
  expect(res.statusCode).toBe(200);
  return { text: res.body, samples: parseMetrics(res.body) };
}

describe(`metrics (${dbTarget})`, () => {
  let t: TestApp;
  let token: string;
  let adminId: string;

  beforeAll(async () => {
    t = await createTestApp({ env: { ALLOWED_ORIGINS: 'https://console.example' } });
    token = await t.adminToken();
    adminId = (
      (await t.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(token) })).json<{ id: string }>()
    ).id;
  });
  afterAll(async () => t?.close());

  it('serves the Prometheus text format with the guide names and their types', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/metrics' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8');
    for (const line of [
      '# TYPE http_requests_total counter',
      '# TYPE http_request_duration_seconds histogram',
      '# TYPE active_requests gauge',
      '# TYPE loanbook_rate_limit_store_fallbacks_total counter',
      '# TYPE process_cpu_user_seconds_total counter',
      '# TYPE process_resident_memory_bytes gauge',
      '# TYPE nodejs_heap_size_total_bytes gauge',
      '# TYPE nodejs_eventloop_lag_seconds gauge',
    ]) {
      expect(res.body.split('\n')).toContain(line);
    }
    const samples = parseMetrics(res.body);
    expect(valueOf(samples, 'process_cpu_user_seconds_total')).toBeGreaterThan(0);
    expect(valueOf(samples, 'nodejs_heap_size_total_bytes')).toBeGreaterThan(0);
    expect(valueOf(samples, 'loanbook_rate_limit_store_fallbacks_total')).toBe(0);
    // The scrape itself is the one request in flight.
    expect(valueOf(samples, 'active_requests')).toBe(1);
  });

  it('labels requests by route template, never by the raw URL', async () => {
    const missingId = '00000000-0000-4000-8000-000000000000';
    for (let i = 0; i < 3; i++) {
      expect((await t.app.inject({ method: 'GET', url: `/v1/users/${adminId}`, headers: bearer(token) })).statusCode).toBe(200);
    }
    expect((await t.app.inject({ method: 'GET', url: `/v1/users/${missingId}`, headers: bearer(token) })).statusCode).toBe(404);
    expect((await t.app.inject({ method: 'GET', url: `/v1/users/${missingId}` })).statusCode).toBe(401);
    expect((await t.app.inject({ method: 'GET', url: '/no/such/route/12345?x=1' })).statusCode).toBe(404);

    const { text, samples } = await scrape(t.app);
    const route = '/v1/users/:id';
    expect(valueOf(samples, 'http_requests_total', { method: 'GET', route, status: '200' })).toBe(3);
    expect(valueOf(samples, 'http_requests_total', { method: 'GET', route, status: '404' })).toBe(1);
    expect(valueOf(samples, 'http_requests_total', { method: 'GET', route, status: '401' })).toBe(1);
    expect(valueOf(samples, 'http_requests_total', { method: 'GET', route: 'unmatched', status: '404' })).toBe(1);
    expect(text).not.toContain(adminId);
    expect(text).not.toContain(missingId);
    // In no label (a sample's value, such as a heap size, may hold these digits by chance).
    expect(text.split('\n').filter((line) => /\{[^}]*12345[^}]*\}/.test(line))).toEqual([]);
    // Every route label is a registered template (or "unmatched").
    const routes = new Set(samples.filter((s) => s.name === 'http_requests_total').map((s) => s.labels.route));
    for (const r of routes) expect(r === 'unmatched' || r?.startsWith('/')).toBe(true);
    expect([...routes].filter((r) => r !== 'unmatched' && !t.app.hasRoute({ method: 'GET', url: r! }) && !t.app.hasRoute({ method: 'POST', url: r! }))).toEqual([]);
  });

  it('observes durations in a histogram whose buckets are cumulative and whose count matches the counter', async () => {
    for (let i = 0; i < 4; i++) await t.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(token) });
    const { samples } = await scrape(t.app);
    const labels = { method: 'GET', route: '/v1/me', status: '200' };
    const total = valueOf(samples, 'http_requests_total', labels)!;
    expect(total).toBe(5); // 4 here + 1 in beforeAll
    const buckets = samples
      .filter((s) => s.name === 'http_request_duration_seconds_bucket' && s.labels.route === '/v1/me' && s.labels.status === '200')
      .map((s) => ({ le: s.labels.le!, value: s.value }));
    expect(buckets.map((b) => b.le)).toEqual(['0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '0.5', '1', '2.5', '5', '10', '+Inf']);
    for (let i = 1; i < buckets.length; i++) expect(buckets[i]!.value).toBeGreaterThanOrEqual(buckets[i - 1]!.value);
    expect(buckets.at(-1)!.value).toBe(total);
    expect(valueOf(samples, 'http_request_duration_seconds_count', labels)).toBe(total);
    expect(valueOf(samples, 'http_request_duration_seconds_sum', labels)).toBeGreaterThan(0);
  });

  it('counts rejected requests too (401 on a protected route, 400 validation)', async () => {
    await t.app.inject({ method: 'GET', url: '/v1/me' });
    await t.app.inject({ method: 'POST', url: '/v1/auth/token', payload: { email: 'not-an-email' } });
    const { samples } = await scrape(t.app);
    expect(valueOf(samples, 'http_requests_total', { method: 'GET', route: '/v1/me', status: '401' })).toBe(1);
    expect(valueOf(samples, 'http_requests_total', { method: 'POST', route: '/v1/auth/token', status: '400' })).toBe(1);
  });

  it('a CORS preflight answered before routing does not unbalance active_requests', async () => {
    for (let i = 0; i < 3; i++) {
      const res = await t.app.inject({
        method: 'OPTIONS',
        url: '/v1/me',
        headers: { origin: 'https://console.example', 'access-control-request-method': 'GET' },
      });
      expect(res.statusCode).toBe(204);
      expect(res.headers['access-control-allow-origin']).toBe('https://console.example');
    }
    // Refused in the same hook (strict preflight without Access-Control-Request-Method).
    const bad = await t.app.inject({ method: 'OPTIONS', url: '/v1/me', headers: { origin: 'https://console.example' } });
    expect(bad.statusCode).toBe(400);
    const { samples } = await scrape(t.app);
    expect(valueOf(samples, 'active_requests')).toBe(1);
  });

  it('keeps one registry per app: another app starts from zero', async () => {
    const other = await createTestApp({ db: t.db });
    try {
      const { samples } = await scrape(other.app);
      expect(valueOf(samples, 'http_requests_total', { method: 'GET', route: '/v1/me', status: '200' })).toBeUndefined();
      expect(valueOf(samples, 'active_requests')).toBe(1);
    } finally {
      await other.close();
    }
  });

  it('is not served on the API port when METRICS_PORT is set', async () => {
    const separate = await createTestApp({ db: t.db, env: { METRICS_PORT: '9464' } });
    try {
      const res = await separate.app.inject({ method: 'GET', url: '/metrics' });
      expect(res.statusCode).toBe(404);
    } finally {
      await separate.close();
    }
  });
});

describe(`active_requests on every path (${dbTarget})`, () => {
  let db: TestDatabase;
  let built: BuiltApp;
  let gate: { entered: () => void; release: Promise<void> } | null = null;
  let handled = 0;

  beforeAll(async () => {
    db = await createTestDatabase();
    built = await buildApp({
      config: testConfig(),
      logger: silentLogger,
      database: db.database,
      extraRoutes: (app) => {
        app.get(
          '/v1/test/slow/:n',
          { config: { auth: 'public' }, schema: { params: z.strictObject({ n: z.string() }) } },
          async (request) => {
            const g = gate;
            if (g) {
              g.entered();
              await g.release;
            }
            handled++;
            return { n: request.params.n };
          },
        );
      },
    });
    await built.app.ready();
    await built.identity.bootstrapAdmin({ email: ADMIN_EMAIL, password: ADMIN_PASSWORD });
  });
  afterAll(async () => {
    await built?.app.close();
    await db?.destroy();
  });

  function newGate() {
    let entered!: () => void;
    let open!: () => void;
    const enteredP = new Promise<void>((r) => (entered = r));
    const release = new Promise<void>((r) => (open = r));
    gate = { entered, release };
    return { entered: enteredP, open };
  }

  it('counts a request while it is in flight and releases it when it completes', async () => {
    const g = newGate();
    const slow = built.app.inject({ method: 'GET', url: '/v1/test/slow/7' });
    await g.entered;
    gate = null;
    expect(valueOf((await scrape(built.app)).samples, 'active_requests')).toBe(2);
    g.open();
    expect((await slow).statusCode).toBe(200);
    const { samples } = await scrape(built.app);
    expect(valueOf(samples, 'active_requests')).toBe(1);
    expect(valueOf(samples, 'http_requests_total', { method: 'GET', route: '/v1/test/slow/:n', status: '200' })).toBe(1);
  });

  it('a client that disconnects mid-request is released exactly once', async () => {
    await built.app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = built.app.server.address() as AddressInfo;
    const g = newGate();
    const before = handled;
    const req = httpRequest({ host: '127.0.0.1', port, path: '/v1/test/slow/aborted' });
    const closed = new Promise<void>((resolve) => req.on('close', () => resolve()));
    req.on('error', () => {});
    req.end();
    await g.entered;
    gate = null;
    expect(valueOf((await scrape(built.app)).samples, 'active_requests')).toBe(2);
    req.destroy();
    await closed;
    // Let the server see the disconnect, then let the handler finish and try to answer.
    await new Promise((r) => setTimeout(r, 50));
    g.open();
    for (let i = 0; i < 100 && handled === before; i++) await new Promise((r) => setTimeout(r, 10));
    expect(handled).toBe(before + 1);
    await new Promise((r) => setTimeout(r, 50));
    expect(valueOf((await scrape(built.app)).samples, 'active_requests')).toBe(1);
  });

  it('a request that fails in authentication (database down) is not left counted', async () => {
    const token = (
      (
        await built.app.inject({ method: 'POST', url: '/v1/auth/token', payload: { email: ADMIN_EMAIL, password: ADMIN_PASSWORD } })
      ).json<{ access_token: string }>()
    ).access_token;
    const db2 = await createTestDatabase();
    const broken = await buildApp({ config: testConfig(), logger: silentLogger, database: db2.database });
    await broken.app.ready();
    try {
      await db2.database.close();
      const res = await broken.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(token) });
      expect(res.statusCode).toBe(500);
      expect(res.json()).toMatchObject({ code: 'internal_error' });
      const { samples } = await scrape(broken.app);
      expect(valueOf(samples, 'active_requests')).toBe(1);
      expect(valueOf(samples, 'http_requests_total', { method: 'GET', route: '/v1/me', status: '500' })).toBe(1);
      // Timed from arrival, although it ended before the metrics hook ran.
      expect(valueOf(samples, 'http_request_duration_seconds_count', { method: 'GET', route: '/v1/me', status: '500' })).toBe(1);
    } finally {
      await broken.app.close();
      await db2.destroy().catch(() => {});
    }
  });
});
