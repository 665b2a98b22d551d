/**
 * Backup, restore and verification of a database, domain-free: the figures a backup is
 * checked by come from an `Inspect` function the caller supplies.
 *
 * A backup is two objects side by side: `loanbook-<UTC time>-<kind>.lbk` (the encrypted
 * dump, see format.ts) and `….manifest.json` (sizes, the archive's SHA-256 and the
 * source's figures, sealed: row counts and ledger totals are the lender's business).
 * A restore writes nothing until the whole archive has authenticated.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { canonicalJson } from '../canonical-json.js';
import { BackupError, DecryptStream, EncryptStream, FORMAT_VERSION, openSealedJson, sealJson, type ArchiveMeta } from './format.js';
import { dumpPglite, isNonEmptyDir, kyselyOver, loadPgliteInMemory, restorePglite, assertNotInUse } from './pglite.js';
import { dumpPostgres, hasUserTables, inspectPostgres, openPostgres, redactUrl, restorePostgres, withScratchDatabase, type PgTools } from './postgres.js';
import { ARCHIVE_SUFFIX, downloadTo, parseLocation, readSmall, writeSmall, type BackupStore, type S3Settings } from './storage.js';
import { compareFigures, type Figure, type Inspect, type VerifyRow } from './verify.js';

export type BackupSource = { readonly kind: 'postgres'; readonly url: string } | { readonly kind: 'pglite'; readonly dir: string };

export interface BackupDeps {
  /** ENCRYPTION_KEY: backups are made with it. */
  readonly key: Buffer;
  /** Keys being rotated out: backups they made still restore. */
  readonly previousKeys: readonly Buffer[];
  readonly tools: PgTools;
  readonly s3: S3Settings;
  readonly loanbookVersion: string;
  readonly inspect: Inspect;
  readonly now: () => Date;
}

export interface Manifest {
  readonly format: 'loanbook-backup-manifest';
  readonly format_version: number;
  readonly archive: string;
  readonly created_at: string;
  readonly kind: BackupSource['kind'];
  readonly loanbook_version: string;
  /** The source, with any password masked. */
  readonly source: string;
  readonly archive_bytes: number;
  readonly archive_sha256: string;
  /** Size of the dump before encryption. */
  readonly dump_bytes: number;
  /** The source's figures (`Figure[]`), AES-256-GCM under the archive's manifest key; the rest of the manifest is its additional data. */
  readonly summary_sealed: string;
}

const NAME_PATTERN = /^loanbook-\d{8}T\d{6}(\.\d{3})?Z-(postgres|pglite)\.lbk$/;

export function manifestName(archive: string): string {
  return archive.slice(0, -ARCHIVE_SUFFIX.length) + '.manifest.json';
}

function archiveName(now: Date, kind: string): string {
  const stamp = now.toISOString().replace(/[-:]/g, '');
  return `loanbook-${stamp}-${kind}${ARCHIVE_SUFFIX}`;
}

function sealAad(manifest: Omit<Manifest, 'summary_sealed'>): string {
  return canonicalJson(manifest);
}

function describeSource(source: BackupSource): string {
  return source.kind === 'postgres' ? `PostgreSQL ${redactUrl(source.url)}` : `embedded PGlite ${source.dir}`;
}

export interface BackupResult {
  readonly location: string;
  readonly archive: string;
  readonly manifest: Manifest;
  readonly figures: Figure[];
}

/** Dumps `source` into `location` (a directory or s3://bucket/prefix). */
export async function createBackup(source: BackupSource, location: string, deps: BackupDeps): Promise<BackupResult> {
  const { store, name: given } = parseLocation(location, deps.s3);
  if (given !== undefined) {
    throw new BackupError('backup_invalid_location', `--to takes a directory or s3://bucket/prefix; backup names are chosen (${given} given)`);
  }
  const now = deps.now();
  const name = archiveName(now, source.kind);
  const meta: ArchiveMeta = { kind: source.kind, created_at: now.toISOString(), loanbook_version: deps.loanbookVersion };
  const encrypt = new EncryptStream(deps.key, meta);
  const hash = createHash('sha256');
  let archiveBytes = 0;
  let dumpBytes = 0;
  const sink = async (dump: AsyncIterable<Buffer>) => {
    const counted = async function* () {
      for await (const chunk of dump) {
        dumpBytes += chunk.length;
        yield chunk;
      }
    };
    const tap = new Transform({
      transform(chunk: Buffer, _enc, done) {
        hash.update(chunk);
        archiveBytes += chunk.length;
        done(null, chunk);
      },
    });
    // A store that fails stops the dump (rather than leaving it blocked on a full pipe).
    const putting = store.put(name, tap).catch((e: unknown) => {
      tap.destroy(e as Error);
      throw e;
    });
    // Both settle before the backup answers: a failed dump must not return while the store
    // is still removing its partial file.
    const [dumped, stored] = await Promise.allSettled([pipeline(Readable.from(counted()), encrypt, tap), putting]);
    if (dumped.status === 'rejected') throw dumped.reason;
    if (stored.status === 'rejected') throw stored.reason;
  };
  const figures =
    source.kind === 'postgres' ? await dumpPostgres(source.url, deps.tools, deps.inspect, sink) : await dumpPglite(source.dir, deps.inspect, sink);
  const plain: Omit<Manifest, 'summary_sealed'> = {
    format: 'loanbook-backup-manifest',
    format_version: FORMAT_VERSION,
    archive: name,
    created_at: meta.created_at,
    kind: source.kind,
    loanbook_version: deps.loanbookVersion,
    source: describeSource(source),
    archive_bytes: archiveBytes,
    archive_sha256: hash.digest('hex'),
    dump_bytes: dumpBytes,
  };
  const manifest: Manifest = { ...plain, summary_sealed: sealJson(encrypt.manifestKey, figures, sealAad(plain)) };
  await writeSmall(store, manifestName(name), JSON.stringify(manifest, null, 2) + '\n');
  return { location: `${store.description}/${name}`, archive: name, manifest, figures };
}

/** The newest `loanbook-*.lbk` in the store, by the UTC time in its name. */
async function latestArchive(store: BackupStore): Promise<string> {
  const names = (await store.list()).filter((n) => NAME_PATTERN.test(n)).sort();
  const last = names.at(-1);
  if (last === undefined) throw new BackupError('backup_not_found', `no backups (loanbook-*.lbk) in ${store.description}`);
  return last;
}

/** An archive that has authenticated from its first byte to its last, as a local file. */
interface AuthenticatedArchive {
  readonly name: string;
  readonly store: BackupStore;
  readonly meta: ArchiveMeta;
  readonly sha256: string;
  readonly bytes: number;
  readonly manifestKey: Buffer;
  decrypt(): Readable;
  /** The whole dump, in memory (PGlite loads tarballs from memory anyway). */
  plaintext(): Promise<Buffer>;
  close(): Promise<void>;
}

async function openArchive(location: string, deps: BackupDeps): Promise<AuthenticatedArchive> {
  const { store, name: given } = parseLocation(location, deps.s3);
  const name = given ?? (await latestArchive(store));
  const temp = await mkdtemp(join(tmpdir(), 'loanbook-restore-'));
  const keys = [deps.key, ...deps.previousKeys];
  try {
    // The archive is read twice (authenticate, then apply): a remote one is copied here
    // first. Each read authenticates every chunk, so a file changed in between still fails.
    let file = store.localPath?.(name);
    if (file === undefined) {
      file = join(temp, name);
      await downloadTo(store, name, file);
    } else if (!existsSync(file)) {
      throw new BackupError('backup_not_found', `no backup file ${file}`);
    }
    const local = file;
    const hash = createHash('sha256');
    let bytes = 0;
    const decrypt = new DecryptStream(keys);
    await pipeline(
      createReadStream(local),
      new Transform({
        transform(chunk: Buffer, _enc, done) {
          hash.update(chunk);
          bytes += chunk.length;
          done(null, chunk);
        },
      }),
      decrypt,
      new Writable({ write: (_c, _e, done) => done() }),
    );
    const meta = decrypt.meta as ArchiveMeta;
    const manifestKey = decrypt.manifestKey as Buffer;
    return {
      name,
      store,
      meta,
      sha256: hash.digest('hex'),
      bytes,
      manifestKey,
      decrypt: () => {
        const d = new DecryptStream(keys);
        const input = createReadStream(local);
        input.on('error', (e) => d.destroy(e));
        return input.pipe(d);
      },
      async plaintext() {
        const chunks: Buffer[] = [];
        await pipeline(createReadStream(local), new DecryptStream(keys), new Writable({ write: (c: Buffer, _e, done) => (chunks.push(c), done()) }));
        return Buffer.concat(chunks);
      },
      close: () => rm(temp, { recursive: true, force: true }),
    };
  } catch (e) {
    await rm(temp, { recursive: true, force: true });
    throw e;
  }
}

function assertKind(archive: AuthenticatedArchive, kind: BackupSource['kind']): void {
  if (archive.meta.kind !== kind) {
    throw new BackupError(
      'backup_invalid_location',
      `${archive.name} is a ${archive.meta.kind} backup and the target is ${kind === 'postgres' ? 'PostgreSQL' : 'an embedded data directory'}; ` +
        'restore a backup into the kind of database it was taken from',
    );
  }
}

function unexpected(figures: readonly Figure[]): string[] {
  return figures.filter((f) => f.expect !== undefined && f.value !== f.expect).map((f) => `${f.name} is ${f.value} (expected ${f.expect})`);
}

export interface RestoreResult {
  readonly archive: string;
  readonly meta: ArchiveMeta;
  readonly figures: Figure[];
}

/**
 * Restores `location` (an archive, or the newest one in a directory / prefix) into
 * `target`. A non-empty target is refused unless `replace`. The restored database is
 * inspected; an expected figure that does not hold (a broken audit chain) fails.
 */
export async function restoreBackup(location: string, target: BackupSource, options: { replace: boolean }, deps: BackupDeps): Promise<RestoreResult> {
  if (target.kind === 'pglite') assertNotInUse(target.dir);
  const archive = await openArchive(location, deps);
  try {
    assertKind(archive, target.kind);
    let figures: Figure[] = [];
    if (target.kind === 'postgres') {
      const db = openPostgres(target.url);
      try {
        if (!options.replace && (await hasUserTables(db))) {
          throw new BackupError(
            'backup_target_not_empty',
            `${redactUrl(target.url)} already has tables; restoring drops and recreates every object the backup holds, ` +
              'losing what is there now. Pass --yes to do it, or restore into an empty database',
          );
        }
      } finally {
        await db.destroy();
      }
      await restorePostgres(target.url, deps.tools, archive.decrypt(), { replace: options.replace });
      figures = await inspectPostgres(target.url, deps.inspect);
    } else {
      if (!options.replace && (await isNonEmptyDir(target.dir))) {
        throw new BackupError('backup_target_not_empty', `${target.dir} already holds a database; pass --force to replace it`);
      }
      const tarball = await archive.plaintext();
      await restorePglite(target.dir, tarball, options.replace, async (db) => {
        figures = await deps.inspect(db);
      });
    }
    const problems = unexpected(figures);
    if (problems.length > 0) {
      throw new BackupError('backup_damaged', `the restored database fails its checks: ${problems.join('; ')}`);
    }
    return { archive: archive.name, meta: archive.meta, figures };
  } finally {
    await archive.close();
  }
}

export interface VerifyOptions {
  /** PostgreSQL backups: the server the scratch database is created on (usually DATABASE_URL). */
  readonly server: string | undefined;
  /** The live source to compare with, when reachable. */
  readonly live: BackupSource | undefined;
  readonly strictLive: boolean;
}

export interface VerifyReport {
  readonly archive: string;
  readonly meta: ArchiveMeta;
  readonly manifest: Manifest | undefined;
  readonly rows: VerifyRow[];
  /** Lines for the operator: what was and was not compared. */
  readonly notes: string[];
  readonly ok: boolean;
}

/**
 * Restores the archive into a scratch database (PostgreSQL: `lb_verify_<random>` on
 * `server`, dropped afterwards; embedded: in memory), computes its figures and compares
 * them with the manifest's (strictly) and the live source's (as a report unless
 * `strictLive`).
 */
export async function verifyBackup(location: string, options: VerifyOptions, deps: BackupDeps): Promise<VerifyReport> {
  const archive = await openArchive(location, deps);
  const notes: string[] = [];
  let ok = true;
  try {
    const manifestText = await readSmall(archive.store, manifestName(archive.name));
    let manifest: Manifest | undefined;
    let sealed: Figure[] | undefined;
    if (manifestText === undefined) {
      notes.push(`no manifest ${manifestName(archive.name)}: the restored copy is compared with the live source only`);
    } else {
      try {
        manifest = JSON.parse(manifestText) as Manifest;
      } catch {
        throw new BackupError('backup_damaged', `${manifestName(archive.name)} is not valid JSON`);
      }
      const { summary_sealed: s, ...plain } = manifest;
      if (typeof s !== 'string') throw new BackupError('backup_damaged', `${manifestName(archive.name)} has no sealed summary`);
      sealed = openSealedJson<Figure[]>(archive.manifestKey, s, sealAad(plain));
      if (manifest.archive_sha256 !== archive.sha256 || manifest.archive_bytes !== archive.bytes) {
        ok = false;
        notes.push(`MISMATCH: the archive is ${archive.bytes} bytes, sha256 ${archive.sha256}; the manifest recorded ${manifest.archive_bytes} bytes, sha256 ${manifest.archive_sha256}`);
      } else {
        notes.push(`archive ${archive.bytes} bytes, sha256 ${archive.sha256}: matches the manifest`);
      }
    }

    let restored: Figure[];
    if (archive.meta.kind === 'postgres') {
      if (options.server === undefined) {
        throw new BackupError('backup_invalid_location', 'verifying a PostgreSQL backup needs DATABASE_URL: the scratch database is created on that server');
      }
      const scratch = `lb_verify_${randomBytes(6).toString('hex')}`;
      restored = await withScratchDatabase(options.server, scratch, async (url) => {
        await restorePostgres(url, deps.tools, archive.decrypt(), { replace: false });
        return inspectPostgres(url, deps.inspect);
      });
      notes.push(`restored into scratch database ${scratch} on ${redactUrl(options.server)} (dropped)`);
    } else {
      const pglite = await loadPgliteInMemory(await archive.plaintext());
      try {
        const db = kyselyOver(pglite);
        try {
          restored = await deps.inspect(db);
        } finally {
          await db.destroy();
        }
      } finally {
        await pglite.close();
      }
      notes.push('restored into an in-memory embedded database');
    }

    let live: Figure[] | undefined;
    if (options.live !== undefined && options.live.kind === archive.meta.kind) {
      try {
        live = options.live.kind === 'postgres' ? await inspectPostgres(options.live.url, deps.inspect) : await inspectPglite(options.live.dir, deps.inspect);
        notes.push(`live source: ${describeSource(options.live)}${options.strictLive ? ' (compared strictly)' : ' (differences are reported, not failures: it may have changed since the backup)'}`);
      } catch (e) {
        notes.push(`live source not compared: ${(e as Error).message}`);
      }
    } else {
      notes.push('live source not compared: none of the same kind is configured');
    }

    const rows = compareFigures(sealed, restored, live, options.strictLive);
    ok &&= rows.every((r) => r.status !== 'MISMATCH');
    return { archive: archive.name, meta: archive.meta, manifest, rows, notes, ok };
  } finally {
    await archive.close();
  }
}

async function inspectPglite(dir: string, inspect: Inspect): Promise<Figure[]> {
  if (!existsSync(join(dir, 'PG_VERSION'))) throw new Error(`no embedded database in ${dir}`);
  assertNotInUse(dir);
  const { PGlite } = await import('@electric-sql/pglite');
  const pglite = await PGlite.create(dir);
  try {
    const db = kyselyOver(pglite);
    try {
      return await inspect(db);
    } finally {
      await db.destroy();
    }
  } finally {
    await pglite.close();
  }
}
