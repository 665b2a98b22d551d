/**
 * End of day over a large active book on PostgreSQL. One loan (12,000.00 at 12 %,
 * 36 months by default, disbursed 2026-01-15) is built by the real service and cloned
 * with set-based SQL to `--loans` active loans (one journal entry for the clones, so the
 * book still reconciles). Then eod.run closes:
 *   mid-period  2026-01-16, 01-17, … (one date per chunk size): interest recognized for
 *               the day, nothing falls due
 *   due date    2026-02-15: installment 1 falls due on every loan (the whole installment's
 *               interest recognized, balances and next due date move)
 * and prints loans per second, the time 1,000,000 loans would take at that rate, the
 * chunk transactions' p50/p99, and where a loan's time goes: CPU in Node and in the
 * PostgreSQL backend per loan (from process.cpuUsage and /proc), and the pure per-loan
 * steps measured alone on the same row (JSON parse, the fold, the ledger vector and
 * balances, serialization). The target is 1,000,000 loans in under 10 minutes.
 *
 *   npx tsx bench/eod.ts [--loans 100000] [--chunks 500,2000] [--term 36] [--due-date true] [--workers 1] [--lanes 2]
 * --workers 2 runs two eod.process loops over the same run (they share the book with
 * FOR UPDATE SKIP LOCKED), to see what overlapping Node and PostgreSQL would give (each
 * loop reconciles the book when it finds no loan left, so that part is done twice).
 * BENCH_POSTGRES_URL (default postgres://$USER@127.0.0.1:5432/test) names the database
 * used to create and drop the scratch database.
 */
import { PerformanceObserver, constants as perf, performance, type PerformanceEntry } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { sql } from 'kysely';
import type { EodRun, EodService } from '../src/servicing/eod.js';
import { balancesOf, endOfDay, glOf } from '../src/servicing/loan-state.js';
import { glFromJson, glToJson, stateFromJson, stateToJson } from '../src/servicing/loan-state-json.js';
import { accumulateDifference } from '../src/servicing/posting.js';
import { loanTermsFromJson } from '../src/servicing/products.js';
import { books, checkBooks, cloneLoan, createProduct, disbursedLoan, load, median, openBench, quantile, setBusinessDate, type Bench } from './support/servicing-fixtures.js';
import { startSampler, type SessionSampler } from './support/session-sampler.js';

const { values: flags } = parseArgs({
  options: {
    loans: { type: 'string', default: '100000' },
    chunks: { type: 'string', default: '500,2000' },
    term: { type: 'string', default: '36' },
    'due-date': { type: 'string', default: 'true' },
    workers: { type: 'string', default: '1' },
    lanes: { type: 'string', default: '2' },
  },
});
const LOANS = Number(flags.loans);
const CHUNKS = flags.chunks.split(',').map(Number);
const TERM = Number(flags.term);
const DUE_DATE_RUN = flags['due-date'] !== 'false';
const WORKERS = Number(flags.workers);
const LANES = Number(flags.lanes);
const DISBURSED_ON = '2026-01-15';
const FIRST_DUE = '2026-02-15';

interface Measured {
  readonly label: string;
  readonly date: string;
  readonly chunkSize: number;
  readonly seconds: number;
  readonly run: EodRun;
  readonly chunkSeconds: readonly number[];
  readonly nodeCpu: number;
  /** Garbage collection pauses in Node: all, and the major (mark-compact) ones. */
  readonly gc: number;
  readonly gcMajor: number;
  readonly backendCpu: number;
}

async function closeDate(bench: Bench, sampler: SessionSampler, label: string, date: string, chunkSize: number): Promise<Measured> {
  const chunkSeconds: number[] = [];
  const eod: EodService = bench.eod({ chunkSize, lanes: LANES, onChunk: (_loans, seconds) => chunkSeconds.push(seconds) });
  let gc = 0;
  let gcMajor = 0;
  const observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries() as (PerformanceEntry & { detail?: { kind?: number } })[]) {
      gc += e.duration;
      if (e.detail?.kind === perf.NODE_PERFORMANCE_GC_MAJOR) gcMajor += e.duration;
    }
  });
  observer.observe({ entryTypes: ['gc'] });
  const cpu = process.cpuUsage();
  sampler.begin('loanbook');
  const started = performance.now();
  let run: EodRun;
  if (WORKERS <= 1) {
    run = await eod.run({ date, actorId: null });
  } else {
    const claimed = await eod.start({ date, actorId: null });
    const runs = await Promise.all(Array.from({ length: WORKERS }, () => eod.process(claimed.id)));
    run = runs[0] as EodRun;
  }
  const seconds = (performance.now() - started) / 1000;
  const report = sampler.end();
  const used = process.cpuUsage(cpu);
  observer.disconnect();
  if (run.status !== 'completed' || run.loansProcessed !== LOANS) throw new Error(`end of day ${date}: ${run.status}, ${run.loansProcessed} of ${LOANS} loans (${run.error ?? ''})`);
  return { label, date, chunkSize, seconds, run, chunkSeconds, nodeCpu: (used.user + used.system) / 1e6, gc: gc / 1000, gcMajor: gcMajor / 1000, backendCpu: report.backendCpu };
}

/** The per-loan steps of an end-of-day chunk, alone, on the template row as the driver returns it. */
function pureSteps(row: { terms: unknown; state: unknown; gl: unknown; currency: string }, stateText: string, date: string): Record<string, number> {
  const n = 2000;
  const timings: Record<string, number> = { 'driver: JSON.parse of the state': 0, 'terms and state from JSON': 0, 'fold (endOfDay)': 0, 'ledger vector, balances': 0, 'state and gl to JSON': 0 };
  for (let round = 0; round < 2; round++) {
    const t: Record<string, number> = {};
    let mark = performance.now();
    const lap = (name: string) => {
      const now = performance.now();
      t[name] = (t[name] ?? 0) + (now - mark);
      mark = now;
    };
    for (let i = 0; i < n; i++) {
      JSON.parse(stateText);
      lap('driver: JSON.parse of the state');
      const terms = loanTermsFromJson(row.terms);
      const before = stateFromJson(row.state);
      const posted = glFromJson(row.gl);
      lap('terms and state from JSON');
      const closed = endOfDay(before, terms, date, 2);
      lap('fold (endOfDay)');
      const gl = glOf(closed.advanced, terms);
      accumulateDifference(new Map(), posted, gl, row.currency);
      const finalGl = closed.events.length === 0 ? gl : glOf(closed.state, terms);
      balancesOf(closed.state, terms, date);
      lap('ledger vector, balances');
      JSON.stringify(stateToJson(closed.state));
      JSON.stringify(glToJson(finalGl));
      lap('state and gl to JSON');
    }
    // The first round warms the compiler; the second is kept (µs per loan).
    if (round === 1) for (const k of Object.keys(timings)) timings[k] = ((t[k] ?? 0) / n) * 1000;
  }
  return timings;
}

async function main(): Promise<void> {
  const loadBefore = load();
  const bench = await openBench('eod', { poolMax: 4 + WORKERS * LANES });
  const sampler = await startSampler(bench.scratch.url);
  try {
    await setBusinessDate(bench, DISBURSED_ON);
    const productId = await createProduct(bench);
    const template = await disbursedLoan(bench, productId, { principal: '12000.00', annualRate: '0.12', term: TERM });
    const seedSeconds = await cloneLoan(bench, template, LOANS - 1, { onBatch: (done) => process.stderr.write(`\r  seeding ${done + 1} loans`) });
    process.stderr.write('\n');
    const size = await sql<{ table: string; state: string }>`
      select pg_size_pretty(pg_total_relation_size('loans')) as table, pg_size_pretty(avg(pg_column_size(state))::bigint) as state from loans`.execute(bench.db);

    const measured: Measured[] = [];
    let date = '2026-01-16';
    for (const chunk of CHUNKS) {
      measured.push(await closeDate(bench, sampler, 'mid-period', date, chunk));
      date = `2026-01-${String(Number(date.slice(8)) + 1).padStart(2, '0')}`;
    }
    const midRow = await bench.db.selectFrom('loans').select(['terms', 'state', 'gl', 'currency']).where('id', '=', template).executeTakeFirstOrThrow();
    const mid = pureSteps(midRow, JSON.stringify(midRow.state), date);
    let due: Record<string, number> | undefined;
    if (DUE_DATE_RUN) {
      const best = measured.reduce((a, m) => (m.seconds < a.seconds ? m : a));
      const dueRow = await bench.db.selectFrom('loans').select(['terms', 'state', 'gl', 'currency']).where('id', '=', template).executeTakeFirstOrThrow();
      due = pureSteps(dueRow, JSON.stringify(dueRow.state), FIRST_DUE);
      measured.push(await closeDate(bench, sampler, 'due date', FIRST_DUE, best.chunkSize));
    }
    const check = await checkBooks(bench);

    const line = (m: Measured) => {
      const perSecond = LOANS / m.seconds;
      const million = 1_000_000 / perSecond;
      return (
        `  ${`${m.label} ${m.date}`.padEnd(22)} chunk ${String(m.chunkSize).padStart(5)}   ${m.seconds.toFixed(1).padStart(7)} s   ${perSecond.toFixed(0).padStart(6)} loans/s   ` +
        `1M in ${(million / 60).toFixed(1).padStart(5)} min ${million <= 600 ? '(within 10 min)' : '(over 10 min)'}   ` +
        `chunk p50 ${(median(m.chunkSeconds) * 1000).toFixed(0)} ms p99 ${(quantile(m.chunkSeconds, 0.99) * 1000).toFixed(0)} ms   ` +
        `reconciled ${m.run.reconciliation?.balanced === true ? 'yes' : 'NO'}\n` +
        `  ${''.padEnd(22)} per loan: wall ${((m.seconds / LOANS) * 1e6).toFixed(0)} µs = Node CPU ${((m.nodeCpu / LOANS) * 1e6).toFixed(0)} µs (GC ${((m.gc / LOANS) * 1e6).toFixed(0)}, of which major ${((m.gcMajor / LOANS) * 1e6).toFixed(0)}) + PostgreSQL CPU ${((m.backendCpu / LOANS) * 1e6).toFixed(0)} µs + other ${(((m.seconds - m.nodeCpu - m.backendCpu) / LOANS) * 1e6).toFixed(0)} µs\n`
      );
    };
    const steps = (name: string, s: Record<string, number>) =>
      `  ${name}: ${Object.entries(s)
        .map(([k, v]) => `${k} ${v.toFixed(0)}`)
        .join(', ')} (total ${Object.values(s)
        .reduce((a, v) => a + v, 0)
        .toFixed(0)} µs)\n`;
    process.stdout.write(
      `End of day on PostgreSQL, ${LOANS} active loans (${TERM}-month, loans table ${size.rows[0]?.table}, state ${size.rows[0]?.state} a loan), ${WORKERS} worker${WORKERS > 1 ? 's' : ''}, Node ${process.version}, load average ${loadBefore} → ${load()} (2 cores)\n` +
        `  seeded in ${seedSeconds.toFixed(0)} s\n` +
        measured.map(line).join('') +
        `Pure per-loan steps alone, µs (Node; the chunk's SQL not included)\n` +
        steps('mid-period', mid) +
        (due ? steps('due date  ', due) : '') +
        `Books after the runs: ${books(check)}\n`,
    );
    if (!check.reconciled || !check.trialBalanced) process.exitCode = 1;
  } finally {
    await sampler.close();
    await bench.close();
  }
}

await main();
