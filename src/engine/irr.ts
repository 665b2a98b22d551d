import { dayNumber } from './dates.js';
import { EngineError } from './errors.js';

/**
 * Spreadsheet-compatible discounting and rate functions with Excel's semantics:
 * XNPV/XIRR (ACT/365 from the first date), NPV (the first value is discounted
 * one period), IRR, PMT, IPMT, PPMT, RATE and CUMIPMT.
 *
 * These are reference and analytics functions on binary floats: they reproduce
 * what a spreadsheet shows, they are not money of record. Amounts that are
 * booked go through the bigint money and schedule modules; the APR of record is
 * Regulation Z's (see apr.ts).
 *
 * Rates are fractions per period (0.08 / 12 for 8 % a year paid monthly) and
 * must be greater than −1. Where Excel answers #NUM! because no rate was found,
 * these throw EngineError('no_root'); invalid arguments throw
 * EngineError('invalid_argument' | 'invalid_rate' | 'invalid_date' | 'date_order')
 * naming the argument.
 */

export interface DatedValue {
  /** YYYY-MM-DD */
  readonly date: string;
  readonly amount: number;
}

// ---------------------------------------------------------------------------
// Argument checks

function finite(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) throw new EngineError('invalid_argument', `${field} must be a finite number`, field);
  return value;
}

function rateArg(value: unknown, field = 'rate'): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= -1) {
    throw new EngineError('invalid_rate', `${field} must be a finite number greater than -1`, field);
  }
  return value;
}

function typeArg(value: unknown): 0 | 1 {
  if (value === 0 || value === 1) return value;
  throw new EngineError('invalid_argument', 'type must be 0 (end of period) or 1 (beginning of period)', 'type');
}

function valuesArg(values: unknown, field = 'values'): number[] {
  if (!Array.isArray(values) || values.length === 0) throw new EngineError('invalid_argument', `${field} must be a non-empty list of numbers`, field);
  return values.map((v, k) => finite(v, `${field}[${k}]`));
}

/** Amounts and year fractions (d_i − d_1) / 365 of dated flows; no date may precede the first. */
function datedArg(flows: unknown): { amounts: number[]; years: number[] } {
  if (!Array.isArray(flows) || flows.length === 0) throw new EngineError('invalid_argument', 'flows must be a non-empty list of { date, amount }', 'flows');
  const amounts: number[] = [];
  const years: number[] = [];
  let first = 0;
  for (let k = 0; k < flows.length; k++) {
    const flow = flows[k] as Partial<DatedValue> | null | undefined;
    if (typeof flow !== 'object' || flow === null) throw new EngineError('invalid_argument', `flows[${k}] must be { date, amount }`, `flows[${k}]`);
    const day = dayNumber(String(flow.date), `flows[${k}].date`);
    if (k === 0) first = day;
    else if (day < first) throw new EngineError('date_order', `flows[${k}].date precedes the first date`, `flows[${k}].date`);
    amounts.push(finite(flow.amount, `flows[${k}].amount`));
    years.push((day - first) / 365);
  }
  return { amounts, years };
}

function requireSignChange(amounts: readonly number[], field: string): void {
  if (!amounts.some((a) => a > 0) || !amounts.some((a) => a < 0)) {
    throw new EngineError('no_root', `${field} needs at least one positive and one negative value for a rate to exist`, field);
  }
}

// ---------------------------------------------------------------------------
// Root finding on r > −1: Newton from the guess, then a bracketed bisection.

const RATE_TOLERANCE = 1e-12;
const PROBES = [-0.999999, -0.99, -0.95, -0.9, -0.8, -0.6, -0.4, -0.2, -0.1, -0.05, -0.01, 0, 0.01, 0.05, 0.1, 0.2, 0.4, 0.7, 1, 2, 5, 10, 100, 1e3, 1e4, 1e6];

function findRate(f: (r: number) => number, df: (r: number) => number, guess: number, field: string): number {
  let r = guess;
  for (let k = 0; k < 100; k++) {
    const y = f(r);
    const d = df(r);
    if (!Number.isFinite(y) || !Number.isFinite(d) || d === 0) break;
    const next = r - y / d;
    if (!Number.isFinite(next) || next <= -1) break;
    if (Math.abs(next - r) <= RATE_TOLERANCE * Math.max(1, Math.abs(next))) return next;
    r = next;
  }
  // Bracket: the sign change among the probes nearest the guess.
  const points = [...PROBES, guess].filter((p) => p > -1).sort((a, b) => a - b);
  let best: [number, number, number] | undefined; // lo, hi, f(lo)
  let bestDistance = Infinity;
  let previous: number | undefined;
  let previousValue = NaN;
  for (const p of points) {
    const value = f(p);
    if (!Number.isFinite(value)) {
      previous = undefined;
      continue;
    }
    if (value === 0) return p;
    if (previous !== undefined && Math.sign(value) !== Math.sign(previousValue)) {
      const distance = guess < previous ? previous - guess : guess > p ? guess - p : 0;
      if (distance < bestDistance) {
        best = [previous, p, previousValue];
        bestDistance = distance;
      }
    }
    previous = p;
    previousValue = value;
  }
  if (!best) throw new EngineError('no_root', `no rate makes the ${field} discount to zero`, field);
  let [lo, hi, fLo] = best;
  while (hi - lo > RATE_TOLERANCE * Math.max(1, Math.abs(lo))) {
    const mid = lo + (hi - lo) / 2;
    if (mid <= lo || mid >= hi) break;
    const value = f(mid);
    if (value === 0) return mid;
    if (Math.sign(value) === Math.sign(fLo)) {
      lo = mid;
      fLo = value;
    } else {
      hi = mid;
    }
  }
  return lo + (hi - lo) / 2;
}

// ---------------------------------------------------------------------------
// Discounting

/** Excel XNPV: Σ a_i / (1 + rate)^((d_i − d_1) / 365). */
export function xnpv(rate: number, flows: readonly DatedValue[]): number {
  const r = rateArg(rate);
  const { amounts, years } = datedArg(flows);
  let sum = 0;
  for (let k = 0; k < amounts.length; k++) sum += (amounts[k] as number) / Math.pow(1 + r, years[k] as number);
  return sum;
}

/** Excel XIRR: the rate at which XNPV is zero. `guess` defaults to 0.1 as in Excel. */
export function xirr(flows: readonly DatedValue[], guess = 0.1): number {
  const { amounts, years } = datedArg(flows);
  const g = rateArg(guess, 'guess');
  requireSignChange(amounts, 'flows');
  const f = (r: number): number => {
    let sum = 0;
    for (let k = 0; k < amounts.length; k++) sum += (amounts[k] as number) / Math.pow(1 + r, years[k] as number);
    return sum;
  };
  const df = (r: number): number => {
    let sum = 0;
    for (let k = 0; k < amounts.length; k++) {
      const y = years[k] as number;
      sum -= (y * (amounts[k] as number)) / Math.pow(1 + r, y + 1);
    }
    return sum;
  };
  return findRate(f, df, g, 'flows');
}

/** Excel NPV: Σ v_i / (1 + rate)^i for i = 1…n — the first value is discounted one period. */
export function npv(rate: number, values: readonly number[]): number {
  const r = rateArg(rate);
  const v = valuesArg(values);
  let sum = 0;
  let factor = 1;
  for (const value of v) {
    factor /= 1 + r;
    sum += value * factor;
  }
  return sum;
}

/** Excel IRR: the rate at which Σ v_i / (1 + r)^i (i from 0) is zero. */
export function irr(values: readonly number[], guess = 0.1): number {
  const v = valuesArg(values);
  const g = rateArg(guess, 'guess');
  requireSignChange(v, 'values');
  const f = (r: number): number => {
    let sum = 0;
    for (let k = 0; k < v.length; k++) sum += (v[k] as number) / Math.pow(1 + r, k);
    return sum;
  };
  const df = (r: number): number => {
    let sum = 0;
    for (let k = 1; k < v.length; k++) sum -= (k * (v[k] as number)) / Math.pow(1 + r, k + 1);
    return sum;
  };
  return findRate(f, df, g, 'values');
}

// ---------------------------------------------------------------------------
// Annuities (Excel sign convention: money paid out is negative)

/** Excel FV, used by IPMT. */
function futureValue(rate: number, nper: number, payment: number, pv: number, type: 0 | 1): number {
  if (rate === 0) return -(pv + payment * nper);
  const growth = Math.pow(1 + rate, nper);
  return -(pv * growth + (payment * (1 + rate * type) * (growth - 1)) / rate);
}

function pmtUnchecked(rate: number, nper: number, pv: number, fv: number, type: 0 | 1): number {
  if (rate === 0) return -(pv + fv) / nper;
  const growth = Math.pow(1 + rate, nper);
  return -(rate * (fv + pv * growth)) / ((1 + rate * type) * (growth - 1));
}

function nperArg(nper: unknown): number {
  const n = finite(nper, 'nper');
  if (n === 0) throw new EngineError('invalid_argument', 'nper must not be zero', 'nper');
  return n;
}

/** Excel PMT: the level payment per period of a loan (pv) or savings target (fv). */
export function pmt(rate: number, nper: number, pv: number, fv = 0, type: 0 | 1 = 0): number {
  return pmtUnchecked(rateArg(rate), nperArg(nper), finite(pv, 'pv'), finite(fv, 'fv'), typeArg(type));
}

function ipmtUnchecked(rate: number, per: number, nper: number, pv: number, fv: number, type: 0 | 1): number {
  const payment = pmtUnchecked(rate, nper, pv, fv, type);
  let balance: number;
  if (per === 1) balance = type === 1 ? 0 : -pv;
  else balance = type === 1 ? futureValue(rate, per - 2, payment, pv, 1) - payment : futureValue(rate, per - 1, payment, pv, 0);
  return balance * rate;
}

function perArg(per: unknown, nper: number): number {
  const p = finite(per, 'per');
  if (p < 1 || p > nper) throw new EngineError('invalid_argument', 'per must be between 1 and nper', 'per');
  return p;
}

/** Excel IPMT: the interest part of payment number `per`. */
export function ipmt(rate: number, per: number, nper: number, pv: number, fv = 0, type: 0 | 1 = 0): number {
  const n = nperArg(nper);
  return ipmtUnchecked(rateArg(rate), perArg(per, n), n, finite(pv, 'pv'), finite(fv, 'fv'), typeArg(type));
}

/** Excel PPMT: the principal part of payment number `per` (PMT − IPMT). */
export function ppmt(rate: number, per: number, nper: number, pv: number, fv = 0, type: 0 | 1 = 0): number {
  const r = rateArg(rate);
  const n = nperArg(nper);
  const p = perArg(per, n);
  const t = typeArg(type);
  const present = finite(pv, 'pv');
  const future = finite(fv, 'fv');
  return pmtUnchecked(r, n, present, future, t) - ipmtUnchecked(r, p, n, present, future, t);
}

/** Excel RATE: the rate per period at which pv + pmt annuity + fv balance. `guess` defaults to 0.1. */
export function rate(nper: number, pmt: number, pv: number, fv = 0, type: 0 | 1 = 0, guess = 0.1): number {
  const n = nperArg(nper);
  const payment = finite(pmt, 'pmt');
  const present = finite(pv, 'pv');
  const future = finite(fv, 'fv');
  const t = typeArg(type);
  const g = rateArg(guess, 'guess');
  if (payment === 0 && (present === 0 || future === 0 || Math.sign(present) === Math.sign(future))) {
    throw new EngineError('no_root', 'pv and fv must have opposite signs when there is no payment', 'pv');
  }
  // g(r) = pv·(1+r)^n + pmt·(1+r·type)·((1+r)^n − 1)/r + fv, with the r → 0 limits.
  const f = (r: number): number => {
    if (Math.abs(r) < 1e-10) return present + payment * n + future + r * (present * n + payment * (t * n + (n * (n - 1)) / 2));
    const growth = Math.exp(n * Math.log1p(r));
    const annuity = Math.expm1(n * Math.log1p(r)) / r;
    return present * growth + payment * (1 + r * t) * annuity + future;
  };
  const df = (r: number): number => {
    if (Math.abs(r) < 1e-10) return present * n + payment * (t * n + (n * (n - 1)) / 2);
    const growth = Math.exp(n * Math.log1p(r));
    const annuity = Math.expm1(n * Math.log1p(r)) / r;
    const dGrowth = (n * growth) / (1 + r);
    const dAnnuity = (dGrowth * r - (growth - 1)) / (r * r);
    return present * dGrowth + payment * (t * annuity + (1 + r * t) * dAnnuity);
  };
  return findRate(f, df, g, 'pmt');
}

/**
 * Excel CUMIPMT: the interest paid from period `startPeriod` to `endPeriod`
 * inclusive. As in Excel, rate, nper and pv must be positive and
 * 1 ≤ startPeriod ≤ endPeriod ≤ nper.
 */
export function cumipmt(rate: number, nper: number, pv: number, startPeriod: number, endPeriod: number, type: 0 | 1): number {
  const r = rateArg(rate);
  if (r <= 0) throw new EngineError('invalid_rate', 'rate must be positive', 'rate');
  const n = nperArg(nper);
  if (n <= 0) throw new EngineError('invalid_argument', 'nper must be positive', 'nper');
  const present = finite(pv, 'pv');
  if (present <= 0) throw new EngineError('invalid_argument', 'pv must be positive', 'pv');
  const t = typeArg(type);
  const start = finite(startPeriod, 'start_period');
  const end = finite(endPeriod, 'end_period');
  if (!Number.isInteger(start) || start < 1) throw new EngineError('invalid_argument', 'start_period must be a whole period from 1', 'start_period');
  if (!Number.isInteger(end) || end < start || end > n) {
    throw new EngineError('invalid_argument', 'end_period must be a whole period from start_period to nper', 'end_period');
  }
  let sum = 0;
  for (let per = start; per <= end; per++) sum += ipmtUnchecked(r, per, n, present, 0, t);
  return sum;
}
