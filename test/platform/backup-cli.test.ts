/**
 * `loanbook backup`, `backup verify` and `restore` as an operator runs them (a child
 * process with an explicit environment), on the embedded database. The PostgreSQL path of
 * the same commands runs in scripts/ci/backup-pitr.sh; the engine underneath is tested on
 * both databases in backup.test.ts.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isPostgres } from '../support/db.js';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const KEY = randomBytes(32).toString('base64');
const SECRET = randomBytes(48).toString('base64url');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function loanbook(args: string[], env: Record<string, string>): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'src/cli.ts', ...args],
      { cwd: repoRoot, env: { PATH: process.env.PATH, HOME: process.env.HOME, LOG_LEVEL: 'silent', ...env }, timeout: 120_000 },
      (error, stdout, stderr) => resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr }),
    );
  });
}

describe.runIf(!isPostgres)('loanbook backup / restore / backup verify (embedded)', { timeout: 180_000 }, () => {
  let work: string;
  let dataDir: string;
  let env: Record<string, string>;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'lb-backup-cli-'));
    dataDir = join(work, 'data');
    env = { DATA_DIR: dataDir, ENCRYPTION_KEY: KEY, SECRET_KEY: SECRET };
    expect((await loanbook(['migrate', 'up'], env)).code).toBe(0);
  }, 120_000);

  afterAll(async () => rm(work, { recursive: true, force: true }));

  it('backs up into DATA_DIR/backups, verifies, and restores into a new data directory', async () => {
    const backup = await loanbook(['backup'], env);
    expect(backup.stderr).toBe('');
    expect(backup.code).toBe(0);
    expect(backup.stdout).toMatch(/^backed up embedded PGlite .* to .*\/backups\/loanbook-\d{8}T\d{6}\.\d{3}Z-pglite\.lbk\n/);
    const files = (await readdir(join(dataDir, 'backups'))).sort();
    expect(files).toHaveLength(2);
    expect(files[0]).toMatch(/\.lbk$/);
    expect(files[1]).toMatch(/\.manifest\.json$/);

    const verify = await loanbook(['backup', 'verify'], env);
    expect(verify.code).toBe(0);
    expect(verify.stdout).toMatch(/^audit\.chain +intact +intact +intact +ok$/m);
    expect(verify.stdout).toMatch(/verified: the backup restores and matches\n$/);

    const into = join(work, 'restored');
    const restore = await loanbook(['restore', join(dataDir, 'backups'), '--into', into], env);
    expect(restore.code).toBe(0);
    expect(restore.stdout).toMatch(/^restored loanbook-.*-pglite\.lbk .* into .*restored\/pglite\n {2}audit chain intact: 0 row\(s\)\n$/);
    const audit = await loanbook(['audit', 'verify'], { ...env, DATA_DIR: into });
    expect(audit.code).toBe(0);
  });

  it('refuses to restore with another ENCRYPTION_KEY, or over a database, with a coded one-line error', async () => {
    const into = join(work, 'wrong-key');
    const wrong = await loanbook(['restore', join(dataDir, 'backups'), '--into', into], { ...env, ENCRYPTION_KEY: randomBytes(32).toString('base64') });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/^loanbook: this backup was made with a different ENCRYPTION_KEY.*\[backup_wrong_key\]\n$/);
    expect(existsSync(join(into, 'pglite'))).toBe(false);

    const over = await loanbook(['restore', join(dataDir, 'backups')], env);
    expect(over.code).toBe(1);
    expect(over.stderr).toMatch(/already holds a database; pass --force to replace it \[backup_target_not_empty\]\n$/);
  });

  it('asks for a location when the database is PostgreSQL and none is configured', async () => {
    const r = await loanbook(['backup'], { ...env, DATABASE_URL: 'postgres://127.0.0.1:1/none' });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/give a directory or s3:\/\/bucket\/prefix \(or set BACKUP_LOCATION\) \[backup_invalid_location\]/);
  });
});
