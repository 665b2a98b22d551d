/**
 * The database a test runs on. DB_TARGET=pglite (default): a fresh in-memory PGlite per
 * call. DB_TARGET=postgres: a fresh database on the machine's PostgreSQL
 * (TEST_POSTGRES_URL, default postgres://127.0.0.1:5432/test), dropped afterwards, so
 * parallel files and repeated runs never share state.
 */
import { randomBytes } from 'node:crypto';
import { userInfo } from 'node:os';
import pg from 'pg';
import type { Kysely } from 'kysely';
import type { AppDatabase } from '../../src/app.js';
import { openDatabase, type Database, type DatabaseTarget } from '../../src/platform/database.js';
import { createLogger } from '../../src/platform/logger.js';
import { migrateUp } from '../../src/platform/migrate.js';

export type DbTarget = 'pglite' | 'postgres';

export const dbTarget: DbTarget = process.env.DB_TARGET === 'postgres' ? 'postgres' : 'pglite';
export const isPostgres = dbTarget === 'postgres';
export const adminPostgresUrl = process.env.TEST_POSTGRES_URL ?? `postgres://${userInfo().username}@127.0.0.1:5432/test`;
export const redisTestUrl = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
/** Suites that need a real Redis run when TEST_REDIS=1 (CI sets it). */
export const hasRedis = process.env.TEST_REDIS === '1';

export const silentLogger = createLogger({ level: 'silent' });

export const testDbOptions = {
  poolMax: 10,
  statementTimeoutMs: 30_000,
  connectionTimeoutMs: 5_000,
  idleInTransactionTimeoutMs: 60_000,
} as const;

export interface TestDatabase {
  readonly database: Database<AppDatabase>;
  readonly target: DatabaseTarget;
  /** postgres only: the URL of this test's own database. */
  readonly url: string | undefined;
  destroy(): Promise<void>;
}

/** Creates an empty database on the current target (no migrations run). */
export async function createEmptyDatabase(): Promise<Omit<TestDatabase, 'database'> & { open(): Promise<Database<AppDatabase>> }> {
  if (dbTarget === 'pglite') {
    const target: DatabaseTarget = { kind: 'pglite', location: 'memory://' };
    return { target, url: undefined, open: () => openDatabase<AppDatabase>(target, testDbOptions, silentLogger), destroy: async () => {} };
  }
  const name = `lb_test_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminPostgresUrl });
  await admin.connect();
  try {
    await admin.query(`create database ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(adminPostgresUrl);
  url.pathname = `/${name}`;
  const target: DatabaseTarget = { kind: 'postgres', location: url.toString() };
  return {
    target,
    url: url.toString(),
    open: () => openDatabase<AppDatabase>(target, testDbOptions, silentLogger),
    destroy: async () => {
      const c = new pg.Client({ connectionString: adminPostgresUrl });
      await c.connect();
      try {
        await c.query(`drop database if exists ${name} with (force)`);
      } finally {
        await c.end();
      }
    },
  };
}

/** A migrated database on the current target. Call destroy() in afterAll. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const empty = await createEmptyDatabase();
  const database = await empty.open();
  await migrateUp(database.db as Kysely<unknown>);
  return {
    database,
    target: empty.target,
    url: empty.url,
    destroy: async () => {
      await database.close();
      await empty.destroy();
    },
  };
}
