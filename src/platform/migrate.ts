/**
 * Numbered, forward-only SQL migrations (migrations/NNNN_name.sql) run by Kysely's
 * Migrator, which records them in kysely_migration and takes a lock so two processes
 * never migrate at once. A file, once released, is never edited: add the next number.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Migrator, sql, type Kysely, type Migration, type MigrationProvider, type MigrationResultSet } from 'kysely';
import { migrationsDir } from './paths.js';

const FILE_PATTERN = /^(\d{4})_[a-z0-9_]+\.sql$/;

export class SqlFileMigrationProvider implements MigrationProvider {
  constructor(private readonly dir: string = migrationsDir) {}

  async getMigrations(): Promise<Record<string, Migration>> {
    const files = readdirSync(this.dir).filter((f) => f.endsWith('.sql')).sort();
    const migrations: Record<string, Migration> = {};
    let expected = 1;
    for (const file of files) {
      const m = FILE_PATTERN.exec(file);
      if (!m) throw new Error(`migration file ${file} must be named NNNN_snake_case.sql`);
      if (Number(m[1]) !== expected) throw new Error(`migration ${file} is out of sequence (expected number ${expected})`);
      expected++;
      const text = readFileSync(join(this.dir, file), 'utf8');
      // Forward only: no `down`. The whole file runs as one simple-protocol query,
      // inside the Migrator's transaction (all pending files share one transaction, so
      // a failure applies none of them), on a session without statement_timeout (see
      // migrateUp): an index build on a large table may rightly take longer.
      migrations[file.replace(/\.sql$/, '')] = {
        up: async (db) => void (await sql.raw(text).execute(db)),
      };
    }
    return migrations;
  }
}

export interface MigrateOptions {
  /** The folder of NNNN_name.sql files; the package's migrations/ by default. */
  readonly dir?: string;
}

function migrator(db: Kysely<unknown>, options: MigrateOptions): Migrator {
  return new Migrator({ db, provider: new SqlFileMigrationProvider(options.dir) });
}

export interface MigrationState {
  readonly name: string;
  readonly executedAt: Date | undefined;
}

export async function migrationStatus(db: Kysely<unknown>, options: MigrateOptions = {}): Promise<MigrationState[]> {
  const list = await migrator(db, options).getMigrations();
  return list.map((m) => ({ name: m.name, executedAt: m.executedAt }));
}

export async function pendingMigrations(db: Kysely<unknown>, options: MigrateOptions = {}): Promise<string[]> {
  return (await migrationStatus(db, options)).filter((m) => m.executedAt === undefined).map((m) => m.name);
}

export class MigrationError extends Error {
  override readonly name = 'MigrationError';
}

/** Applies every pending migration; returns the names applied. */
export async function migrateUp(db: Kysely<unknown>, options: MigrateOptions = {}): Promise<string[]> {
  // One connection for the whole run with no statement timeout: Kysely takes its
  // migration lock (pg_advisory_xact_lock) before the first file runs, and a second
  // process waiting on that lock must not be cut off by the service's statement_timeout.
  const result: MigrationResultSet = await db.connection().execute(async (conn) => {
    await sql`set statement_timeout = 0`.execute(conn);
    try {
      return await migrator(conn, options).migrateToLatest();
    } finally {
      await sql`reset statement_timeout`.execute(conn);
    }
  });
  if (result.error) {
    const failed = result.results?.find((r) => r.status === 'Error');
    const reason = result.error instanceof Error ? result.error.message : JSON.stringify(result.error);
    // Every pending file runs in one transaction: nothing of this run was applied.
    throw new MigrationError(failed ? `migration ${failed.migrationName} failed: ${reason}` : reason, { cause: result.error });
  }
  return (result.results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}
