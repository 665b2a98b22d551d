/**
 * Backups end to end on the current DB_TARGET: real pg_dump / pg_restore / psql against
 * the machine's PostgreSQL (scratch databases lb_backup_*, dropped), or PGlite data
 * directories in a temp folder.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql, type Kysely } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inspectLoanbook } from '../../src/backup-cli.js';
import type { AppDatabase } from '../../src/app.js';
import { appendAudit, verifyAuditChain } from '../../src/platform/audit.js';
import { canonicalJson } from '../../src/platform/canonical-json.js';
import type { PlatformTables } from '../../src/platform/schema.js';
import { createBackup, manifestName, restoreBackup, verifyBackup, type BackupDeps, type BackupSource, type Manifest } from '../../src/platform/backup/backup.js';
import { BackupError, deriveBackupKeys, openSealedJson, parseHeader, sealJson } from '../../src/platform/backup/format.js';
import type { Figure } from '../../src/platform/backup/verify.js';
import { openDatabase, type Database } from '../../src/platform/database.js';
import { migrateUp } from '../../src/platform/migrate.js';
import { adminPostgresUrl, isPostgres, silentLogger, testDbOptions } from '../support/db.js';
import { startS3Double, type S3Double } from '../support/s3-server.js';

const KEY = randomBytes(32);
const OTHER_KEY = randomBytes(32);
const S3_CREDS = { accessKeyId: 'AKIDBACKUPTEST', secretAccessKey: 'backup-test-secret-0123456789' };

let work: string;
let s3: S3Double;
let tick = 0;
const dropAfter: (() => Promise<void>)[] = [];

function deps(overrides: Partial<BackupDeps> = {}): BackupDeps {
  return {
    key: KEY,
    previousKeys: [],
    tools: { binDir: undefined },
    s3: { endpoint: s3.endpoint, region: 'us-east-1', credentials: S3_CREDS, partBytes: 64 * 1024 },
    loanbookVersion: 'test',
    inspect: inspectLoanbook,
    // A second apart, so each backup gets its own name and "newest" is well defined.
    now: () => new Date(Date.UTC(2026, 11, 1, 0, 0, tick++)),
    ...overrides,
  };
}

interface Target {
  readonly source: BackupSource;
  open(): Promise<Database<AppDatabase>>;
}

/** A new, empty database (or data directory) of the current kind. */
async function emptyTarget(): Promise<Target> {
  if (!isPostgres) {
    const dataDir = await mkdtemp(join(work, 'data-'));
    const dir = join(dataDir, 'pglite');
    return { source: { kind: 'pglite', dir }, open: () => openDatabase<AppDatabase>({ kind: 'pglite', location: dir }, testDbOptions, silentLogger) };
  }
  const name = `lb_backup_${randomBytes(5).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminPostgresUrl });
  await admin.connect();
  await admin.query(`create database ${name}`);
  await admin.end();
  dropAfter.push(async () => {
    const c = new pg.Client({ connectionString: adminPostgresUrl });
    await c.connect();
    await c.query(`drop database if exists ${name} with (force)`).finally(() => c.end());
  });
  const url = new URL(adminPostgresUrl);
  url.pathname = `/${name}`;
  return { source: { kind: 'postgres', url: url.toString() }, open: () => openDatabase<AppDatabase>({ kind: 'postgres', location: url.toString() }, testDbOptions, silentLogger) };
}

async function withDb<T>(target: Target, fn: (db: Kysely<AppDatabase>) => Promise<T>): Promise<T> {
  const database = await target.open();
  try {
    return await fn(database.db);
  } finally {
    await database.close();
  }
}

/** Posts `n` balanced journal entries in `currency` (amounts 1000, 1001, …) and one audit event per entry. */
async function post(db: Kysely<AppDatabase>, currency: string, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    await db.transaction().execute(async (trx) => {
      const id = randomUUID();
      await sql`insert into journal_entries (id, entry_date, description, source_type) values (${id}, '2026-11-30', 'backup test', 'test')`.execute(trx);
      await sql`insert into journal_lines (entry_id, line_no, account_code, currency, amount) values
        (${id}, 1, 'loans_receivable_principal', ${currency}, ${1000 + i}), (${id}, 2, 'cash_clearing', ${currency}, ${-(1000 + i)})`.execute(trx);
      await appendAudit(trx as unknown as Kysely<PlatformTables>, { action: 'test.posted', subjectType: 'journal_entry', subjectId: id, details: { currency } }, new Date(Date.UTC(2026, 10, 30, 12, 0, i)));
    });
  }
}

/** A migrated source with 5 USD entries, 3 EUR entries and 8 audit rows. */
async function seededSource(): Promise<Target> {
  const target = await emptyTarget();
  await withDb(target, async (db) => {
    await migrateUp(db as Kysely<unknown>);
    await post(db, 'USD', 5);
    await post(db, 'EUR', 3);
  });
  return target;
}

function figure(figures: readonly Figure[], name: string): string | undefined {
  return figures.find((f) => f.name === name)?.value;
}

async function currentFigures(target: Target): Promise<Figure[]> {
  return withDb(target, (db) => inspectLoanbook(db as Kysely<unknown>));
}

async function failure(p: Promise<unknown>): Promise<BackupError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof BackupError) return e;
    throw e;
  }
  throw new Error('expected a BackupError');
}

/** The manifest and the key that seals its summary (what an attacker with the key could forge). */
async function manifestOf(dir: string, archive: string): Promise<{ manifest: Manifest; key: Buffer }> {
  const manifest = JSON.parse(await readFile(join(dir, manifestName(archive)), 'utf8')) as Manifest;
  const header = parseHeader(await readFile(join(dir, archive)));
  return { manifest, key: deriveBackupKeys(KEY, (header as { salt: Buffer }).salt).manifest };
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'lb-backup-test-'));
  s3 = await startS3Double({ ...S3_CREDS, region: 'us-east-1', buckets: ['lb-backups'] });
});

afterAll(async () => {
  for (const drop of dropAfter) await drop();
  await s3.close();
  await rm(work, { recursive: true, force: true });
});

describe(`backup and restore (${isPostgres ? 'PostgreSQL, pg_dump' : 'embedded PGlite'})`, { timeout: 120_000 }, () => {
  let source: Target;
  let dir: string;
  let backupFigures: Figure[];
  let archive: string;
  /**
   * A database holding other data than the backup (the seed plus a GBP entry). The
   * failing restores below must leave it as it is; then it is replaced by the backup,
   * and then it moves on (for verify's live comparison). The tests run in order.
   */
  let other: Target;

  beforeAll(async () => {
    source = await seededSource();
    dir = join(work, 'backups');
    const result = await createBackup(source.source, dir, deps());
    backupFigures = result.figures;
    archive = result.archive;
    other = await seededSource();
    await withDb(other, (db) => post(db, 'GBP', 2));
  }, 120_000);

  it('records the source figures: row counts, ledger totals per currency, the audit head', async () => {
    expect(archive).toMatch(new RegExp(`^loanbook-\\d{8}T\\d{6}\\.\\d{3}Z-${source.source.kind}\\.lbk$`));
    expect(figure(backupFigures, 'rows.journal_entries')).toBe('8');
    expect(figure(backupFigures, 'rows.journal_lines')).toBe('16');
    expect(figure(backupFigures, 'ledger.USD.debits')).toBe(String(1000 + 1001 + 1002 + 1003 + 1004));
    expect(figure(backupFigures, 'ledger.USD.credits')).toBe(String(1000 + 1001 + 1002 + 1003 + 1004));
    expect(figure(backupFigures, 'ledger.EUR.debits')).toBe(String(1000 + 1001 + 1002));
    expect(figure(backupFigures, 'audit.head_id')).toBe('8');
    expect(figure(backupFigures, 'audit.chain')).toBe('intact');
    expect(backupFigures).toEqual(await currentFigures(source));
    // The archive is ciphertext: the dump's own signature does not appear in it.
    const bytes = await readFile(join(dir, archive));
    expect(bytes.subarray(0, 9).toString()).toBe('LBKBACKUP');
    expect(bytes.includes(Buffer.from(isPostgres ? 'PGDMP' : 'PG_VERSION'))).toBe(false);
  });

  it('restores into an empty database with the same counts, ledger totals and audit head, and the chain verifies', async () => {
    const target = await emptyTarget();
    const restored = await restoreBackup(dir, target.source, { replace: false }, deps());
    expect(restored.archive).toBe(archive);
    expect(restored.figures).toEqual(backupFigures);
    const chain = await withDb(target, (db) => verifyAuditChain(db));
    expect(chain).toMatchObject({ ok: true, rowsChecked: 8, headHash: figure(backupFigures, 'audit.head_hash') });
  });

  it.each([
    ['without the key it was made with', 'backup_wrong_key', async (file: string): Promise<void> => void file, { key: OTHER_KEY }],
    ['of a truncated archive', 'backup_truncated', async (file: string): Promise<void> => writeFile(file, (await readFile(file)).subarray(0, -100)), {}],
    [
      'of an altered archive',
      'backup_damaged',
      async (file: string): Promise<void> => {
        const b = await readFile(file);
        const at = Math.floor(b.length / 2);
        b.writeUInt8(b.readUInt8(at) ^ 0x40, at);
        await writeFile(file, b);
      },
      {},
    ],
  ] as const)('restore %s fails and leaves the target untouched', async (_what, code, damage, override) => {
    const copyDir = await mkdtemp(join(work, 'damaged-'));
    await copyFile(join(dir, archive), join(copyDir, archive));
    await damage(join(copyDir, archive));
    // Restored with replace over a database holding other data: even then nothing changes.
    const before = await currentFigures(other);
    expect(figure(before, 'ledger.GBP.debits')).toBe('2001');
    const error = await failure(restoreBackup(copyDir, other.source, { replace: true }, deps(override)));
    expect(error.code).toBe(code);
    expect(await currentFigures(other)).toEqual(before);
  });

  it('refuses a non-empty target unless told to replace it; replacing brings it back to the backup', async () => {
    const target = other;
    const refused = await failure(restoreBackup(dir, target.source, { replace: false }, deps()));
    expect(refused.code).toBe('backup_target_not_empty');
    expect(figure(await currentFigures(target), 'ledger.GBP.debits')).toBe('2001');

    const restored = await restoreBackup(join(dir, archive), target.source, { replace: true }, deps());
    expect(restored.figures).toEqual(backupFigures);
    expect(await currentFigures(target)).toEqual(backupFigures);
  });

  it('verify restores into a scratch database and matches the manifest; the live source moving on is reported, not failed', async () => {
    const verifyOptions = { server: source.source.kind === 'postgres' ? source.source.url : undefined, live: source.source };
    const same = await verifyBackup(dir, { ...verifyOptions, strictLive: false }, deps());
    expect(same.ok).toBe(true);
    expect(same.rows.every((r) => r.status === 'ok')).toBe(true);
    expect(same.rows.find((r) => r.name === 'ledger.USD.debits')).toMatchObject({ manifest: '5010', restored: '5010', live: '5010' });

    // `other` now holds the backup (see above); it moves on by one entry.
    const moved = other;
    await withDb(moved, (db) => post(db, 'USD', 1));
    const movedOptions = { server: verifyOptions.server, live: moved.source };
    const report = await verifyBackup(dir, { ...movedOptions, strictLive: false }, deps());
    expect(report.ok).toBe(true);
    expect(report.rows.find((r) => r.name === 'rows.journal_entries')).toMatchObject({ manifest: '8', restored: '8', live: '9', status: 'live differs' });
    const strict = await verifyBackup(dir, { ...movedOptions, strictLive: true }, deps());
    expect(strict.ok).toBe(false);
    expect(strict.rows.find((r) => r.name === 'audit.head_id')).toMatchObject({ restored: '8', live: '9', status: 'MISMATCH' });
    if (isPostgres) {
      const c = new pg.Client({ connectionString: adminPostgresUrl });
      await c.connect();
      const left = await c.query(`select datname from pg_database where datname like 'lb_verify_%'`).finally(() => c.end());
      expect(left.rows).toEqual([]);
    }
  });

  it('verify fails when the restored copy does not match the manifest, and refuses an altered manifest', async () => {
    const copyDir = await mkdtemp(join(work, 'manifest-'));
    await copyFile(join(dir, archive), join(copyDir, archive));
    await copyFile(join(dir, manifestName(archive)), join(copyDir, manifestName(archive)));
    const { manifest, key } = await manifestOf(copyDir, archive);
    const { summary_sealed, ...plain } = manifest;
    const figures = openSealedJson<Figure[]>(key, summary_sealed, canonicalJson(plain));
    // A manifest recording 9 journal entries where the dump holds 8 (a dump that lost rows).
    const forged = figures.map((f) => (f.name === 'rows.journal_entries' ? { ...f, value: '9' } : f));
    await writeFile(join(copyDir, manifestName(archive)), JSON.stringify({ ...plain, summary_sealed: sealJson(key, forged, canonicalJson(plain)) }));
    const report = await verifyBackup(copyDir, { server: source.source.kind === 'postgres' ? source.source.url : undefined, live: undefined, strictLive: false }, deps());
    expect(report.ok).toBe(false);
    expect(report.rows.filter((r) => r.status === 'MISMATCH')).toEqual([{ name: 'rows.journal_entries', manifest: '9', restored: '8', live: undefined, status: 'MISMATCH' }]);

    // Without the key, a count cannot be changed: the summary is sealed with the rest of the manifest as additional data.
    await writeFile(join(copyDir, manifestName(archive)), JSON.stringify({ ...manifest, dump_bytes: manifest.dump_bytes + 1 }));
    const altered = await failure(verifyBackup(copyDir, { server: undefined, live: undefined, strictLive: false }, deps()));
    expect(altered.code).toBe('backup_damaged');
  });

  it('round-trips through S3-compatible storage (multipart upload, newest by name)', async () => {
    const older = await createBackup(source.source, 's3://lb-backups/nightly', deps());
    const newer = await createBackup(source.source, 's3://lb-backups/nightly', deps());
    expect(newer.archive > older.archive).toBe(true);
    expect(s3.objects.has(`lb-backups/nightly/${newer.archive}`)).toBe(true);
    expect(s3.objects.has(`lb-backups/nightly/${manifestName(newer.archive)}`)).toBe(true);
    // 64 KiB parts: every archive here is larger, so it went up as a multipart upload.
    expect(newer.manifest.archive_bytes).toBeGreaterThan(64 * 1024);
    expect(s3.log.filter((r) => r.method === 'POST' && r.url.endsWith(`${newer.archive}?uploads=`))).toHaveLength(1);
    const target = await emptyTarget();
    const restored = await restoreBackup('s3://lb-backups/nightly', target.source, { replace: false }, deps());
    expect(restored.archive).toBe(newer.archive);
    expect(restored.figures).toEqual(backupFigures);
    const report = await verifyBackup('s3://lb-backups/nightly', { server: source.source.kind === 'postgres' ? source.source.url : undefined, live: undefined, strictLive: false }, deps());
    expect(report.ok).toBe(true);
  });

  it.runIf(isPostgres)('a missing pg_dump, or one that fails, is a clear error and stores nothing', async () => {
    const out = await mkdtemp(join(work, 'nodump-'));
    const missing = await failure(createBackup(source.source, out, deps({ tools: { binDir: join(work, 'no-such-bin') } })));
    expect(missing.code).toBe('backup_tool_missing');
    expect(missing.message).toMatch(/pg_dump was not found .*PG_BIN_DIR/);

    const bin = join(work, 'failing-bin');
    await mkdir(bin, { recursive: true });
    // pg_dump that writes half a dump and then fails, as it does when the connection drops mid-way.
    await writeFile(join(bin, 'pg_dump'), '#!/bin/sh\nprintf "PGDMP partial dump"\necho "pg_dump: error: connection to server lost" >&2\nexit 1\n');
    await chmod(join(bin, 'pg_dump'), 0o755);
    const failed = await failure(createBackup(source.source, out, deps({ tools: { binDir: bin } })));
    expect(failed.code).toBe('backup_tool_failed');
    expect(failed.message).toMatch(/pg_dump failed \(exit code 1\):\n {2}pg_dump: error: connection to server lost/);
    expect(await readdir(out)).toEqual([]);
  });

  it.runIf(!isPostgres)('refuses to back up an embedded database another process has open', async () => {
    const busy = source.source as { kind: 'pglite'; dir: string };
    const open = await source.open();
    try {
      expect(existsSync(join(busy.dir, 'postmaster.pid'))).toBe(true);
      const error = await failure(createBackup(source.source, join(work, 'busy'), deps()));
      expect(error.code).toBe('backup_source_in_use');
      expect(error.message).toMatch(/stop `loanbook serve` first/);
    } finally {
      await open.close();
    }
  });
});
