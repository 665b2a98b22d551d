/**
 * First start on an empty database: one admin from ADMIN_EMAIL / ADMIN_PASSWORD, or
 * with a generated password; later starts create nothing; concurrent starts on
 * PostgreSQL create exactly one.
 */
import { sql } from 'kysely';
import { afterAll, describe, expect, it } from 'vitest';
import { buildApp, type AppDatabase, type BuiltApp } from '../../src/app.js';
import { openDatabase, type Database } from '../../src/platform/database.js';
import { testConfig } from '../support/app.js';
import { createTestDatabase, dbTarget, isPostgres, silentLogger, testDbOptions, type TestDatabase } from '../support/db.js';

/** These tests create their databases in the test body (PGlite start-up is slow on a busy machine). */
const DB_TEST_TIMEOUT_MS = 120_000;

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function appOver(database: Database<AppDatabase>, env: Record<string, string> = {}): Promise<BuiltApp & { env: ReturnType<typeof testConfig> }> {
  const config = testConfig(env);
  const built = await buildApp({ config, logger: silentLogger, database });
  await built.app.ready();
  cleanups.push(() => built.app.close());
  return { ...built, env: config };
}

async function freshDatabase(): Promise<TestDatabase> {
  const db = await createTestDatabase();
  cleanups.push(() => db.destroy());
  return db;
}

async function counts(db: TestDatabase) {
  const { rows } = await sql<{ users: string; admins: string; audits: string }>`
    select (select count(*) from users)::text as users,
           (select count(*) from users where role = 'admin' and status = 'active')::text as admins,
           (select count(*) from audit_log where action = 'user.created')::text as audits
  `.execute(db.database.db);
  return rows[0]!;
}

function signIn(built: BuiltApp, email: string, password: string) {
  return built.app.inject({ method: 'POST', url: '/v1/auth/token', payload: { email, password } });
}

describe(`bootstrap admin (${dbTarget})`, () => {
  it('creates the admin from ADMIN_EMAIL / ADMIN_PASSWORD on an empty database (not with a weak one), and nothing on the second call', async () => {
    const db = await freshDatabase();
    const built = await appOver(db.database, { ADMIN_EMAIL: 'Owner@Bank.example', ADMIN_PASSWORD: 'a-strong-first-password' });
    expect(await counts(db)).toEqual({ users: '0', admins: '0', audits: '0' });

    // A weak password stops the bootstrap and creates nothing.
    await expect(built.identity.bootstrapAdmin({ email: 'ops@bank.example', password: 'aaaaaaaaaaaaaaaa' })).rejects.toThrow(
      'ADMIN_PASSWORD has too few distinct characters',
    );
    expect(await counts(db)).toEqual({ users: '0', admins: '0', audits: '0' });

    const first = await built.identity.bootstrapAdmin({ email: built.env.adminEmail, password: built.env.adminPassword });
    expect(first).toEqual({ created: true, email: 'Owner@Bank.example', generatedPassword: undefined });
    expect(await counts(db)).toEqual({ users: '1', admins: '1', audits: '1' });

    const res = await signIn(built, 'owner@bank.example', 'a-strong-first-password');
    expect(res.statusCode).toBe(200);
    const me = await built.app.inject({
      method: 'GET',
      url: '/v1/me',
      headers: { authorization: `Bearer ${res.json<{ access_token: string }>().access_token}` },
    });
    expect(me.json()).toMatchObject({ email: 'Owner@Bank.example', role: 'admin', status: 'active' });

    const audit = await db.database.db.selectFrom('audit_log').selectAll().where('action', '=', 'user.created').executeTakeFirstOrThrow();
    expect(audit.details).toEqual({ role: 'admin', bootstrap: true });
    expect(audit.actor_id).toBeNull();

    const second = await built.identity.bootstrapAdmin({ email: 'someone-else@bank.example', password: 'another-strong-password' });
    expect(second).toEqual({ created: false });
    expect(await counts(db)).toEqual({ users: '1', admins: '1', audits: '1' });
    expect((await signIn(built, 'someone-else@bank.example', 'another-strong-password')).statusCode).toBe(401);
  }, DB_TEST_TIMEOUT_MS);

  it('generates a password when ADMIN_PASSWORD is not set, returns it once, and it signs in', async () => {
    const db = await freshDatabase();
    const built = await appOver(db.database);
    expect([built.env.adminEmail, built.env.adminPassword]).toEqual([undefined, undefined]);

    const first = await built.identity.bootstrapAdmin({ email: built.env.adminEmail, password: built.env.adminPassword });
    if (!first.created) throw new Error('expected the admin to be created');
    expect(first.email).toBe('admin@loanbook.local');
    expect(first.generatedPassword).toMatch(/^[A-Za-z0-9_-]{24}$/);
    expect((await signIn(built, 'admin@loanbook.local', first.generatedPassword!)).statusCode).toBe(200);

    // The generated password is not kept anywhere in clear.
    const row = await db.database.db.selectFrom('users').selectAll().executeTakeFirstOrThrow();
    expect(row.password_hash).toMatch(/^\$argon2id\$/);
    expect(JSON.stringify(row)).not.toContain(first.generatedPassword);

    expect(await built.identity.bootstrapAdmin({ email: undefined, password: undefined })).toEqual({ created: false });
    expect(await counts(db)).toEqual({ users: '1', admins: '1', audits: '1' });
  }, DB_TEST_TIMEOUT_MS);
});

describe.runIf(isPostgres)('bootstrap admin under concurrent starts (postgres)', () => {
  it('several processes starting at once on one empty database create exactly one admin', async () => {
    const db = await freshDatabase();
    // Separate pools, as separate processes would have.
    const apps: BuiltApp[] = [];
    for (let i = 0; i < 4; i++) {
      const database = await openDatabase<AppDatabase>({ kind: 'postgres', location: db.url! }, testDbOptions, silentLogger);
      cleanups.push(() => database.close());
      apps.push(await appOver(database));
    }
    const results = await Promise.all(apps.map((a) => a.identity.bootstrapAdmin({ email: undefined, password: undefined })));
    const created = results.filter((r) => r.created);
    expect(created).toHaveLength(1);
    expect(results.filter((r) => !r.created)).toHaveLength(3);
    expect(await counts(db)).toEqual({ users: '1', admins: '1', audits: '1' });
    // The one generated password is the one that works.
    const winner = created[0]!;
    if (!winner.created) throw new Error('unreachable');
    expect((await signIn(apps[0]!, 'admin@loanbook.local', winner.generatedPassword!)).statusCode).toBe(200);
  }, DB_TEST_TIMEOUT_MS);
});
