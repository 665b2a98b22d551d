/**
 * Drill: rolling restarts of `loanbook serve --workers 2` under load lose no request.
 *
 * On a scratch database on the machine's PostgreSQL (created, migrated and seeded here,
 * dropped at the end), the cluster serves a mixed load on kept-alive connections: GET
 * /health/ready, an authenticated GET /v1/loans/:id, and POST /v1/loans/:id/payments
 * with a fresh Idempotency-Key. SIGHUP is sent twice during the load (each a full
 * rolling restart: every worker replaced one at a time), SIGTERM at the end. No client
 * retries anything: a reset connection counts as an error.
 *
 * PASS only if: zero connection errors, every response 2xx, every acknowledged payment
 * recorded exactly once, the ledger balanced, both restarts completed, and the primary
 * exited 0 after SIGTERM. Then it prints plain autocannon figures for `serve` (one
 * process) beside `serve --workers 2` on GET /health/live and on an authenticated GET.
 *
 *   npm run build && npx tsx bench/faults/rolling-restart.ts [--seconds 20] [--clients 16] [--loans 40] [--bench-seconds 10]
 *   (LOANBOOK_CLI=src/cli.ts runs the sources instead of dist/)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { Agent, request as httpRequest } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { checkLedger, drill, onCleanup, repaymentsByKey, seedBook, sleep, withClient } from './support.js';

const { values: flags } = parseArgs({
  options: {
    seconds: { type: 'string', default: '20' },
    clients: { type: 'string', default: '16' },
    loans: { type: 'string', default: '40' },
    'bench-seconds': { type: 'string', default: '10' },
  },
});
const SECONDS = Number(flags.seconds);
const CLIENTS = Number(flags.clients);
const LOANS = Number(flags.loans);
const BENCH_SECONDS = Number(flags['bench-seconds']);

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = resolve(ROOT, process.env.LOANBOOK_CLI ?? 'dist/src/cli.js');
const ADMIN_URL = process.env.TEST_POSTGRES_URL ?? `postgres://${userInfo().username}@127.0.0.1:5432/test`;
const ADMIN = { email: 'rolling-admin@example.test', password: 'Rolling-Passw0rd-4k2mz8' };

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** A scratch database on the shared PostgreSQL, dropped at cleanup. */
async function scratchDatabase(label: string): Promise<string> {
  const name = `lb_rolling_${label}_${process.pid}`;
  await withClient(ADMIN_URL, (c) => c.query(`create database ${name}`));
  onCleanup(() => withClient(ADMIN_URL, (c) => c.query(`drop database if exists ${name} with (force)`)).then(() => undefined));
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

interface Served {
  readonly child: ChildProcess;
  readonly port: number;
  readonly logFile: string;
  log(): { message: string; [k: string]: unknown }[];
  waitFor(message: string, count?: number, timeoutMs?: number): Promise<void>;
  readonly exited: Promise<number | null>;
}

async function serve(args: string[], url: string, label: string): Promise<Served> {
  if (!existsSync(CLI)) throw new Error(`${CLI} not found: run \`npm run build\` first (or set LOANBOOK_CLI=src/cli.ts)`);
  const port = await freePort();
  const logFile = join(tmpdir(), `lb-rolling-${label}-${process.pid}.log`);
  const fd = openSync(logFile, 'w');
  const node = CLI.endsWith('.ts') ? ['--import', 'tsx', CLI] : [CLI];
  const child = spawn(process.execPath, [...node, 'serve', ...args], {
    cwd: ROOT,
    stdio: ['ignore', fd, fd],
    env: {
      PATH: process.env.PATH ?? '',
      ENV: 'development',
      HOST: '127.0.0.1',
      PORT: String(port),
      METRICS_PORT: String(await freePort()),
      DATABASE_URL: url,
      SECRET_KEY: 'rolling-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz',
      ENCRYPTION_KEY: Buffer.from('0123456789abcdef0123456789ABCDEF').toString('base64'),
      ADMIN_EMAIL: ADMIN.email,
      ADMIN_PASSWORD: ADMIN.password,
      RATE_LIMIT_REQUESTS: '1000000',
      LOG_LEVEL: 'info',
      SHUTDOWN_GRACE_MS: '30000',
    },
  });
  closeSync(fd);
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  onCleanup(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  const log = () =>
    readFileSync(logFile, 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { message: string; [k: string]: unknown });
  const waitFor = async (message: string, count = 1, timeoutMs = 120_000) => {
    const started = performance.now();
    while (log().filter((e) => e.message === message).length < count) {
      if (child.exitCode !== null) throw new Error(`serve exited waiting for "${message}"; see ${logFile}`);
      if (performance.now() - started > timeoutMs) throw new Error(`no "${message}" within ${timeoutMs} ms; see ${logFile}`);
      await sleep(100);
    }
  };
  const served: Served = { child, port, logFile, log, waitFor, exited };
  await waitFor(args.includes('--workers') ? 'loanbook cluster ready' : 'loanbook listening');
  return served;
}

interface Result {
  readonly kind: 'ready' | 'loan' | 'pay';
  /** 0: no response (the connection failed). */
  readonly status: number;
  readonly error?: string;
  readonly key?: string;
  readonly loanId?: string;
}

function call(agent: Agent, port: number, method: string, path: string, headers: Record<string, string>, body?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolvePromise, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path, agent, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (s: string) => (text += s));
      res.on('end', () => resolvePromise({ status: res.statusCode ?? 0, body: text }));
      res.on('error', reject);
    });
    req.setTimeout(30_000, () => req.destroy(new Error('client timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

async function login(port: number): Promise<string> {
  const agent = new Agent();
  const r = await call(agent, port, 'POST', '/v1/auth/token', { 'content-type': 'application/json' }, JSON.stringify(ADMIN));
  agent.destroy();
  if (r.status !== 200) throw new Error(`login: ${r.status} ${r.body}`);
  return (JSON.parse(r.body) as { access_token: string }).access_token;
}

function countBy<T>(items: readonly T[], key: (t: T) => string): string {
  const m = new Map<string, number>();
  for (const i of items) m.set(key(i), (m.get(key(i)) ?? 0) + 1);
  return [...m.entries()]
    .sort()
    .map(([k, n]) => `${k}×${n}`)
    .join(' ');
}

async function bench(port: number, path: string, token?: string): Promise<{ rps: number; p50: number; p99: number; non2xx: number; errors: number }> {
  const r = await autocannon({
    url: `http://127.0.0.1:${port}${path}`,
    connections: 32,
    duration: BENCH_SECONDS,
    workers: 1,
    ...(token ? { headers: { authorization: `Bearer ${token}` } } : {}),
  });
  return { rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, non2xx: r.non2xx, errors: r.errors };
}

await drill('rolling-restart', async () => {
  // ---- The drill ------------------------------------------------------------------------
  const url = await scratchDatabase('drill');
  const loans = await seedBook(url, LOANS);
  const api = await serve(['--workers', '2'], url, 'drill');
  const token = await login(api.port);
  const agent = new Agent({ keepAlive: true, maxSockets: CLIENTS });
  const results: Result[] = [];
  let running = true;
  const client = async (n: number) => {
    for (let i = 0; running; i++) {
      const loanId = loans[(n + i) % loans.length]!;
      const pick = (n + i) % 10;
      const auth = { authorization: `Bearer ${token}` };
      try {
        if (pick < 3) {
          const r = await call(agent, api.port, 'GET', '/health/ready', {});
          results.push({ kind: 'ready', status: r.status });
        } else if (pick < 7) {
          const r = await call(agent, api.port, 'GET', `/v1/loans/${loanId}`, auth);
          results.push({ kind: 'loan', status: r.status });
        } else {
          const key = randomUUID();
          const r = await call(agent, api.port, 'POST', `/v1/loans/${loanId}/payments`, { ...auth, 'content-type': 'application/json', 'idempotency-key': key }, JSON.stringify({ amount: '10.00' }));
          results.push({ kind: 'pay', status: r.status, key, loanId });
        }
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        results.push({ kind: pick < 3 ? 'ready' : pick < 7 ? 'loan' : 'pay', status: 0, error: err.code ?? err.message });
      }
    }
  };
  const started = performance.now();
  const clients = Array.from({ length: CLIENTS }, (_, n) => client(n));
  const restarts: number[] = [];
  for (const at of [0.2, 0.55]) {
    await sleep(Math.max(0, started + at * SECONDS * 1000 - performance.now()));
    const t0 = performance.now();
    const done = api.log().filter((e) => e.message === 'rolling restart complete').length;
    api.child.kill('SIGHUP');
    await api.waitFor('rolling restart complete', done + 1);
    restarts.push(performance.now() - t0);
  }
  await sleep(Math.max(0, started + SECONDS * 1000 - performance.now()));
  running = false;
  await Promise.all(clients);
  const elapsed = (performance.now() - started) / 1000;
  agent.destroy();
  const t0 = performance.now();
  api.child.kill('SIGTERM');
  const exitCode = await api.exited;
  const stopMs = performance.now() - t0;

  const log = api.log();
  const replaced = log.filter((e) => e.message === 'worker replaced').map((e) => e.duration_ms as number);
  const acknowledged = results.filter((r) => r.kind === 'pay' && r.status >= 200 && r.status < 300);
  const recorded = await repaymentsByKey(url, acknowledged.map((r) => r.key!));
  const missing = acknowledged.filter((r) => recorded.get(r.key!) !== 1).length;
  const ledger = await checkLedger(url);
  const errors = results.filter((r) => r.status === 0);
  const non2xx = results.filter((r) => r.status !== 0 && (r.status < 200 || r.status >= 300));

  console.log(`rolling restart drill: serve --workers 2, ${CLIENTS} kept-alive clients for ${elapsed.toFixed(1)} s, SIGHUP ×2, then SIGTERM`);
  console.log(`  requests          ${results.length} (${(results.length / elapsed).toFixed(0)}/s)`);
  console.log(`  by kind           ${countBy(results, (r) => r.kind)}`);
  console.log(`  by status         ${countBy(results, (r) => String(r.status))}`);
  if (non2xx.length > 0) console.log(`  non-2xx           ${countBy(non2xx, (r) => `${r.kind} ${r.status}`)}`);
  console.log(`  connection errors ${errors.length}${errors.length ? ` (${countBy(errors, (r) => r.error ?? '?')})` : ''}`);
  console.log(`  rolling restarts  ${restarts.map((m) => `${(m / 1000).toFixed(1)} s`).join(', ')} (signal to complete)`);
  console.log(`  worker replaced   ${replaced.map((m) => `${m} ms`).join(', ')} (fork → ready → old drained and exited)`);
  console.log(`  SIGTERM → exit    ${Math.round(stopMs)} ms, exit code ${exitCode}`);
  console.log(`  payments          ${acknowledged.length} acknowledged, ${missing} not recorded exactly once; ledger: ${ledger.entries} entries, ${ledger.unbalanced} unbalanced, ${ledger.duplicateKeys} duplicate keys`);
  const pass =
    errors.length === 0 && non2xx.length === 0 && missing === 0 && ledger.unbalanced === 0 && ledger.duplicateKeys === 0 && restarts.length === 2 && replaced.length === 4 && exitCode === 0;

  // ---- Throughput: one process beside two workers ------------------------------------------
  console.log(`\nautocannon, 32 connections, ${BENCH_SECONDS} s each (same machine as the server)`);
  console.log('  mode                 route                 req/s    p50 ms  p99 ms  non-2xx  errors');
  for (const [label, args] of [
    ['serve', []],
    ['serve --workers 2', ['--workers', '2']],
  ] as const) {
    const benchUrl = await scratchDatabase(label === 'serve' ? 'one' : 'two');
    const benchLoans = await seedBook(benchUrl, 1);
    const s = await serve([...args], benchUrl, label === 'serve' ? 'one' : 'two');
    const t = await login(s.port);
    for (const [route, path, tok] of [
      ['GET /health/live', '/health/live', undefined],
      ['GET /v1/loans/:id', `/v1/loans/${benchLoans[0]}`, t],
    ] as const) {
      const f = await bench(s.port, path, tok);
      console.log(
        `  ${label.padEnd(20)} ${route.padEnd(20)} ${f.rps.toFixed(0).padStart(6)}  ${String(f.p50).padStart(6)}  ${String(f.p99).padStart(6)}  ${String(f.non2xx).padStart(7)}  ${String(f.errors).padStart(6)}`,
      );
    }
    s.child.kill('SIGTERM');
    await s.exited;
  }

  return {
    pass,
    summary: `${results.length} requests, ${errors.length} connection errors, ${non2xx.length} non-2xx, ${acknowledged.length} payments acknowledged / ${missing} missing, 2 rolling restarts (${restarts.map((m) => `${(m / 1000).toFixed(1)} s`).join(', ')}), exit ${exitCode}`,
  };
});
