/**
 * The `loanbook` command as a user runs it: a child process (`node --import tsx
 * src/cli.ts …`) with an explicit environment, against the current DB_TARGET (PGlite
 * in a temporary DATA_DIR, or a fresh PostgreSQL database through DATABASE_URL), plus
 * the embedded first start, which is PGlite whatever the target.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql, type Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fingerprint } from '../src/platform/config.js';
import { openDatabase, type Database } from '../src/platform/database.js';
import type { AppDatabase } from '../src/app.js';
import { migrationsDir } from '../src/platform/paths.js';
import { bearer, createTestApp, TEST_ENCRYPTION_KEY, TEST_SECRET_KEY } from './support/app.js';
import { createEmptyDatabase, dbTarget, isPostgres, silentLogger, testDbOptions, type TestDatabase } from './support/db.js';
import { createServer } from 'node:net';
import { freePort } from './support/net.js';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const SHIPPED = readdirSync(migrationsDir)
  .filter((f) => f.endsWith('.sql'))
  .sort()
  .map((f) => f.replace(/\.sql$/, ''));
const UUID = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';

const children = new Set<ChildProcess>();
const tempDirs: string[] = [];
const databases: { destroy(): Promise<void> }[] = [];

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  for (const d of databases) await d.destroy();
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'lb-cli-'));
  tempDirs.push(dir);
  return dir;
}

/** Only what is given: nothing leaks in from the developer's or CI's environment. */
function childEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH, HOME: process.env.HOME, ...env };
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

class CliProcess {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  readonly exited: Promise<Exit>;
  private readonly waiters = new Set<() => void>();

  constructor(args: readonly string[], env: Record<string, string>) {
    this.child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], {
      cwd: repoRoot,
      env: childEnv(env),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(this.child);
    this.child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      this.stdout += s;
      this.notify();
    });
    this.child.stderr!.setEncoding('utf8').on('data', (s: string) => {
      this.stderr += s;
      this.notify();
    });
    this.exited = new Promise((resolve) => {
      this.child.on('close', (code, signal) => {
        children.delete(this.child);
        this.notify();
        resolve({ code, signal });
      });
    });
  }

  private notify(): void {
    for (const w of this.waiters) w();
  }

  /** Resolves with the first match in stdout; rejects if the process exits first. */
  waitForStdout(pattern: RegExp): Promise<RegExpMatchArray> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const m = pattern.exec(this.stdout);
        if (m) {
          this.waiters.delete(check);
          resolve(m);
        } else if (this.child.exitCode !== null || this.child.signalCode !== null) {
          this.waiters.delete(check);
          reject(new Error(`exited before ${String(pattern)}\nstdout:\n${this.stdout}\nstderr:\n${this.stderr}`));
        }
      };
      this.waiters.add(check);
      check();
    });
  }

  /** JSON log lines written to stdout (other lines are the banner or printed output). */
  logs(): { message: string; [k: string]: unknown }[] {
    return this.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { message: string });
  }
}

interface CliResult extends Exit {
  stdout: string;
  stderr: string;
}

async function cli(args: readonly string[], env: Record<string, string>): Promise<CliResult> {
  const p = new CliProcess(args, env);
  const exit = await p.exited;
  return { ...exit, stdout: p.stdout, stderr: p.stderr };
}


async function signIn(base: string, email: string, password: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${base}/v1/auth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, password }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const SECRETS = { SECRET_KEY: TEST_SECRET_KEY, ENCRYPTION_KEY: TEST_ENCRYPTION_KEY };
/** Every step starts Node, tsx and the application (and PGlite, argon2): seconds each on a busy machine. */
const SLOW = { timeout: 120_000 };

describe('--help', SLOW, () => {
  const cases: [string[], string, RegExp[]][] = [
    [[], 'loanbook [options] [command]', [/-V, --version/, /^ {2}serve\b/m, /^ {2}migrate\b/m, /^ {2}user\b/m, /^ {2}audit\b/m, /^ {2}SECRET_KEY +JWT signing key/m]],
    [['serve'], 'loanbook serve [options]', [/^ {2}--workers <n> +serving processes/m, /^ {2}WEB_CONCURRENCY +/m, /^ {2}DATABASE_URL +postgres:/m, /^ {2}DATA_DIR +/m, /^ {2}PORT +/m, /^ {2}SECRET_KEY +/m, /^ {2}ADMIN_PASSWORD +/m, /SIGTERM/, /SIGHUP/]],
    [['migrate'], 'loanbook migrate [options] [command]', [/^ {2}up\b/m, /^ {2}status\b/m, /^ {2}DATABASE_URL +/m]],
    [['migrate', 'up'], 'loanbook migrate up [options]', [/Apply every pending migration/, /^ {2}DATABASE_URL +/m]],
    [['migrate', 'status'], 'loanbook migrate status [options]', [/exits 1 when any is pending/, /^ {2}DATABASE_URL +/m]],
    [
      ['user', 'create'],
      'loanbook user create [options]',
      [/^ {2}--email <email> +email address/m, /^ {2}--role <role> +role \(choices: "admin", "underwriter", "servicer",\s+"analyst", "auditor", "borrower"\)/m, /^ {2}--password <password> +/m, /^ {2}ENCRYPTION_KEY +/m],
    ],
    [['audit', 'verify'], 'loanbook audit verify [options]', [/Recompute the hash chain/, /^ {2}DATABASE_URL +/m]],
    [['worker'], 'loanbook worker [options]', [/Run background jobs/, /^ {2}DATABASE_URL +/m, /^ {2}WORKER_CONCURRENCY +/m, /^ {2}WORKER_HTTP_PORT +/m, /SIGTERM/]],
  ];

  it.each(cases)('loanbook %j --help prints usage, options and environment, and exits 0', async (args, usage, expected) => {
    // No configuration at all: help must not need a database or secrets.
    const r = await cli([...args, '--help'], {});
    expect({ code: r.code, stderr: r.stderr }).toStrictEqual({ code: 0, stderr: '' });
    expect(r.stdout.split('\n')[0]).toBe(`Usage: ${usage}`);
    expect(r.stdout).toMatch(/^Options:$/m);
    expect(r.stdout).toMatch(/^ {2}-h, --help +display help for command$/m);
    expect(r.stdout).toMatch(/^Environment:$/m);
    for (const pattern of expected) expect(r.stdout).toMatch(pattern);
  });
});

describe(`migrate, user create and audit verify on a fresh database (${dbTarget}); steps run in order`, SLOW, () => {
  let dataDir: string;
  let env: Record<string, string>;
  let empty: Awaited<ReturnType<typeof createEmptyDatabase>>;
  const email = `analyst-${process.pid}@example.test`;
  let password: string;

  /** Opens the same database the CLI used (PGlite: only while no CLI process has it open). */
  async function openSame(): Promise<Database<AppDatabase>> {
    return isPostgres
      ? openDatabase<AppDatabase>(empty.target, testDbOptions, silentLogger)
      : openDatabase<AppDatabase>({ kind: 'pglite', location: join(dataDir, 'pglite') }, testDbOptions, silentLogger);
  }

  beforeAll(async () => {
    dataDir = tempDir();
    empty = await createEmptyDatabase();
    databases.push(empty);
    env = { ENV: 'development', DATA_DIR: dataDir, ...SECRETS, ...(isPostgres ? { DATABASE_URL: empty.url! } : {}) };
  });

  it('audit verify and user create refuse an unmigrated database, naming `loanbook migrate up`', async () => {
    const [auditRun, userRun] = [await cli(['audit', 'verify'], env), await cli(['user', 'create', '--email', email, '--role', 'analyst'], env)];
    for (const r of [auditRun, userRun]) {
      expect(r.code).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr).toBe(`loanbook: the database has ${SHIPPED.length} pending migration(s); run \`loanbook migrate up\` first\n`);
    }
  });

  it('migrate status on a fresh database lists every migration as pending and exits 1', async () => {
    const r = await cli(['migrate', 'status'], env);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe(SHIPPED.map((m) => `pending  ${m}\n`).join(''));
  });

  it('migrate up applies them in order and exits 0; a second run is up to date', async () => {
    const first = await cli(['migrate', 'up'], env);
    expect({ code: first.code, stdout: first.stdout }).toStrictEqual({ code: 0, stdout: SHIPPED.map((m) => `applied ${m}\n`).join('') });
    const second = await cli(['migrate', 'up'], env);
    expect({ code: second.code, stdout: second.stdout }).toStrictEqual({ code: 0, stdout: 'already up to date\n' });
  });

  it('migrate status after migrate up lists every migration as applied and exits 0', async () => {
    const r = await cli(['migrate', 'status'], env);
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(SHIPPED.length);
    lines.forEach((line, i) => expect(line).toMatch(new RegExp(`^applied  ${SHIPPED[i]}  \\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z$`)));
  });

  it('user create prints the created user and a generated password, once', async () => {
    const r = await cli(['user', 'create', '--email', email, '--role', 'analyst'], env);
    expect(r.code).toBe(0);
    const m = new RegExp(`^created analyst ${email} \\((${UUID})\\)\\ngenerated password \\(shown once\\): (\\S{20,})\\n$`).exec(r.stdout);
    expect(m, r.stdout).not.toBeNull();
    password = m![2]!;
    expect(r.stdout.split(password)).toHaveLength(2); // printed exactly once
    expect(r.stderr).not.toContain(password);
  });

  it('user create refuses the same email again, and an unknown role, without printing a password', async () => {
    const again = await cli(['user', 'create', '--email', email, '--role', 'analyst'], env);
    expect(again.code).toBe(1);
    expect(again.stdout).toBe('');
    expect(again.stderr).toBe('loanbook: Email already registered\n');

    const badRole = await cli(['user', 'create', '--email', 'other@example.test', '--role', 'overlord'], env);
    expect(badRole.code).toBe(1);
    expect(badRole.stderr).toContain(
      "error: option '--role <role>' argument 'overlord' is invalid. Allowed choices are admin, underwriter, servicer, analyst, auditor, borrower.",
    );
  });

  it('audit verify prints that the chain is intact, with the head hash to record, and exits 0', async () => {
    const r = await cli(['audit', 'verify'], env);
    const database = await openSame();
    let head: string;
    try {
      head = (await database.db.selectFrom('audit_log').select('hash').where('id', '=', 1n).executeTakeFirstOrThrow()).hash;
    } finally {
      await database.close();
    }
    expect({ code: r.code, stdout: r.stdout, stderr: r.stderr }).toStrictEqual({
      code: 0,
      stdout: `audit chain intact: 1 row(s) verified\nhead hash: ${head}\n`, // user.created
      stderr: '',
    });
  });

  it('the created user signs in with the printed password and is an analyst', async () => {
    const database = await openSame();
    const db: TestDatabase = { database, target: empty.target, url: empty.url, destroy: () => database.close() };
    const t = await createTestApp({ db }); // same SECRET_KEY and ENCRYPTION_KEY as the CLI had
    try {
      const token = await t.token(email, password);
      const me = await t.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(token) });
      expect(me.statusCode).toBe(200);
      expect(me.json()).toMatchObject({ email, role: 'analyst', status: 'active' });
      const wrong = await t.app.inject({ method: 'POST', url: '/v1/auth/token', payload: { email, password: `${password}x` } });
      expect(wrong.statusCode).toBe(401);
    } finally {
      await t.close();
      await database.close();
    }
  });

  it('audit verify names the first broken row and exits 1 when a row was altered behind the triggers', async () => {
    const database = await openSame();
    try {
      const db = database.db as Kysely<unknown>;
      await db.connection().execute(async (conn) => {
        // Superuser only: skip the append-only triggers, as an attacker with the database would.
        await sql`set session_replication_role = replica`.execute(conn);
        await sql`update audit_log set action = 'user.tampered' where id = 1`.execute(conn);
        await sql`set session_replication_role = origin`.execute(conn);
      });
    } finally {
      await database.close();
    }
    const r = await cli(['audit', 'verify'], env);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^audit chain BROKEN at row 1: .+ \(0 row\(s\) before it verified\)\n$/);
  });
});

describe('configuration refusals', SLOW, () => {
  const encryptionKey = TEST_ENCRYPTION_KEY;

  it.each([
    ['missing', undefined, 'SECRET_KEY is required when ENV=production; generate one with: openssl rand -base64 48'],
    ['too short', 'changeme', 'SECRET_KEY is too short (8 characters; at least 32 are required); generate one with: openssl rand -base64 48'],
    [
      'a well-known placeholder',
      'your-secret-key-change-in-production',
      'SECRET_KEY is a well-known placeholder; generate one with: openssl rand -base64 48',
    ],
    [
      'repetitive',
      'ab'.repeat(20),
      'SECRET_KEY has too little variety (fewer than 10 distinct characters); generate one with: openssl rand -base64 48',
    ],
  ])('ENV=production serve refuses a SECRET_KEY that is %s, with exit code 2', async (_what, secretKey, problem) => {
    const dataDir = tempDir();
    const r = await cli(['serve'], {
      ENV: 'production',
      DATA_DIR: dataDir,
      ENCRYPTION_KEY: encryptionKey,
      PORT: String(await freePort()),
      ...(secretKey === undefined ? {} : { SECRET_KEY: secretKey }),
    });
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`loanbook: invalid configuration:\n  ${problem}\n`);
    expect(existsSync(join(dataDir, 'secrets.json'))).toBe(false); // production never generates secrets
    expect(readdirSync(dataDir)).toStrictEqual([]); // nor opens a database
  });

  it('worker refuses the embedded database (it belongs to the serving process) with exit code 2, opening nothing', async () => {
    const dataDir = tempDir();
    const r = await cli(['worker'], { ENV: 'development', DATA_DIR: dataDir, ...SECRETS });
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(
      'loanbook: `loanbook worker` needs DATABASE_URL: the embedded database belongs to one process, and `loanbook serve` runs its jobs itself\n',
    );
    expect(readdirSync(dataDir)).toStrictEqual([]);
  });

  it('ENV=production without ENCRYPTION_KEY refuses every database command with exit code 2', async () => {
    const r = await cli(['migrate', 'up'], { ENV: 'production', DATA_DIR: tempDir(), SECRET_KEY: TEST_SECRET_KEY });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(
      'loanbook: invalid configuration:\n  ENCRYPTION_KEY is required when ENV=production; generate one with: openssl rand -base64 32\n',
    );
  });

  it('an unreachable DATABASE_URL fails with the target named and its password redacted', async () => {
    const port = await freePort();
    const r = await cli(['migrate', 'status'], {
      ENV: 'production',
      ...SECRETS,
      DATA_DIR: tempDir(),
      DATABASE_URL: `postgres://lb:hunter2@127.0.0.1:${port}/lb`,
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `loanbook: cannot connect to PostgreSQL (postgres://lb:***@127.0.0.1:${port}/lb): connect ECONNREFUSED 127.0.0.1:${port}\n`,
    );
  });
});

describe(`serve start-up failure (${dbTarget})`, SLOW, () => {
  it('exits 1 naming the port when it is taken, and the database it opened is left usable', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as { port: number }).port;
    const dataDir = tempDir();
    let url: string | undefined;
    if (isPostgres) {
      const empty = await createEmptyDatabase();
      databases.push(empty);
      url = empty.url;
    }
    const env = { ENV: 'development', ...SECRETS, DATA_DIR: dataDir, ...(url ? { DATABASE_URL: url } : {}) };
    try {
      const r = await cli(['serve'], { ...env, PORT: String(port) });
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(`loanbook: listen EADDRINUSE: address already in use 127.0.0.1:${port}\n`);
    } finally {
      await new Promise<void>((resolve) => taken.close(() => resolve()));
    }
    // The failed start had migrated the database; the next command finds it intact.
    const status = await cli(['migrate', 'status'], env);
    expect(status.code).toBe(0);
    expect(status.stdout.trimEnd().split('\n').map((l) => l.split('  ')[1])).toStrictEqual(SHIPPED);
  });
});

describe.runIf(isPostgres)('ENV=production serve on PostgreSQL', SLOW, () => {
  let empty: Awaited<ReturnType<typeof createEmptyDatabase>>;
  let env: Record<string, string>;

  beforeAll(async () => {
    empty = await createEmptyDatabase();
    databases.push(empty);
    env = { ENV: 'production', ...SECRETS, DATA_DIR: tempDir(), DATABASE_URL: empty.url!, HOST: '127.0.0.1' };
  });

  it('refuses an unmigrated database, naming `loanbook migrate up`, and leaves it untouched', async () => {
    const r = await cli(['serve'], { ...env, PORT: String(await freePort()) });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(
      `loanbook: the database has ${SHIPPED.length} pending migration(s) (${SHIPPED.join(', ')}); ` +
        'run `loanbook migrate up` (with the same DATABASE_URL) before starting the service\n',
    );
    const database = await openDatabase<unknown>(empty.target, testDbOptions, silentLogger);
    try {
      const { rows } = await sql<{ n: number }>`select count(*)::int as n from pg_tables where schemaname = 'public'`.execute(database.db);
      expect(rows).toStrictEqual([{ n: 0 }]);
    } finally {
      await database.close();
    }
  });

  it('starts once `loanbook migrate up` has run, without printing a banner or a password', async () => {
    expect((await cli(['migrate', 'up'], env)).code).toBe(0);
    const port = await freePort();
    const serve = new CliProcess(['serve'], { ...env, PORT: String(port), ADMIN_EMAIL: 'ops@example.test', ADMIN_PASSWORD: 'prod-admin-password-0001' });
    await serve.waitForStdout(/"message":"loanbook listening"/);
    const ready = await fetch(`http://127.0.0.1:${port}/health/ready`);
    expect(ready.status).toBe(200);
    expect((await signIn(`http://127.0.0.1:${port}`, 'ops@example.test', 'prod-admin-password-0001')).status).toBe(200);
    serve.child.kill('SIGTERM');
    expect(await serve.exited).toStrictEqual({ code: 0, signal: null });
    expect(serve.stdout).not.toContain('Loanbook ');
    expect(serve.stdout).not.toContain('prod-admin-password-0001');
    expect(serve.logs().find((l) => l.message === 'loanbook listening')).toMatchObject({
      port,
      env: 'production',
      jobs: { workers: 'loanbook worker' },
      secret_key_source: 'env',
      secret_key_id: fingerprint(TEST_SECRET_KEY),
      encryption_key_source: 'env',
    });
  });

  it('worker runs on the migrated database and exits 0 on SIGTERM', async () => {
    // Its probe port off: tests in parallel would contend for the default 9465 (test/worker-http.test.ts covers it).
    const worker = new CliProcess(['worker'], { ...env, LOG_LEVEL: 'info', WORKER_CONCURRENCY: '3', WORKER_HTTP_PORT: '0' });
    await worker.waitForStdout(/"message":"loanbook worker running"/);
    expect(worker.logs().find((l) => l.message === 'loanbook worker running')).toMatchObject({ concurrency: 3, env: 'production' });
    worker.child.kill('SIGTERM');
    expect(await worker.exited).toStrictEqual({ code: 0, signal: null });
    expect(worker.logs().map((l) => l.message)).toContain('stopped');
  });
});

describe('embedded first start: serve with no DATABASE_URL and no secrets', SLOW, () => {
  let dataDir: string;
  let firstSecrets: string;
  let adminPassword: string;

  beforeAll(() => {
    dataDir = tempDir();
  });

  it('migrates, creates the admin and prints its password once, writes DATA_DIR/secrets.json (0600), and is ready', async () => {
    const port = await freePort();
    const serve = new CliProcess(['serve'], { ENV: 'development', DATA_DIR: dataDir, PORT: String(port), LOG_LEVEL: 'info' });
    await serve.waitForStdout(new RegExp(`Loanbook \\S+ on http://127\\.0\\.0\\.1:${port} `));
    await serve.waitForStdout(/"message":"loanbook listening"/); // pino writes asynchronously

    const m = /^ {2}First start: created admin admin@loanbook\.local\n {2}Generated password \(shown once\): (\S{20,})$/m.exec(serve.stdout);
    expect(m, serve.stdout).not.toBeNull();
    adminPassword = m![1]!;
    expect(serve.stdout.split(adminPassword)).toHaveLength(2); // once, and in no log line

    const secretsFile = join(dataDir, 'secrets.json');
    expect(statSync(secretsFile).mode & 0o777).toBe(0o600);
    firstSecrets = readFileSync(secretsFile, 'utf8');
    const secrets = JSON.parse(firstSecrets) as { secretKey: string; encryptionKey: string };
    expect(secrets.secretKey.length).toBeGreaterThanOrEqual(32);
    expect(Buffer.from(secrets.encryptionKey, 'base64')).toHaveLength(32);
    expect(serve.stdout).not.toContain(secrets.secretKey);
    expect(serve.stdout).not.toContain(secrets.encryptionKey);

    const logs = serve.logs();
    expect(logs.find((l) => l.message === 'migrations applied')).toMatchObject({ migrations: SHIPPED });
    expect(logs.find((l) => l.message === 'loanbook listening')).toMatchObject({
      port,
      env: 'development',
      secret_key_source: 'generated',
      secret_key_id: fingerprint(secrets.secretKey),
      encryption_key_source: 'generated',
      encryption_key_id: fingerprint(Buffer.from(secrets.encryptionKey, 'base64')),
    });

    const ready = await fetch(`http://127.0.0.1:${port}/health/ready`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ status: 'ok', components: { database: { status: 'ok' } } });
    expect((await signIn(`http://127.0.0.1:${port}`, 'admin@loanbook.local', adminPassword)).status).toBe(200);

    serve.child.kill('SIGTERM');
    expect(await serve.exited).toStrictEqual({ code: 0, signal: null });
  });

  it('a second start reuses the database and the same secrets, and prints no password (PORT=0 reports the bound port)', async () => {
    const serve = new CliProcess(['serve'], { ENV: 'development', DATA_DIR: dataDir, PORT: '0', LOG_LEVEL: 'info' });
    const [, port] = await serve.waitForStdout(/Loanbook \S+ on http:\/\/127\.0\.0\.1:(\d+) /);
    await serve.waitForStdout(/"message":"loanbook listening"/);
    expect(Number(port)).toBeGreaterThan(0);

    expect(readFileSync(join(dataDir, 'secrets.json'), 'utf8')).toBe(firstSecrets);
    expect(serve.stdout).not.toMatch(/password/i);
    const logs = serve.logs();
    expect(logs.find((l) => l.message === 'migrations applied')).toBeUndefined();
    const secrets = JSON.parse(firstSecrets) as { secretKey: string; encryptionKey: string };
    expect(logs.find((l) => l.message === 'loanbook listening')).toMatchObject({
      port: Number(port),
      secret_key_source: 'generated',
      secret_key_id: fingerprint(secrets.secretKey),
      encryption_key_source: 'generated',
      encryption_key_id: fingerprint(Buffer.from(secrets.encryptionKey, 'base64')),
    });

    // The first start's admin and password still work: same database, same encryption key.
    const base = `http://127.0.0.1:${port}`;
    expect((await fetch(`${base}/health/ready`)).status).toBe(200);
    const signedIn = await signIn(base, 'admin@loanbook.local', adminPassword);
    expect(signedIn.status).toBe(200);
    const me = await fetch(`${base}/v1/me`, { headers: bearer(signedIn.body.access_token as string) });
    expect(await me.json()).toMatchObject({ email: 'admin@loanbook.local', role: 'admin' });

    serve.child.kill('SIGTERM');
    expect(await serve.exited).toStrictEqual({ code: 0, signal: null });
  });
});
