/**
 * What a backdated payment costs. One loan (100,000.00 at 12 %, 60 months, disbursed
 * 2026-01-15) gets 999 daily payments of 73.00 through the service (1,000 transactions;
 * a checkpoint every 25th), and is cloned, so that every measured payment runs on a
 * fresh copy of the same loan (a backdated payment drops the checkpoints after its date).
 * Then, through servicing.pay on PostgreSQL:
 *   ordinary    a payment dated the business date (the day after the last payment):
 *               advance one day, allocate, post — the reference
 *   near end    dated two days before the last transaction: replays from the nearest
 *               checkpoint (about 25 transactions) and posts the difference
 *   near start  dated two days after the disbursement: no checkpoint before it, so
 *               the whole history (about 1,000 transactions) is replayed
 *   near end, after a near-start one
 *               the near-end payment again, on a copy that has just taken a near-start
 *               one: a replay writes no checkpoints, so this one replays from the start too
 * each `samples` times, printing the median and the ratio to the ordinary payment, and
 * the pure replay of the whole history alone (no database) for comparison.
 *
 *   npx tsx bench/backdated.ts [--transactions 1000] [--samples 7]
 * BENCH_POSTGRES_URL (default postgres://$USER@127.0.0.1:5432/test) names the database
 * used to create and drop the scratch database.
 */
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { addDays, formatDate, parseDate } from '../src/engine/index.js';
import { newLoanState, replay, type LoanEvent } from '../src/servicing/loan-state.js';
import { loanTermsFromJson } from '../src/servicing/products.js';
import {
  books,
  checkBooks,
  cloneLoan,
  commandContext,
  createProduct,
  disbursedLoan,
  load,
  median,
  openBench,
  setBusinessDate,
  type Bench,
} from './support/servicing-fixtures.js';

const { values: flags } = parseArgs({
  options: { transactions: { type: 'string', default: '1000' }, samples: { type: 'string', default: '7' } },
});
const TRANSACTIONS = Number(flags.transactions);
const SAMPLES = Number(flags.samples);
const DISBURSED_ON = '2026-01-15';
const dayAfter = (date: string, days: number) => formatDate(addDays(parseDate(date), days));

interface Sample {
  readonly ms: number;
  readonly replayed: number | null;
}

/** Times one payment on `loanId`; reads back how many transactions its journal entry says were replayed. */
async function timedPayment(bench: Bench, loanId: string, date: string): Promise<Sample> {
  const started = performance.now();
  const result = await bench.servicing.pay(loanId, { amount: '73.00', date }, commandContext());
  const ms = performance.now() - started;
  let replayed: number | null = null;
  if (result.backdated) {
    const entryId = result.journalEntryIds[0];
    const entry = entryId === undefined ? undefined : await bench.db.selectFrom('journal_entries').select('description').where('id', '=', entryId).executeTakeFirst();
    replayed = Number(/(\d+) transactions replayed/.exec(entry?.description ?? '')?.[1] ?? Number.NaN);
  }
  return { ms, replayed };
}

async function main(): Promise<void> {
  const loadBefore = load();
  const bench = await openBench('backdated', { poolMax: 4 });
  try {
    await setBusinessDate(bench, DISBURSED_ON);
    const productId = await createProduct(bench);
    const template = await disbursedLoan(bench, productId, { principal: '100000.00', annualRate: '0.12', term: 60 });
    // 1 disbursement + (TRANSACTIONS − 1) daily payments, each dated after the one before (never backdated).
    const lastDate = dayAfter(DISBURSED_ON, TRANSACTIONS - 1);
    const today = dayAfter(lastDate, 1);
    await setBusinessDate(bench, today);
    const building = performance.now();
    for (let k = 1; k < TRANSACTIONS; k++) {
      await bench.servicing.pay(template, { amount: '73.00', date: dayAfter(DISBURSED_ON, k) }, commandContext());
    }
    const buildSeconds = (performance.now() - building) / 1000;
    const row = await bench.db.selectFrom('loans').select(['status', 'last_seq', 'terms']).where('id', '=', template).executeTakeFirstOrThrow();
    const checkpoints = await bench.db.selectFrom('loan_checkpoints').select((eb) => eb.fn.countAll<string>().as('n')).where('loan_id', '=', template).executeTakeFirstOrThrow();
    if (row.status !== 'active' || row.last_seq !== TRANSACTIONS) throw new Error(`the template loan is ${row.status} with ${row.last_seq} transactions; expected active with ${TRANSACTIONS}`);

    // A fresh copy per measured payment (and one for the ordinary ones).
    const copies = 2 * SAMPLES + 1;
    await cloneLoan(bench, template, copies);
    const ids = (await bench.db.selectFrom('loans').select('id').where('id', '!=', template).orderBy('id').execute()).map((r) => r.id);
    const reference = ids.pop() as string;

    // Warm-up on the template itself (compiles both paths), then alternate the kinds.
    await timedPayment(bench, template, today);
    await timedPayment(bench, template, dayAfter(lastDate, -2));
    const ordinary: Sample[] = [];
    const nearEnd: Sample[] = [];
    const nearStart: Sample[] = [];
    const nearEndAfterStart: Sample[] = [];
    for (let i = 0; i < SAMPLES; i++) {
      ordinary.push(await timedPayment(bench, reference, today));
      nearEnd.push(await timedPayment(bench, ids[2 * i] as string, dayAfter(lastDate, -2)));
      nearStart.push(await timedPayment(bench, ids[2 * i + 1] as string, dayAfter(DISBURSED_ON, 2)));
      nearEndAfterStart.push(await timedPayment(bench, ids[2 * i + 1] as string, dayAfter(lastDate, -2)));
    }

    // The pure part of the longest replay: the history's fold, no database.
    const terms = loanTermsFromJson(row.terms);
    const events: LoanEvent[] = [{ type: 'disbursement', seq: 1, date: DISBURSED_ON, amount: terms.principal }];
    for (let k = 1; k < TRANSACTIONS; k++) events.push({ type: 'repayment', seq: k + 1, date: dayAfter(DISBURSED_ON, k), amount: 7_300n });
    const foldMs: number[] = [];
    for (let i = 0; i < SAMPLES; i++) {
      const started = performance.now();
      replay(newLoanState(), terms, [...events, { type: 'repayment', seq: TRANSACTIONS + 1, date: dayAfter(DISBURSED_ON, 2), amount: 7_300n }], today);
      foldMs.push(performance.now() - started);
    }

    const check = await checkBooks(bench);
    const ref = median(ordinary.map((s) => s.ms));
    const line = (name: string, samples: Sample[]) => {
      const ms = median(samples.map((s) => s.ms));
      const replayed = samples[0]?.replayed;
      return `${name.padEnd(34)} ${ms.toFixed(1).padStart(8)} ms   ${(ms / ref).toFixed(1).padStart(6)}× ordinary${replayed === null || replayed === undefined ? '' : `   (${replayed} transactions replayed)`}`;
    };
    process.stdout.write(
      `Backdated payment on a loan with ${TRANSACTIONS} transactions (PostgreSQL, checkpoint every 25, median of ${SAMPLES}, Node ${process.version}, load average ${loadBefore} → ${load()} (2 cores))\n` +
        `  the loan: ${TRANSACTIONS - 1} payments built in ${buildSeconds.toFixed(1)} s (${((buildSeconds * 1000) / (TRANSACTIONS - 1)).toFixed(1)} ms each), ${checkpoints.n} checkpoints\n` +
        `${line('  ordinary payment (reference)', ordinary)}\n` +
        `${line('  backdated, 2 days before the last', nearEnd)}\n` +
        `${line('  backdated, 2 days after the start', nearStart)}\n` +
        `${line('  2 days before the last, after that', nearEndAfterStart)}\n` +
        `  of which the pure fold of ${TRANSACTIONS + 1} events ${median(foldMs).toFixed(1).padStart(8)} ms\n` +
        `  books: ${books(check)}\n`,
    );
  } finally {
    await bench.close();
  }
}

await main();
