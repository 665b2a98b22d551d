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

const OID = {
  int8: 20,
  numeric: 1700,
  date: 1082,
  textArray: 1009,
  int8Array: 1016,
  numericArray: 1231,
  dateArray: 1182,
} as const;

type Nested<T> = T | null | Nested<T>[];

/**
 * node-postgres's own text[] parser (quotes, escapes, NULL, nested dimensions), reused
 * so the element parsers below never see array syntax.
 */
const parseTextArray = pg.types.getTypeParser(OID.textArray as number, 'text') as (v: string) => Nested<string>[];

function mapNested<T>(values: Nested<string>[], f: (v: string) => T): Nested<T>[] {
  return values.map((v) => (v === null ? null : Array.isArray(v) ? mapNested(v, f) : f(v)));
}

/**
 * int8 → bigint (money in minor units never passes through a number), numeric →
 * exact decimal string, date → 'YYYY-MM-DD' (no time-zone shift), and the same for
 * their arrays (node-postgres would turn date[] into local-midnight Date objects).
 * The same object is handed to both pools, so PGlite and PostgreSQL return the same
 * JavaScript types.
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
        return (v: string) => mapNested(parseTextArray(v), (x) => BigInt(x));
      case OID.numericArray:
      case OID.dateArray:
        return parseTextArray;
      default:
        return pg.types.getTypeParser(oid, format ?? 'text') as (v: string) => unknown;
    }
  }) as pg.CustomTypesConfig['getTypeParser'],
};

/** The database could not be reached when it was opened. */
export class DatabaseConnectionError extends Error {
  override readonly name = 'DatabaseConnectionError';
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
    yieldBetweenStatements(pglite);
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
  // A client whose connection dies (Postgres restarted, backend terminated, network
  // cut) emits 'error'; with no listener that is an uncaught exception that kills the
  // process. The pool listens only while a client is idle, so every client also gets
  // its own listener for the time it is checked out (by Kysely, mid-query or
  // mid-transaction). The pool then drops the dead client on release and the next
  // checkout opens a fresh connection. One client usually reports twice (the server's
  // FATAL message, then the closed socket): the first is logged as the error.
  const failed = new WeakSet<pg.ClientBase>();
  pool.on('connect', (client) => {
    client.on('error', (err: Error & { code?: string }) => {
      const fields = { err: { message: err.message, code: err.code } };
      if (failed.has(client)) {
        logger.debug(fields, 'database connection error (same connection, after the first)');
        return;
      }
      failed.add(client);
      logger.error(fields, 'database connection error; the connection is discarded');
    });
  });
  // Required so an idle client's error is not an unhandled 'error' on the pool; the
  // client's own listener above has logged it.
  pool.on('error', () => undefined);

  if (target.kind === 'postgres') {
    // Fail at start-up, with the (redacted) target named, rather than at the first request.
    try {
      await pool.query('select 1');
    } catch (e) {
      await pool.end().catch(() => undefined);
      const reason = e instanceof Error ? e.message || (e as { code?: string }).code || e.name : String(e);
      throw new DatabaseConnectionError(`cannot connect to ${describeTarget(target)}: ${reason}`, { cause: e });
    }
  }

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

/**
 * PGlite runs each statement in this thread and the pg bridge chains them with promises
 * only, so a long run of statements (an end-of-day run, a test suite) never lets the
 * event loop reach its timers or I/O: no HTTP request is read, no timer fires, until it
 * ends. Every statement that starts 20 ms or more after the last yield first waits one
 * turn of the event loop (setImmediate), so the process stays responsive.
 */
function yieldBetweenStatements(pglite: PGlite): void {
  const execute = pglite.execProtocolStream.bind(pglite);
  let lastYield = performance.now();
  pglite.execProtocolStream = async (...args: Parameters<PGlite['execProtocolStream']>) => {
    if (performance.now() - lastYield >= 20) {
      await new Promise<void>((resolve) => setImmediate(resolve));
      lastYield = performance.now();
    }
    return execute(...args);
  };
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
