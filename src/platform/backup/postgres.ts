/**
 * PostgreSQL through its own tools: `pg_dump --format=custom` out, `pg_restore` in, both
 * spawned and streamed (a dump never sits whole in memory). The password travels in the
 * child's PGPASSWORD, never on a command line (visible in `ps`) or in a message.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { typeParsers } from '../database.js';
import { BackupError } from './format.js';

export interface PgTools {
  /** Directory holding pg_dump and pg_restore; undefined: found on PATH. */
  readonly binDir: string | undefined;
}

interface Connection {
  /** The URL without its password, for --dbname. */
  readonly dbname: string;
  readonly env: NodeJS.ProcessEnv;
}

function connection(url: string): Connection {
  const u = new URL(url);
  const password = decodeURIComponent(u.password);
  u.password = '';
  // eslint-disable-next-line no-restricted-properties -- the child inherits this process's environment (PATH, PGSSL*, …); nothing is read from it here
  const env: NodeJS.ProcessEnv = { ...process.env };
  if (password !== '') env.PGPASSWORD = password;
  return { dbname: u.toString(), env };
}

/** The URL with the password masked, for messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return 'PostgreSQL';
  }
}

/** A one-connection Kysely over `url`, with the same type parsers as the application. */
export function openPostgres(url: string): Kysely<unknown> {
  const pool = new pg.Pool({ connectionString: url, max: 1, types: typeParsers, application_name: 'loanbook-backup' });
  pool.on('error', () => undefined);
  return new Kysely<unknown>({ dialect: new PostgresDialect({ pool }) });
}

type Tool = 'pg_dump' | 'pg_restore' | 'psql';

function tool(tools: PgTools, name: Tool): string {
  return tools.binDir === undefined ? name : join(tools.binDir, name);
}

interface Running {
  readonly child: ChildProcess;
  /** Resolves when the tool exited 0; rejects with a BackupError naming the tool and its last error lines. */
  readonly done: Promise<void>;
}

function run(tools: PgTools, name: Tool, args: string[], env: NodeJS.ProcessEnv, pipes: { stdin: boolean; stdout: boolean }): Running {
  const child = spawn(tool(tools, name), args, { env, stdio: [pipes.stdin ? 'pipe' : 'ignore', pipes.stdout ? 'pipe' : 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (d: string) => {
    stderr = (stderr + d).slice(-4000);
  });
  const done = new Promise<void>((resolve, reject) => {
    child.once('error', (e: NodeJS.ErrnoException) => {
      reject(
        e.code === 'ENOENT'
          ? new BackupError(
              'backup_tool_missing',
              `${name} was not found (${tool(tools, name)}): install the PostgreSQL client tools of the server's major version ` +
                '(Debian: apt-get install postgresql-client-15) or set PG_BIN_DIR to their directory',
            )
          : new BackupError('backup_tool_failed', `${name} could not start: ${e.message}`, { cause: e }),
      );
    });
    child.once('close', (code, signal) => {
      if (code === 0) resolve();
      else {
        const lines = stderr.trim().split('\n').slice(-5).join('\n  ');
        reject(new BackupError('backup_tool_failed', `${name} failed (${signal ?? `exit code ${code}`})${lines ? `:\n  ${lines}` : ''}`));
      }
    });
  });
  // Awaited by the caller; this keeps an early failure from being reported as unhandled.
  done.catch(() => undefined);
  return { child, done };
}

/**
 * Dumps `url` in custom format to `sink`, and calls `inspect` inside the same snapshot
 * (a repeatable-read transaction whose snapshot pg_dump imports with --snapshot), so the
 * figures recorded beside the dump describe exactly the rows in it, however busy the
 * database is. `sink` receives the dump and must consume it; the dump stream fails (and
 * the sink with it) when pg_dump exits non-zero, so no incomplete dump is ever stored.
 */
export async function dumpPostgres<T>(
  url: string,
  tools: PgTools,
  inspect: (db: Kysely<unknown>) => Promise<T>,
  sink: (dump: AsyncIterable<Buffer>) => Promise<void>,
): Promise<T> {
  const db = openPostgres(url);
  try {
    return await db
      .transaction()
      .setIsolationLevel('repeatable read')
      .setAccessMode('read only')
      .execute(async (trx) => {
        // The exporting transaction sits idle while pg_dump runs; it must outlive the dump.
        await sql`set local idle_in_transaction_session_timeout = 0`.execute(trx);
        await sql`set local statement_timeout = 0`.execute(trx);
        const snapshot = (await sql<{ s: string }>`select pg_export_snapshot() as s`.execute(trx)).rows[0]?.s as string;
        const inspected = await inspect(trx);
        const conn = connection(url);
        const dump = run(tools, 'pg_dump', ['--format=custom', `--snapshot=${snapshot}`, '--no-password', `--dbname=${conn.dbname}`], conn.env, {
          stdin: false,
          stdout: true,
        });
        async function* output(): AsyncGenerator<Buffer> {
          const stdout = dump.child.stdout;
          if (stdout) for await (const chunk of stdout as AsyncIterable<Buffer>) yield chunk;
          await dump.done;
        }
        try {
          await sink(output());
        } finally {
          if (dump.child.exitCode === null) dump.child.kill('SIGKILL');
        }
        await dump.done;
        return inspected;
      });
  } finally {
    await db.destroy();
  }
}

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** The schemas of the database other than the system's. */
async function userSchemas(url: string): Promise<string[]> {
  const db = openPostgres(url);
  try {
    const r = await sql<{ name: string }>`
      select nspname as name from pg_catalog.pg_namespace
      where nspname not in ('pg_catalog', 'information_schema') and nspname !~ '^pg_(toast|temp)'
      order by nspname
    `.execute(db);
    return r.rows.map((row) => row.name);
  } finally {
    await db.destroy();
  }
}

/**
 * Restores a custom-format dump into `url` in one transaction: pg_restore (--no-owner)
 * turns the archive into SQL and psql runs it with --single-transaction and
 * ON_ERROR_STOP, after `DROP SCHEMA … CASCADE` of every schema the target has when
 * `replace` is set. All of it commits, or nothing does.
 *
 * Not `pg_restore --clean --single-transaction`: on PostgreSQL 15 the drops it generates
 * fail on a partitioned table's primary key ("cannot drop inherited constraint
 * loan_transactions_default_pkey"), and object-by-object drops would leave behind
 * anything the backup does not hold.
 *
 * psql must never see the end of its input unless the dump was read whole and
 * pg_restore exited 0 (it would commit): the SQL is forwarded by this process, and psql
 * is killed first whenever anything fails.
 */
export async function restorePostgres(url: string, tools: PgTools, dump: Readable, options: { replace: boolean }): Promise<void> {
  const conn = connection(url);
  let prelude = '\\set ON_ERROR_STOP on\n';
  if (options.replace) {
    const schemas = await userSchemas(url);
    prelude += schemas.map((s) => `DROP SCHEMA ${quoteIdent(s)} CASCADE;\n`).join('');
    if (schemas.includes('public')) prelude += 'CREATE SCHEMA public;\n';
  }
  const psql = run(tools, 'psql', ['--no-psqlrc', '--quiet', '--single-transaction', '--file=-', '--no-password', `--dbname=${conn.dbname}`], conn.env, {
    stdin: true,
    stdout: false,
  });
  const restore = run(tools, 'pg_restore', ['--no-owner', '--file=-'], conn.env, { stdin: true, stdout: true });
  const stop = () => {
    psql.child.kill('SIGKILL');
    restore.child.kill('SIGKILL');
  };
  // Registered before the pipeline's handlers, which close pg_restore's input.
  dump.once('error', stop);
  const psqlIn = psql.child.stdin as Writable;
  const restoreIn = restore.child.stdin as Writable;
  psqlIn.on('error', () => undefined);
  restoreIn.on('error', () => undefined);
  try {
    psqlIn.write(prelude);
    await Promise.all([
      pipeline(dump, restoreIn),
      pipeline(restore.child.stdout as Readable, psqlIn, { end: false }),
      restore.done,
      // psql failing (a statement error) ends the restore at once.
      Promise.race([psql.done, restore.done]),
    ]);
  } catch (e) {
    stop();
    const toolErrors = await Promise.all([psql.done, restore.done].map((p) => p.then(() => undefined, (t: unknown) => t)));
    // A damaged archive explains more than the tools it stopped; a tool that failed on its
    // own explains more than the broken pipes it caused.
    throw e instanceof BackupError && e.code !== 'backup_tool_failed' ? e : (toolErrors.find((t) => t !== undefined && !isKilled(t)) ?? e);
  }
  psqlIn.end();
  await psql.done;
}

function isKilled(e: unknown): boolean {
  return e instanceof BackupError && /\(SIGKILL\)/.test(e.message);
}

/** Whether the database holds any table outside the system schemas. */
export async function hasUserTables(db: Kysely<unknown>): Promise<boolean> {
  const r = await sql<{ n: bigint }>`
    select count(*) as n from pg_catalog.pg_class c join pg_catalog.pg_namespace s on s.oid = c.relnamespace
    where c.relkind in ('r', 'p') and s.nspname not in ('pg_catalog', 'information_schema') and s.nspname not like 'pg_toast%'
  `.execute(db);
  return (r.rows[0]?.n ?? 0n) > 0n;
}

/**
 * Runs `fn` on a fresh database created on the same server as `url`, dropped afterwards
 * (also when `fn` fails). Needs the CREATEDB privilege.
 */
export async function withScratchDatabase<T>(url: string, name: string, fn: (scratchUrl: string) => Promise<T>): Promise<T> {
  if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`bad scratch database name ${name}`);
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  try {
    await admin.query(`create database ${name}`);
  } catch (e) {
    await admin.end();
    throw new BackupError('backup_tool_failed', `cannot create the scratch database ${name} (the role needs CREATEDB): ${(e as Error).message}`, { cause: e });
  }
  const scratch = new URL(url);
  scratch.pathname = `/${name}`;
  try {
    return await fn(scratch.toString());
  } finally {
    await admin.query(`drop database if exists ${name} with (force)`).finally(() => admin.end());
  }
}

/** Runs `fn` in one repeatable-read, read-only transaction on `url`: a consistent view of a live database. */
export async function inspectPostgres<T>(url: string, fn: (db: Kysely<unknown>) => Promise<T>): Promise<T> {
  const db = openPostgres(url);
  try {
    return await db
      .transaction()
      .setIsolationLevel('repeatable read')
      .setAccessMode('read only')
      .execute(async (trx) => {
        await sql`set local statement_timeout = 0`.execute(trx);
        return fn(trx);
      });
  } finally {
    await db.destroy();
  }
}
