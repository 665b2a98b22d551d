/**
 * What clients see when the database cannot serve: which failures count as "unavailable"
 * (503 database_unavailable with Retry-After, never a 500), the bounded wait for a pooled
 * connection, and the reachability probe that refuses checkouts and cuts connections in
 * use while the network path to PostgreSQL is dead (a loopback proxy that stops
 * forwarding stands in for a dropped route). Figures (how fast) are in bench/faults.
 */
import { createServer, connect as tcpConnect, type Server, type Socket } from 'node:net';
import { sql } from 'kysely';
import type pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { buildApp, type BuiltApp } from '../../src/app.js';
import { AppError } from '../../src/platform/errors.js';
import { DatabaseUnavailableError, isDatabaseUnavailable, openDatabase, withCheckoutBudget, type Database, type DatabaseOptions } from '../../src/platform/database.js';
import type { App } from '../../src/platform/http.js';
import { ADMIN_EMAIL, ADMIN_PASSWORD, bearer, testConfig } from '../support/app.js';
import { createEmptyDatabase, createTestDatabase, isPostgres, silentLogger, testDbOptions, type TestDatabase } from '../support/db.js';
import { createBareServer } from './http-support.js';

const withCode = (code: string, message = 'x') => Object.assign(new Error(message), { code });

describe('which failures mean "the database is unavailable"', () => {
  it.each([
    ['the pool waited too long', new DatabaseUnavailableError('pool_exhausted', 'busy')],
    ['the probe is failing', new DatabaseUnavailableError('unreachable', 'away')],
    ['connection refused', withCode('ECONNREFUSED')],
    ['connection reset', withCode('ECONNRESET')],
    ['57P01 admin_shutdown (restart)', withCode('57P01', 'terminating connection due to administrator command')],
    ['57P03 cannot_connect_now (starting up)', withCode('57P03', 'the database system is starting up')],
    ['08006 connection_failure', withCode('08006')],
    ['53300 too_many_connections', withCode('53300')],
    ['pg-pool checkout timeout', new Error('timeout exceeded when trying to connect')],
    ['connection terminated', new Error('Connection terminated unexpectedly')],
    ['client-side query timeout', new Error('Query read timeout')],
    ['wrapped in a cause', new Error('query failed', { cause: withCode('57P01') })],
  ])('%s', (_name, error) => {
    expect(isDatabaseUnavailable(error)).toBe(true);
  });

  it.each([
    ['unique violation', withCode('23505', 'duplicate key value violates unique constraint')],
    ['serialization failure', withCode('40001')],
    ['statement timeout', withCode('57014', 'canceling statement due to statement timeout')],
    ['a bug', new TypeError('cannot read properties of undefined')],
    ['a message that only mentions a connection, with an SQLSTATE', withCode('42P01', 'relation "Connection terminated" does not exist')],
    ['not an object', 'Connection terminated'],
  ])('not: %s', (_name, error) => {
    expect(isDatabaseUnavailable(error)).toBe(false);
  });
});

describe('the HTTP answer', () => {
  let app: App;
  let thrown: unknown;
  beforeAll(async () => {
    app = await createBareServer((a) => {
      a.get('/db', { config: { auth: 'public' } }, async () => {
        throw thrown;
      });
    });
  });
  afterAll(async () => app?.close());

  it.each([
    ['a restart (57P01)', withCode('57P01', 'terminating connection due to administrator command'), '2'],
    ['an unreachable database', new DatabaseUnavailableError('unreachable', 'probe of 10.0.0.5 failing'), '2'],
    ['a lost connection', new Error('Connection terminated unexpectedly'), '2'],
    ['an exhausted pool', new DatabaseUnavailableError('pool_exhausted', 'permits: 0 of 10 free after 1000 ms'), '1'],
  ])('%s is a 503 database_unavailable problem with Retry-After, nothing of the error in it', async (_name, error, retryAfter) => {
    thrown = error;
    const res = await app.inject({ method: 'GET', url: '/db' });
    expect(res.statusCode).toBe(503);
    expect(res.headers['content-type']).toBe('application/problem+json');
    expect(res.headers['retry-after']).toBe(retryAfter);
    expect(res.json()).toMatchObject({ type: '/problems/database_unavailable', status: 503, code: 'database_unavailable', instance: '/db' });
    expect(res.body).not.toContain((error as Error).message);
  });

  it('an unrelated database error stays a 500', async () => {
    thrown = withCode('42P01', 'relation "loans" does not exist');
    const res = await app.inject({ method: 'GET', url: '/db' });
    expect(res.statusCode).toBe(500);
    expect(res.json()).toMatchObject({ code: 'internal_error' });
  });
});

/**
 * The database failing after the handler ran, while the Idempotency-Key is released (on a
 * 5xx) or its response stored (otherwise): the client still gets a catalogued problem, not
 * Fastify's fallback answer carrying the raw error. The handler renames the keys table
 * away, so the bookkeeping statement fails for real.
 */
describe(`Idempotency-Key bookkeeping that fails after the handler (${isPostgres ? 'postgres' : 'pglite'})`, () => {
  let db: TestDatabase;
  let built: BuiltApp;
  let token: string;
  let fail: Error | undefined;
  beforeAll(async () => {
    db = await createTestDatabase();
    built = await buildApp({
      config: testConfig(),
      logger: silentLogger,
      database: db.database,
      extraRoutes: (app) => {
        app.post('/v1/test/vanishing', { config: { auth: ['admin'], idempotency: 'required' } }, async (_request, reply) => {
          await sql`alter table idempotency_keys rename to idempotency_keys_away`.execute(db.database.db);
          if (fail !== undefined) throw fail;
          return reply.code(201).send({ done: true });
        });
      },
    });
    await built.app.ready();
    await built.identity.bootstrapAdmin({ email: ADMIN_EMAIL, password: ADMIN_PASSWORD });
    const res = await built.app.inject({ method: 'POST', url: '/v1/auth/token', payload: { email: ADMIN_EMAIL, password: ADMIN_PASSWORD } });
    token = res.json<{ access_token: string }>().access_token;
  });
  afterEach(async () => {
    await sql`alter table if exists idempotency_keys_away rename to idempotency_keys`.execute(db.database.db);
  });
  afterAll(async () => {
    await built?.app.close();
    await db?.destroy();
  });
  const post = () => built.app.inject({ method: 'POST', url: '/v1/test/vanishing', headers: { ...bearer(token), 'idempotency-key': `k-${Math.random()}` }, payload: {} });

  it('a 503 whose key cannot be released is still the 503 database_unavailable problem', async () => {
    fail = withCode('57P01', 'terminating connection due to administrator command');
    const res = await post();
    expect(res.statusCode).toBe(503);
    expect(res.headers['content-type']).toBe('application/problem+json');
    expect(res.json()).toMatchObject({ code: 'database_unavailable' });
    expect(res.headers['retry-after']).toBe('2');
  });

  it('a 201 whose response cannot be stored is not acknowledged: a problem, with nothing of the error in it', async () => {
    fail = undefined;
    const res = await post();
    expect(res.statusCode).toBe(500);
    expect(res.headers['content-type']).toBe('application/problem+json');
    expect(res.json()).toMatchObject({ code: 'internal_error' });
    expect(res.body).not.toContain('idempotency_keys');
  });

  it('so is an error response (a 404) whose response cannot be stored', async () => {
    fail = new AppError('not_found', { detail: 'No such thing.' });
    const res = await post();
    expect(res.statusCode).toBe(500);
    expect(res.headers['content-type']).toBe('application/problem+json');
    expect(res.json()).toMatchObject({ code: 'internal_error' });
    expect(res.body).not.toContain('idempotency_keys');
  });
});

/** A TCP proxy to PostgreSQL that can go silent: while frozen it accepts and reads, and forwards nothing (not even a close). */
async function startProxy(upstream: URL): Promise<{ url: string; freeze(on: boolean): void; close(): Promise<void> }> {
  let frozen = false;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const server = tcpConnect(Number(upstream.port || 5432), upstream.hostname);
    for (const s of [client, server]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => {
        sockets.delete(s);
        // A silent network carries no FIN either: the server keeps the session of a client that went away.
        if (frozen && s === client) return;
        client.destroy();
        server.destroy();
      });
    }
    client.on('data', (d) => !frozen && server.write(d));
    server.on('data', (d) => !frozen && client.write(d));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = new URL(upstream);
  url.port = String((server.address() as { port: number }).port);
  url.hostname = '127.0.0.1';
  return {
    url: url.toString(),
    freeze: (on) => void (frozen = on),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe.runIf(isPostgres)('bounded checkouts and the reachability probe (PostgreSQL)', () => {
  let empty: Awaited<ReturnType<typeof createEmptyDatabase>>;
  const opened: Database<unknown>[] = [];
  beforeAll(async () => {
    empty = await createEmptyDatabase();
  });
  afterAll(async () => {
    for (const d of opened) await d.close().catch(() => undefined);
    await empty?.destroy();
  });
  const open = async (url: string, overrides: Partial<DatabaseOptions>) => {
    const d = await openDatabase<unknown>({ kind: 'postgres', location: url }, { ...testDbOptions, ...overrides }, silentLogger);
    opened.push(d);
    return d;
  };

  it('a checkout that finds every connection busy past acquireTimeoutMs is refused as pool_exhausted; the pool recovers when one is released', async () => {
    const database = await open(empty.url!, { poolMax: 2, acquireTimeoutMs: 100 });
    const held = [await database.pool.connect(), await database.pool.connect()];
    await expect(database.pool.connect()).rejects.toMatchObject({ name: 'DatabaseUnavailableError', reason: 'pool_exhausted' });
    // Through Kysely and pool.query too: both check out through the same bound.
    await expect(sql`select 1`.execute(database.db)).rejects.toBeInstanceOf(DatabaseUnavailableError);
    await expect(database.pool.query('select 1')).rejects.toBeInstanceOf(DatabaseUnavailableError);
    expect(database.pool.totalCount).toBe(2);
    expect(database.pool.waitingCount).toBe(0); // the wait happened in front of pg-pool, not in its queue

    held[0]!.release();
    const { rows } = await sql<{ v: number }>`select 1 as v`.execute(database.db);
    expect(rows).toStrictEqual([{ v: 1 }]);
    held[1]!.release();
  });

  it('checkouts under one budget (one request) wait for connections at most the budget in all, not each', async () => {
    const database = await open(empty.url!, { poolMax: 1, acquireTimeoutMs: 60_000 });
    const held = await database.pool.connect();
    await withCheckoutBudget(150, async () => {
      // The first wait uses up the budget…
      await expect(database.pool.connect()).rejects.toMatchObject({ reason: 'pool_exhausted' });
      // …so a second checkout of the same request is refused without waiting, although the
      // connection is released soon after it starts (with a fresh 60 s wait it would get it).
      const second = database.pool.connect();
      setTimeout(() => held.release(), 200);
      await expect(second).rejects.toMatchObject({ reason: 'pool_exhausted' });
    });
    // Another request has its own budget: the released connection is handed to it.
    (await withCheckoutBudget(10_000, () => database.pool.connect())).release();
  });

  it('a waiter is handed the next released connection, in arrival order', async () => {
    const database = await open(empty.url!, { poolMax: 1, acquireTimeoutMs: 10_000 });
    const held = await database.pool.connect();
    const order: string[] = [];
    const first = database.pool.connect().then((c) => (order.push('first'), c));
    const second = database.pool.connect().then((c) => (order.push('second'), c));
    held.release();
    const c1 = await first;
    expect(order).toStrictEqual(['first']);
    c1.release();
    (await second).release();
    expect(order).toStrictEqual(['first', 'second']);
  });

  it('while the path to the server is silent, a query in flight fails as unavailable, checkouts are refused, readiness fails; all recover when it returns', async () => {
    const proxy = await startProxy(new URL(empty.url!));
    try {
      const database = await open(proxy.url, { poolMax: 3, acquireTimeoutMs: 500, connectionTimeoutMs: 60_000, statementTimeoutMs: 60_000, probe: { intervalMs: 100, timeoutMs: 300 } });
      await database.ping();
      const busy: pg.PoolClient = await database.pool.connect();
      proxy.freeze(true);
      // Neither the connect timeout nor statement_timeout (both 60 s) would end this: the probe does.
      const inFlight = busy.query('select 1').then(
        () => 'answered',
        (e: unknown) => e,
      );
      const outcome = await inFlight;
      busy.release();
      expect(isDatabaseUnavailable(outcome)).toBe(true);
      await expect(database.pool.connect()).rejects.toMatchObject({ reason: 'unreachable' });
      await expect(database.ping()).rejects.toBeInstanceOf(DatabaseUnavailableError);

      proxy.freeze(false);
      await vi.waitFor(() => database.ping(), { timeout: 10_000, interval: 50 });
      const { rows } = await sql<{ v: number }>`select 2 as v`.execute(database.db);
      expect(rows).toStrictEqual([{ v: 2 }]);
    } finally {
      await proxy.close();
    }
  });

  it('a transaction cut while the path was silent does not keep its row locks once the server answers again', async () => {
    const proxy = await startProxy(new URL(empty.url!));
    const admin = await open(empty.url!, {});
    try {
      await admin.pool.query('create table lock_probe (id int primary key)');
      await admin.pool.query('insert into lock_probe values (1)');
      const database = await open(proxy.url, { poolMax: 2, acquireTimeoutMs: 500, probe: { intervalMs: 100, timeoutMs: 300 } });
      const holder = await database.pool.connect();
      await holder.query('begin');
      await holder.query('select id from lock_probe where id = 1 for update');
      proxy.freeze(true);
      // The probe cuts the holder's connection; on the server its session stays, idle in a transaction, holding the lock.
      await vi.waitFor(() => expect(database.ping()).rejects.toBeInstanceOf(DatabaseUnavailableError), { timeout: 10_000, interval: 50 });
      holder.release();
      proxy.freeze(false);
      await vi.waitFor(() => database.ping(), { timeout: 10_000, interval: 50 });
      // pg_terminate_backend signals; the session ends (and lets go) a moment later.
      const c = await admin.pool.connect();
      try {
        await c.query("set lock_timeout = '2s'");
        const { rows } = await c.query<{ id: number }>('select id from lock_probe where id = 1 for update');
        expect(rows).toStrictEqual([{ id: 1 }]);
      } finally {
        c.release(true);
      }
    } finally {
      await proxy.close();
    }
  });

  it('with a probe, readiness does not fail just because the pool is saturated', async () => {
    const database = await open(empty.url!, { poolMax: 1, acquireTimeoutMs: 50, probe: { intervalMs: 50, timeoutMs: 2000 } });
    const held = await database.pool.connect();
    try {
      await expect(sql`select 1`.execute(database.db)).rejects.toMatchObject({ reason: 'pool_exhausted' });
      await database.ping();
    } finally {
      held.release();
    }
  });
});
