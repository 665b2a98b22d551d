/**
 * One database port for both run modes. Embedded: PGlite in DATA_DIR behind
 * `@electric-sql/pglite/node-postgres`, which speaks the wire protocol to a normal
 * `pg.Pool`. Production: DATABASE_URL into a `pg.Pool`. Everything above the pool
 * (Kysely, migrations, raw SQL) is identical, and so are the type parsers.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { createPgConfig } from '@electric-sql/pglite/node-postgres';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { coerceError } from './errors.js';
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
  /**
   * PostgreSQL: the longest wait for a free pooled connection once all `poolMax` are checked
   * out, separate from `connectionTimeoutMs` (opening one). Unset: the wait is bounded by
   * `connectionTimeoutMs` alone (pg.Pool's single timeout).
   */
  readonly acquireTimeoutMs?: number;
  /**
   * PostgreSQL: a reachability probe (`select 1` on its own connection every `intervalMs`,
   * each given `timeoutMs`). While it fails, checkouts fail at once and the connections in
   * use are cut, so no request waits on a dead network path. Unset: no probe.
   */
  readonly probe?: { readonly intervalMs: number; readonly timeoutMs: number };
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

/**
 * A checkout refused without touching the database: every pooled connection stayed busy
 * for `acquireTimeoutMs` ('pool_exhausted'), or the reachability probe is failing
 * ('unreachable').
 */
export class DatabaseUnavailableError extends Error {
  override readonly name = 'DatabaseUnavailableError';
  constructor(
    readonly reason: 'pool_exhausted' | 'unreachable',
    message: string,
  ) {
    super(message);
  }
}

/** Network errors: the server is down, restarting or cut off. */
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);
/**
 * SQLSTATEs that say the server, not the statement, failed: 57P01 admin_shutdown (a restart
 * ends every session), 57P02 crash_shutdown, 57P03 cannot_connect_now (starting up or in
 * recovery), 53300 too_many_connections; class 08 (connection exceptions) is matched by prefix.
 */
const SERVER_GONE_STATES = new Set(['57P01', '57P02', '57P03', '53300']);
/** node-postgres and pg-pool report these without a code. */
const CONNECTION_MESSAGES = [
  'timeout exceeded when trying to connect',
  'Connection terminated',
  'Query read timeout',
  'is not queryable',
  'Cannot use a pool after calling end on the pool',
];

/**
 * Whether a thrown value means "the database cannot serve right now" (retry later) rather
 * than a fault in the request or the code. Follows `cause` chains.
 */
export function isDatabaseUnavailable(error: unknown): boolean {
  for (let e = error, depth = 0; typeof e === 'object' && e !== null && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    if (e instanceof DatabaseUnavailableError) return true;
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && (NETWORK_CODES.has(code) || SERVER_GONE_STATES.has(code) || /^08[0-9A-Z]{3}$/.test(code))) return true;
    const message = (e as { message?: unknown }).message;
    if (typeof code !== 'string' && typeof message === 'string' && CONNECTION_MESSAGES.some((m) => message.includes(m))) return true;
  }
  return false;
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
  // PGlite has one session and queues behind it by design (a long end-of-day run holds it),
  // so the separate checkout bound and the probe apply to PostgreSQL only.
  const guard = target.kind === 'postgres' ? guardPool(pool, options, logger) : undefined;
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
    if (options.probe) guard?.startProbe({ connectionString: target.location, applicationName: `${options.applicationName ?? 'loanbook'}-probe`, ...options.probe });
  }

  const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool }) });
  const database: Database<DB> = {
    kind: target.kind,
    pool,
    db,
    capabilities: { concurrentSessions: target.kind === 'postgres' },
    async ping() {
      // With a probe, readiness is its latest answer: a pool saturated by slow requests is
      // not an unreachable database, and must not take the instance out of rotation.
      if (guard?.probing()) {
        guard.assertReachable();
        return;
      }
      await sql`select 1`.execute(db);
    },
    async close() {
      guard?.stop();
      await db.destroy();
      if (pglite) await pglite.close();
    },
  };
  return database;
}

interface PoolGuard {
  startProbe(probe: { connectionString: string; applicationName: string; intervalMs: number; timeoutMs: number }): void;
  /** Whether the probe runs (its answer then stands for reachability). */
  probing(): boolean;
  /** Throws DatabaseUnavailableError while the probe fails. */
  assertReachable(): void;
  stop(): void;
}

type ConnectCallback = (err: Error | undefined, client?: pg.PoolClient, done?: (release?: Error | boolean) => void) => void;

/**
 * Puts two bounds in front of `pool.connect` (which Kysely, `pool.query` and pg-boss all
 * go through):
 *  - a checkout waits at most `acquireTimeoutMs` for one of the `poolMax` connections; a
 *    semaphore does the waiting, so pg-pool's own queue (bounded only by the connect
 *    timeout) stays empty;
 *  - while the reachability probe fails, checkouts are refused at once, checkouts still
 *    opening a connection are abandoned, and the connections in use are cut. A query on a
 *    connection whose packets are being dropped would otherwise wait for TCP to give up
 *    (many minutes), or for statement_timeout, which a silent server never enforces.
 * Both refusals are DatabaseUnavailableError, which the HTTP layer answers with 503.
 */
function guardPool(pool: pg.Pool, options: DatabaseOptions, logger: Logger): PoolGuard {
  const rawConnect = pool.connect.bind(pool) as () => Promise<pg.PoolClient>;
  const permits = options.acquireTimeoutMs === undefined ? undefined : createPermits(options.poolMax, options.acquireTimeoutMs);
  const inUse = new Set<pg.PoolClient>();
  const opening = new Set<(e: Error) => void>();
  let unreachableSince: number | undefined;
  let probing = false;
  let stopProbe = () => undefined as void;

  const unreachable = () => new DatabaseUnavailableError('unreachable', 'the database is not reachable (the connection probe is failing)');

  const acquire = async (): Promise<pg.PoolClient> => {
    if (unreachableSince !== undefined) throw unreachable();
    await permits?.acquire();
    // The probe may have failed while this checkout waited for a permit.
    if (unreachableSince !== undefined) {
      permits?.release();
      throw unreachable();
    }
    const pending = rawConnect();
    let client: pg.PoolClient;
    try {
      client = await new Promise<pg.PoolClient>((resolve, reject) => {
        opening.add(reject);
        pending.then(resolve, reject).finally(() => opening.delete(reject));
      });
    } catch (e) {
      // The permit is held until the abandoned checkout settles, so pg-pool never has more
      // than poolMax checkouts and never queues one; a late client is discarded.
      pending.then((c) => c.release(true), () => undefined).finally(() => permits?.release());
      throw e;
    }
    inUse.add(client);
    const release = client.release.bind(client);
    let released = false;
    client.release = (err?: Error | boolean) => {
      if (!released) {
        released = true;
        inUse.delete(client);
        permits?.release();
      }
      release(err);
    };
    return client;
  };

  pool.connect = ((callback?: ConnectCallback) => {
    const checkout = acquire();
    if (callback === undefined) return checkout;
    checkout.then(
      (client) => callback(undefined, client, (err) => client.release(err)),
      (e: unknown) => callback(coerceError(e), undefined, () => undefined),
    );
    return undefined;
  }) as typeof pool.connect;

  /**
   * Server sessions of the connections cut while the network was silent. The server never
   * saw them close: one idle in a transaction keeps its row locks until
   * idle_in_transaction_session_timeout, so they are terminated once the server answers.
   */
  let orphans: { pids: number[]; cutAt: Date } | undefined;

  const markUnreachable = (cause: Error) => {
    if (unreachableSince !== undefined) return;
    unreachableSince = Date.now();
    logger.error(
      { err: { message: cause.message, code: (cause as { code?: string }).code }, connections_cut: inUse.size },
      'database unreachable: refusing checkouts and cutting the connections in use until the probe succeeds',
    );
    for (const abandon of opening) abandon(unreachable());
    const pids = [...inUse].map((c) => (c as unknown as { processID?: number | null }).processID).filter((p): p is number => typeof p === 'number');
    if (pids.length > 0) orphans = { pids: [...(orphans?.pids ?? []), ...pids], cutAt: new Date() };
    // pg has no public way to abort a query; pg-pool itself ends a stuck connect this way.
    for (const client of inUse) (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
  };

  /** Before the circuit closes: end the cut sessions still on the server (a restart has already). */
  const terminateOrphans = async (client: pg.Client) => {
    if (orphans === undefined) return;
    const { pids, cutAt } = orphans;
    orphans = undefined;
    try {
      const { rows } = await client.query<{ n: number }>(
        'select count(*)::int as n from pg_stat_activity where pid = any($1::int[]) and backend_start < $2 and pg_terminate_backend(pid)',
        [pids, cutAt],
      );
      if ((rows[0]?.n ?? 0) > 0) logger.warn({ terminated: rows[0]?.n }, 'terminated the server sessions of connections cut while the database was unreachable');
    } catch (e) {
      logger.warn({ err: coerceError(e) }, 'could not terminate the sessions of cut connections; their locks last until idle_in_transaction_session_timeout');
    }
  };

  return {
    startProbe({ connectionString, applicationName, intervalMs, timeoutMs }) {
      probing = true;
      let client: pg.Client | undefined;
      let timer: NodeJS.Timeout | undefined;
      let stopped = false;
      const drop = () => {
        (client as unknown as { connection?: { stream?: { destroy(): void } } } | undefined)?.connection?.stream?.destroy();
        client = undefined;
      };
      const once = async () => {
        if (client === undefined) {
          const c = new pg.Client({ connectionString, application_name: applicationName, connectionTimeoutMillis: timeoutMs });
          c.on('error', () => undefined); // the failed query reports it
          client = c;
          await c.connect();
        }
        await client.query('select 1');
      };
      const bounded = async () => {
        let timeout: NodeJS.Timeout | undefined;
        try {
          await Promise.race([
            once(),
            new Promise<never>((_, reject) => {
              timeout = setTimeout(() => reject(Object.assign(new Error(`probe timed out after ${timeoutMs} ms`), { timedOut: true })), timeoutMs);
            }),
          ]);
        } finally {
          clearTimeout(timeout);
        }
      };
      const tick = async () => {
        try {
          await bounded().catch(async (e: unknown) => {
            drop();
            // The probe's own session can end on its own (terminated, idle timeout): only a
            // second failure on a fresh connection, or a timeout, means the database is away.
            if ((e as { timedOut?: boolean }).timedOut) throw e;
            await bounded();
          });
          if (unreachableSince !== undefined) {
            if (client) await terminateOrphans(client);
            logger.warn({ unreachable_ms: Date.now() - unreachableSince }, 'database reachable again');
            unreachableSince = undefined;
          }
        } catch (e) {
          drop();
          markUnreachable(coerceError(e));
        }
        if (stopped) return;
        timer = setTimeout(() => void tick(), unreachableSince === undefined ? intervalMs : Math.min(intervalMs, 250));
        timer.unref();
      };
      timer = setTimeout(() => void tick(), intervalMs);
      timer.unref();
      stopProbe = () => {
        stopped = true;
        clearTimeout(timer);
        void client?.end().catch(() => undefined);
        client = undefined;
      };
    },
    probing: () => probing,
    assertReachable() {
      if (unreachableSince !== undefined) throw unreachable();
    },
    stop: () => stopProbe(),
  };
}

/** A counting semaphore whose waiters give up after `timeoutMs`, first come first served. */
/** What a unit of work (an HTTP request) may still spend waiting for pooled connections, in all. */
interface CheckoutBudget {
  remainingMs: number;
}

const checkoutBudgets = new AsyncLocalStorage<CheckoutBudget>();

/**
 * Runs `fn` (and everything it starts) under one checkout budget of `ms`: its checkouts
 * together wait at most that long for a free connection. A request makes several
 * checkouts (authentication, the idempotency claim, its transaction); without a shared
 * budget each could wait the whole DB_POOL_ACQUIRE_TIMEOUT_MS, and a request under pool
 * exhaustion would be refused only after several of them.
 */
export function withCheckoutBudget<T>(ms: number, fn: () => T): T {
  return checkoutBudgets.run({ remainingMs: ms }, fn);
}

function createPermits(max: number, timeoutMs: number): { acquire(): Promise<void>; release(): void } {
  let free = max;
  const waiters: (() => void)[] = [];
  return {
    acquire() {
      if (free > 0 && waiters.length === 0) {
        free--;
        return Promise.resolve();
      }
      const budget = checkoutBudgets.getStore();
      const waitMs = Math.max(0, Math.min(timeoutMs, budget?.remainingMs ?? timeoutMs));
      const startedAt = performance.now();
      return new Promise<void>((resolve, reject) => {
        const grant = () => {
          clearTimeout(timer);
          if (budget) budget.remainingMs -= performance.now() - startedAt;
          resolve();
        };
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(grant), 1);
          if (budget) budget.remainingMs = 0;
          reject(new DatabaseUnavailableError('pool_exhausted', `no database connection became free within ${timeoutMs} ms`));
        }, waitMs);
        waiters.push(grant);
      });
    },
    release() {
      const next = waiters.shift();
      if (next) next();
      else free++;
    },
  };
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
