/**
 * Exact schedules against the spreadsheet way. Builds the same 360-month
 * level-payment schedule (200,000.00 at 6 %, 30/360, monthly) two ways:
 *   reference   @formulajs/formulajs: PMT once, then IPMT and PPMT per month
 *               (binary floats, no dates, no rounding to the cent)
 *   loanbook    buildSchedule from loanbook/engine: bigint minor units, dated
 *               installments, named rounding, last installment absorbs the residue
 * The two alternate in rounds so machine noise hits both alike; the figures are
 * the median of the rounds. Also checks the exact schedule's first row and
 * totals against the published/derived vector before timing.
 *
 *   npx tsx bench/schedule.ts [seconds]
 */
import { performance } from 'node:perf_hooks';
import * as formulajs from '@formulajs/formulajs';
import { buildSchedule, parseDecimal, type ScheduleTerms } from '../src/engine/index.js';

const SECONDS = Number(process.argv[2] ?? 6);
const ROUNDS = 6;

const terms: ScheduleTerms = {
  principal: 20_000_000n,
  currency: 'USD',
  annualRate: parseDecimal('0.06'),
  term: 360,
  frequency: 'monthly',
  disbursementDate: '2026-01-15',
  dayCount: '30/360',
};

function exact(): number {
  return buildSchedule(terms).installments.length;
}

function spreadsheet(): number {
  const rate = 0.06 / 12;
  const rows: { interest: number; principal: number }[] = [];
  formulajs.PMT(rate, 360, 200_000);
  for (let period = 1; period <= 360; period++) {
    rows.push({ interest: -Number(formulajs.IPMT(rate, period, 360, 200_000)), principal: -Number(formulajs.PPMT(rate, period, 360, 200_000)) });
  }
  return rows.length;
}

function rate(fn: () => number, seconds: number): number {
  let count = 0;
  const start = performance.now();
  let elapsed = 0;
  while (elapsed < seconds * 1000) {
    fn();
    count++;
    elapsed = performance.now() - start;
  }
  return count / (elapsed / 1000);
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

const check = buildSchedule(terms);
const first = check.installments[0];
if (check.payment !== 119_910n || first?.interest !== 100_000n || check.totalInterest !== 23_167_704n) {
  throw new Error('the exact schedule does not match the 200k/6%/360 vector; refusing to time a wrong result');
}

rate(exact, 0.5);
rate(spreadsheet, 0.5);
const exactRates: number[] = [];
const referenceRates: number[] = [];
for (let round = 0; round < ROUNDS; round++) {
  referenceRates.push(rate(spreadsheet, SECONDS / ROUNDS / 2));
  exactRates.push(rate(exact, SECONDS / ROUNDS / 2));
}
const reference = median(referenceRates);
const loanbook = median(exactRates);
console.log('360-month level-payment schedule, schedules per second (median of %d rounds)', ROUNDS);
console.log('  formulajs PMT/IPMT/PPMT (floats)   %s', reference.toFixed(0).padStart(9));
console.log('  loanbook buildSchedule (exact)     %s', loanbook.toFixed(0).padStart(9));
console.log('  ratio loanbook / formulajs         %sx', (loanbook / reference).toFixed(2).padStart(8));
