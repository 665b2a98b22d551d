/**
 * One database port for both run modes. Embedded: PGlite in DATA_DIR behind
 * `@electric-sql/pglite/node-postgres`, which speaks the wire protocol to a normal
 * `pg.Pool`. Production: DATABASE_URL into a `pg.Pool`. Everything above the pool
 * (Kysely, migrations, raw SQL) is identical, and so are the type parsers.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { createPgConfig } from '@electric-sql/pglite/node-postgres';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import type { Logger } from './logger.js';

export type DatabaseKind = 'pglite' | 'postgres';

export interface DatabaseTarget {
  readonly kind: DatabaseKind;
  /** postgres: connection string. pglite: directory, or `memory://` for an in-memory database. */
  readonly location: string;
}

export interface DatabaseOptions {
  readonly poolMax: number;
  readonly statementTimeoutMs: number;
  readonly connectionTimeoutMs: number;
  readonly idleInTransactionTimeoutMs: number;
  readonly applicationName?: string;
}

export interface Database<DB> {
  readonly kind: DatabaseKind;
  readonly pool: pg.Pool;
  readonly db: Kysely<DB>;
  /** Whether concurrent sessions are real (PGlite has one connection). */
  readonly capabilities: { readonly concurrentSessions: boolean };
  ping(): Promise<void>;
  close(): Promise<void>;
}

const OID = { int8: 20, numeric: 1700, date: 1082, int8Array: 1016, numericArray: 1231 } as const;

/**
 * int8 → bigint (money in minor units never passes through a number), numeric →
 * exact decimal string, date → 'YYYY-MM-DD' (no time-zone shift). The same object is
 * handed to both pools, so PGlite and PostgreSQL return the same JavaScript types.
 */
export const typeParsers: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => {
    switch (oid) {
      case OID.int8:
        return (v: string) => BigInt(v);
      case OID.numeric:
      case OID.date:
        return (v: string) => v;
      case OID.int8Array:
        return (v: string) => parseTextArray(v).map((x) => (x === null ? null : BigInt(x)));
      case OID.numericArray:
        return (v: string) => parseTextArray(v);
      default:
        return pg.types.getTypeParser(oid, format ?? 'text') as (v: string) => unknown;
    }
  }) as pg.CustomTypesConfig['getTypeParser'],
};

/** Parses a one-dimensional Postgres text array of unquoted scalars ("{1,2,NULL}"). */
function parseTextArray(v: string): (string | null)[] {
  const inner = v.slice(1, -1);
  if (inner === '') return [];
  return inner.split(',').map((x) => (x === 'NULL' ? null : x.replace(/^"|"$/g, '')));
}

export async function openDatabase<DB>(
  target: DatabaseTarget,
  options: DatabaseOptions,
  logger: Logger,
): Promise<Database<DB>> {
  let pool: pg.Pool;
  let pglite: PGlite | undefined;
  if (target.kind === 'pglite') {
    if (target.location !== 'memory://') mkdirSync(target.location, { recursive: true, mode: 0o700 });
    // PGlite runs in this thread with one session: statement_timeout cannot interrupt
    // it, so the timeout applies to the PostgreSQL path only.
    pglite = await PGlite.create(target.location === 'memory://' ? undefined : target.location);
    const bridge = createPgConfig(pglite);
    pool = new pg.Pool({
      ...bridge,
      connection: bridge.connection,
      max: 1,
      idleTimeoutMillis: 0,
      connectionTimeoutMillis: options.connectionTimeoutMs,
      types: typeParsers,
    } as pg.PoolConfig);
  } else {
    pool = new pg.Pool({
      connectionString: target.location,
      max: options.poolMax,
      connectionTimeoutMillis: options.connectionTimeoutMs,
      idleTimeoutMillis: 30_000,
      statement_timeout: options.statementTimeoutMs,
      idle_in_transaction_session_timeout: options.idleInTransactionTimeoutMs,
      application_name: options.applicationName ?? 'loanbook',
      types: typeParsers,
    });
  }
  // Without this listener an idle client's error (Postgres restarted, network cut)
  // is an unhandled 'error' event and kills the process. The pool drops the client
  // and the next checkout opens a fresh connection.
  pool.on('error', (err) => {
    logger.error({ err: { message: err.message, code: (err as { code?: string }).code } }, 'database pool client error');
  });

  const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool }) });
  const database: Database<DB> = {
    kind: target.kind,
    pool,
    db,
    capabilities: { concurrentSessions: target.kind === 'postgres' },
    async ping() {
      await sql`select 1`.execute(db);
    },
    async close() {
      await db.destroy();
      if (pglite) await pglite.close();
    },
  };
  return database;
}

/** The database a configuration points at: DATABASE_URL, or PGlite under DATA_DIR. */
export function databaseTarget(config: { databaseUrl: string | undefined; dataDir: string }): DatabaseTarget {
  return config.databaseUrl !== undefined
    ? { kind: 'postgres', location: config.databaseUrl }
    : { kind: 'pglite', location: join(config.dataDir, 'pglite') };
}

/** Redacts the password from a connection string for logs and messages. */
export function describeTarget(target: DatabaseTarget): string {
  if (target.kind === 'pglite') return `embedded PGlite (${target.location})`;
  try {
    const u = new URL(target.location);
    if (u.password) u.password = '***';
    return `PostgreSQL (${u.toString()})`;
  } catch {
    return 'PostgreSQL';
  }
}
