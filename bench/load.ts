/**
 * Load on the service as deployed: the built `loanbook serve` process (dist/, as in the
 * image) on a scratch PostgreSQL database, driven over loopback by
 *   autocannon   16 connections per scenario for --seconds each:
 *                  live     GET /health/live                 (the platform alone)
 *                  me       GET /v1/me with a bearer token   (auth, session, decryption)
 *                  apply    POST /loan/apply, the seed payload, a fresh Idempotency-Key and
 *                           applicant per request            (the whole decision pipeline)
 *   locust       the seed's load test (deploy/locust/locustfile.py) headless, when Debian's
 *                `locust` is installed (apt-get install python3-locust): --users for
 *                --locust-seconds, 3 applies to 1 health check per user
 * Prints requests/s, latency percentiles, non-2xx and errors per scenario, and afterwards
 * checks the run: the applications stored are at least the 201s autocannon counted (locust's
 * are stored too), and the audit chain verifies (`loanbook audit verify`).
 *
 *   npm run build && npx tsx bench/load.ts [--seconds 10] [--locust-seconds 30] [--users 20] [--workers 1]
 * BENCH_POSTGRES_URL (default postgres://$USER@127.0.0.1:5432/test) names the database
 * used to create and drop the scratch database.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir, userInfo, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import autocannon from 'autocannon';
import pg from 'pg';

const run = promisify(execFile);
const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    'locust-seconds': { type: 'string', default: '30' },
    users: { type: 'string', default: '20' },
    workers: { type: 'string', default: '1' },
  },
});
const SECONDS = Number(args.seconds);
const LOCUST_SECONDS = Number(args['locust-seconds']);
const USERS = Number(args.users);
const WORKERS = Number(args.workers);
const CONNECTIONS = 16;
const adminUrl = process.env.BENCH_POSTGRES_URL ?? `postgres://${userInfo().username}@127.0.0.1:5432/test`;

const SEED = {
  loan_amount: 250000,
  monthly_income: 10000,
  employment_years: 7,
  credit_history: { existing_loans: 2, repayment_score: 0.92 },
  collateral_value: 350000,
  company: 'Microsoft',
};

interface Row {
  readonly name: string;
  readonly requests: number;
  readonly rps: number;
  readonly p50: number;
  readonly p95: number | undefined;
  readonly p99: number | undefined;
  readonly non2xx: number;
  readonly errors: number;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

async function admin<T>(fn: (c: pg.Client) => Promise<T>, url = adminUrl): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

async function waitReady(url: string, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`loanbook serve exited with ${child.exitCode}`);
    try {
      if ((await fetch(url)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error('loanbook serve did not become ready within 60 s');
}

async function cannon(name: string, options: autocannon.Options): Promise<Row> {
  await autocannon({ ...options, connections: CONNECTIONS, duration: 1 }); // warm-up
  const r = await autocannon({ ...options, connections: CONNECTIONS, duration: SECONDS });
  return { name, requests: r.requests.total, rps: r.requests.average, p50: r.latency.p50, p95: undefined, p99: r.latency.p99, non2xx: r.non2xx, errors: r.errors + r.timeouts };
}

/** Locust's aggregated row from its --csv stats file. */
async function locust(base: string, env: Record<string, string>, dir: string): Promise<Row | string> {
  try {
    await run('locust', ['--version']);
  } catch {
    return 'locust is not installed (apt-get install python3-locust); skipped';
  }
  const prefix = join(dir, 'locust');
  try {
    await run(
      'locust',
      ['-f', 'deploy/locust/locustfile.py', '--headless', '-u', String(USERS), '-r', String(Math.max(1, USERS / 4)), '-t', `${LOCUST_SECONDS}s`, '--host', base, '--csv', prefix, '--only-summary'],
      { env: { ...process.env, ...env }, maxBuffer: 16 << 20 },
    );
  } catch (e) {
    // Locust exits 1 when any request failed; the figures below say how many.
    if ((e as { code?: number }).code !== 1) throw e;
  }
  const csv = (await readFile(`${prefix}_stats.csv`, 'utf8')).trim().split('\n');
  const header = csv[0]!.split(',');
  const total = csv.find((l) => l.includes(',Aggregated,'))!.split(',');
  const col = (name: string) => Number(total[header.indexOf(name)]);
  return {
    name: `locust ${USERS} users`,
    requests: col('Request Count'),
    rps: col('Requests/s'),
    p50: col('50%'),
    p95: col('95%'),
    p99: col('99%'),
    non2xx: col('Failure Count'),
    errors: 0,
  };
}

async function main(): Promise<void> {
  const name = `lb_bench_load_${Date.now().toString(36)}`;
  await admin((c) => c.query(`create database ${name}`));
  const dbUrl = new URL(adminUrl);
  dbUrl.pathname = `/${name}`;
  const dir = await mkdtemp(join(tmpdir(), 'lb-load-'));
  const port = await freePort();
  const email = 'loadtest@example.test';
  const password = 'load-test-password-0001';
  const env: Record<string, string> = {
    ...(process.env as Record<string, string>),
    ENV: 'production',
    DATABASE_URL: dbUrl.toString(),
    SECRET_KEY: `bench-secret-${randomUUID()}-${randomUUID()}`,
    ENCRYPTION_KEY: randomBytes(32).toString('base64'),
    PORT: String(port),
    HOST: '127.0.0.1',
    RATE_LIMIT_REQUESTS: '1000000',
    APPLICATIONS_PER_DAY: '10000',
    LOG_LEVEL: 'warn',
    DB_POOL_MAX: '20',
  };
  const cli = ['dist/src/cli.js'];
  let server: ChildProcess | undefined;
  try {
    await run('node', [...cli, 'migrate', 'up'], { env });
    await run('node', [...cli, 'user', 'create', '--email', email, '--role', 'borrower', '--password', password], { env });
    server = spawn('node', [...cli, 'serve', ...(WORKERS > 1 ? ['--workers', String(WORKERS)] : [])], { env, stdio: ['ignore', 'ignore', 'inherit'] });
    const base = `http://127.0.0.1:${port}`;
    await waitReady(`${base}/health/ready`, server);
    const signIn = await fetch(`${base}/v1/auth/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email, password }) });
    const token = ((await signIn.json()) as { access_token: string }).access_token;
    const auth = { authorization: `Bearer ${token}` };

    const rows: (Row | string)[] = [];
    rows.push(await cannon('live', { url: `${base}/health/live` }));
    rows.push(await cannon('me', { url: `${base}/v1/me`, headers: auth }));
    let applied = 0;
    const apply = await cannon('apply', {
      url: `${base}/loan/apply`,
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      requests: [
        {
          setupRequest: (req) => ({
            ...req,
            headers: { ...req.headers, 'idempotency-key': randomUUID() },
            body: JSON.stringify({ ...SEED, applicant_name: `Load ${randomUUID().slice(0, 12)}` }),
          }),
          onResponse: (status) => {
            if (status === 201) applied += 1;
          },
        },
      ],
    });
    rows.push(apply);
    rows.push(await locust(base, { LOCUST_EMAIL: email, LOCUST_PASSWORD: password }, dir));

    const stored = await admin(async (c) => (await c.query<{ n: number }>('select count(*)::int as n from applications')).rows[0]!.n, dbUrl.toString());
    const audit = await run('node', [...cli, 'audit', 'verify'], { env }).then(
      (r) => r.stdout.split('\n')[0] ?? '',
      (e: { stdout?: string }) => `FAILED: ${e.stdout ?? ''}`,
    );

    const ms = (v: number | undefined) => (v === undefined ? '    -' : String(v).padStart(5));
    const out = [
      `Load on \`loanbook serve${WORKERS > 1 ? ` --workers ${WORKERS}` : ''}\` (built dist, PostgreSQL, Node ${process.version}, load average ${loadavg().map((l) => l.toFixed(1)).join(' ')})`,
      `scenario             requests    req/s   p50 ms  p95 ms  p99 ms  non-2xx  errors`,
      ...rows.map((r) =>
        typeof r === 'string'
          ? `locust               ${r}`
          : `${r.name.padEnd(20)} ${String(r.requests).padStart(8)} ${r.rps.toFixed(0).padStart(8)}   ${ms(r.p50)}   ${ms(r.p95)}   ${ms(r.p99)}  ${String(r.non2xx).padStart(7)} ${String(r.errors).padStart(7)}`,
      ),
      `applications: ${applied} acknowledged by autocannon (201), ${stored} stored in all (autocannon + locust)`,
      `audit: ${audit}`,
    ];
    process.stdout.write(`${out.join('\n')}\n`);
    const failed = rows.some((r) => typeof r !== 'string' && r.errors > 0) || stored < applied || audit.startsWith('FAILED');
    if (failed) process.exitCode = 1;
  } finally {
    server?.kill('SIGTERM');
    await new Promise((r) => (server && server.exitCode === null ? server.once('exit', r) : r(undefined)));
    await admin((c) => c.query(`drop database if exists ${name} with (force)`));
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
