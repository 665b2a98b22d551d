/**
 * A real Prometheus scraping a running Loanbook: every metric an alert rule uses has data,
 * and every rule evaluates without error. Run by scripts/ci/prometheus-live.sh.
 *
 * 1. A scratch PostgreSQL database; `loanbook migrate up`; `loanbook serve` (the built
 *    dist/, ENV=production, Redis, jobs in process, METRICS_PORT on a free port).
 * 2. Real traffic over HTTP: sign-in as the bootstrap admin, a 401 and a 404, a product,
 *    a borrower, a loan disbursed and paid, an application through POST /loan/apply, a
 *    forecast large enough to run as a job, and an end-of-day run.
 * 3. /usr/bin/prometheus (temp storage, free port, scrape and rule evaluation every 1 s)
 *    with deploy/monitoring/alerts.yml, scraping the metrics port.
 * 4. For each metric the alerts use (external exporters' aside): count of its series in
 *    Prometheus, by its HTTP API; then /api/v1/rules: every rule loaded, health "ok".
 * Prints a table metric → series; exits 1 on the first missing metric or unhealthy rule.
 *
 * Environment: PROM_LIVE_POSTGRES_URL (default postgres://$USER@127.0.0.1:5432/test) is
 * where the scratch database is created and dropped; PROM_LIVE_REDIS_URL (default
 * redis://127.0.0.1:6379); PROMETHEUS (default /usr/bin/prometheus).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import YAML from 'yaml';
import { PRODUCT } from '../../test/support/products.js';
import { EXTERNAL_METRICS, metricNames } from './promql.js';

const ROOT = join(import.meta.dirname, '..', '..');
const ALERTS = join(ROOT, 'deploy', 'monitoring', 'alerts.yml');
const CLI = join(ROOT, 'dist', 'src', 'cli.js');
const ADMIN_URL = process.env.PROM_LIVE_POSTGRES_URL ?? `postgres://${userInfo().username}@127.0.0.1:5432/test`;
const REDIS_URL = process.env.PROM_LIVE_REDIS_URL ?? 'redis://127.0.0.1:6379';
const PROMETHEUS = process.env.PROMETHEUS ?? '/usr/bin/prometheus';
const ADMIN_EMAIL = 'ops-check@example.test';
const ADMIN_PASSWORD = `pw-${randomBytes(12).toString('base64url')}`;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const log = (line: string) => process.stdout.write(`${line}\n`);

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

/** Polls `probe` until it returns a value (not undefined) or `timeoutMs` passes. */
async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
    await sleep(250);
  }
}

const children: ChildProcess[] = [];
function start(command: string, args: string[], env: NodeJS.ProcessEnv, name: string): { child: ChildProcess; output: () => string } {
  const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let output = '';
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-20_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  child.once('exit', (code, signal) => {
    if (!stopping) log(`${name} exited early (code ${code}, signal ${signal}); its last output:\n${output}`);
  });
  return { child, output: () => output };
}

function run(command: string, args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve(output) : reject(new Error(`${command} ${args.join(' ')} exited ${code}:\n${output}`))));
  });
}

let stopping = false;
async function stopChildren(): Promise<void> {
  stopping = true;
  await Promise.all(
    children.map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.exitCode !== null || c.signalCode !== null) return resolve();
          const force = setTimeout(() => c.kill('SIGKILL'), 10_000);
          c.once('exit', () => {
            clearTimeout(force);
            resolve();
          });
          c.kill('SIGTERM');
        }),
    ),
  );
}

async function admin(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: ADMIN_URL });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

const dbName = `lb_promlive_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
let dbCreated = false;
let dir: string | undefined;

/** Stops what was started and drops the scratch database; safe to call twice. */
async function cleanup(): Promise<void> {
  await stopChildren();
  if (dbCreated) {
    dbCreated = false;
    await admin(`drop database if exists ${dbName} with (force)`).catch((e: unknown) => log(`could not drop ${dbName}: ${(e as Error).message}`));
  }
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
}
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    log(`prometheus-live: ${signal}, cleaning up`);
    void cleanup().finally(() => process.exit(1));
  });
}

async function main(): Promise<void> {
  dir = await mkdtemp(join(tmpdir(), 'loanbook-prometheus-live-'));
  try {
    const [apiPort, metricsPort, promPort] = [await freePort(), await freePort(), await freePort()];
    await admin(`create database ${dbName}`);
    dbCreated = true;
    const dbUrl = new URL(ADMIN_URL);
    dbUrl.pathname = `/${dbName}`;

    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      ENV: 'production',
      DATABASE_URL: dbUrl.toString(),
      REDIS_URL,
      HOST: '127.0.0.1',
      PORT: String(apiPort),
      METRICS_PORT: String(metricsPort),
      SECRET_KEY: randomBytes(48).toString('base64'),
      ENCRYPTION_KEY: randomBytes(32).toString('base64'),
      ADMIN_EMAIL,
      ADMIN_PASSWORD,
      JOBS_IN_PROCESS: 'true',
      LOG_LEVEL: 'warn',
    };
    log(`scratch database ${dbName}; API :${apiPort}, metrics :${metricsPort}, Prometheus :${promPort}`);
    log((await run(process.execPath, [CLI, 'migrate', 'up'], env)).trim().split('\n').at(-1) ?? '');
    const serve = start(process.execPath, [CLI, 'serve'], env, 'loanbook serve');
    const api = `http://127.0.0.1:${apiPort}`;
    await until('loanbook to be ready', 60_000, async () => ((await fetch(`${api}/health/ready`)).ok ? true : undefined)).catch((e: unknown) => {
      throw new Error(`${(e as Error).message}\n${serve.output()}`);
    });

    await drive(api);

    const promConfig = {
      global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
      rule_files: [ALERTS],
      scrape_configs: [{ job_name: 'loanbook', static_configs: [{ targets: [`127.0.0.1:${metricsPort}`] }] }],
    };
    await writeFile(join(dir, 'prometheus.yml'), YAML.stringify(promConfig));
    const prometheus = start(
      PROMETHEUS,
      [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${promPort}`, '--log.level=warn'],
      { PATH: process.env.PATH },
      'prometheus',
    );
    const prom = `http://127.0.0.1:${promPort}`;
    await until('Prometheus to be ready', 30_000, async () => ((await fetch(`${prom}/-/ready`)).ok ? true : undefined)).catch((e: unknown) => {
      throw new Error(`${(e as Error).message}\n${prometheus.output()}`);
    });

    // The metrics every alert uses, Loanbook's own.
    const groups = (YAML.parse(await readFile(ALERTS, 'utf8')) as { groups: { rules: { alert?: string; expr: string }[] }[] }).groups;
    const rules = groups.flatMap((g) => g.rules);
    const wanted = [...new Set(rules.flatMap((r) => [...metricNames(r.expr)]))].filter((m) => !(m in EXTERNAL_METRICS)).sort();

    const seriesCount = async (metric: string): Promise<number> => {
      const res = await fetch(`${prom}/api/v1/query?query=${encodeURIComponent(`count({__name__="${metric}"})`)}`);
      const body = (await res.json()) as { status: string; data: { result: { value: [number, string] }[] } };
      if (body.status !== 'success') throw new Error(`query for ${metric} failed: ${JSON.stringify(body)}`);
      return Number(body.data.result[0]?.value[1] ?? 0);
    };
    // A few scrapes (the samplers' first reads land on the first scrapes).
    await until('the first scrapes', 30_000, async () => ((await seriesCount('http_requests_total')) > 0 ? true : undefined));
    await sleep(5000);
    const counts = new Map<string, number>();
    for (const m of wanted) counts.set(m, await seriesCount(m));

    // Rule evaluation: every rule loaded and evaluated without error.
    const rulesBody = await until('every rule evaluated', 30_000, async () => {
      const body = (await (await fetch(`${prom}/api/v1/rules`)).json()) as { data: { groups: { name: string; rules: { name: string; health: string; lastError?: string; state?: string }[] }[] } };
      const loaded = body.data.groups.flatMap((g) => g.rules);
      return loaded.length === rules.length && loaded.every((r) => r.health !== 'unknown') ? loaded : undefined;
    });

    const width = Math.max(...wanted.map((m) => m.length));
    log(`\n${'metric (used by an alert)'.padEnd(width)}  series`);
    for (const m of wanted) log(`${m.padEnd(width)}  ${counts.get(m)}`);
    log(`external (not checked here): ${rules.flatMap((r) => [...metricNames(r.expr)]).filter((m) => m in EXTERNAL_METRICS).filter((m, i, a) => a.indexOf(m) === i).join(', ')}`);
    log(`\nrules: ${rulesBody.length} loaded; ${rulesBody.filter((r) => r.health === 'ok').length} healthy; firing now: ${rulesBody.filter((r) => r.state === 'firing').map((r) => r.name).join(', ') || 'none'}`);

    const missing = wanted.filter((m) => (counts.get(m) ?? 0) === 0);
    const unhealthy = rulesBody.filter((r) => r.health !== 'ok');
    if (missing.length > 0 || unhealthy.length > 0) {
      for (const m of missing) log(`MISSING: ${m} has no series in Prometheus`);
      for (const r of unhealthy) log(`UNHEALTHY rule ${r.name}: ${r.health} ${r.lastError ?? ''}`);
      throw new Error(`${missing.length} metric(s) without data, ${unhealthy.length} unhealthy rule(s)`);
    }
    log(`prometheus-live: OK (${wanted.length} metrics used by ${rules.length} alerts have data; every rule healthy)`);
  } finally {
    await cleanup();
  }
}

/** Real traffic through the API: every path that feeds a metric an alert reads. */
async function drive(api: string): Promise<void> {
  const call = async (method: string, path: string, token: string | undefined, body?: unknown, expect?: number[]) => {
    const headers: Record<string, string> = { 'idempotency-key': randomUUID() };
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`${api}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    if (expect && !expect.includes(res.status)) throw new Error(`${method} ${path}: ${res.status} ${text.slice(0, 500)}`);
    return { status: res.status, json: (text ? JSON.parse(text) : {}) as Record<string, unknown> };
  };
  const token = String((await call('POST', '/v1/auth/token', undefined, { email: ADMIN_EMAIL, password: ADMIN_PASSWORD }, [200])).json.access_token);
  await call('GET', '/v1/me', undefined, undefined, [401]);
  await call('GET', '/v1/no-such-route', token, undefined, [404]);

  const product = (
    await call('POST', '/v1/products', token, { ...PRODUCT, code: `ops-${randomUUID().slice(0, 8)}` }, [201])
  ).json;
  const borrower = (await call('POST', '/v1/users', token, { email: `borrower-${randomUUID().slice(0, 8)}@example.test`, password: `pw-${randomUUID()}`, role: 'borrower' }, [201])).json;
  const loan = (await call('POST', '/v1/loans', token, { product_id: product.id, borrower_id: borrower.id, principal: '1200.00', annual_rate: '0.12', term: 12 }, [201])).json;
  await call('POST', `/v1/loans/${String(loan.id)}/disbursements`, token, {}, [201]);
  await call('POST', `/v1/loans/${String(loan.id)}/payments`, token, { amount: '50.00' }, [201]);

  const application = await call('POST', '/loan/apply', token, {
    applicant_name: 'Test User',
    loan_amount: 250000,
    monthly_income: 10000,
    employment_years: 7,
    credit_history: { existing_loans: 2, repayment_score: 0.92 },
    collateral_value: 350000,
    company: 'Microsoft',
  }, [201]);
  log(`traffic: product, borrower, loan ${String(loan.id)} disbursed and paid; application ${String(application.json.decision)}`);

  // 6,000 loans × 360 months is above the inline size: it runs as a job.
  const loans = Array.from({ length: 6000 }, (_, i) => ({ balance: 100_000 + (i % 97) * 1000, annual_rate: 0.04 + (i % 13) / 1000, remaining_term: 360 - (i % 120), age: i % 120 }));
  const queued = (await call('POST', '/v1/cashflows/forecast', token, { loans, assumptions: { prepayment: { model: 'psa', speed: 150 }, default: { model: 'sda', speed: 100 }, severity: 0.35, months_to_liquidation: 12 } }, [202])).json;
  const job = await until('the forecast job', 120_000, async () => {
    const j = (await call('GET', String(queued.job_url), token, undefined, [200])).json;
    return j.state === 'succeeded' || j.state === 'failed' ? j : undefined;
  });
  log(`traffic: forecast job ${String(job.id)} ${String(job.state)}`);

  const eod = (await call('POST', '/v1/eod/runs', token, {}, [200, 202])).json;
  const run = await until('the end-of-day run', 120_000, async () => {
    const r = (await call('GET', `/v1/eod/runs/${String(eod.id)}`, token, undefined, [200])).json;
    return r.status === 'running' ? undefined : r;
  });
  log(`traffic: end of day ${String(run.business_date)} ${String(run.status)}`);
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    log(`prometheus-live: FAILED: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  },
);
