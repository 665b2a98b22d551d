/**
 * Pool cash-flow projection throughput: loan-months per second for a deterministic
 * heterogeneous pool (default 1,000,000 loans: balances 50k–800k, gross rates 3.00–8.99 %,
 * 180- and 360-month loans of every age, 25 bp servicing), projected over up to 360 months
 * at 150 % PSA, 100 % SDA, severity 0.35, 12 months to liquidation, P&I advanced:
 *
 *   TypeScript, one thread   projectionTotals over the whole pool (validation included)
 *   TypeScript, N threads    node:worker_threads, the loans split into N contiguous slices of
 *                            one SharedArrayBuffer pool, monthly totals merged
 *   C reference              bench/reference/pool.c, the same pool generator and formulas,
 *                            compiled here with gcc -O2, one thread
 *
 * Each is run --rounds times after a warm-up; the figure is the median round (wall time; for
 * one thread also process CPU time, which moves less on a machine shared with other work). The script
 * then checks that the three agree on the aggregate (every one of the 12 monthly total
 * columns summed over the months) to a relative 1e-9, and prints the ratios: the target is
 * single-threaded TypeScript within 2× of C and a near-linear speed-up with threads.
 *
 *   npx tsx bench/pool.ts [--loans 1000000] [--months 360] [--threads N] [--rounds 3]
 * --threads defaults to CALCULATION_THREAD_POOL_SIZE, else os.availableParallelism().
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import {
  TOTALS_LAYOUT,
  TOTALS_WIDTH,
  mergeProjectionTotals,
  preparePool,
  projectionFromTotals,
  projectionTotals,
  type LoanArrays,
  type ProjectionTotals,
} from '../src/engine/index.js';
import { createCalculationPool } from '../src/forecasting/threads.js';
import { BENCH_ASSUMPTIONS, generatePool, type WorkerReply, type WorkerRequest } from './support/pool-fixtures.js';

const { values: flags } = parseArgs({
  options: {
    loans: { type: 'string', default: '1000000' },
    months: { type: 'string', default: '360' },
    threads: { type: 'string' },
    rounds: { type: 'string', default: '3' },
  },
});
const LOANS = Number(flags.loans);
const MONTHS = Number(flags.months);
const THREADS = Number(flags.threads ?? process.env.CALCULATION_THREAD_POOL_SIZE ?? availableParallelism());
const ROUNDS = Number(flags.rounds);
for (const [name, value] of [['loans', LOANS], ['months', MONTHS], ['threads', THREADS], ['rounds', ROUNDS]] as const) {
  if (!Number.isInteger(value) || value < 1) throw new Error(`--${name} must be a positive integer (got ${value})`);
}
const RELATIVE_TOLERANCE = 1e-9;

const median = (values: readonly number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
};
const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');

function columnSums(totals: ProjectionTotals): number[] {
  const sums = new Array<number>(TOTALS_WIDTH).fill(0);
  for (let t = 0; t < totals.months; t++) for (let j = 0; j < TOTALS_WIDTH; j++) sums[j] = (sums[j] as number) + (totals.data[t * TOTALS_WIDTH + j] as number);
  return sums;
}

function loanMonths(pool: LoanArrays, months: number): number {
  let count = 0;
  for (let i = 0; i < pool.balance.length; i++) if ((pool.balance[i] as number) > 0) count += Math.min(pool.remainingTerm[i] as number, months);
  return count;
}

// ---------------------------------------------------------------------------
// TypeScript, one thread

function singleThreaded(pool: LoanArrays): ProjectionTotals {
  return projectionTotals(preparePool(pool), BENCH_ASSUMPTIONS, { horizonMonths: MONTHS });
}

// ---------------------------------------------------------------------------
// TypeScript, worker threads

/** tsx's loader is not inherited by worker threads on Node 20; the worker registers it first. */
function startWorker(): Worker {
  const script = new URL('./support/pool-worker.ts', import.meta.url).href;
  const tsx = import.meta.resolve('tsx/esm/api');
  const boot = `const { register } = await import(${JSON.stringify(tsx)}); register(); await import(${JSON.stringify(script)});`;
  return new Worker(boot, { eval: true });
}

class ThreadPool {
  private readonly workers: Worker[];
  private next = 0;
  constructor(size: number) {
    this.workers = Array.from({ length: size }, startWorker);
  }
  run(pool: LoanArrays, months: number): Promise<WorkerReply[]> {
    const n = pool.balance.length;
    const size = this.workers.length;
    return Promise.all(
      this.workers.map(
        (worker, w) =>
          new Promise<WorkerReply>((resolve, reject) => {
            const id = this.next++;
            const request: WorkerRequest = { id, pool, from: Math.floor((n * w) / size), to: Math.floor((n * (w + 1)) / size), months };
            const onMessage = (reply: WorkerReply): void => {
              if (reply.id !== id) return;
              worker.off('message', onMessage);
              worker.off('error', reject);
              resolve(reply);
            };
            worker.on('message', onMessage);
            worker.once('error', reject);
            worker.postMessage(request);
          }),
      ),
    );
  }
  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

// ---------------------------------------------------------------------------
// C reference

interface CResult {
  readonly loans: number;
  readonly months: number;
  readonly loan_months: number;
  readonly seconds: number[];
  readonly cpu_seconds: number[];
  readonly sums: number[];
}

function runC(): CResult {
  const dir = mkdtempSync(join(tmpdir(), 'loanbook-pool-'));
  try {
    const source = fileURLToPath(new URL('./reference/pool.c', import.meta.url));
    const binary = join(dir, 'pool');
    execFileSync('gcc', ['-O2', '-o', binary, source, '-lm'], { stdio: ['ignore', 'inherit', 'inherit'] });
    const out = execFileSync(binary, [String(LOANS), String(MONTHS), String(ROUNDS + 1)], { encoding: 'utf8' });
    const result = JSON.parse(out) as CResult;
    return { ...result, seconds: result.seconds.slice(1), cpu_seconds: result.cpu_seconds.slice(1) }; // the first round is the warm-up
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------

function compare(label: string, a: readonly number[], b: readonly number[]): number {
  let worst = 0;
  let worstColumn = '';
  for (let j = 0; j < TOTALS_WIDTH; j++) {
    const x = a[j] as number;
    const y = b[j] as number;
    const scale = Math.max(Math.abs(x), Math.abs(y));
    const relative = scale === 0 ? 0 : Math.abs(x - y) / scale;
    if (relative > worst) {
      worst = relative;
      worstColumn = TOTALS_LAYOUT[j] as string;
    }
  }
  const ok = worst <= RELATIVE_TOLERANCE;
  console.log(`  ${label}: largest relative difference ${worst.toExponential(2)}${worstColumn ? ` (${worstColumn})` : ''} — ${ok ? 'agree' : 'DISAGREE'} (tolerance ${RELATIVE_TOLERANCE})`);
  return ok ? 0 : 1;
}

async function main(): Promise<void> {
  console.log(`Pool projection: ${fmt(LOANS)} loans, up to ${MONTHS} months, 150 % PSA, 100 % SDA, severity 0.35, 12 months to liquidation, P&I advanced`);
  console.log(`Node ${process.version}, ${availableParallelism()} CPUs, ${THREADS} threads, ${ROUNDS} rounds (median)\n`);

  const started = performance.now();
  const pool = generatePool(LOANS, true);
  const work = loanMonths(pool, MONTHS);
  console.log(`pool generated in ${((performance.now() - started) / 1000).toFixed(2)} s: ${fmt(work)} loan-months`);

  // Warm-up on a slice, then the timed rounds.
  singleThreaded(generatePool(Math.min(LOANS, 20_000)));
  let single: ProjectionTotals | undefined;
  const singleSeconds: number[] = [];
  const singleCpuSeconds: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    single = singleThreaded(pool);
    const cpu = process.cpuUsage(cpu0);
    singleSeconds.push((performance.now() - t0) / 1000);
    singleCpuSeconds.push((cpu.user + cpu.system) / 1e6);
  }
  if (!single) throw new Error('no rounds');

  const threads = new ThreadPool(THREADS);
  let threaded: ProjectionTotals | undefined;
  const threadedSeconds: number[] = [];
  try {
    await threads.run(generatePool(Math.min(LOANS, 20_000 * THREADS), true), MONTHS);
    for (let r = 0; r < ROUNDS; r++) {
      const t0 = performance.now();
      const replies = await threads.run(pool, MONTHS);
      threaded = mergeProjectionTotals(replies);
      threadedSeconds.push((performance.now() - t0) / 1000);
    }
  } finally {
    await threads.close();
  }
  if (!threaded) throw new Error('no rounds');

  // The product's calculation pool (src/forecasting/threads.ts, what a queued forecast uses):
  // the pool validated, slices of its shared arrays projected on the threads, the totals
  // added, then the columns and summary built.
  const product = createCalculationPool(THREADS);
  let productSummary: ReturnType<typeof projectionFromTotals>['summary'] | undefined;
  const productSeconds: number[] = [];
  try {
    await product.projectLoans(generatePool(Math.min(LOANS, 20_000 * THREADS), true), BENCH_ASSUMPTIONS, { horizonMonths: MONTHS });
    for (let r = 0; r < ROUNDS; r++) {
      const t0 = performance.now();
      productSummary = (await product.projectLoans(pool, BENCH_ASSUMPTIONS, { horizonMonths: MONTHS, pricing: { price: 100 } })).summary;
      productSeconds.push((performance.now() - t0) / 1000);
    }
  } finally {
    await product.close();
  }
  if (!productSummary) throw new Error('no rounds');

  const c = runC();
  if (c.loan_months !== work) throw new Error(`C projected ${c.loan_months} loan-months, TypeScript ${work}: not the same pool`);

  const rate = (seconds: number): number => work / seconds;
  const tsSingle = rate(median(singleSeconds));
  const tsThreaded = rate(median(threadedSeconds));
  const cRate = rate(median(c.seconds));
  const rounds = (seconds: readonly number[]): string => seconds.map((s) => s.toFixed(3)).join(', ');
  console.log('\nloan-months per second of wall time (median round; seconds per round in brackets)');
  console.log(`  TypeScript, 1 thread     ${fmt(tsSingle).padStart(13)}   [${rounds(singleSeconds)}]`);
  console.log(`  TypeScript, ${THREADS} threads${THREADS < 10 ? ' ' : ''}   ${fmt(tsThreaded).padStart(13)}   [${rounds(threadedSeconds)}]`);
  const tsProduct = rate(median(productSeconds));
  console.log(`  TypeScript, calculation pool of ${THREADS} (src/forecasting/threads.ts) ${fmt(tsProduct).padStart(13)}   [${rounds(productSeconds)}]`);
  console.log(`  C (gcc -O2), 1 thread    ${fmt(cRate).padStart(13)}   [${rounds(c.seconds)}]`);
  // CPU time is the steadier figure for one thread on a machine shared with other work.
  const tsCpu = rate(median(singleCpuSeconds));
  const cCpu = rate(median(c.cpu_seconds));
  console.log('loan-months per CPU second, one thread (process CPU time, median round)');
  console.log(`  TypeScript               ${fmt(tsCpu).padStart(13)}   [${rounds(singleCpuSeconds)}]`);
  console.log(`  C (gcc -O2)              ${fmt(cCpu).padStart(13)}   [${rounds(c.cpu_seconds)}]`);
  const cOverTs = cRate / tsSingle;
  const speedUp = tsThreaded / tsSingle;
  console.log('\nratios');
  console.log(`  C ÷ TypeScript (1 thread), wall   ${cOverTs.toFixed(2)}×   target ≤ 2×: ${cOverTs <= 2 ? 'met' : 'NOT met'}`);
  console.log(`  C ÷ TypeScript (1 thread), CPU    ${(cCpu / tsCpu).toFixed(2)}×`);
  console.log(`  TypeScript ${THREADS} threads ÷ 1 thread    ${speedUp.toFixed(2)}×   (${((speedUp / THREADS) * 100).toFixed(0)} % of linear)`);
  console.log(`  calculation pool of ${THREADS} ÷ 1 thread  ${(tsProduct / tsSingle).toFixed(2)}×   (${((tsProduct / tsSingle / THREADS) * 100).toFixed(0)} % of linear; includes validating the pool on the main thread and building the columns)`);
  console.log(`  C ÷ TypeScript (${THREADS} threads)         ${(cRate / tsThreaded).toFixed(2)}×`);
  console.log(`  load average during the run: ${loadavg().map((l) => l.toFixed(2)).join(' ')} on ${availableParallelism()} CPUs`);

  console.log('\naggregate totals (12 monthly columns summed over the months)');
  const tsSums = columnSums(single);
  let failures = compare('TypeScript 1 thread vs C', tsSums, c.sums);
  failures += compare(`TypeScript ${THREADS} threads vs 1 thread`, columnSums(threaded), tsSums);
  const summary = projectionFromTotals(single, BENCH_ASSUMPTIONS, { price: 100 }).summary;
  const relative = Math.max(...(['totalPrincipal', 'totalInterest', 'totalLoss', 'walYears'] as const).map((k) => Math.abs(productSummary[k] - summary[k]) / Math.max(1, Math.abs(summary[k]))));
  console.log(`  calculation pool vs 1 thread: largest relative difference in the summary ${relative.toExponential(2)} — ${relative <= 1e-9 ? 'agree' : 'DIFFER'} (tolerance 1e-9)`);
  if (relative > 1e-9) failures++;
  console.log(
    `  pool: balance ${fmt(single.originalBalance)}, principal ${fmt(summary.totalPrincipal)}, interest ${fmt(summary.totalInterest)}, ` +
      `loss ${fmt(summary.totalLoss)}, cumulative defaults ${(summary.cumulativeDefaultRate * 100).toFixed(3)} %, WAL ${summary.walYears.toFixed(3)} y, ` +
      `yield at par ${((summary.yield ?? NaN) * 100).toFixed(4)} %`,
  );
  if (failures > 0) process.exitCode = 1;
}

await main();
