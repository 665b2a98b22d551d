/**
 * The database port (src/platform/database.ts) on the real engines: the same type
 * parsers on PGlite and PostgreSQL (this file runs under DB_TARGET=pglite and
 * DB_TARGET=postgres), connection loss that must not kill the process, the statement
 * timeout, and failing fast when the server cannot be reached.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { sql, type Kysely } from 'kysely';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  DatabaseConnectionError,
  databaseTarget,
  describeTarget,
  openDatabase,
  type Database,
  type DatabaseOptions,
} from '../../src/platform/database.js';
import type { Logger } from '../../src/platform/logger.js';
import { adminPostgresUrl, createEmptyDatabase, dbTarget, isPostgres, silentLogger, testDbOptions } from '../support/db.js';

interface LogLine {
  level: string;
  message: string;
  err?: { message: string; code?: string };
}

/** A pino logger shaped like createLogger()'s, whose lines land in an array. */
function capturingLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line.trim()) lines.push(JSON.parse(line) as LogLine);
      done();
    },
  });
  const logger = pino({ level: 'debug', messageKey: 'message', formatters: { level: (label) => ({ level: label }) } }, sink);
  return { logger, lines };
}

/** A TCP port on 127.0.0.1 with nothing listening on it (bound, then released). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

type Untyped = Kysely<Record<string, Record<string, unknown>>>;

describe(`type parsers are identical on every target (${dbTarget})`, () => {
  let empty: Awaited<ReturnType<typeof createEmptyDatabase>>;
  let database: Database<unknown>;
  let db: Untyped;

  beforeAll(async () => {
    empty = await createEmptyDatabase();
    database = (await empty.open()) as Database<unknown>;
    db = database.db as Untyped;
  });
  afterAll(async () => {
    await database?.close();
    await empty?.destroy();
  });

  it('reports its kind and whether sessions are really concurrent', () => {
    expect(database.kind).toBe(dbTarget);
    expect(database.capabilities.concurrentSessions).toBe(isPostgres);
  });

  it('int8 is a bigint, exact beyond 2^53', async () => {
    const { rows } = await database.pool.query<{ v: unknown; min: unknown; max: unknown }>(
      'select 9007199254740993::int8 as v, (-9223372036854775808)::int8 as min, 9223372036854775807::int8 as max',
    );
    expect(rows[0]).toStrictEqual({ v: 9007199254740993n, min: -9223372036854775808n, max: 9223372036854775807n });
    expect(typeof rows[0]?.v).toBe('bigint');
  });

  it('numeric is the exact decimal string, scale kept', async () => {
    const { rows } = await database.pool.query<{ n: unknown; z: unknown; neg: unknown; nan: unknown }>(
      "select '12345678901234567890.123456789'::numeric as n, 1.10::numeric(10,2) as z, '-0.000000001'::numeric as neg, 'NaN'::numeric as nan",
    );
    expect(rows[0]).toStrictEqual({ n: '12345678901234567890.123456789', z: '1.10', neg: '-0.000000001', nan: 'NaN' });
  });

  it('date is the YYYY-MM-DD string, never a Date shifted by a time zone', async () => {
    const { rows } = await database.pool.query<{ d: unknown; first: unknown; last: unknown }>(
      "select '2024-02-29'::date as d, '0001-01-01'::date as first, '9999-12-31'::date as last",
    );
    expect(rows[0]).toStrictEqual({ d: '2024-02-29', first: '0001-01-01', last: '9999-12-31' });
  });

  it('int8[] is bigint[] (NULLs kept, nested dimensions kept)', async () => {
    const { rows } = await database.pool.query<{ a: unknown; empty: unknown; nested: unknown }>(
      "select array[1, 9007199254740993, null, -9223372036854775808]::int8[] as a, '{}'::int8[] as empty, '{{1,2},{3,4}}'::int8[] as nested",
    );
    expect(rows[0]).toStrictEqual({
      a: [1n, 9007199254740993n, null, -9223372036854775808n],
      empty: [],
      nested: [
        [1n, 2n],
        [3n, 4n],
      ],
    });
  });

  it('numeric[] and date[] are string arrays', async () => {
    const { rows } = await database.pool.query<{ n: unknown; d: unknown }>(
      "select array['12345678901234567890.123456789', '1.50', null, 'NaN']::numeric[] as n, array['2024-02-29'::date, null, '1999-12-31'] as d",
    );
    expect(rows[0]).toStrictEqual({
      n: ['12345678901234567890.123456789', '1.50', null, 'NaN'],
      d: ['2024-02-29', null, '1999-12-31'],
    });
  });

  it('other types keep node-postgres defaults (int4 number, jsonb object, timestamptz Date, text[])', async () => {
    const { rows } = await database.pool.query<{ i: unknown; j: unknown; t: unknown; s: unknown }>(
      `select 42::int4 as i, '{"a":[1,"x"]}'::jsonb as j, '2024-02-29T12:00:00Z'::timestamptz as t, array['a,b', 'c"d', null]::text[] as s`,
    );
    expect(rows[0]).toStrictEqual({ i: 42, j: { a: [1, 'x'] }, t: new Date('2024-02-29T12:00:00.000Z'), s: ['a,b', 'c"d', null] });
  });

  it('the same parsers apply through Kysely, and bigint parameters round-trip exactly', async () => {
    await sql`create table parse_probe (id int8 primary key, amount numeric(38,9) not null, day date not null, ids int8[] not null)`.execute(db);
    await db
      .insertInto('parse_probe')
      .values({ id: 9007199254740993n, amount: '12345678901234567890.123456789', day: '2024-02-29', ids: [9007199254740993n, 2n] })
      .execute();
    const row = await db.selectFrom('parse_probe').selectAll().where('id', '=', 9007199254740993n).executeTakeFirstOrThrow();
    expect(row).toStrictEqual({
      id: 9007199254740993n,
      amount: '12345678901234567890.123456789',
      day: '2024-02-29',
      ids: [9007199254740993n, 2n],
    });
    const sum = await sql<{ total: bigint }>`select sum(id)::int8 + 1 as total from parse_probe`.execute(db);
    expect(sum.rows).toStrictEqual([{ total: 9007199254740994n }]);
  });
});

describe('opening a database', () => {
  it('maps the configuration to a target: DATABASE_URL, else PGlite under DATA_DIR', () => {
    expect(databaseTarget({ databaseUrl: 'postgres://db.example/lb', dataDir: '/var/lib/lb' })).toStrictEqual({
      kind: 'postgres',
      location: 'postgres://db.example/lb',
    });
    expect(databaseTarget({ databaseUrl: undefined, dataDir: '/var/lib/lb' })).toStrictEqual({
      kind: 'pglite',
      location: '/var/lib/lb/pglite',
    });
  });

  it('embedded PGlite lets the event loop turn during a long run of statements (timers fire, I/O is read)', async () => {
    const db = await openDatabase({ kind: 'pglite', location: 'memory://' }, testDbOptions, silentLogger);
    try {
      let ticks = 0;
      const timer = setInterval(() => ticks++, 1);
      let statements = 0;
      // Until a timer has fired while statements are still running (bounded: a run that never
      // lets the loop turn fails here instead of hanging).
      while (ticks === 0 && statements < 50_000) {
        await sql`select ${statements}::int`.execute(db.db);
        statements++;
      }
      clearInterval(timer);
      expect(ticks).toBeGreaterThan(0);
    } finally {
      await db.close();
    }
  });

  it('describes a target without its password', () => {
    expect(describeTarget({ kind: 'postgres', location: 'postgres://lb:hunter2@db.example:5432/lb' })).toBe(
      'PostgreSQL (postgres://lb:***@db.example:5432/lb)',
    );
    expect(describeTarget({ kind: 'pglite', location: '/data/pglite' })).toBe('embedded PGlite (/data/pglite)');
  });

  it('rejects at once, naming the redacted target, when nothing listens on the port', async () => {
    const port = await closedPort();
    const location = `postgres://lb:hunter2@127.0.0.1:${port}/lb`;
    const opening = openDatabase({ kind: 'postgres', location }, { ...testDbOptions, connectionTimeoutMs: 1000 }, silentLogger);
    const error = await opening.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(DatabaseConnectionError);
    const message = (error as Error).message;
    expect(message).toContain(`cannot connect to PostgreSQL (postgres://lb:***@127.0.0.1:${port}/lb)`);
    expect(message).toContain('ECONNREFUSED');
    expect(message).not.toContain('hunter2');
  });

  it('rejects after connectionTimeoutMs when the server accepts but never answers', async () => {
    // A TCP listener that swallows the startup packet: only the connection timeout ends the wait.
    const sockets = new Set<Socket>();
    const silent: Server = createServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as { port: number }).port;
    try {
      const opening = openDatabase(
        { kind: 'postgres', location: `postgres://lb@127.0.0.1:${port}/lb` },
        { ...testDbOptions, connectionTimeoutMs: 300 },
        silentLogger,
      );
      await expect(opening).rejects.toThrow(DatabaseConnectionError);
      await expect(opening).rejects.toThrow(/timeout/i);
      expect(sockets.size).toBeGreaterThanOrEqual(1);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });

  it('PGlite in a directory keeps its data across close and reopen (directory mode 0700)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lb-pglite-'));
    const location = join(dir, 'pglite');
    try {
      const first = await openDatabase<unknown>({ kind: 'pglite', location }, testDbOptions, silentLogger);
      await first.pool.query('create table kept (v int8 not null)');
      await first.pool.query('insert into kept values (9007199254740993)');
      await first.close();
      expect(statSync(location).mode & 0o777).toBe(0o700);

      const second = await openDatabase<unknown>({ kind: 'pglite', location }, testDbOptions, silentLogger);
      try {
        const { rows } = await second.pool.query<{ v: bigint }>('select v from kept');
        expect(rows).toStrictEqual([{ v: 9007199254740993n }]);
      } finally {
        await second.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.runIf(isPostgres)('connection loss and timeouts (PostgreSQL)', () => {
  const applicationName = `lb-db-test-${process.pid}`;
  let opens = 0;
  let empty: Awaited<ReturnType<typeof createEmptyDatabase>>;
  let admin: pg.Client;
  const opened: Database<unknown>[] = [];
  const uncaught: unknown[] = [];
  const onUncaught = (e: unknown) => void uncaught.push(e);

  /** Each database gets its own application_name, so its sessions can be found in pg_stat_activity. */
  async function open(overrides: Partial<DatabaseOptions>, logger: Logger): Promise<Database<unknown>> {
    const database = await openDatabase<unknown>(
      { kind: 'postgres', location: empty.url! },
      { ...testDbOptions, applicationName: `${applicationName}-${++opens}`, ...overrides },
      logger,
    );
    opened.push(database);
    return database;
  }

  async function backendPids(): Promise<number[]> {
    const { rows } = await admin.query<{ pid: number }>(
      'select pid from pg_stat_activity where application_name = $1 order by pid',
      [`${applicationName}-${opens}`],
    );
    return rows.map((r) => r.pid);
  }

  async function terminate(pid: number): Promise<void> {
    const { rows } = await admin.query<{ ok: boolean }>('select pg_terminate_backend($1) as ok', [pid]);
    expect(rows).toStrictEqual([{ ok: true }]);
  }

  function connectionErrors(lines: LogLine[]): LogLine[] {
    return lines.filter((l) => l.level === 'error' && l.message.startsWith('database connection error'));
  }

  beforeAll(async () => {
    process.on('uncaughtException', onUncaught);
    empty = await createEmptyDatabase();
    admin = new pg.Client({ connectionString: adminPostgresUrl });
    await admin.connect();
  });
  afterAll(async () => {
    for (const d of opened) await d.close().catch(() => undefined);
    await admin?.end();
    await empty?.destroy();
    process.off('uncaughtException', onUncaught);
  });

  it('survives the backend of a checked-out client being terminated; logs it; the next query succeeds', async () => {
    const { logger, lines } = capturingLogger();
    const database = await open({}, logger);
    const client = await database.pool.connect();
    const { rows } = await client.query<{ pid: number }>('select pg_backend_pid() as pid');
    const pid = rows[0]!.pid;

    await terminate(pid); // what a PostgreSQL restart does to every session
    await vi.waitFor(() => expect(connectionErrors(lines)).toHaveLength(1));
    expect(connectionErrors(lines)[0]?.err?.code).toBe('57P01'); // admin_shutdown
    client.release();

    const next = await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(database.db);
    expect(next.rows[0]?.pid).not.toBe(pid);
    expect(uncaught).toStrictEqual([]);
    expect(connectionErrors(lines)).toHaveLength(1); // one error line per lost connection
  });

  it('survives the backend of an idle pooled client being terminated', async () => {
    const { logger, lines } = capturingLogger();
    const database = await open({ poolMax: 2 }, logger);
    await database.ping(); // leaves one idle client in the pool
    expect(database.pool.idleCount).toBe(1);
    const pids = await backendPids();
    expect(pids).toHaveLength(1);
    const pid = pids[0];

    await terminate(pid!);
    await vi.waitFor(() => expect(connectionErrors(lines)).toHaveLength(1));
    await vi.waitFor(() => expect(database.pool.totalCount).toBe(0)); // the dead client left the pool

    await database.ping();
    expect(uncaught).toStrictEqual([]);
  });

  it('a query running when its backend is terminated fails; the process and the pool carry on', async () => {
    const { logger, lines } = capturingLogger();
    const database = await open({}, logger);
    const sleeping = sql`select pg_sleep(30)`.execute(database.db).then(
      () => 'finished',
      (e: unknown) => e,
    );
    let pid: number | undefined;
    await vi.waitFor(async () => {
      const { rows } = await admin.query<{ pid: number }>(
        "select pid from pg_stat_activity where application_name = $1 and query like 'select pg_sleep(30)%' and state = 'active'",
        [`${applicationName}-${opens}`],
      );
      pid = rows[0]?.pid;
      expect(pid).toBeDefined();
    });
    await terminate(pid!);

    const outcome = await sleeping;
    expect(outcome).toBeInstanceOf(Error);
    expect((outcome as { code?: string }).code).toBe('57P01');
    await vi.waitFor(() => expect(connectionErrors(lines).length).toBeGreaterThanOrEqual(1));
    const after = await sql<{ v: number }>`select 1 + 1 as v`.execute(database.db);
    expect(after.rows).toStrictEqual([{ v: 2 }]);
    expect(uncaught).toStrictEqual([]);
  });

  it('a transaction left idle past idle_in_transaction_session_timeout is ended by the server without killing the process', async () => {
    const { logger, lines } = capturingLogger();
    const database = await open({ idleInTransactionTimeoutMs: 300 }, logger);
    const outcome = await database.db
      .transaction()
      .execute(async (trx) => {
        await sql`select 1`.execute(trx);
        // Idle inside the transaction until the server has given up on it.
        await vi.waitFor(() => expect(connectionErrors(lines)).toHaveLength(1), { timeout: 10_000 });
        await sql`select 1`.execute(trx);
        return 'committed';
      })
      .catch((e: unknown) => e);
    expect(outcome).toBeInstanceOf(Error);
    expect(connectionErrors(lines)[0]?.err?.code).toBe('25P03'); // idle_in_transaction_session_timeout
    const after = await sql<{ v: number }>`select 2 + 2 as v`.execute(database.db);
    expect(after.rows).toStrictEqual([{ v: 4 }]);
    expect(uncaught).toStrictEqual([]);
  });

  it('statementTimeoutMs cancels a slow statement with a statement-timeout error; the connection stays usable', async () => {
    const database = await open({ statementTimeoutMs: 200, poolMax: 1 }, silentLogger);
    const slow = sql`select pg_sleep(2)`.execute(database.db);
    await expect(slow).rejects.toMatchObject({ code: '57014', message: 'canceling statement due to statement timeout' });
    const fast = await sql<{ v: string }>`select current_setting('statement_timeout') as v`.execute(database.db);
    expect(fast.rows).toStrictEqual([{ v: '200ms' }]);
  });

  it('sets the application name and idle-in-transaction timeout on every session', async () => {
    const database = await open({ idleInTransactionTimeoutMs: 45_000 }, silentLogger);
    const { rows } = await sql<{ app: string; idle: string }>`
      select current_setting('application_name') as app,
             current_setting('idle_in_transaction_session_timeout') as idle`.execute(database.db);
    expect(rows).toStrictEqual([{ app: `${applicationName}-${opens}`, idle: '45s' }]);
  });
});
