/**
 * `loanbook backup`, `loanbook backup verify` and `loanbook restore`: the commands, and
 * the figures a Loanbook database is checked by (row counts, ledger totals per currency,
 * the audit chain's head), which src/platform/backup compares without knowing what
 * they mean.
 */
import { join, resolve } from 'node:path';
import { Option, type Command } from 'commander';
import { sql, type Kysely } from 'kysely';
import type { AppDatabase } from './app.js';
import { sumsByAccount, type LedgerExecutor } from './ledger/repository.js';
import { verifyAuditChain } from './platform/audit.js';
import { ConfigError, fingerprint, loadConfig, type Config } from './platform/config.js';
import { coerceError } from './platform/errors.js';
import {
  createBackup,
  manifestName,
  restoreBackup,
  verifyBackup,
  type BackupDeps,
  type BackupSource,
} from './platform/backup/backup.js';
import { BackupError } from './platform/backup/format.js';
import { redactUrl } from './platform/backup/postgres.js';
import { renderRows, tableRowCounts, type Figure } from './platform/backup/verify.js';
import { packageVersion } from './platform/paths.js';

/**
 * The figures of a Loanbook database: `rows.<table>`, `schema.last_migration`,
 * `ledger.<currency>.debits|credits` (sums of the journal lines, minor units),
 * `audit.head_id`, `audit.head_hash` and `audit.chain` (must be "intact").
 */
export async function inspectLoanbook(db: Kysely<unknown>): Promise<Figure[]> {
  const figures = await tableRowCounts(db);
  const present = new Set(figures.map((f) => f.name.slice('rows.'.length)));
  if (present.has('kysely_migration')) {
    const r = await sql<{ last: string | null }>`select max(name) as last from kysely_migration`.execute(db);
    figures.push({ name: 'schema.last_migration', value: r.rows[0]?.last ?? 'none' });
  }
  if (present.has('journal_lines')) {
    const totals = new Map<string, { debits: bigint; credits: bigint }>();
    for (const row of await sumsByAccount(db as unknown as LedgerExecutor, null)) {
      const t = totals.get(row.currency) ?? { debits: 0n, credits: 0n };
      t.debits += BigInt(row.debits);
      t.credits += BigInt(row.credits);
      totals.set(row.currency, t);
    }
    for (const currency of [...totals.keys()].sort()) {
      const t = totals.get(currency) as { debits: bigint; credits: bigint };
      figures.push({ name: `ledger.${currency}.debits`, value: t.debits.toString() });
      figures.push({ name: `ledger.${currency}.credits`, value: t.credits.toString() });
    }
  }
  if (present.has('audit_log')) {
    const chain = await verifyAuditChain(db as unknown as Kysely<AppDatabase>);
    figures.push({ name: 'audit.head_id', value: String(chain.rowsChecked) });
    figures.push({ name: 'audit.head_hash', value: chain.headHash });
    figures.push({
      name: 'audit.chain',
      value: chain.ok ? 'intact' : `broken at ${chain.firstBroken?.id}: ${chain.firstBroken?.reason}`,
      expect: 'intact',
    });
  }
  return figures;
}

export function backupDeps(cfg: Config): BackupDeps {
  const s3 = cfg.backup.s3;
  return {
    key: cfg.encryptionKey,
    previousKeys: cfg.previousEncryptionKeys,
    tools: { binDir: cfg.backup.pgBinDir },
    s3: {
      endpoint: s3.endpoint,
      region: s3.region,
      credentials: s3.accessKeyId !== undefined && s3.secretAccessKey !== undefined ? { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } : undefined,
    },
    loanbookVersion: packageVersion,
    inspect: inspectLoanbook,
    now: () => new Date(),
  };
}

/** The configured database as a backup source. */
function sourceOf(cfg: Config): BackupSource {
  return cfg.databaseUrl !== undefined ? { kind: 'postgres', url: cfg.databaseUrl } : { kind: 'pglite', dir: join(cfg.dataDir, 'pglite') };
}

/** --to / a location argument, else BACKUP_LOCATION, else DATA_DIR/backups for the embedded database. */
function defaultLocation(cfg: Config, given: string | undefined, what: string): string {
  const location = given ?? cfg.backup.location ?? (cfg.databaseUrl === undefined ? join(cfg.dataDir, 'backups') : undefined);
  if (location === undefined) {
    throw new BackupError('backup_invalid_location', `${what}: give a directory or s3://bucket/prefix (or set BACKUP_LOCATION)`);
  }
  return location;
}

function loadCfg(): Config {
  try {
    return loadConfig();
  } catch (e) {
    if (e instanceof ConfigError) throw new BackupError('backup_invalid_location', e.message);
    throw e;
  }
}

/** Expected failures print one line with their code and exit 1; anything else goes to the caller. */
function run<A extends unknown[]>(fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (e) {
      if (e instanceof BackupError) {
        process.stderr.write(`loanbook: ${e.message} [${e.code}]\n`);
        process.exitCode = 1;
        return;
      }
      throw coerceError(e);
    }
  };
}

function keyNote(cfg: Config): string {
  return cfg.secretSources.encryptionKey === 'generated'
    ? `ENCRYPTION_KEY ${fingerprint(cfg.encryptionKey)} is the key generated in ${join(cfg.dataDir, 'secrets.json')}: keep a copy of it apart from the backups, or they cannot be restored`
    : `ENCRYPTION_KEY ${fingerprint(cfg.encryptionKey)}`;
}

const BACKUP_ENV =
  '\nEnvironment:\n' +
  '  DATABASE_URL, DATA_DIR   the database (PostgreSQL, or embedded under DATA_DIR)\n' +
  '  ENCRYPTION_KEY           backups are encrypted with a key derived from it; ENCRYPTION_KEY_PREVIOUS still restore\n' +
  '  BACKUP_LOCATION          default location: a directory or s3://bucket/prefix\n' +
  '  PG_BIN_DIR               directory of pg_dump / pg_restore (default: on PATH)\n' +
  '  S3_ENDPOINT, S3_REGION   S3-compatible storage (default: AWS, us-east-1); path-style addressing\n' +
  '  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY\n';

export function registerBackupCommands(program: Command): void {
  const backup = program
    .command('backup')
    .description(
      'Back up the database, encrypted: PostgreSQL with pg_dump (custom format), the embedded database with its data ' +
        'directory (stop `loanbook serve` first). Writes loanbook-<UTC time>-<kind>.lbk and its .manifest.json.',
    )
    .option('--to <location>', 'a directory or s3://bucket/prefix (default: BACKUP_LOCATION, else DATA_DIR/backups when embedded)')
    .addHelpText('after', BACKUP_ENV)
    .action(
      run(async (opts: { to?: string }) => {
        const cfg = loadCfg();
        const location = defaultLocation(cfg, opts.to, 'backup --to');
        const started = Date.now();
        const result = await createBackup(sourceOf(cfg), location, backupDeps(cfg));
        const m = result.manifest;
        process.stdout.write(
          `backed up ${m.source} to ${result.location}\n` +
            `  ${m.archive_bytes} bytes (dump ${m.dump_bytes} bytes), sha256 ${m.archive_sha256}, ${((Date.now() - started) / 1000).toFixed(1)} s\n` +
            `  manifest ${manifestName(result.archive)}; ${result.figures.length} figures recorded\n` +
            `  ${keyNote(cfg)}\n`,
        );
      }),
    );

  backup
    .command('verify')
    .description(
      'Restore a backup into a scratch database (PostgreSQL: lb_verify_<random> on the DATABASE_URL server, dropped afterwards; ' +
        'embedded: in memory) and compare its row counts, ledger totals and audit-chain head with the manifest (must match) ' +
        'and with the live database (reported; it may have moved on). Exits 1 on any mismatch.',
    )
    .argument('[location]', 'an .lbk archive, or a directory / s3://bucket/prefix (its newest backup)')
    .option('--strict-live', 'also fail when the live database differs (use on a quiesced source)')
    .addHelpText('after', BACKUP_ENV)
    .action(
      run(async (location: string | undefined, opts: { strictLive?: boolean }) => {
        const cfg = loadCfg();
        const source = sourceOf(cfg);
        const report = await verifyBackup(
          defaultLocation(cfg, location, 'backup verify'),
          { server: cfg.databaseUrl, live: source, strictLive: opts.strictLive === true },
          backupDeps(cfg),
        );
        process.stdout.write(`${report.archive} (${report.meta.kind}, made ${report.meta.created_at} by Loanbook ${report.meta.loanbook_version})\n`);
        for (const n of report.notes) process.stdout.write(`  ${n}\n`);
        process.stdout.write('\n' + renderRows(report.rows, { manifest: report.manifest !== undefined, live: report.rows.some((r) => r.live !== undefined) }));
        const bad = report.rows.filter((r) => r.status === 'MISMATCH').length;
        process.stdout.write(report.ok ? '\nverified: the backup restores and matches\n' : `\nVERIFY FAILED: ${bad} figure(s) do not match\n`);
        if (!report.ok) process.exitCode = 1;
      }),
    );

  program
    .command('restore')
    .description(
      'Restore a backup. PostgreSQL: into DATABASE_URL (or --into), pg_restore --no-owner piped to psql --single-transaction; ' +
        'a database that has tables needs --yes, which drops its schemas in the same transaction. Embedded: into DATA_DIR ' +
        '(or --into), with `loanbook serve` stopped; a data directory that holds a database needs --force. Nothing is ' +
        'written unless the whole backup decrypts and authenticates, and the restored audit chain must verify.',
    )
    .argument('<location>', 'an .lbk archive, or a directory / s3://bucket/prefix (its newest backup)')
    .option('--into <target>', 'postgres://… URL or a data directory (default: DATABASE_URL, else DATA_DIR)')
    .addOption(new Option('--yes', 'replace the contents of a non-empty target'))
    .addOption(new Option('--force', 'same as --yes'))
    .addHelpText('after', BACKUP_ENV)
    .action(
      run(async (location: string, opts: { into?: string; yes?: boolean; force?: boolean }) => {
        const cfg = loadCfg();
        let target: BackupSource;
        if (opts.into === undefined) target = sourceOf(cfg);
        else if (/^postgres(ql)?:\/\//.test(opts.into)) target = { kind: 'postgres', url: opts.into };
        else target = { kind: 'pglite', dir: join(resolve(opts.into), 'pglite') };
        const result = await restoreBackup(location, target, { replace: opts.yes === true || opts.force === true }, backupDeps(cfg));
        const head = result.figures.find((f) => f.name === 'audit.head_id')?.value ?? '0';
        process.stdout.write(
          `restored ${result.archive} (${result.meta.kind}, made ${result.meta.created_at}) into ` +
            `${target.kind === 'postgres' ? redactUrl(target.url) : target.dir}\n  audit chain intact: ${head} row(s)\n`,
        );
      }),
    );
}
