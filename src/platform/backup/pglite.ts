/**
 * The embedded database (PGlite): its whole data directory as a gzipped tarball
 * (`dumpDataDir`), loaded back with `loadDataDir`. PGlite holds the tarball in memory,
 * so an embedded backup needs memory for one compressed copy of the database; the
 * embedded mode is for small installations, and PostgreSQL backups stream.
 *
 * PGlite is one process's database: while `loanbook serve` has a data directory open,
 * nothing else may open it. PGlite marks an open directory with `postmaster.pid`
 * (removed on a clean close), which is how a running server is detected.
 */
import { existsSync } from 'node:fs';
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { PGlite } from '@electric-sql/pglite';
import { createPgConfig } from '@electric-sql/pglite/node-postgres';
import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { typeParsers } from '../database.js';
import { BackupError } from './format.js';

const PID_FILE = 'postmaster.pid';

/** Throws `backup_source_in_use` when a process has `dir` open. */
export function assertNotInUse(dir: string): void {
  if (existsSync(join(dir, PID_FILE))) {
    throw new BackupError(
      'backup_source_in_use',
      `the embedded database ${dir} is open in another process (stop \`loanbook serve\` first). ` +
        `If no process uses it (one crashed), remove ${join(dir, PID_FILE)} and retry`,
    );
  }
}

/** Kysely over an open PGlite, with the application's type parsers; destroy it before closing `pglite`. */
export function kyselyOver(pglite: PGlite): Kysely<unknown> {
  const bridge = createPgConfig(pglite);
  const pool = new pg.Pool({ ...bridge, connection: bridge.connection, max: 1, idleTimeoutMillis: 0, types: typeParsers } as pg.PoolConfig);
  return new Kysely<unknown>({ dialect: new PostgresDialect({ pool }) });
}

/** Opens `dir`, runs `inspect`, then hands its tarball to `sink`. */
export async function dumpPglite<T>(
  dir: string,
  inspect: (db: Kysely<unknown>) => Promise<T>,
  sink: (dump: AsyncIterable<Buffer>) => Promise<void>,
): Promise<T> {
  if (!existsSync(join(dir, 'PG_VERSION'))) {
    throw new BackupError('backup_not_found', `no embedded database in ${dir} (is DATA_DIR right?)`);
  }
  assertNotInUse(dir);
  const pglite = await PGlite.create(dir);
  try {
    const db = kyselyOver(pglite);
    let inspected: T;
    try {
      inspected = await inspect(db);
    } finally {
      await db.destroy();
    }
    const tarball = await pglite.dumpDataDir('gzip');
    async function* bytes(): AsyncGenerator<Buffer> {
      for await (const chunk of tarball.stream() as unknown as AsyncIterable<Uint8Array>) yield Buffer.from(chunk);
    }
    await sink(bytes());
    return inspected;
  } finally {
    await pglite.close();
  }
}

/** An in-memory PGlite loaded from a tarball (verification's scratch database). */
export async function loadPgliteInMemory(tarball: Buffer): Promise<PGlite> {
  return PGlite.create({ loadDataDir: new Blob([tarball]) });
}

/** Whether `dir` holds anything. */
export async function isNonEmptyDir(dir: string): Promise<boolean> {
  try {
    return (await readdir(dir)).length > 0;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

/**
 * Puts the tarball's database at `dir`: loaded into a sibling directory first and moved
 * into place only once PGlite has opened it, so a failure leaves `dir` as it was.
 * `check` runs on the loaded database before the swap.
 */
export async function restorePglite(dir: string, tarball: Buffer, replace: boolean, check: (db: Kysely<unknown>) => Promise<void>): Promise<void> {
  assertNotInUse(dir);
  if (!replace && (await isNonEmptyDir(dir))) {
    throw new BackupError('backup_target_not_empty', `${dir} already holds a database; pass --force to replace it`);
  }
  await mkdir(dirname(dir), { recursive: true, mode: 0o700 });
  const tag = randomBytes(4).toString('hex');
  const staging = `${dir}.restoring-${tag}`;
  const old = `${dir}.replaced-${tag}`;
  try {
    const pglite = await PGlite.create({ dataDir: staging, loadDataDir: new Blob([tarball]) });
    try {
      const db = kyselyOver(pglite);
      try {
        await check(db);
      } finally {
        await db.destroy();
      }
    } finally {
      await pglite.close();
    }
    const hadOld = existsSync(dir);
    if (hadOld) await rename(dir, old);
    await rename(staging, dir);
    if (hadOld) await rm(old, { recursive: true, force: true });
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}
