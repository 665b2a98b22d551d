/**
 * What the fault drills share: a PRIVATE PostgreSQL 15 and a PRIVATE Redis (own data
 * directory, own ports), so the drills may restart, stop and firewall them without
 * touching the machine's shared services; a seeded book; the API as a child process
 * (`node dist/src/cli.js serve`, or LOANBOOK_CLI); a timed HTTP client; the ledger and
 * idempotency checks; and the one-line result every drill ends with.
 *
 * Ports: FAULTS_PG_PORT (55432), FAULTS_REDIS_PORT (56379), FAULTS_API_PORT (58000).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { chownSync, closeSync, existsSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { Kysely } from 'kysely';
import pg from 'pg';
import type { AppDatabase } from '../../src/app.js';
import type { LedgerDb } from '../../src/ledger/repository.js';
import { createLedgerService } from '../../src/ledger/service.js';
import { openDatabase } from '../../src/platform/database.js';
import { migrateUp } from '../../src/platform/migrate.js';
import * as repo from '../../src/servicing/repository.js';
import type { ServicingDb } from '../../src/servicing/repository.js';
import { createServicingService, type ServicingDatabase } from '../../src/servicing/service.js';
import { ACTOR_ID, benchConfig, commandContext, PRODUCT_TERMS, quantile, silent, sleep } from '../support/servicing-fixtures.js';

export { quantile, sleep };

const execFileAsync = promisify(execFile);
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const PG_BIN = process.env.PG_BIN ?? '/usr/lib/postgresql/15/bin';
export const PG_PORT = Number(process.env.FAULTS_PG_PORT ?? 55432);
export const REDIS_PORT = Number(process.env.FAULTS_REDIS_PORT ?? 56379);
export const API_PORT = Number(process.env.FAULTS_API_PORT ?? 58000);
export const ADMIN = { email: 'faults-admin@example.test', password: 'Drill-Passw0rd-7f3kq9' };

const cleanups: (() => Promise<void> | void)[] = [];
/** Registers cleanup run (last first) by `drill`, whatever happens. */
export function onCleanup(fn: () => Promise<void> | void): void {
  cleanups.push(fn);
}

/**
 * Runs a drill: prints its figures, ends with `RESULT <name> PASS|FAIL <summary>` (which
 * scripts/ci/faults.sh collects) and exits 1 on failure. Cleanup always runs, also on
 * SIGINT/SIGTERM.
 */
export async function drill(name: string, body: () => Promise<{ pass: boolean; summary: string }>): Promise<void> {
  const cleanup = async () => {
    while (cleanups.length > 0) await Promise.resolve(cleanups.pop()?.()).catch((e: unknown) => console.error(`cleanup: ${String(e)}`));
  };
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      void cleanup().finally(() => process.exit(130));
    });
  }
  let outcome: { pass: boolean; summary: string };
  try {
    outcome = await body();
  } catch (e) {
    outcome = { pass: false, summary: `error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}` };
  }
  await cleanup();
  console.log(`RESULT ${name} ${outcome.pass ? 'PASS' : 'FAIL'} ${outcome.summary}`);
  process.exit(outcome.pass ? 0 : 1);
}

// ---------------------------------------------------------------------------------------------
// Private PostgreSQL

export interface PrivatePostgres {
  readonly url: string;
  readonly dir: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** pg_ctl restart -m fast (sessions terminated, clean shutdown, start again). */
  restart(): Promise<void>;
  isReady(): Promise<boolean>;
}

/** As root, the server runs as the `postgres` user (initdb refuses root). */
function asServerUser(cmd: string, args: string[]): [string, string[]] {
  return process.getuid?.() === 0 ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
}

async function run(cmd: string, args: string[]): Promise<string> {
  const [c, a] = asServerUser(cmd, args);
  const { stdout } = await execFileAsync(c, a, { maxBuffer: 16 << 20 });
  return stdout;
}

export async function startPostgres(port = PG_PORT): Promise<PrivatePostgres> {
  const dir = mkdtempSync(join(tmpdir(), 'lb-faults-pg-'));
  if (process.getuid?.() === 0) chownSync(dir, Number((await execFileAsync('id', ['-u', 'postgres'])).stdout), Number((await execFileAsync('id', ['-g', 'postgres'])).stdout));
  const data = join(dir, 'data');
  await run(join(PG_BIN, 'initdb'), ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8']);
  const opts = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c max_connections=200`;
  const pgCtl = (...args: string[]) => run(join(PG_BIN, 'pg_ctl'), ['-D', data, '-l', join(dir, 'log'), '-w', '-t', '60', ...args]);
  const instance: PrivatePostgres = {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    dir,
    start: () => pgCtl('-o', opts, 'start').then(() => undefined),
    stop: () => pgCtl('-m', 'fast', 'stop').then(() => undefined),
    restart: () => pgCtl('-m', 'fast', '-o', opts, 'restart').then(() => undefined),
    isReady: () =>
      execFileAsync('pg_isready', ['-h', '127.0.0.1', '-p', String(port), '-t', '1']).then(
        () => true,
        () => false,
      ),
  };
  onCleanup(async () => {
    await instance.stop().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });
  await instance.start();
  return instance;
}

// ---------------------------------------------------------------------------------------------
// Private Redis

export interface PrivateRedis {
  readonly url: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  cli(...args: string[]): Promise<string>;
}

export async function startRedis(port = REDIS_PORT): Promise<PrivateRedis> {
  let child: ChildProcess | undefined;
  const cli = async (...args: string[]) => (await execFileAsync('redis-cli', ['-p', String(port), ...args])).stdout.trim();
  const instance: PrivateRedis = {
    url: `redis://127.0.0.1:${port}`,
    async start() {
      child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
      for (let i = 0; i < 100; i++) {
        if ((await cli('ping').catch(() => '')) === 'PONG') return;
        await sleep(50);
      }
      throw new Error('private redis did not start');
    },
    async stop() {
      const c = child;
      child = undefined;
      if (!c || c.exitCode !== null) return;
      const exited = new Promise((r) => c.once('exit', r));
      c.kill('SIGKILL');
      await exited;
    },
    cli,
  };
  onCleanup(() => instance.stop());
  await instance.start();
  return instance;
}

// ---------------------------------------------------------------------------------------------
// iptables on the private port only

const DROP_RULES = (port: number) => [
  ['OUTPUT', '-o', 'lo', '-p', 'tcp', '--dport', String(port), '-j', 'DROP'],
  ['INPUT', '-i', 'lo', '-p', 'tcp', '--sport', String(port), '-j', 'DROP'],
];

/** Drops every packet to and from the private PostgreSQL port on loopback. */
export async function dropTraffic(port = PG_PORT): Promise<void> {
  onCleanup(() => allowTraffic(port));
  for (const [chain, ...rule] of DROP_RULES(port)) await execFileAsync('iptables', ['-I', chain!, ...rule]);
}

/** Deletes the rules (every copy; missing ones are fine). */
export async function allowTraffic(port = PG_PORT): Promise<void> {
  for (const [chain, ...rule] of DROP_RULES(port)) {
    for (;;) {
      const deleted = await execFileAsync('iptables', ['-D', chain!, ...rule]).then(
        () => true,
        () => false,
      );
      if (!deleted) break;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The book

export const BUSINESS_DATE = '2026-02-20';

/** Migrates the database and books `count` disbursed loans (12,000.00 at 12 % over 12 months) through the service. */
export async function seedBook(url: string, count: number): Promise<string[]> {
  const config = benchConfig({ DATABASE_URL: url });
  const database = await openDatabase<AppDatabase>({ kind: 'postgres', location: url }, { ...config.db, probe: undefined }, silent);
  try {
    await migrateUp(database.db as Kysely<unknown>);
    const db = database.db as unknown as Kysely<ServicingDatabase>;
    const clock = () => new Date();
    const ledger = createLedgerService({ db: db as unknown as Kysely<LedgerDb>, clock });
    const servicing = createServicingService({ db, ledger, clock, logger: silent });
    const sdb = db as unknown as Kysely<ServicingDb>;
    await repo.initBusinessDate(sdb, '2026-01-15');
    await repo.setBusinessDate(sdb, '2026-01-15');
    const product = await servicing.createProduct({ code: `faults-${randomUUID().slice(0, 8)}`, name: 'Fault drill loan', terms: PRODUCT_TERMS }, ACTOR_ID);
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      const booked = await servicing.createLoan({ productId: product.id, borrowerId: randomUUID(), principal: '12000.00', annualRate: '0.12', term: 12 }, commandContext());
      await servicing.disburse(booked.id, {}, commandContext());
      ids.push(booked.id);
    }
    await repo.setBusinessDate(sdb, BUSINESS_DATE);
    return ids;
  } finally {
    await database.close();
  }
}

// ---------------------------------------------------------------------------------------------
// The API as a child process

export interface Api {
  readonly pid: number;
  readonly base: string;
  alive(): boolean;
  /** SIGKILL, and wait for the process to be gone. */
  kill9(): Promise<void>;
  stop(): Promise<void>;
}

const CLI = resolve(ROOT, process.env.LOANBOOK_CLI ?? 'dist/src/cli.js');

export async function startApi(env: Record<string, string>, logName = 'api'): Promise<Api> {
  if (!existsSync(CLI)) throw new Error(`${CLI} not found: run \`npm run build\` first (or set LOANBOOK_CLI=src/cli.ts)`);
  const logFile = join(tmpdir(), `lb-faults-${logName}-${process.pid}.log`);
  const fd = openSync(logFile, 'a');
  // FAULTS_NODE_ARGS: extra node options for the API (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof").
  const nodeArgs = (process.env.FAULTS_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const args = [...nodeArgs, ...(CLI.endsWith('.ts') ? ['--import', 'tsx', CLI, 'serve'] : [CLI, 'serve'])];
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    stdio: ['ignore', fd, fd],
    env: {
      PATH: process.env.PATH ?? '',
      ENV: 'development',
      HOST: '127.0.0.1',
      PORT: String(API_PORT),
      SECRET_KEY: 'faults-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz',
      ENCRYPTION_KEY: Buffer.from('0123456789abcdef0123456789ABCDEF').toString('base64'),
      DATA_DIR: join(tmpdir(), `lb-faults-data-${process.pid}`),
      ADMIN_EMAIL: ADMIN.email,
      ADMIN_PASSWORD: ADMIN.password,
      RATE_LIMIT_REQUESTS: '1000000',
      LOG_LEVEL: 'warn',
      ...env,
    },
  });
  closeSync(fd);
  const base = `http://127.0.0.1:${API_PORT}`;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const api: Api = {
    pid: child.pid ?? -1,
    base,
    alive: () => child.exitCode === null && child.signalCode === null,
    async kill9() {
      if (api.alive()) child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      if (api.alive()) child.kill('SIGTERM');
      await Promise.race([exited, sleep(15_000)]);
      await api.kill9();
    },
  };
  onCleanup(() => api.kill9());
  const started = performance.now();
  while (performance.now() - started < 60_000) {
    if (!api.alive()) throw new Error(`the API exited during start-up; see ${logFile}`);
    const res = await request(base, 'GET', '/health/live', { timeoutMs: 1000 });
    if (res.status === 200) return api;
    await sleep(100);
  }
  throw new Error(`the API did not answer /health/live within 60 s; see ${logFile}`);
}

// ---------------------------------------------------------------------------------------------
// HTTP

export interface Outcome {
  /** 0: no response (connection refused or reset, or the client's own timeout). */
  readonly status: number;
  readonly retryAfter: string | null;
  readonly code: string | undefined;
  readonly body: string;
  readonly startedAt: number;
  readonly ms: number;
  readonly error?: string;
}

export async function request(
  base: string,
  method: string,
  path: string,
  options: { token?: string; key?: string; body?: unknown; timeoutMs?: number } = {},
): Promise<Outcome> {
  const startedAt = performance.now();
  const headers: Record<string, string> = {};
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  if (options.key) headers['idempotency-key'] = options.key;
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  try {
    const res = await fetch(base + path, {
      method,
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      signal: AbortSignal.timeout(options.timeoutMs ?? 30_000),
    });
    const body = await res.text();
    let code: string | undefined;
    if (res.headers.get('content-type')?.includes('problem+json')) code = (JSON.parse(body) as { code?: string }).code;
    return { status: res.status, retryAfter: res.headers.get('retry-after'), code, body, startedAt, ms: performance.now() - startedAt };
  } catch (e) {
    const err = e as Error & { cause?: { code?: string } };
    return { status: 0, retryAfter: null, code: undefined, body: '', startedAt, ms: performance.now() - startedAt, error: err.cause?.code ?? err.name };
  }
}

export async function login(base: string, email = ADMIN.email, password = ADMIN.password): Promise<string> {
  const res = await request(base, 'POST', '/v1/auth/token', { body: { email, password } });
  if (res.status !== 200) throw new Error(`login: ${res.status} ${res.body}`);
  return (JSON.parse(res.body) as { access_token: string }).access_token;
}

export function pay(base: string, token: string, loanId: string, key: string, timeoutMs?: number): Promise<Outcome> {
  return request(base, 'POST', `/v1/loans/${loanId}/payments`, { token, key, body: { amount: '10.00' }, ...(timeoutMs ? { timeoutMs } : {}) });
}

/** Counts outcomes by status ("0" for no response) as "503×12 201×40". */
export function byStatus(outcomes: readonly Outcome[]): string {
  const counts = new Map<number, number>();
  for (const o of outcomes) counts.set(o.status, (counts.get(o.status) ?? 0) + 1);
  return [...counts.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([s, n]) => `${s}×${n}`)
    .join(' ');
}

/** Counts problem codes (non-problems by status) as "database_unavailable×12 201×40". */
export function byCode(outcomes: readonly Outcome[]): string {
  const counts = new Map<string, number>();
  for (const o of outcomes) counts.set(o.code ?? String(o.status), (counts.get(o.code ?? String(o.status)) ?? 0) + 1);
  return [...counts.entries()].map(([c, n]) => `${c}×${n}`).join(' ');
}

export const ms = (v: number) => `${Math.round(v)} ms`;

// ---------------------------------------------------------------------------------------------
// Checks on the database

export async function withClient<T>(url: string, work: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  c.on('error', () => undefined);
  await c.connect();
  try {
    return await work(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}

export interface LedgerCheck {
  readonly entries: number;
  /** Entries whose lines do not net to zero per currency, or with fewer than two lines. */
  readonly unbalanced: number;
  /** Repayments per Idempotency-Key: keys recorded more than once. */
  readonly duplicateKeys: number;
  readonly repayments: number;
}

export async function checkLedger(url: string): Promise<LedgerCheck> {
  return withClient(url, async (c) => {
    const q = async (text: string) => Number((await c.query<{ n: string }>(text)).rows[0]?.n ?? 0);
    return {
      entries: await q('select count(*)::text as n from journal_entries'),
      unbalanced: await q(`select count(*)::text as n from (
          select e.id from journal_entries e left join journal_lines l on l.entry_id = e.id
          group by e.id having count(l.entry_id) < 2
          union
          select entry_id from journal_lines group by entry_id, currency having sum(amount) <> 0) x`),
      duplicateKeys: await q(`select count(*)::text as n from (
          select idempotency_key from loan_transactions where type = 'repayment' and idempotency_key is not null
          group by loan_id, idempotency_key having count(*) > 1) x`),
      repayments: await q(`select count(*)::text as n from loan_transactions where type = 'repayment'`),
    };
  });
}

/** How many repayments carry each of `keys` (keys with none are absent from the map). */
export async function repaymentsByKey(url: string, keys: readonly string[]): Promise<Map<string, number>> {
  return withClient(url, async (c) => {
    const { rows } = await c.query<{ key: string; n: string }>(
      `select idempotency_key as key, count(*)::text as n from loan_transactions
       where type = 'repayment' and idempotency_key = any($1::text[]) group by idempotency_key`,
      [keys],
    );
    return new Map(rows.map((r) => [r.key, Number(r.n)]));
  });
}

/** The book's URL for the application (a database of its own on the private server). */
export async function createBookDatabase(pgUrl: string, name = 'loanbook'): Promise<string> {
  await withClient(pgUrl, (c) => c.query(`create database ${name}`));
  const url = new URL(pgUrl);
  url.pathname = `/${name}`;
  return url.toString();
}
