/**
 * Probes: /health/live (the process answers), /health/ready and /health (every
 * component, per-component JSON). A critical component down → 503; a non-critical one
 * (Redis) → "degraded" with 200; shutdown → 503. Database outages are real: a closed
 * pool on both targets, and on PostgreSQL a connection cut by a relay that dies and
 * comes back.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp, type AppDatabase, type BuiltApp } from '../../src/app.js';
import { openDatabase, type Database } from '../../src/platform/database.js';
import { runHealthChecks, type HealthCheck } from '../../src/platform/health.js';
import { packageVersion } from '../../src/platform/paths.js';
import { createRedis } from '../../src/platform/redis.js';
import { createTestApp, testConfig, type TestApp } from '../support/app.js';
import {
  createTestDatabase,
  dbTarget,
  hasRedis,
  isPostgres,
  redisTestUrl,
  silentLogger,
  testDbOptions,
  type TestDatabase,
} from '../support/db.js';
import { startRelay, type Relay } from '../support/net.js';

interface Component {
  status: 'ok' | 'fail';
  latency_ms: number;
  critical: boolean;
  error?: string;
}
interface Report {
  status: 'ok' | 'degraded' | 'fail';
  version: string;
  components: Record<string, Component>;
  shutting_down?: boolean;
}

async function probe(app: BuiltApp['app'], url: string): Promise<{ statusCode: number; body: Report }> {
  const res = await app.inject({ method: 'GET', url });
  expect(res.headers['content-type']).toMatch(/^application\/json/);
  return { statusCode: res.statusCode, body: res.json<Report>() };
}

describe(`health probes (${dbTarget})`, () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await createTestApp();
  });
  afterAll(async () => t?.close());

  it('/health/live answers without authentication', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/health/live' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    const body = res.json<Record<string, unknown>>();
    expect(Object.keys(body).sort()).toEqual(['status', 'uptime_seconds', 'version']);
    expect(body.status).toBe('ok');
    expect(body.version).toBe(packageVersion);
    expect(Number.isInteger(body.uptime_seconds)).toBe(true);
  });

  it('/health/ready and /health report each component; without Redis only the database', async () => {
    for (const url of ['/health/ready', '/health']) {
      const { statusCode, body } = await probe(t.app, url);
      expect(statusCode).toBe(200);
      expect(body.status).toBe('ok');
      expect(body.version).toBe(packageVersion);
      expect(Object.keys(body.components)).toEqual(['database']);
      expect(body.components.database).toEqual({ status: 'ok', critical: true, latency_ms: expect.any(Number) as unknown });
      expect(body.shutting_down).toBeUndefined();
    }
  });

  it('ready is 503 once shutdown has begun, while live stays 200', async () => {
    const draining = await createTestApp({ db: t.db });
    try {
      expect((await probe(draining.app, '/health/ready')).statusCode).toBe(200);
      draining.beginShutdown();
      for (const url of ['/health/ready', '/health']) {
        const { statusCode, body } = await probe(draining.app, url);
        expect(statusCode).toBe(503);
        expect(body.status).toBe('fail');
        expect(body.shutting_down).toBe(true);
        // The components themselves are fine: the instance is leaving on purpose.
        expect(body.components.database?.status).toBe('ok');
      }
      expect((await draining.app.inject({ method: 'GET', url: '/health/live' })).statusCode).toBe(200);
      // The other instance on the same database is unaffected.
      expect((await probe(t.app, '/health/ready')).statusCode).toBe(200);
    } finally {
      await draining.close();
    }
  });

  it('ready is 503 when the database is down (pool closed), naming the failed component', async () => {
    const db = await createTestDatabase();
    const built = await buildApp({ config: testConfig(), logger: silentLogger, database: db.database });
    await built.app.ready();
    try {
      expect((await probe(built.app, '/health/ready')).statusCode).toBe(200);
      await db.database.close();
      for (const url of ['/health/ready', '/health']) {
        const { statusCode, body } = await probe(built.app, url);
        expect(statusCode).toBe(503);
        expect(body.status).toBe('fail');
        expect(body.components.database).toMatchObject({ status: 'fail', critical: true });
        expect(body.components.database?.error).toEqual(expect.any(String));
        expect(body.components.database?.error).not.toMatch(/\n|postgres:\/\//);
      }
      expect((await built.app.inject({ method: 'GET', url: '/health/live' })).statusCode).toBe(200);
    } finally {
      await built.app.close();
      await db.destroy().catch(() => undefined);
    }
  });
});

describe(`health with extra checks (${dbTarget})`, () => {
  let db: TestDatabase;
  let built: BuiltApp;
  const down = { worker: false, queue: false };

  beforeAll(async () => {
    db = await createTestDatabase();
    const checks: HealthCheck[] = [
      {
        name: 'worker',
        critical: false,
        check: async () => {
          if (down.worker) throw new Error('worker stopped; broker at amqp://user:s3cret@mq:5672/vh unreachable\n    at stack');
        },
      },
      {
        name: 'queue',
        critical: true,
        check: async () => {
          if (down.queue) throw new Error('queue gone');
        },
      },
    ];
    built = await buildApp({ config: testConfig(), logger: silentLogger, database: db.database, healthChecks: checks });
    await built.app.ready();
  });
  afterAll(async () => {
    await built?.app.close();
    await db?.destroy();
  });

  it('all up → ok; a non-critical failure → degraded 200; a critical one → fail 503', async () => {
    let r = await probe(built.app, '/health/ready');
    expect(r.statusCode).toBe(200);
    expect(r.body.status).toBe('ok');
    expect(Object.keys(r.body.components).sort()).toEqual(['database', 'queue', 'worker']);

    down.worker = true;
    r = await probe(built.app, '/health/ready');
    expect(r.statusCode).toBe(200);
    expect(r.body.status).toBe('degraded');
    // First line only, connection strings redacted.
    expect(r.body.components.worker).toEqual({
      status: 'fail',
      critical: false,
      latency_ms: expect.any(Number) as unknown,
      error: 'worker stopped; broker at <url> unreachable',
    });

    down.queue = true;
    r = await probe(built.app, '/health/ready');
    expect(r.statusCode).toBe(503);
    expect(r.body.status).toBe('fail');
    expect(r.body.components.queue).toMatchObject({ status: 'fail', critical: true, error: 'queue gone' });

    down.worker = false;
    down.queue = false;
    r = await probe(built.app, '/health');
    expect(r.statusCode).toBe(200);
    expect(r.body.status).toBe('ok');
  });

  it('a check that never answers fails at the timeout instead of hanging the probe', async () => {
    const report = await runHealthChecks(
      [
        { name: 'stuck', critical: true, check: () => new Promise<void>(() => {}) },
        { name: 'fine', critical: false, check: async () => {} },
        { name: 'odd', critical: false, check: () => Promise.reject(new Error('')) },
      ],
      20,
    );
    expect(report.status).toBe('fail');
    expect(report.components.stuck).toMatchObject({ status: 'fail', critical: true, error: 'timed out after 20 ms' });
    expect(report.components.fine).toMatchObject({ status: 'ok', critical: false });
    expect(report.components.odd?.status).toBe('fail');
  });
});


describe.runIf(isPostgres)('health when PostgreSQL goes away and comes back (postgres)', () => {
  let db: TestDatabase;
  let relay: Relay;
  let viaRelay: Database<AppDatabase>;
  let built: BuiltApp;

  beforeAll(async () => {
    db = await createTestDatabase();
    const url = new URL(db.url!);
    relay = await startRelay(url.hostname, Number(url.port || 5432));
    url.host = `127.0.0.1:${relay.port}`;
    viaRelay = await openDatabase<AppDatabase>({ kind: 'postgres', location: url.toString() }, testDbOptions, silentLogger);
    built = await buildApp({ config: testConfig(), logger: silentLogger, database: viaRelay });
    await built.app.ready();
  });
  afterAll(async () => {
    await built?.app.close();
    await viaRelay?.close().catch(() => undefined);
    await relay?.kill().catch(() => undefined);
    await db?.destroy();
  });

  it('503 while the database cannot be reached, 200 again once it can (the process survives the cut)', async () => {
    expect((await probe(built.app, '/health/ready')).statusCode).toBe(200);

    await relay.kill();
    const down = await probe(built.app, '/health/ready');
    expect(down.statusCode).toBe(503);
    expect(down.body.status).toBe('fail');
    expect(down.body.components.database).toMatchObject({ status: 'fail', critical: true });
    expect(down.body.components.database?.error).not.toContain('postgres://');
    expect((await built.app.inject({ method: 'GET', url: '/health/live' })).statusCode).toBe(200);

    await relay.revive();
    // A pooled connection that died with the relay may fail one more probe; then it is gone.
    let up = await probe(built.app, '/health/ready');
    for (let i = 0; i < 40 && up.statusCode !== 200; i++) {
      await new Promise((r) => setTimeout(r, 50));
      up = await probe(built.app, '/health/ready');
    }
    expect(up.statusCode).toBe(200);
    expect(up.body.status).toBe('ok');
    expect(up.body.components.database?.status).toBe('ok');
  });
});

describe.runIf(hasRedis)(`health with Redis (${dbTarget})`, () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => db?.destroy());

  it('reports Redis as a non-critical component: ok when up, degraded (200) when down', async () => {
    const live = createRedis(redisTestUrl, silentLogger);
    const dead = createRedis('redis://127.0.0.1:1', silentLogger);
    const up = await buildApp({ config: testConfig(), logger: silentLogger, database: db.database, redis: live });
    const degraded = await buildApp({ config: testConfig(), logger: silentLogger, database: db.database, redis: dead });
    try {
      await up.app.ready();
      await degraded.app.ready();
      const ok = await probe(up.app, '/health/ready');
      expect(ok.statusCode).toBe(200);
      expect(ok.body.status).toBe('ok');
      expect(Object.keys(ok.body.components).sort()).toEqual(['database', 'redis']);
      expect(ok.body.components.redis).toMatchObject({ status: 'ok', critical: false });

      const bad = await probe(degraded.app, '/health/ready');
      expect(bad.statusCode).toBe(200);
      expect(bad.body.status).toBe('degraded');
      expect(bad.body.components.redis).toMatchObject({ status: 'fail', critical: false });
      expect(bad.body.components.database?.status).toBe('ok');
    } finally {
      await up.app.close();
      await degraded.app.close();
      live.disconnect();
      dead.disconnect();
    }
  });

  it('the database is critical even when Redis is fine: 503', async () => {
    const own = await createTestDatabase();
    const redis = createRedis(redisTestUrl, silentLogger);
    const built = await buildApp({ config: testConfig(), logger: silentLogger, database: own.database, redis });
    try {
      await built.app.ready();
      await own.database.close();
      const r = await probe(built.app, '/health/ready');
      expect(r.statusCode).toBe(503);
      expect(r.body.status).toBe('fail');
      expect(r.body.components.redis?.status).toBe('ok');
      expect(r.body.components.database?.status).toBe('fail');
    } finally {
      await built.app.close();
      redis.disconnect();
      await own.destroy().catch(() => undefined);
    }
  });
});
