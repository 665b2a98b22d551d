/**
 * Idempotency-Key on POST routes, through the real app and the real database: a test
 * route (POST /v1/test/things, idempotency 'required') is registered through the
 * `extraRoutes` hook and inserts into a table this file creates, so "the handler ran"
 * is counted in rows, not mocks. Truly concurrent duplicates run on PostgreSQL only.
 */
import { sql } from 'kysely';
import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { buildApp, type BuiltApp } from '../../src/app.js';
import { AppError } from '../../src/platform/errors.js';
import type { App } from '../../src/platform/http.js';
import { purgeExpiredIdempotencyKeys } from '../../src/platform/idempotency.js';
import { ADMIN_EMAIL, ADMIN_PASSWORD, bearer, testConfig } from '../support/app.js';
import { createTestDatabase, dbTarget, isPostgres, silentLogger, type TestDatabase } from '../support/db.js';

const THINGS = '/v1/test/things';
const thingSchema = z.object({ id: z.uuid(), name: z.string(), tag: z.string().nullable(), owner: z.string() });

/** What the test route does; the tests steer it between requests. */
interface RouteControl {
  /** Handler entries, including ones that failed. */
  executions: number;
  /** The next N executions throw an unexpected error (→ 500). */
  failNext: number;
  /** When set, the handler waits on it after announcing itself through `entered`. */
  gate: { entered: () => void; release: Promise<void> } | null;
}

function registerThingRoutes(app: App, db: TestDatabase, control: RouteControl): void {
  app.post(
    THINGS,
    {
      config: { auth: ['admin'], idempotency: 'required' },
      schema: {
        body: z.strictObject({
          name: z.string().min(1).max(100),
          tag: z.string().max(50).optional(),
          delay_ms: z.number().int().min(0).max(2000).optional(),
        }),
        response: { 201: thingSchema },
      },
    },
    async (request, reply) => {
      control.executions++;
      const gate = control.gate;
      if (gate) {
        gate.entered();
        await gate.release;
      }
      if (request.body.delay_ms) await new Promise((r) => setTimeout(r, request.body.delay_ms));
      if (control.failNext > 0) {
        control.failNext--;
        throw new Error('injected failure');
      }
      if (request.body.name === 'missing') throw new AppError('not_found', { detail: 'No such thing.' });
      const owner = request.principal?.userId ?? 'anonymous';
      const { rows } = await sql<z.infer<typeof thingSchema>>`
        insert into test_things (name, tag, owner) values (${request.body.name}, ${request.body.tag ?? null}, ${owner})
        returning id::text, name, tag, owner`.execute(db.database.db);
      const row = rows[0]!;
      return reply.code(201).header('location', `${THINGS}/${row.id}`).send(row);
    },
  );
}

interface IdemApp extends BuiltApp {
  readonly control: RouteControl;
  token(email: string, password: string): Promise<string>;
  close(): Promise<void>;
}

async function createIdemApp(db: TestDatabase): Promise<IdemApp> {
  await sql`
    create table if not exists test_things (
      id uuid primary key default gen_random_uuid(),
      name text not null,
      tag text,
      owner text not null
    )`.execute(db.database.db);
  const control: RouteControl = { executions: 0, failNext: 0, gate: null };
  const built = await buildApp({
    config: testConfig(),
    logger: silentLogger,
    database: db.database,
    extraRoutes: (app) => registerThingRoutes(app, db, control),
  });
  await built.app.ready();
  await built.identity.bootstrapAdmin({ email: ADMIN_EMAIL, password: ADMIN_PASSWORD });
  return {
    ...built,
    control,
    async token(email, password) {
      const res = await built.app.inject({ method: 'POST', url: '/v1/auth/token', payload: { email, password } });
      if (res.statusCode !== 200) throw new Error(`sign-in failed: ${res.statusCode} ${res.body}`);
      return res.json<{ access_token: string }>().access_token;
    },
    close: () => built.app.close(),
  };
}

function gate(): { gate: NonNullable<RouteControl['gate']>; entered: Promise<void>; open: () => void } {
  let entered!: () => void;
  let open!: () => void;
  const enteredP = new Promise<void>((r) => (entered = r));
  const release = new Promise<void>((r) => (open = r));
  return { gate: { entered, release }, entered: enteredP, open };
}

async function countThings(db: TestDatabase, name: string): Promise<number> {
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from test_things where name = ${name}`.execute(db.database.db);
  return rows[0]!.n;
}

async function keyRow(db: TestDatabase, key: string) {
  const { rows } = await sql<{
    scope: string;
    method: string;
    route: string;
    request_hash: string;
    state: string;
    response_status: number | null;
    retention_s: number;
  }>`select scope, method, route, request_hash, state, response_status,
            extract(epoch from expires_at - created_at)::int as retention_s
       from idempotency_keys where key = ${key}`.execute(db.database.db);
  return rows;
}

function expectProblem(res: LightMyRequestResponse, status: number, code: string): void {
  expect(res.statusCode).toBe(status);
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
  const body = res.json<{ status: number; code: string; type: string }>();
  expect(body.code).toBe(code);
  expect(body.status).toBe(status);
  expect(body.type).toBe(`/problems/${code}`);
}

describe(`idempotency keys (${dbTarget})`, () => {
  let db: TestDatabase;
  let t: IdemApp;
  let adminId: string;
  let adminBId: string;
  let tokenA: string;
  let tokenB: string;

  const post = (token: string, key: string | undefined, body: Record<string, unknown>, url = THINGS) =>
    t.app.inject({
      method: 'POST',
      url,
      headers: { ...bearer(token), ...(key === undefined ? {} : { 'idempotency-key': key }) },
      payload: body,
    });

  beforeAll(async () => {
    db = await createTestDatabase();
    t = await createIdemApp(db);
    tokenA = await t.token(ADMIN_EMAIL, ADMIN_PASSWORD);
    const me = await t.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(tokenA) });
    adminId = me.json<{ id: string }>().id;
    const ctx = { actorId: null, ip: null, requestId: 'test' };
    const b = await t.identity.createUser(
      { email: 'second-admin@example.test', password: 'b-strong-passphrase-2048', role: 'admin' },
      ctx,
    );
    adminBId = b.id;
    tokenB = await t.token('second-admin@example.test', 'b-strong-passphrase-2048');
  });
  afterAll(async () => {
    await t?.close();
    await db?.destroy();
  });

  it('runs the handler once and replays the stored response (status, body, Location) with Idempotent-Replayed', async () => {
    const before = t.control.executions;
    const first = await post(tokenA, 'replay-1', { name: 'replay-1', tag: 'x' });
    expect(first.statusCode).toBe(201);
    expect(first.headers['idempotent-replayed']).toBeUndefined();
    const created = thingSchema.parse(first.json());
    expect(first.headers.location).toBe(`${THINGS}/${created.id}`);

    const again = await post(tokenA, 'replay-1', { name: 'replay-1', tag: 'x' });
    expect(again.statusCode).toBe(201);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.body).toBe(first.body);
    expect(again.headers.location).toBe(first.headers.location);
    expect(again.headers['content-type']).toBe(first.headers['content-type']);
    // Per-response headers are fresh, not replayed.
    expect(again.headers['x-request-id']).not.toBe(first.headers['x-request-id']);

    const third = await post(tokenA, 'replay-1', { name: 'replay-1', tag: 'x' });
    expect(third.body).toBe(first.body);
    expect(t.control.executions - before).toBe(1);
    expect(await countThings(db, 'replay-1')).toBe(1);

    // What is stored: the caller's scope, the route template, a SHA-256 request hash, the status.
    expect(await keyRow(db, 'replay-1')).toEqual([
      {
        scope: `user:${adminId}`,
        method: 'POST',
        route: THINGS,
        request_hash: expect.stringMatching(/^[0-9a-f]{64}$/) as unknown,
        state: 'completed',
        response_status: 201,
        retention_s: 24 * 3600,
      },
    ]);
  });

  it('hashes the body canonically: the same fields in another order are the same request', async () => {
    const first = await post(tokenA, 'order-1', { name: 'order-1', tag: 't' });
    expect(first.statusCode).toBe(201);
    const reordered = await t.app.inject({
      method: 'POST',
      url: THINGS,
      headers: { ...bearer(tokenA), 'idempotency-key': 'order-1', 'content-type': 'application/json' },
      payload: '{ "tag": "t",\n  "name": "order-1" }',
    });
    expect(reordered.statusCode).toBe(201);
    expect(reordered.headers['idempotent-replayed']).toBe('true');
    expect(reordered.body).toBe(first.body);
    expect(await countThings(db, 'order-1')).toBe(1);
  });

  it('keys are per user: the same key from two users runs twice, and each replays their own response', async () => {
    const a = await post(tokenA, 'shared-key', { name: 'shared-a' });
    const b = await post(tokenB, 'shared-key', { name: 'shared-b' });
    expect(a.statusCode).toBe(201);
    expect(b.statusCode).toBe(201);
    expect(b.headers['idempotent-replayed']).toBeUndefined();
    expect(await countThings(db, 'shared-a')).toBe(1);
    expect(await countThings(db, 'shared-b')).toBe(1);

    // B sending A's exact request under the same key is B's own first request.
    const bWithA = await post(tokenB, 'shared-key-2', { name: 'shared-c' });
    const aWithSame = await post(tokenA, 'shared-key-2', { name: 'shared-c' });
    expect(bWithA.headers['idempotent-replayed']).toBeUndefined();
    expect(aWithSame.headers['idempotent-replayed']).toBeUndefined();
    expect(await countThings(db, 'shared-c')).toBe(2);

    const aReplay = await post(tokenA, 'shared-key', { name: 'shared-a' });
    const bReplay = await post(tokenB, 'shared-key', { name: 'shared-b' });
    expect(aReplay.body).toBe(a.body);
    expect(bReplay.body).toBe(b.body);
    expect([aReplay.headers['idempotent-replayed'], bReplay.headers['idempotent-replayed']]).toEqual(['true', 'true']);
    expect((await keyRow(db, 'shared-key')).map((r) => r.scope).sort()).toEqual([`user:${adminId}`, `user:${adminBId}`].sort());
  });

  it('the same key with a different body is 422 idempotency_key_reused and runs nothing', async () => {
    const first = await post(tokenA, 'reuse-1', { name: 'reuse-1' });
    expect(first.statusCode).toBe(201);
    const before = t.control.executions;

    const other = await post(tokenA, 'reuse-1', { name: 'reuse-1-other' });
    expectProblem(other, 422, 'idempotency_key_reused');
    const extraField = await post(tokenA, 'reuse-1', { name: 'reuse-1', tag: 'extra' });
    expectProblem(extraField, 422, 'idempotency_key_reused');
    // The same key on another route is another request too.
    const otherRoute = await post(
      tokenA,
      'reuse-1',
      { email: 'reuse@example.test', password: 'a-long-enough-password', role: 'analyst' },
      '/v1/users',
    );
    expectProblem(otherRoute, 422, 'idempotency_key_reused');

    expect(t.control.executions).toBe(before);
    expect(await countThings(db, 'reuse-1-other')).toBe(0);
    const users = await t.app.inject({ method: 'GET', url: '/v1/users?limit=100', headers: bearer(tokenA) });
    expect(users.json<{ data: { email: string }[] }>().data.map((u) => u.email)).not.toContain('reuse@example.test');

    // The original is still replayable.
    const replay = await post(tokenA, 'reuse-1', { name: 'reuse-1' });
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body).toBe(first.body);
  });

  it('a required route without the header is 400 idempotency_key_missing and runs nothing', async () => {
    const before = t.control.executions;
    const res = await post(tokenA, undefined, { name: 'no-key' });
    expectProblem(res, 400, 'idempotency_key_missing');
    expect(t.control.executions).toBe(before);
    expect(await countThings(db, 'no-key')).toBe(0);
  });

  it('an invalid key (too long, control characters, spaces, non-ASCII, empty) is 400 idempotency_key_invalid', async () => {
    const before = t.control.executions;
    for (const key of ['k'.repeat(256), 'bad\x01key', 'tab\tkey', 'has space', 'café', '']) {
      const res = await post(tokenA, key, { name: 'invalid-key' });
      expectProblem(res, 400, 'idempotency_key_invalid');
    }
    expect(t.control.executions).toBe(before);
    expect(await countThings(db, 'invalid-key')).toBe(0);

    // 255 visible ASCII characters is the longest valid key.
    const longest = await post(tokenA, '~'.repeat(255), { name: 'longest-key' });
    expect(longest.statusCode).toBe(201);
  });

  it("an 'optional' route runs without a key and replays with one (POST /v1/users)", async () => {
    const body = { email: 'optional-1@example.test', password: 'a-long-enough-password', role: 'analyst' };
    const keyCount = async () =>
      (await sql<{ n: number }>`select count(*)::int as n from idempotency_keys`.execute(db.database.db)).rows[0]!.n;
    const keysBefore = await keyCount();
    const noKey = await post(tokenA, undefined, { ...body, email: 'optional-0@example.test' }, '/v1/users');
    expect(noKey.statusCode).toBe(201);
    expect(await keyCount()).toBe(keysBefore);

    const first = await post(tokenA, 'optional-1', body, '/v1/users');
    expect(first.statusCode).toBe(201);
    const again = await post(tokenA, 'optional-1', body, '/v1/users');
    expect(again.statusCode).toBe(201);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.body).toBe(first.body);
    expect(again.headers.location).toBe(first.headers.location);
    expect(first.headers.location).toMatch(/^\/v1\/users\/[0-9a-f-]{36}$/);
  });

  it('a 5xx releases the key: the retry runs the handler and is then replayed', async () => {
    const before = t.control.executions;
    t.control.failNext = 1;
    const failed = await post(tokenA, 'retry-5xx', { name: 'retry-5xx' });
    expectProblem(failed, 500, 'internal_error');
    expect(failed.body).not.toContain('injected failure');
    expect(await keyRow(db, 'retry-5xx')).toEqual([]);

    const retry = await post(tokenA, 'retry-5xx', { name: 'retry-5xx' });
    expect(retry.statusCode).toBe(201);
    expect(retry.headers['idempotent-replayed']).toBeUndefined();
    const replay = await post(tokenA, 'retry-5xx', { name: 'retry-5xx' });
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body).toBe(retry.body);
    expect(t.control.executions - before).toBe(2);
    expect(await countThings(db, 'retry-5xx')).toBe(1);
  });

  it('a 4xx outcome is stored and replayed like a success', async () => {
    const first = await post(tokenA, 'stored-404', { name: 'missing' });
    expectProblem(first, 404, 'not_found');
    const before = t.control.executions;
    const again = await post(tokenA, 'stored-404', { name: 'missing' });
    expect(again.statusCode).toBe(404);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.headers['content-type']).toBe(first.headers['content-type']);
    expect(again.body).toBe(first.body);
    expect(t.control.executions).toBe(before);
  });

  it('a duplicate while the first is still running is 409 idempotency_key_in_use with Retry-After', async () => {
    const g = gate();
    t.control.gate = g.gate;
    const before = t.control.executions;
    const firstP = post(tokenA, 'in-flight-1', { name: 'in-flight-1' });
    try {
      await g.entered;
      t.control.gate = null;
      const dup = await post(tokenA, 'in-flight-1', { name: 'in-flight-1' });
      expectProblem(dup, 409, 'idempotency_key_in_use');
      // The claim is honoured for the request timeout + 30 s; Retry-After is capped at 5 s.
      expect(dup.headers['retry-after']).toBe('5');
      // A different body under an in-flight key is still a reuse.
      expectProblem(await post(tokenA, 'in-flight-1', { name: 'in-flight-other' }), 422, 'idempotency_key_reused');
      expect(await keyRow(db, 'in-flight-1')).toMatchObject([{ state: 'in_flight', response_status: null }]);
    } finally {
      g.open();
    }
    const first = await firstP;
    expect(first.statusCode).toBe(201);
    expect(first.headers['idempotent-replayed']).toBeUndefined();
    const after = await post(tokenA, 'in-flight-1', { name: 'in-flight-1' });
    expect(after.headers['idempotent-replayed']).toBe('true');
    expect(after.body).toBe(first.body);
    expect(t.control.executions - before).toBe(1);
    expect(await countThings(db, 'in-flight-1')).toBe(1);
  });

  it('an abandoned claim (a crashed process) is honoured until locked_until, then taken over by the same request', async () => {
    // Copy a real request hash: the hash covers method, route and body, not the key.
    expect((await post(tokenA, 'crash-template', { name: 'crashed' })).statusCode).toBe(201);
    const [template] = await keyRow(db, 'crash-template');
    await sql`
      insert into idempotency_keys (scope, key, method, route, request_hash, state, locked_until, expires_at)
      values (${`user:${adminId}`}, 'crashed-1', 'POST', ${THINGS}, ${template!.request_hash}, 'in_flight',
              now() + interval '1 hour', now() + interval '1 day')`.execute(db.database.db);
    expectProblem(await post(tokenA, 'crashed-1', { name: 'crashed' }), 409, 'idempotency_key_in_use');

    await sql`update idempotency_keys set locked_until = now() - interval '1 second' where key = 'crashed-1'`.execute(db.database.db);
    expectProblem(await post(tokenA, 'crashed-1', { name: 'something else' }), 422, 'idempotency_key_reused');
    const taken = await post(tokenA, 'crashed-1', { name: 'crashed' });
    expect(taken.statusCode).toBe(201);
    expect(taken.headers['idempotent-replayed']).toBeUndefined();
    expect(await countThings(db, 'crashed')).toBe(2);
    expect(await keyRow(db, 'crashed-1')).toMatchObject([{ state: 'completed', response_status: 201 }]);
  });

  it('a request whose timed-out claim was taken over can neither release nor overwrite the new claim', async () => {
    const before = t.control.executions;
    const g1 = gate();
    t.control.gate = g1.gate;
    const slowP = post(tokenA, 'overtaken-1', { name: 'overtaken' });
    const g2 = gate();
    let retryP: ReturnType<typeof post> | undefined;
    try {
      await g1.entered;
      // The first request outlives its claim (as a hung process would)...
      await sql`update idempotency_keys set locked_until = now() - interval '1 second' where key = 'overtaken-1'`.execute(
        db.database.db,
      );
      // ...so the client's retry takes the key over and starts running.
      t.control.gate = g2.gate;
      retryP = post(tokenA, 'overtaken-1', { name: 'overtaken' });
      await g2.entered;
      t.control.gate = null;
      // Now the first one finishes with a 5xx: releasing "its" key must not free the retry's.
      t.control.failNext = 1;
      g1.open();
      expectProblem(await slowP, 500, 'internal_error');
      expect(await keyRow(db, 'overtaken-1')).toMatchObject([{ state: 'in_flight' }]);
      expectProblem(await post(tokenA, 'overtaken-1', { name: 'overtaken' }), 409, 'idempotency_key_in_use');
    } finally {
      g1.open();
      g2.open();
    }
    const retry = await retryP;
    expect(retry.statusCode).toBe(201);
    const replay = await post(tokenA, 'overtaken-1', { name: 'overtaken' });
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body).toBe(retry.body);
    expect(t.control.executions - before).toBe(2);
    expect(await countThings(db, 'overtaken')).toBe(1);
  });

  it('an expired key can be reused with a different body', async () => {
    const first = await post(tokenA, 'expired-1', { name: 'expired-old' });
    expect(first.statusCode).toBe(201);
    expectProblem(await post(tokenA, 'expired-1', { name: 'expired-new' }), 422, 'idempotency_key_reused');

    await sql`update idempotency_keys set expires_at = now() - interval '1 second' where key = 'expired-1'`.execute(db.database.db);
    const reused = await post(tokenA, 'expired-1', { name: 'expired-new' });
    expect(reused.statusCode).toBe(201);
    expect(reused.headers['idempotent-replayed']).toBeUndefined();
    expect(await countThings(db, 'expired-new')).toBe(1);
    // The key now belongs to the new request, with a fresh retention period.
    const replay = await post(tokenA, 'expired-1', { name: 'expired-new' });
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body).toBe(reused.body);
    expectProblem(await post(tokenA, 'expired-1', { name: 'expired-old' }), 422, 'idempotency_key_reused');
    expect(await keyRow(db, 'expired-1')).toMatchObject([{ state: 'completed', retention_s: 24 * 3600 }]);
  });

  it('purgeExpiredIdempotencyKeys deletes expired keys (in batches) and keeps live ones', async () => {
    for (const k of ['purge-1', 'purge-2', 'purge-3', 'purge-4', 'purge-5']) {
      expect((await post(tokenA, k, { name: k })).statusCode).toBe(201);
    }
    await sql`update idempotency_keys set expires_at = now() - interval '1 minute'
               where key in ('purge-1', 'purge-2', 'purge-3')`.execute(db.database.db);
    const live = async () => {
      const { rows } = await sql<{ key: string }>`select key from idempotency_keys order by scope, key`.execute(db.database.db);
      return rows.map((r) => r.key);
    };
    const all = await live();
    const { rows: expired } = await sql<{ n: number }>`
      select count(*)::int as n from idempotency_keys where expires_at < now()`.execute(db.database.db);
    expect(expired[0]!.n).toBe(3);

    expect(await purgeExpiredIdempotencyKeys(db.database.db, 2)).toBe(3);
    expect(await live()).toEqual(all.filter((k) => !['purge-1', 'purge-2', 'purge-3'].includes(k)));
    expect(await purgeExpiredIdempotencyKeys(db.database.db)).toBe(0);

    // A purged key is free again; a live one still replays.
    const reused = await post(tokenA, 'purge-1', { name: 'purge-1-again' });
    expect(reused.statusCode).toBe(201);
    expect(reused.headers['idempotent-replayed']).toBeUndefined();
    expect((await post(tokenA, 'purge-4', { name: 'purge-4' })).headers['idempotent-replayed']).toBe('true');
  });
});

describe.runIf(isPostgres)('idempotency keys under truly concurrent duplicates (postgres)', () => {
  let db: TestDatabase;
  let one: IdemApp;
  let two: IdemApp;
  let token: string;

  beforeAll(async () => {
    db = await createTestDatabase();
    one = await createIdemApp(db);
    // A second instance over the same database: duplicates may land on different processes.
    two = await createIdemApp(db);
    token = await one.token(ADMIN_EMAIL, ADMIN_PASSWORD);
  });
  afterAll(async () => {
    await one?.close();
    await two?.close();
    await db?.destroy();
  });

  const fire = (app: IdemApp, key: string, body: Record<string, unknown>) =>
    app.app.inject({ method: 'POST', url: THINGS, headers: { ...bearer(token), 'idempotency-key': key }, payload: body });

  it('20 identical requests in parallel on two instances: exactly one runs, the rest get 409 or the replay', async () => {
    const body = { name: 'concurrent-1', delay_ms: 300 };
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => fire(i % 2 === 0 ? one : two, 'conc-1', body)));

    const statuses = results.map((r) => r.statusCode);
    expect(statuses.filter((s) => s >= 500)).toEqual([]);
    const executed = results.filter((r) => r.statusCode === 201 && r.headers['idempotent-replayed'] === undefined);
    expect(executed).toHaveLength(1);
    for (const r of results) {
      if (r === executed[0]) continue;
      if (r.statusCode === 409) {
        expectProblem(r, 409, 'idempotency_key_in_use');
        expect(Number(r.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      } else {
        expect(r.statusCode).toBe(201);
        expect(r.headers['idempotent-replayed']).toBe('true');
        expect(r.body).toBe(executed[0]!.body);
      }
    }
    expect(await countThings(db, 'concurrent-1')).toBe(1);
    expect(one.control.executions + two.control.executions).toBe(1);

    const replay = await fire(two, 'conc-1', body);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body).toBe(executed[0]!.body);
  });

  it('a race between two different bodies under one key: one runs, the other body only ever gets 422', async () => {
    const before = one.control.executions + two.control.executions;
    const bodyA = { name: 'race-a', delay_ms: 200 };
    const bodyB = { name: 'race-b', delay_ms: 200 };
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => fire(i % 2 === 0 ? one : two, 'race-1', i % 4 < 2 ? bodyA : bodyB)),
    );
    const bodies = Array.from({ length: 20 }, (_, i) => (i % 4 < 2 ? 'race-a' : 'race-b'));
    expect(results.filter((r) => r.statusCode >= 500)).toEqual([]);
    const executed = results.filter((r) => r.statusCode === 201 && r.headers['idempotent-replayed'] === undefined);
    expect(executed).toHaveLength(1);
    const winner = executed[0]!.json<{ name: string }>().name;
    results.forEach((r, i) => {
      if (bodies[i] === winner) expect([201, 409]).toContain(r.statusCode);
      else expectProblem(r, 422, 'idempotency_key_reused');
    });
    expect((await countThings(db, 'race-a')) + (await countThings(db, 'race-b'))).toBe(1);
    expect(one.control.executions + two.control.executions - before).toBe(1);
  });

  it('distinct keys in parallel all run (the claim serialises duplicates only)', async () => {
    const results = await Promise.all(
      Array.from({ length: 12 }, (_, i) => fire(i % 2 === 0 ? one : two, `distinct-${i}`, { name: 'distinct', delay_ms: 50 })),
    );
    expect(results.map((r) => r.statusCode)).toEqual(Array.from({ length: 12 }, () => 201));
    expect(await countThings(db, 'distinct')).toBe(12);
  });
});
