/**
 * Numbered, forward-only SQL migrations (src/platform/migrate.ts) on the real engines:
 * order and idempotence, status, file-name discipline, all-or-nothing application,
 * exemption from the service's statement timeout, and (PostgreSQL) concurrent runs.
 */
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql, type Kysely } from 'kysely';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, onTestFinished } from 'vitest';
import { openDatabase, type Database } from '../../src/platform/database.js';
import {
  MigrationError,
  SqlFileMigrationProvider,
  migrateUp,
  migrationStatus,
  pendingMigrations,
} from '../../src/platform/migrate.js';
import { migrationsDir } from '../../src/platform/paths.js';
import { createEmptyDatabase, dbTarget, isPostgres, silentLogger, testDbOptions } from '../support/db.js';

type EmptyDatabase = Awaited<ReturnType<typeof createEmptyDatabase>>;

/** Every migration shipped in migrations/, in file order. */
const SHIPPED = readdirSync(migrationsDir)
  .filter((f) => f.endsWith('.sql'))
  .sort()
  .map((f) => f.replace(/\.sql$/, ''));

const tempDirs: string[] = [];
function migrationDir(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'lb-migrations-'));
  tempDirs.push(dir);
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}
afterAll(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

async function tableExists(db: Kysely<unknown>, name: string): Promise<boolean> {
  const { rows } = await sql<{ t: string | null }>`select to_regclass(${name})::text as t`.execute(db);
  return rows[0]?.t === name;
}

async function recorded(db: Kysely<unknown>): Promise<string[]> {
  if (!(await tableExists(db, 'kysely_migration'))) return [];
  const { rows } = await sql<{ name: string }>`select name from kysely_migration order by name`.execute(db);
  return rows.map((r) => r.name);
}

/** A fresh empty database on the current target, closed and dropped by the returned function. */
async function freshDatabase(): Promise<{ db: Kysely<unknown>; dispose: () => Promise<void> }> {
  const empty = await createEmptyDatabase();
  const database = (await empty.open()) as Database<unknown>;
  return {
    db: database.db,
    dispose: async () => {
      await database.close();
      await empty.destroy();
    },
  };
}

/** A fresh database for the current test only (PGlite instances are memory-hungry: one at a time). */
async function testDatabase(): Promise<Kysely<unknown>> {
  const { db, dispose } = await freshDatabase();
  onTestFinished(dispose);
  return db;
}

describe(`migrations (${dbTarget})`, () => {
  it('the shipped migrations start 0001_platform, 0002_identity and are numbered without gaps', async () => {
    expect(SHIPPED.slice(0, 2)).toStrictEqual(['0001_platform', '0002_identity']);
    SHIPPED.forEach((name, i) => expect(name.slice(0, 4)).toBe(String(i + 1).padStart(4, '0')));
    expect(Object.keys(await new SqlFileMigrationProvider().getMigrations())).toStrictEqual(SHIPPED);
  });

  it('on an empty database: all pending; migrateUp applies them in order; again it is a no-op; status lists them applied', async () => {
    const db = await testDatabase();
    expect(await migrationStatus(db)).toStrictEqual(SHIPPED.map((name) => ({ name, executedAt: undefined })));
    expect(await pendingMigrations(db)).toStrictEqual(SHIPPED);
    expect(await tableExists(db, 'kysely_migration')).toBe(false); // reading the status created nothing

    expect(await migrateUp(db)).toStrictEqual(SHIPPED);
    expect(await recorded(db)).toStrictEqual(SHIPPED);
    for (const table of ['idempotency_keys', 'audit_log', 'users', 'sessions', 'refresh_tokens']) {
      expect(await tableExists(db, table)).toBe(true);
    }

    expect(await migrateUp(db)).toStrictEqual([]);
    expect(await recorded(db)).toStrictEqual(SHIPPED);

    const status = await migrationStatus(db);
    expect(status.map((m) => m.name)).toStrictEqual(SHIPPED);
    for (const m of status) expect(m.executedAt).toBeInstanceOf(Date);
    // Applied in file order: each one's recorded time is no earlier than the previous one's.
    const times = status.map((m) => m.executedAt!.getTime());
    expect([...times].sort((a, b) => a - b)).toStrictEqual(times);
    expect(await pendingMigrations(db)).toStrictEqual([]);
  });

  it('applies only what is pending when a new file is added; a file of several statements runs as written', async () => {
    const db = await testDatabase();
    const dir = migrationDir({ '0001_first.sql': 'create table m_first (id int primary key);' });
    expect(await migrateUp(db, { dir })).toStrictEqual(['0001_first']);
    writeFileSync(
      join(dir, '0002_multi.sql'),
      `
        -- a comment; with a semicolon
        create table m_multi (id int primary key, note text not null default 'a;b');
        create function m_multi_double(x int) returns int language sql as $$ select x * 2; $$;
        insert into m_multi (id) values (1), (2);
      `,
    );
    expect(await pendingMigrations(db, { dir })).toStrictEqual(['0002_multi']);
    expect(await migrateUp(db, { dir })).toStrictEqual(['0002_multi']);
    expect(await recorded(db)).toStrictEqual(['0001_first', '0002_multi']);
    const { rows } = await sql<{ id: number; note: string; d: number }>`
      select id, note, m_multi_double(id) as d from m_multi order by id`.execute(db);
    expect(rows).toStrictEqual([
      { id: 1, note: 'a;b', d: 2 },
      { id: 2, note: 'a;b', d: 4 },
    ]);
  });

  describe('file names', () => {
    const ok = 'select 1;';
    let db: Kysely<unknown>;
    let dispose: (() => Promise<void>) | undefined;
    beforeAll(async () => {
      ({ db, dispose } = await freshDatabase());
    });
    afterAll(async () => dispose?.());

    it.each([
      ['a name without a number', { 'init.sql': ok }, 'migration file init.sql must be named NNNN_snake_case.sql'],
      ['a three-digit number', { '001_init.sql': ok }, 'migration file 001_init.sql must be named NNNN_snake_case.sql'],
      ['a dash instead of an underscore', { '0001-init.sql': ok }, 'migration file 0001-init.sql must be named NNNN_snake_case.sql'],
      ['capital letters', { '0001_Init.sql': ok }, 'migration file 0001_Init.sql must be named NNNN_snake_case.sql'],
      ['a gap', { '0001_a.sql': ok, '0003_c.sql': ok }, 'migration 0003_c.sql is out of sequence (expected number 2)'],
      ['a duplicate number', { '0001_a.sql': ok, '0001_b.sql': ok }, 'migration 0001_b.sql is out of sequence (expected number 2)'],
      ['not starting at 0001', { '0002_b.sql': ok }, 'migration 0002_b.sql is out of sequence (expected number 1)'],
    ])('the provider rejects %s', async (_what, files, message) => {
      const dir = migrationDir(files);
      await expect(new SqlFileMigrationProvider(dir).getMigrations()).rejects.toThrow(message);
      // migrateUp refuses too, and applies nothing.
      const error = await migrateUp(db, { dir }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(MigrationError);
      expect((error as Error).message).toBe(message);
      expect(await recorded(db)).toStrictEqual([]);
    });

    it('ignores files that are not .sql (a README beside the migrations)', async () => {
      const dir = migrationDir({ 'README.md': '# notes', '0001_a.sql': ok, '0002_b.sql': ok });
      expect(Object.keys(await new SqlFileMigrationProvider(dir).getMigrations())).toStrictEqual(['0001_a', '0002_b']);
    });
  });

  describe('a failing migration applies nothing', () => {
    const first = 'create table m_one (id int primary key); insert into m_one values (1);';
    // Its first statements succeed; the last one fails.
    const bad = 'create table m_two (id int primary key); insert into m_one values (2); select 1 / 0;';

    it('when pending together with the one before it, neither is applied (one transaction)', async () => {
      const db = await testDatabase();
      const dir = migrationDir({ '0001_one.sql': first, '0002_bad.sql': bad });
      await expect(migrateUp(db, { dir })).rejects.toThrow(new MigrationError('migration 0002_bad failed: division by zero'));
      expect(await tableExists(db, 'm_one')).toBe(false);
      expect(await tableExists(db, 'm_two')).toBe(false);
      expect(await recorded(db)).toStrictEqual([]);
      // The session is usable again (on PGlite's single connection the failed transaction was rolled back).
      expect(await pendingMigrations(db, { dir })).toStrictEqual(['0001_one', '0002_bad']);
    });

    it('when the one before it was committed earlier, that one stays and none of the bad one applies', async () => {
      const db = await testDatabase();
      const dir = migrationDir({ '0001_one.sql': first });
      expect(await migrateUp(db, { dir })).toStrictEqual(['0001_one']);
      writeFileSync(join(dir, '0002_bad.sql'), bad);

      await expect(migrateUp(db, { dir })).rejects.toThrow(new MigrationError('migration 0002_bad failed: division by zero'));
      expect(await tableExists(db, 'm_one')).toBe(true);
      expect(await tableExists(db, 'm_two')).toBe(false);
      const { rows } = await sql<{ id: number }>`select id from m_one order by id`.execute(db);
      expect(rows).toStrictEqual([{ id: 1 }]); // the bad file's insert did not survive
      expect(await recorded(db)).toStrictEqual(['0001_one']);
      expect(await pendingMigrations(db, { dir })).toStrictEqual(['0002_bad']);

      // Fixed (before release), it applies.
      writeFileSync(join(dir, '0002_bad.sql'), 'create table m_two (id int primary key);');
      expect(await migrateUp(db, { dir })).toStrictEqual(['0002_bad']);
      expect(await tableExists(db, 'm_two')).toBe(true);
    });
  });
});

describe.runIf(isPostgres)('migrations on PostgreSQL only', () => {
  const databases: Database<unknown>[] = [];
  let empty: EmptyDatabase;

  beforeEach(async () => {
    empty = await createEmptyDatabase();
  });
  afterEach(async () => {
    while (databases.length > 0) await databases.pop()!.close();
    await empty?.destroy();
  });

  async function open(statementTimeoutMs: number = testDbOptions.statementTimeoutMs): Promise<Kysely<unknown>> {
    const database = await openDatabase<unknown>(
      { kind: 'postgres', location: empty.url! },
      { ...testDbOptions, statementTimeoutMs },
      silentLogger,
    );
    databases.push(database);
    return database.db;
  }

  it('a migration may run longer than the service statement timeout', async () => {
    const db = await open(200);
    // The same pool cancels a slow statement outside a migration...
    await expect(sql`select pg_sleep(0.5)`.execute(db)).rejects.toMatchObject({ code: '57014' });
    // ...but not inside one.
    const dir = migrationDir({ '0001_slow.sql': 'select pg_sleep(0.5); create table m_slow (id int);' });
    expect(await migrateUp(db, { dir })).toStrictEqual(['0001_slow']);
    expect(await tableExists(db, 'm_slow')).toBe(true);
    // The exemption was local to the migration's transaction.
    const { rows } = await sql<{ v: string }>`select current_setting('statement_timeout') as v`.execute(db);
    expect(rows).toStrictEqual([{ v: '200ms' }]);
  });

  it('waiting for another process’s migration lock is not cut off by the statement timeout', async () => {
    const db = await open(200);
    // Another process holds Kysely's migration lock (the id its PostgreSQL adapter uses).
    const holder = new pg.Client({ connectionString: empty.url! });
    await holder.connect();
    // Closed inside the test: afterEach drops the database WITH (FORCE), which would
    // terminate a still-open client and surface as an unhandled error.
    try {
      await holder.query(`select pg_advisory_lock(3853314791062309107)`);
      const run = migrateUp(db);
      // Release only once the migrator is observably waiting on the lock.
      for (;;) {
        const { rows } = await holder.query<{ n: string }>(
          `select count(*)::text as n from pg_locks where locktype = 'advisory' and not granted`,
        );
        if (rows[0]?.n !== '0') break;
        await new Promise((r) => setTimeout(r, 20));
      }
      await new Promise((r) => setTimeout(r, 400)); // longer than the 200 ms statement timeout
      await holder.query(`select pg_advisory_unlock(3853314791062309107)`);
      expect(await run).toStrictEqual(SHIPPED);
    } finally {
      await holder.end();
    }
    const { rows } = await sql<{ v: string }>`select current_setting('statement_timeout') as v`.execute(db);
    expect(rows).toStrictEqual([{ v: '200ms' }]);
  });

  it('concurrent migrateUp from separate pools applies each shipped migration exactly once', async () => {
    const dbs = await Promise.all([open(), open(), open()]);
    const results = await Promise.all(dbs.map((db) => migrateUp(db)));
    expect(results.flat().sort()).toStrictEqual(SHIPPED);
    expect(await recorded(dbs[0])).toStrictEqual(SHIPPED);
    expect(await pendingMigrations(dbs[1])).toStrictEqual([]);
  });

  it('concurrent runs of a slow migration: one applies it, the others wait and find nothing pending', async () => {
    const dir = migrationDir({
      '0001_counter.sql': 'create table m_counter (n int not null); insert into m_counter values (1);',
      '0002_slow.sql': 'select pg_sleep(0.3); update m_counter set n = n + 1;',
    });
    const dbs = await Promise.all([open(), open(), open(), open()]);
    const results = await Promise.all(dbs.map((db) => migrateUp(db, { dir })));
    expect(results.filter((r) => r.length > 0)).toStrictEqual([['0001_counter', '0002_slow']]);
    const { rows } = await sql<{ n: number }>`select n from m_counter`.execute(dbs[0]);
    expect(rows).toStrictEqual([{ n: 2 }]);
  });
});
