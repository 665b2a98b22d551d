/**
 * Payments per second on PostgreSQL against pgbench, on one database in one run:
 *   reference   pgbench's built-in TPC-B-like script (`pgbench -c 32 -j 2 -T s -n`)
 *               on tables from `pgbench -i -s <scale>` (default scale 1: every
 *               transaction updates the one branch row, as every payment appends to
 *               the one audit chain)
 *   loanbook    32 concurrent clients calling servicing.pay(loan, 10.00) with an
 *               idempotency key on random loans of a book of 2,000 disbursed loans
 *               (pg pool of 32): lock the loan, claim the key, fold, post a balanced
 *               journal entry, record the transaction, outbox event and audit row,
 *               all in one transaction
 *   http        the same through the whole application (POST /v1/loans/:id/payments
 *               via app.inject: auth, rate limit, Idempotency-Key), for context
 * The two alternate in rounds so machine noise hits both alike. Prints transactions/s,
 * p50/p99 latency and the ratio; then where the sessions spent their time (sampled
 * from pg_stat_activity), how long the audit chain's advisory lock was held and what
 * its holder was doing, the CPU per transaction; and checks the books: the loans'
 * posted vectors equal the GL, the trial balance nets to zero, and the repayments
 * recorded equal the payments acknowledged.
 *
 *   npx tsx bench/payments.ts [--seconds 10] [--rounds 2] [--clients 32] [--loans 2000] [--scale 1] [--http-seconds 10]
 * BENCH_POSTGRES_URL (default postgres://$USER@127.0.0.1:5432/test) names the database
 * used to create and drop the scratch database. --http-seconds 0 skips the HTTP figure.
 */
import { execFile, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs, promisify } from 'node:util';
import { sql } from 'kysely';
import {
  books,
  checkBooks,
  load,
  cloneLoan,
  commandContext,
  createProduct,
  disbursedLoan,
  median,
  openBench,
  quantile,
  setBusinessDate,
  type Bench,
} from './support/servicing-fixtures.js';
import { CATEGORIES, startSampler, type PhaseReport, type SessionSampler } from './support/session-sampler.js';

const { values: flags } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '2' },
    clients: { type: 'string', default: '32' },
    loans: { type: 'string', default: '2000' },
    scale: { type: 'string', default: '1' },
    'http-seconds': { type: 'string', default: '10' },
  },
});
const SECONDS = Number(flags.seconds);
const ROUNDS = Number(flags.rounds);
const CLIENTS = Number(flags.clients);
const LOANS = Number(flags.loans);
const SCALE = Number(flags.scale);
const HTTP_SECONDS = Number(flags['http-seconds']);
const execFileAsync = promisify(execFile);
const DISBURSED_ON = '2026-01-15';
/** Installment 1 (due 2026-02-15) is overdue: each payment is allocated to what it owes (interest first). */
const PAY_ON = '2026-02-20';

interface Figures {
  readonly tps: number;
  readonly count: number;
  readonly seconds: number;
  readonly p50: number;
  readonly p99: number;
  readonly errors: number;
  readonly firstError?: string;
  readonly report: PhaseReport;
}

async function pgbench(url: string, sampler: SessionSampler): Promise<Figures> {
  const logDir = await mkdtemp(join(tmpdir(), 'lb-pgbench-'));
  try {
    const child = spawn('pgbench', ['-c', String(CLIENTS), '-j', '2', '-T', String(SECONDS), '-n', '-l', `--log-prefix=${join(logDir, 'tx')}`, url], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    sampler.begin('pgbench', child.pid);
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    const report = sampler.end();
    if (code !== 0) throw new Error(`pgbench exited with ${code}:\n${out}`);
    const tps = Number(/tps = ([\d.]+) \(without initial connection time\)/.exec(out)?.[1]);
    const count = Number(/number of transactions actually processed: (\d+)/.exec(out)?.[1]);
    const failed = Number(/number of failed transactions: (\d+)/.exec(out)?.[1] ?? 0);
    // Per-transaction log: client_id transaction_no time(µs) script_no epoch µs
    const latencies: number[] = [];
    for (const file of await readdir(logDir)) {
      for (const line of (await readFile(join(logDir, file), 'utf8')).split('\n')) {
        const us = Number(line.split(' ')[2]);
        if (Number.isFinite(us) && line !== '') latencies.push(us / 1000);
      }
    }
    return { tps, count, seconds: count / tps, p50: median(latencies), p99: quantile(latencies, 0.99), errors: failed, report };
  } finally {
    await rm(logDir, { recursive: true, force: true });
  }
}

/** CLIENTS workers, each posting payments back to back on random loans until the time is up. */
async function drive(seconds: number, pay: (loanId: string) => Promise<void>, ids: readonly string[], sampler?: SessionSampler): Promise<Omit<Figures, 'report'> & { report?: PhaseReport; nodeCpu: number }> {
  const latencies: number[] = [];
  let errors = 0;
  let firstError: string | undefined;
  const cpu = process.cpuUsage();
  sampler?.begin('loanbook');
  const started = performance.now();
  const until = started + seconds * 1000;
  const worker = async () => {
    while (performance.now() < until) {
      const id = ids[Math.floor(Math.random() * ids.length)] as string;
      const t0 = performance.now();
      try {
        await pay(id);
        latencies.push(performance.now() - t0);
      } catch (error) {
        errors++;
        firstError ??= error instanceof Error ? error.message : String(error);
      }
    }
  };
  await Promise.all(Array.from({ length: CLIENTS }, worker));
  const elapsed = (performance.now() - started) / 1000;
  const report = sampler?.end();
  const used = process.cpuUsage(cpu);
  return {
    tps: latencies.length / elapsed,
    count: latencies.length,
    seconds: elapsed,
    p50: median(latencies),
    p99: quantile(latencies, 0.99),
    errors,
    ...(firstError === undefined ? {} : { firstError }),
    ...(report === undefined ? {} : { report }),
    nodeCpu: (used.user + used.system) / 1e6,
  };
}

async function seed(bench: Bench): Promise<string[]> {
  await setBusinessDate(bench, DISBURSED_ON);
  const productId = await createProduct(bench);
  const template = await disbursedLoan(bench, productId, { principal: '12000.00', annualRate: '0.12', term: 12 });
  // One payment on the template brings it to PAY_ON (interest recognized), so every clone
  // starts from the same state and each measured payment is an allocation and one entry.
  await setBusinessDate(bench, PAY_ON);
  await bench.servicing.pay(template, { amount: '10.00' }, commandContext());
  await cloneLoan(bench, template, LOANS - 1);
  return (await bench.db.selectFrom('loans').select('id').execute()).map((r) => r.id);
}

async function repayments(bench: Bench): Promise<number> {
  const r = await sql<{ n: string }>`select count(*)::text as n from loan_transactions where type = 'repayment'`.execute(bench.db);
  return Number(r.rows[0]?.n);
}

function sum(figures: readonly Figures[]): Figures {
  const count = figures.reduce((a, f) => a + f.count, 0);
  const seconds = figures.reduce((a, f) => a + f.seconds, 0);
  const last = figures.at(-1) as Figures;
  return { ...last, count, seconds, tps: count / seconds, p50: median(figures.map((f) => f.p50)), p99: median(figures.map((f) => f.p99)), errors: figures.reduce((a, f) => a + f.errors, 0) };
}

function sessionsTable(rows: readonly [string, PhaseReport][]): string {
  const head = `  ${'mean sessions'.padEnd(36)}${rows.map(([name]) => name.padStart(12)).join('')}\n`;
  return (
    head +
    CATEGORIES.filter((c) => rows.some(([, r]) => r.sessions[c] >= 0.05))
      .map((c) => `  ${c.padEnd(36)}${rows.map(([, r]) => r.sessions[c].toFixed(1).padStart(12)).join('')}\n`)
      .join('')
  );
}

async function main(): Promise<void> {
  const loadBefore = load();
  const bench = await openBench('payments', { poolMax: CLIENTS, app: HTTP_SECONDS > 0 });
  const sampler = await startSampler(bench.scratch.url);
  try {
    const seeding = performance.now();
    const ids = await seed(bench);
    const seededRepayments = await repayments(bench);
    await execFileAsync('pgbench', ['-i', '-s', String(SCALE), '-q', bench.scratch.url]);
    const seedSeconds = (performance.now() - seeding) / 1000;

    let acknowledged = 0;
    const viaService = async (loanId: string) => {
      await bench.servicing.pay(loanId, { amount: '10.00' }, commandContext());
      acknowledged++;
    };
    // Warm-up: JIT, the pool's connections, the first touch of every page.
    await drive(Math.min(3, SECONDS), viaService, ids);

    const reference: Figures[] = [];
    const loanbook: Figures[] = [];
    let nodeCpu = 0;
    for (let round = 0; round < ROUNDS; round++) {
      reference.push(await pgbench(bench.scratch.url, sampler));
      const f = await drive(SECONDS, viaService, ids, sampler);
      nodeCpu += f.nodeCpu;
      loanbook.push(f as Figures);
    }

    let http: (Figures & { nodeCpu: number }) | undefined;
    if (bench.built !== undefined && HTTP_SECONDS > 0) {
      const built = bench.built;
      const email = `bench-servicer-${Date.now()}@example.test`;
      const password = 'bench-password-0123456789';
      await built.identity.createUser({ email, password, role: 'servicer' }, { actorId: null, ip: null, requestId: 'bench' });
      const login = await built.app.inject({ method: 'POST', url: '/v1/auth/token', payload: { email, password } });
      const token = login.json<{ access_token: string }>().access_token;
      const viaHttp = async (loanId: string) => {
        const res = await built.app.inject({
          method: 'POST',
          url: `/v1/loans/${loanId}/payments`,
          headers: { authorization: `Bearer ${token}`, 'idempotency-key': randomUUID() },
          payload: { amount: '10.00' },
        });
        if (res.statusCode !== 201) throw new Error(`${res.statusCode} ${res.body}`);
        acknowledged++;
      };
      await drive(1, viaHttp, ids);
      http = (await drive(HTTP_SECONDS, viaHttp, ids, sampler)) as Figures & { nodeCpu: number };
    }

    const check = await checkBooks(bench);
    const recorded = (await repayments(bench)) - seededRepayments;
    const ref = sum(reference);
    const lb = sum(loanbook);
    const row = (name: string, f: Figures) =>
      `  ${name.padEnd(36)}${f.tps.toFixed(0).padStart(7)} tx/s   p50 ${f.p50.toFixed(1).padStart(6)} ms   p99 ${f.p99.toFixed(1).padStart(6)} ms   ${(f.tps / ref.tps).toFixed(2)}× pgbench` +
      `${f.errors > 0 ? `   (${f.errors} errors${f.firstError ? `: ${f.firstError.slice(0, 120)}` : ''})` : ''}\n`;
    const perTx = (name: string, client: number, backend: number, count: number) =>
      `  ${name.padEnd(36)}client ${((client / count) * 1e3).toFixed(2).padStart(6)} ms   postgres ${((backend / count) * 1e3).toFixed(2).padStart(6)} ms   ` +
      `(2-core ceiling ${(2 / ((client + backend) / count)).toFixed(0)} tx/s)\n`;
    const holdMs = (f: Figures) => (f.report.auditHeld / f.tps) * 1000;
    const holder = CATEGORIES.filter((c) => lb.report.holder[c] >= 0.01)
      .map((c) => `${c} ${(lb.report.holder[c] * 100).toFixed(0)} %`)
      .join(', ');
    const reports: [string, PhaseReport][] = [['pgbench', ref.report], ['loanbook', lb.report]];
    if (http) reports.push(['http', http.report]);
    process.stdout.write(
      `Payments on PostgreSQL beside pgbench TPC-B-like (scale ${SCALE}), ${CLIENTS} clients, ${ROUNDS} × ${SECONDS} s each, Node ${process.version}, load average ${loadBefore} → ${load()} (2 cores)\n` +
        `  ${LOANS} disbursed loans (12,000.00, 12 %, 12 months; installment 1 overdue), payments of 10.00; seeded in ${seedSeconds.toFixed(1)} s\n` +
        row('pgbench (reference)', ref) +
        row('loanbook servicing.pay', lb) +
        (http ? row('loanbook HTTP POST /payments', http) : '') +
        `  per round: pgbench ${reference.map((f) => f.tps.toFixed(0)).join(', ')}; loanbook ${loanbook.map((f) => f.tps.toFixed(0)).join(', ')} tx/s\n` +
        `Where the time goes (sampled every ~20 ms from pg_stat_activity; /proc for CPU)\n` +
        sessionsTable(reports) +
        `  audit lock held in ${(lb.report.auditHeld * 100).toFixed(0)} % of samples: ${holdMs(lb).toFixed(2)} ms held per payment ` +
        `(the payments' ceiling while it is held: ${(lb.tps / lb.report.auditHeld).toFixed(0)}/s)\n` +
        `  the holder meanwhile: ${holder}\n` +
        `  CPU per transaction\n` +
        perTx('pgbench', ref.report.clientCpu, ref.report.backendCpu, ref.count) +
        perTx('loanbook servicing.pay', nodeCpu, lb.report.backendCpu, lb.count) +
        (http ? perTx('loanbook HTTP', http.nodeCpu, http.report.backendCpu, http.count) : '') +
        `Checks: ${books(check)}; repayments recorded ${recorded} = acknowledged ${acknowledged} ${recorded === acknowledged ? 'yes' : 'NO'}\n`,
    );
    if (!check.reconciled || !check.trialBalanced || recorded !== acknowledged) process.exitCode = 1;
  } finally {
    await sampler.close();
    await bench.close();
  }
}

await main();
