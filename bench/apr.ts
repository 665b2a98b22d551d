/**
 * How fast the Regulation Z Appendix J APR is. Measures, on a 360-payment
 * monthly loan with a long (odd) first period:
 *   series      appendixJApr from a payment series (validation, calendar
 *               expansion, (b)(4) unit-period choice, (b)(5) counting, solve)
 *   explicit    the same loan given as 360 dated payments (adds date parsing)
 *   reference   only the (b)(8) equation, solved by plain bisection with one
 *               Math.pow per cash flow on t and f computed once beforehand
 * and prints solves per second and the ratio to the reference.
 *
 *   npx tsx bench/apr.ts [seconds per measurement, default 2]
 */
import { performance } from 'node:perf_hooks';
import { type AprInput, appendixJApr, appendixJSchedule } from '../src/engine/apr.js';
import { addMonthsToAnchor, formatDate, parseDate } from '../src/engine/dates.js';

const SECONDS = Math.max(2, Number(process.argv[2] ?? 2));

// 300,000.00 advanced on 10 January, first of 360 payments on 1 March: a first
// period of one month and 20 days.
const ADVANCE = { date: '2024-01-10', amount: 30_000_000n };
const PAYMENT = 189_620n; // 1,896.20, about 6.5 % a year
const series: AprInput = { advances: [ADVANCE], paymentSeries: [{ firstDate: '2024-03-01', amount: PAYMENT, count: 360, frequency: 'monthly' }] };
const first = parseDate('2024-03-01');
const explicit: AprInput = {
  advances: [ADVANCE],
  payments: Array.from({ length: 360 }, (_, k) => ({ date: formatDate(addMonthsToAnchor(first, k, first.day)), amount: PAYMENT })),
};

/** The reference: bisection on Σ P/((1+f·i)(1+i)^t) − A, Math.pow per flow. */
function referenceSolver(input: AprInput): () => number {
  const flows = appendixJSchedule(input).cashFlows;
  const amount = flows.map((f) => (f.kind === 'payment' ? 1 : -1) * Number(f.amount));
  const t = flows.map((f) => f.t);
  const frac = flows.map((f) => Number(f.f.num) / Number(f.f.den));
  const value = (i: number): number => {
    let sum = 0;
    for (let k = 0; k < amount.length; k++) sum += (amount[k] as number) / ((1 + (frac[k] as number) * i) * Math.pow(1 + i, t[k] as number));
    return sum;
  };
  return () => {
    let lo = 0;
    let hi = 1;
    while (hi - lo > 1e-12) {
      const mid = (lo + hi) / 2;
      if (value(mid) > 0) lo = mid;
      else hi = mid;
    }
    return ((lo + hi) / 2) * 12;
  };
}

interface Figures {
  readonly perSecond: number;
  readonly apr: number;
}

function measure(solve: () => number): Figures {
  let apr = 0;
  // Warm-up, so the optimizing compiler has seen the loop.
  const warmUntil = performance.now() + 500;
  while (performance.now() < warmUntil) apr = solve();
  let count = 0;
  const started = performance.now();
  const until = started + SECONDS * 1000;
  let now = started;
  while (now < until) {
    for (let k = 0; k < 50; k++) apr = solve();
    count += 50;
    now = performance.now();
  }
  return { perSecond: count / ((now - started) / 1000), apr };
}

const reference = measure(referenceSolver(series));
const fromSeries = measure(() => appendixJApr(series).aprNumber);
const fromList = measure(() => appendixJApr(explicit).aprNumber);
const once = appendixJApr(series);

const row = (name: string, f: Figures): string =>
  `${name.padEnd(10)} ${f.perSecond.toFixed(0).padStart(9)} solves/s   ${(1e6 / f.perSecond).toFixed(1).padStart(7)} µs/solve   ` +
  `APR ${(f.apr * 100).toFixed(6)} %   ${(f.perSecond / reference.perSecond).toFixed(2)}× reference`;
process.stdout.write(
  `Regulation Z Appendix J APR, 360 monthly payments, long first period (${SECONDS} s each, Node ${process.version})\n` +
    `${row('reference', reference)}\n${row('series', fromSeries)}\n${row('explicit', fromList)}\n` +
    `unit period ${once.unitPeriod}, ${once.iterations} Newton iterations, |APR − reference| = ${Math.abs(once.aprNumber - reference.apr).toExponential(1)}\n`,
);
