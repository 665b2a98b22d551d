/**
 * Rate limiting from RATE_LIMIT_REQUESTS / RATE_LIMIT_WINDOW: per user, per IP when
 * anonymous, probes and scrapes exempt. In process without Redis (driven by a frozen app
 * clock so window edges are exact); shared through the REAL Redis when one is given,
 * and falling back to per-instance counting, never to 5xx, when Redis is away, hangs,
 * or dies mid-run and comes back.
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import type { LightMyRequestResponse } from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildApp, type BuiltApp } from '../../src/app.js';
import { createRedis } from '../../src/platform/redis.js';
import { ADMIN_EMAIL, ADMIN_PASSWORD, bearer, testConfig } from '../support/app.js';
import { createTestDatabase, dbTarget, hasRedis, redisTestUrl, silentLogger, type TestDatabase } from '../support/db.js';
import { createServer, type AddressInfo } from 'node:net';
import { startRelay } from '../support/net.js';

const LIMIT_ENV = { RATE_LIMIT_REQUESTS: '3', RATE_LIMIT_WINDOW: '60' };
const ctx = { actorId: null, ip: null, requestId: 'test' };

interface RlApp extends BuiltApp {
  /** Signs in through the service, so sign-ins do not spend the HTTP limit. */
  login(email: string, password: string): Promise<string>;
}

async function createRlApp(options: {
  db: TestDatabase;
  env?: Record<string, string>;
  redis?: Redis;
  prefix?: string;
  clock?: () => Date;
}): Promise<RlApp> {
  const built = await buildApp({
    config: testConfig({ ...LIMIT_ENV, ...options.env }),
    logger: silentLogger,
    database: options.db.database,
    ...(options.redis ? { redis: options.redis } : {}),
    ...(options.prefix ? { rateLimitKeyPrefix: options.prefix } : {}),
    ...(options.clock ? { clock: options.clock } : {}),
  });
  await built.app.ready();
  await built.identity.bootstrapAdmin({ email: ADMIN_EMAIL, password: ADMIN_PASSWORD });
  return {
    ...built,
    login: async (email, password) => (await built.identity.login({ email, password }, ctx)).accessToken,
  };
}

async function makeUser(app: RlApp, name: string): Promise<{ id: string; token: string }> {
  const email = `${name}-${randomUUID().slice(0, 8)}@example.test`;
  const password = `pw-${randomUUID()}`;
  const user = await app.identity.createUser({ email, password, role: 'analyst' }, ctx);
  return { id: user.id, token: await app.login(email, password) };
}

const me = (app: RlApp, token: string) => app.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(token) });
const anon = (app: RlApp, ip: string, url = '/problems/rate_limited', headers: Record<string, string> = {}) =>
  app.app.inject({ method: 'GET', url, remoteAddress: ip, headers });

function expectAllowed(res: LightMyRequestResponse, remaining: number, limit = 3): void {
  expect(res.statusCode).toBe(200);
  expect(res.headers['ratelimit-limit']).toBe(String(limit));
  expect(res.headers['ratelimit-remaining']).toBe(String(remaining));
  expect(res.headers['ratelimit-policy']).toBe(`${limit};w=60`);
}

function expectLimited(res: LightMyRequestResponse, limit = 3): void {
  expect(res.statusCode).toBe(429);
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
  expect(res.json()).toMatchObject({ status: 429, code: 'rate_limited', type: '/problems/rate_limited' });
  expect(res.headers['ratelimit-limit']).toBe(String(limit));
  expect(res.headers['ratelimit-remaining']).toBe('0');
  expect(res.headers['ratelimit-policy']).toBe(`${limit};w=60`);
  const retryAfter = Number(res.headers['retry-after']);
  expect(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 60).toBe(true);
}

async function fallbacks(app: RlApp): Promise<number> {
  const text = (await app.app.inject({ method: 'GET', url: '/metrics' })).body;
  const m = /^loanbook_rate_limit_store_fallbacks_total (\d+)$/m.exec(text);
  if (!m) throw new Error('loanbook_rate_limit_store_fallbacks_total missing');
  return Number(m[1]);
}

async function ready(app: RlApp) {
  const res = await app.app.inject({ method: 'GET', url: '/health/ready' });
  type Report = { status: string; components: Record<string, { status: string; critical: boolean; error?: string }> };
  return { statusCode: res.statusCode, body: res.json<Report>() };
}

describe(`rate limiting in process (${dbTarget})`, () => {
  let db: TestDatabase;
  let t: RlApp;
  let nowMs: number;

  beforeAll(async () => {
    db = await createTestDatabase();
    nowMs = Date.now();
    t = await createRlApp({ db, clock: () => new Date(nowMs) });
  });
  afterAll(async () => {
    await t?.app.close();
    await db?.destroy();
  });

  it('allows RATE_LIMIT_REQUESTS per window, then answers 429 problem+json with Retry-After and RateLimit-* headers', async () => {
    expect(t.rateLimitStore.kind).toBe('memory');
    const u = await makeUser(t, 'limited');
    const first = await me(t, u.token);
    expectAllowed(first, 2);
    expect(first.headers['ratelimit-reset']).toBe('60');
    nowMs += 10_000;
    expectAllowed(await me(t, u.token), 1);
    const third = await me(t, u.token);
    expectAllowed(third, 0);
    expect(third.headers['ratelimit-reset']).toBe('50');

    const fourth = await me(t, u.token);
    expectLimited(fourth);
    expect(fourth.headers['retry-after']).toBe('50');
    expect(fourth.headers['ratelimit-reset']).toBe('50');
    expect(fourth.json()).toMatchObject({ detail: 'Limit of 3 requests per 60 s reached.' });

    // The window is fixed: still refused 1 ms before it ends, allowed again when it has.
    nowMs += 49_999;
    const last = await me(t, u.token);
    expectLimited(last);
    expect(last.headers['retry-after']).toBe('1');
    nowMs += 1;
    const fresh = await me(t, u.token);
    expectAllowed(fresh, 2);
    expect(fresh.headers['ratelimit-reset']).toBe('60');
  });

  it('limits each user independently, and a refused request does not touch the other user', async () => {
    const a = await makeUser(t, 'a');
    const b = await makeUser(t, 'b');
    for (const remaining of [2, 1, 0]) expectAllowed(await me(t, a.token), remaining);
    expectLimited(await me(t, a.token));
    expectLimited(await me(t, a.token));
    expectAllowed(await me(t, b.token), 2);
    expectAllowed(await me(t, b.token), 1);
  });

  it('limits anonymous callers per IP address; a signed-in user from the same address has their own budget', async () => {
    for (const remaining of [2, 1, 0]) expectAllowed(await anon(t, '10.1.0.1'), remaining);
    expectLimited(await anon(t, '10.1.0.1'));
    // Other addresses are unaffected, including an IPv6 one.
    expectAllowed(await anon(t, '10.1.0.2'), 2);
    expectAllowed(await anon(t, '2001:db8::7'), 2);
    const u = await makeUser(t, 'same-ip');
    const res = await t.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(u.token), remoteAddress: '10.1.0.1' });
    expectAllowed(res, 2);
  });

  it('counts refused callers: unauthenticated requests to a protected route spend the IP budget', async () => {
    for (let i = 0; i < 3; i++) expect((await anon(t, '10.1.0.3', '/v1/me')).statusCode).toBe(401);
    expectLimited(await anon(t, '10.1.0.3', '/v1/me'));
    // An invalid token is anonymous too: it does not get a fresh budget.
    expectLimited(await anon(t, '10.1.0.3', '/v1/me', bearer('not-a-valid-token')));
  });

  it('ignores X-Forwarded-For unless TRUST_PROXY is set (a client cannot mint new addresses)', async () => {
    for (let i = 0; i < 3; i++) expect((await anon(t, '10.1.0.4', undefined, { 'x-forwarded-for': `203.0.113.${i}` })).statusCode).toBe(200);
    expectLimited(await anon(t, '10.1.0.4', undefined, { 'x-forwarded-for': '203.0.113.99' }));
  });

  it('never limits /health, /health/live, /health/ready or /metrics, and they do not spend the budget', async () => {
    for (let i = 0; i < 6; i++) {
      for (const url of ['/health', '/health/live', '/health/ready', '/metrics']) {
        const res = await anon(t, '10.1.0.5', url);
        expect(res.statusCode).toBe(200);
        expect(res.headers['ratelimit-limit']).toBeUndefined();
      }
    }
    expectAllowed(await anon(t, '10.1.0.5'), 2);
  });
});

describe(`rate limiting behind a trusted proxy (${dbTarget})`, () => {
  let db: TestDatabase;
  let t: RlApp;
  beforeAll(async () => {
    db = await createTestDatabase();
    // The proxy by address: Fastify 5.12 ignores a bare hop count (see the report on TRUST_PROXY).
    t = await createRlApp({ db, env: { TRUST_PROXY: '10.9.9.9' } });
  });
  afterAll(async () => {
    await t?.app.close();
    await db?.destroy();
  });

  it('counts the client address from X-Forwarded-For when the proxy is trusted', async () => {
    const via = (client: string) => anon(t, '10.9.9.9', undefined, { 'x-forwarded-for': client });
    for (const remaining of [2, 1, 0]) expectAllowed(await via('198.51.100.1'), remaining);
    expectLimited(await via('198.51.100.1'));
    expectAllowed(await via('198.51.100.2'), 2);
    // A caller that is not the trusted proxy cannot choose its address.
    for (let i = 0; i < 3; i++) expect((await anon(t, '10.9.9.8', undefined, { 'x-forwarded-for': `192.0.2.${i}` })).statusCode).toBe(200);
    expectLimited(await anon(t, '10.9.9.8', undefined, { 'x-forwarded-for': '192.0.2.77' }));
  });
});

async function until(what: string, cond: () => boolean | Promise<boolean>): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe.runIf(hasRedis)(`rate limiting on the real Redis (${dbTarget})`, () => {
  let db: TestDatabase;
  let admin: Redis;
  const prefixes: string[] = [];
  const clients: Redis[] = [];
  const apps: RlApp[] = [];

  const prefix = () => {
    const p = `loanbook:test:rl:${randomUUID()}:`;
    prefixes.push(p);
    return p;
  };
  const redisClient = (url: string) => {
    const r = createRedis(url, silentLogger);
    clients.push(r);
    return r;
  };
  const app = async (options: Omit<Parameters<typeof createRlApp>[0], 'db'>) => {
    const a = await createRlApp({ db, ...options });
    apps.push(a);
    return a;
  };
  const connected = (r: Redis) => until('redis ready', () => r.status === 'ready');

  beforeAll(async () => {
    db = await createTestDatabase();
    admin = new Redis(redisTestUrl, { lazyConnect: true });
    await admin.connect();
  });
  afterEach(async () => {
    for (const a of apps.splice(0)) await a.app.close();
    for (const c of clients.splice(0)) c.disconnect();
    for (const p of prefixes.splice(0)) {
      let cursor = '0';
      do {
        const [next, keys] = await admin.scan(cursor, 'MATCH', `${p}*`, 'COUNT', 1000);
        if (keys.length > 0) await admin.del(...keys);
        cursor = next;
      } while (cursor !== '0');
    }
  });
  afterAll(async () => {
    admin?.disconnect();
    await db?.destroy();
  });

  it('two instances sharing one Redis share the counters (per user and per IP)', async () => {
    const p = prefix();
    const one = await app({ redis: redisClient(redisTestUrl), prefix: p });
    const two = await app({ redis: redisClient(redisTestUrl), prefix: p });
    expect(one.rateLimitStore.kind).toBe('redis');
    const u = await makeUser(one, 'shared');

    expectAllowed(await me(one, u.token), 2);
    expectAllowed(await me(two, u.token), 1);
    expectAllowed(await me(one, u.token), 0);
    expectLimited(await me(two, u.token));
    expectLimited(await me(one, u.token));
    expect(await admin.get(`${p}u:${u.id}`)).toBe('5');
    const ttl = await admin.pttl(`${p}u:${u.id}`);
    expect(ttl > 0 && ttl <= 60_000).toBe(true);

    expectAllowed(await anon(two, '10.2.0.1'), 2);
    expectAllowed(await anon(one, '10.2.0.1'), 1);
    expectAllowed(await anon(two, '10.2.0.1'), 0);
    expectLimited(await anon(one, '10.2.0.1'));
    expect(await admin.get(`${p}ip:10.2.0.1`)).toBe('4');
    expect(await fallbacks(one)).toBe(0);

    const health = await ready(one);
    expect(health.statusCode).toBe(200);
    expect(health.body.status).toBe('ok');
    expect(health.body.components.redis).toMatchObject({ status: 'ok', critical: false });
  });

  it('a new client waits for its first connection instead of failing (no fallback at start-up); a dead one fails fast', async () => {
    const fresh = redisClient(redisTestUrl);
    expect(fresh.status).not.toBe('ready');
    await expect(fresh.ping()).resolves.toBe('PONG');

    const dead = redisClient(`redis://127.0.0.1:${await closedPort()}`);
    await expect(dead.ping()).rejects.toThrow();
    await expect(dead.ping()).rejects.toThrow(/enableOfflineQueue/);

    const p = prefix();
    const startup = redisClient(redisTestUrl);
    const one = await app({ redis: startup, prefix: p });
    expectAllowed(await anon(one, '10.2.0.9'), 2);
    expect(await admin.get(`${p}ip:10.2.0.9`)).toBe('1');
    expect(await fallbacks(one)).toBe(0);
    expect((await ready(one)).body.status).toBe('ok');
  });

  it('a different key prefix is a separate set of counters', async () => {
    const one = await app({ redis: redisClient(redisTestUrl), prefix: prefix() });
    const other = await app({ redis: redisClient(redisTestUrl), prefix: prefix() });
    for (const remaining of [2, 1, 0]) expectAllowed(await anon(one, '10.2.0.2'), remaining);
    expectLimited(await anon(one, '10.2.0.2'));
    expectAllowed(await anon(other, '10.2.0.2'), 2);
  });

  it('Redis unreachable from the start: no 5xx, limits apply per instance, fallbacks are counted, ready is degraded', async () => {
    const deadUrl = `redis://127.0.0.1:${await closedPort()}`;
    const one = await app({ redis: redisClient(deadUrl), prefix: prefix() });
    const two = await app({ redis: redisClient(deadUrl), prefix: prefix() });
    const u = await makeUser(one, 'offline');
    const base = await fallbacks(one);

    for (const remaining of [2, 1, 0]) expectAllowed(await me(one, u.token), remaining);
    expectLimited(await me(one, u.token));
    expect(await fallbacks(one)).toBe(base + 4);
    // The other instance counts on its own while Redis is away.
    expectAllowed(await me(two, u.token), 2);
    for (const remaining of [2, 1, 0]) expectAllowed(await anon(one, '10.2.0.3'), remaining);
    expectLimited(await anon(one, '10.2.0.3'));

    const health = await ready(one);
    expect(health.statusCode).toBe(200);
    expect(health.body.status).toBe('degraded');
    expect(health.body.components.database).toMatchObject({ status: 'ok', critical: true });
    expect(health.body.components.redis).toMatchObject({ status: 'fail', critical: false });
    expect(JSON.stringify(health.body)).not.toContain(deadUrl);
    const overall = await one.app.inject({ method: 'GET', url: '/health' });
    expect(overall.statusCode).toBe(200);
    expect(overall.json<{ status: string }>().status).toBe('degraded');
  });

  it('Redis dies mid-run and comes back: in-process counting while it is away, shared counting again after', async () => {
    const relay = await startRelay(new URL(redisTestUrl).hostname, Number(new URL(redisTestUrl).port || 6379));
    const p = prefix();
    const redis = redisClient(`redis://127.0.0.1:${relay.port}`);
    const one = await app({ redis, prefix: p });
    await connected(redis);
    const u = await makeUser(one, 'flaky');
    const base = await fallbacks(one);

    expectAllowed(await me(one, u.token), 2);
    expectAllowed(await me(one, u.token), 1);
    expect(await admin.get(`${p}u:${u.id}`)).toBe('2');

    await relay.kill();
    await until('redis to notice', () => redis.status !== 'ready');
    // The in-process store knows nothing of the two Redis hits: a fresh per-instance window.
    for (const remaining of [2, 1, 0]) expectAllowed(await me(one, u.token), remaining);
    expectLimited(await me(one, u.token));
    expect(await fallbacks(one)).toBe(base + 4);
    const down = await ready(one);
    expect(down.statusCode).toBe(200);
    expect(down.body.status).toBe('degraded');
    expect(down.body.components.redis?.status).toBe('fail');
    expect(await admin.get(`${p}u:${u.id}`)).toBe('2');

    await relay.revive();
    await connected(redis);
    // Redis again: the shared counter continues from 2.
    expectAllowed(await me(one, u.token), 0);
    expectLimited(await me(one, u.token));
    expect(await admin.get(`${p}u:${u.id}`)).toBe('4');
    expect(await fallbacks(one)).toBe(base + 4);
    const up = await ready(one);
    expect(up.statusCode).toBe(200);
    expect(up.body.status).toBe('ok');
  });

  it('a Redis that stops answering costs a command timeout, then falls back (no 5xx)', async () => {
    const relay = await startRelay(new URL(redisTestUrl).hostname, Number(new URL(redisTestUrl).port || 6379));
    const redis = redisClient(`redis://127.0.0.1:${relay.port}`);
    const one = await app({ redis, prefix: prefix() });
    await connected(redis);
    const u = await makeUser(one, 'stalled');
    const base = await fallbacks(one);
    expectAllowed(await me(one, u.token), 2);

    relay.stall(true);
    try {
      expectAllowed(await me(one, u.token), 2); // in process, fresh window
      expect(await fallbacks(one)).toBe(base + 1);
      const health = await ready(one);
      expect(health.statusCode).toBe(200);
      expect(health.body.components.redis).toMatchObject({ status: 'fail', error: 'Command timed out' });
    } finally {
      relay.stall(false);
    }
    // The held commands reach Redis late; the connection stays in step and is used again.
    expectAllowed(await me(one, u.token), 0);
    expect(await fallbacks(one)).toBe(base + 1);
    await relay.kill();
  });

  it('a client that was disconnected (closed for good) falls back the same way', async () => {
    const redis = redisClient(redisTestUrl);
    const one = await app({ redis, prefix: prefix() });
    await connected(redis);
    const u = await makeUser(one, 'closed');
    expectAllowed(await me(one, u.token), 2);
    redis.disconnect();
    const base = await fallbacks(one);
    for (const remaining of [2, 1, 0]) expectAllowed(await me(one, u.token), remaining);
    expectLimited(await me(one, u.token));
    expect(await fallbacks(one)).toBe(base + 4);
    expect((await ready(one)).body.status).toBe('degraded');
  });
});
