import { type Frequency, dueDates, firstPeriodKind, monthsPerPeriod, periodsPerYear, shiftPeriods } from './calendar.js';
import { minorUnits } from './currency.js';
import { type YearMonthDay, formatDate, parseDate, toDayNumber } from './dates.js';
import { type DayCountConvention, countDays } from './day-count.js';
import { EngineError } from './errors.js';
import { type Ratio, ratio, reduce } from './ratio.js';
import { type RoundingMode, divRound } from './rounding.js';

/**
 * Repayment schedules, exact to the minor unit.
 *
 * Interest of a period is `round(balance × annual_rate × year_fraction)`, with
 * the year fraction of the product's day count over the period's actual dates
 * and one named rounding. Under 30/360 a regular monthly period is 30/360 =
 * 1/12 of a year, so it accrues exactly annual_rate / 12. An odd first period
 * (a first payment date that is not one regular period after disbursement)
 * accrues by the same day count over its real length.
 *
 * The level payment is the exact annuity over the periods' own rates: the
 * payment X for which balance × Π(1 + r_i) − X × Σ_k Π_{i>k}(1 + r_i) = balloon,
 * computed in rational arithmetic and then rounded once by the payment rounding.
 * With equal periods this is the textbook PMT; with an odd first period or an
 * actual-day count it prices each period at its real length. Each installment
 * then pays its rounded interest and the rest as principal; where a period's
 * interest exceeds the level payment, the installment stays level and the excess
 * is capitalized (the exact annuity's own path). The last installment pays
 * whatever balance is left (it absorbs the rounding residue), so the principal
 * column always sums to the amount lent plus any capitalized interest.
 */

export const INTEREST_METHODS = ['declining_balance', 'flat'] as const;
export type InterestMethod = (typeof INTEREST_METHODS)[number];
export const AMORTIZATIONS = ['equal_installments', 'equal_principal'] as const;
export type Amortization = (typeof AMORTIZATIONS)[number];

export interface ScheduleTerms {
  /** Amount lent, in minor units (> 0). */
  readonly principal: bigint;
  readonly currency: string;
  /** Nominal annual rate as an exact fraction (0.06 = 6 %), 0 ≤ rate. */
  readonly annualRate: Ratio;
  /** Number of installments. */
  readonly term: number;
  readonly frequency: Frequency;
  /** 'YYYY-MM-DD'. Interest runs from this date. */
  readonly disbursementDate: string;
  /** 'YYYY-MM-DD'; default one regular period after disbursement. A different date makes a short or long odd first period. */
  readonly firstPaymentDate?: string | undefined;
  /** Default declining_balance. Flat charges every period's interest on the original principal. */
  readonly interestMethod?: InterestMethod | undefined;
  /** Default equal_installments (level payment). */
  readonly amortization?: Amortization | undefined;
  /** Default '30/360'. */
  readonly dayCount?: DayCountConvention | undefined;
  /** Rounding of each period's interest; default half_up. */
  readonly interestRounding?: RoundingMode | undefined;
  /** Rounding of the level payment (or of the equal principal part); default half_up. */
  readonly paymentRounding?: RoundingMode | undefined;
  /** The payment is a multiple of this many minor units (100 = whole dollars in USD); default 1. */
  readonly paymentIncrement?: bigint | undefined;
  /** Installments at the start that pay interest only. */
  readonly interestOnlyPeriods?: number | undefined;
  /**
   * Installments at the start with nothing due (a payment holiday): their
   * interest is capitalized into the balance, and amortization starts after them.
   */
  readonly gracePrincipalPeriods?: number | undefined;
  /** Principal left to pay with the last installment, in minor units (0 ≤ balloon < principal). */
  readonly balloon?: bigint | undefined;
  /** Keep due dates on the last day of the month when the first one is. Default true. */
  readonly endOfMonth?: boolean | undefined;
}

export type InstallmentKind = 'grace' | 'interest_only' | 'amortizing';

export interface Installment {
  readonly number: number;
  readonly kind: InstallmentKind;
  /** Start of the interest period ('YYYY-MM-DD'): disbursement or the previous due date. */
  readonly periodStart: string;
  readonly dueDate: string;
  /** Day count numerator of the period under the schedule's convention. */
  readonly days: number;
  readonly principal: bigint;
  readonly interest: bigint;
  /** Interest accrued in a grace period and added to the balance instead of being due. */
  readonly capitalizedInterest: bigint;
  /** principal + interest. */
  readonly payment: bigint;
  /** Principal outstanding after this installment. */
  readonly balance: bigint;
}

export interface Schedule {
  readonly currency: string;
  /** The regular (level) payment of the amortizing installments; for equal principal, the first amortizing installment's payment. */
  readonly payment: bigint;
  readonly installments: readonly Installment[];
  readonly totalPrincipal: bigint;
  readonly totalInterest: bigint;
  readonly totalCapitalizedInterest: bigint;
  readonly totalPayments: bigint;
}

interface PeriodRate {
  /** Periodic rate r = annual × year fraction, as num / den in lowest terms. */
  readonly rateNum: bigint;
  readonly rateDen: bigint;
  /** 2·num and 2·den, precomputed for the half-way roundings. */
  readonly twiceNum: bigint;
  readonly twiceDen: bigint;
}

interface Period {
  readonly start: string;
  readonly end: string;
  readonly days: number;
  /** Shared between periods of equal length, so a schedule of regular months holds one. */
  readonly rate: PeriodRate;
}

function periodRate(num: bigint, den: bigint): PeriodRate {
  const reduced = reduce(ratio(num, den));
  return { rateNum: reduced.num, rateDen: reduced.den, twiceNum: 2n * reduced.num, twiceDen: 2n * reduced.den };
}

const MAX_TERM = 1200;

function checkCount(value: number | undefined, field: string): number {
  const count = value ?? 0;
  if (!Number.isInteger(count) || count < 0) throw new EngineError('invalid_argument', `${field} must be a non-negative integer`, field);
  return count;
}

/** Builds the repayment schedule of a loan. Throws {@link EngineError} on invalid terms. */
export function buildSchedule(terms: ScheduleTerms): Schedule {
  minorUnits(terms.currency);
  if (terms.principal <= 0n) throw new EngineError('invalid_amount', 'principal must be positive', 'principal');
  if (terms.annualRate.num < 0n) throw new EngineError('invalid_rate', 'annual_rate must not be negative', 'annual_rate');
  if (!Number.isInteger(terms.term) || terms.term < 1 || terms.term > MAX_TERM) {
    throw new EngineError('invalid_argument', `term must be an integer from 1 to ${MAX_TERM}`, 'term');
  }
  const grace = checkCount(terms.gracePrincipalPeriods, 'grace_principal_periods');
  const interestOnly = checkCount(terms.interestOnlyPeriods, 'interest_only_periods');
  if (grace + interestOnly >= terms.term) {
    throw new EngineError('invalid_argument', 'grace and interest-only periods must leave at least one amortizing installment', 'interest_only_periods');
  }
  const balloon = terms.balloon ?? 0n;
  if (balloon < 0n || balloon >= terms.principal) throw new EngineError('invalid_amount', 'balloon must be at least 0 and less than the principal', 'balloon');
  const increment = terms.paymentIncrement ?? 1n;
  if (increment < 1n) throw new EngineError('invalid_argument', 'payment increment must be at least one minor unit', 'payment_increment');

  const dayCount = terms.dayCount ?? '30/360';
  const interestRounding = terms.interestRounding ?? 'half_up';
  const paymentRounding = terms.paymentRounding ?? 'half_up';
  const flat = (terms.interestMethod ?? 'declining_balance') === 'flat';
  const equalPrincipal = (terms.amortization ?? 'equal_installments') === 'equal_principal';

  const periods = buildPeriods(terms, dayCount);
  const installments: Installment[] = [];
  let balance = terms.principal;
  let totalInterest = 0n;
  let totalCapitalized = 0n;

  const interestOf = nonNegativeRounder(interestRounding);

  // Grace: nothing due, interest capitalized.
  for (let i = 0; i < grace; i++) {
    const period = periods[i] as Period;
    const accrued = interestOf(period.rate, flat ? terms.principal : balance);
    balance += accrued;
    totalCapitalized += accrued;
    installments.push(row(i + 1, 'grace', period, 0n, 0n, accrued, balance));
  }
  // Interest only.
  for (let i = grace; i < grace + interestOnly; i++) {
    const period = periods[i] as Period;
    const interest = interestOf(period.rate, flat ? terms.principal : balance);
    totalInterest += interest;
    installments.push(row(i + 1, 'interest_only', period, 0n, interest, 0n, balance));
  }

  const amortizing = periods.slice(grace + interestOnly);
  const amortizedBase = balance; // principal plus capitalized interest
  const flatBase = flat ? amortizedBase : 0n;
  const flatInterest = flat ? amortizing.map((period) => interestOf(period.rate, flatBase)) : [];

  let level: bigint;
  let equalPart = 0n;
  if (equalPrincipal) {
    equalPart = divRound(amortizedBase - balloon, BigInt(amortizing.length) * increment, paymentRounding) * increment;
    level = 0n;
  } else if (flat) {
    let interestSum = 0n;
    for (const interest of flatInterest) interestSum += interest;
    level = divRound(amortizedBase - balloon + interestSum, BigInt(amortizing.length) * increment, paymentRounding) * increment;
  } else {
    const exact = levelPayment(amortizedBase, balloon, amortizing);
    level = divRound(exact.num, exact.den * increment, paymentRounding) * increment;
  }

  let reportedPayment = level;
  const last = amortizing.length - 1;
  for (let j = 0; j <= last; j++) {
    const period = amortizing[j] as Period;
    let interest = flat ? (flatInterest[j] as bigint) : interestOf(period.rate, balance);
    let capitalized = 0n;
    let principal: bigint;
    if (j === last) {
      principal = balance;
    } else if (equalPrincipal) {
      principal = equalPart;
    } else {
      principal = level - interest;
      if (principal < 0n) {
        // The period's interest exceeds the level payment (a long odd first period, or a
        // 31-day month at a high rate over a long term). The installment stays level and
        // the unpaid interest is capitalized, as the exact annuity assumed: collecting it
        // instead would push the loan off its annuity path and repay it early, leaving
        // zero installments at the end.
        capitalized = -principal;
        interest = level;
        principal = 0n;
        balance += capitalized;
        totalCapitalized += capitalized;
      }
    }
    if (principal > balance) principal = balance; // never more than is owed
    balance -= principal;
    totalInterest += interest;
    if (j === 0 && equalPrincipal) reportedPayment = principal + interest;
    installments.push(row(grace + interestOnly + j + 1, 'amortizing', period, principal, interest, capitalized, balance));
  }

  return {
    currency: terms.currency,
    payment: reportedPayment,
    installments,
    totalPrincipal: terms.principal + totalCapitalized,
    totalInterest,
    totalCapitalizedInterest: totalCapitalized,
    totalPayments: terms.principal + totalCapitalized + totalInterest,
  };
}

/**
 * `round(base × r)` for base ≥ 0 and r ≥ 0 under `mode`: the same result as
 * divRound, specialised for non-negative operands because it runs once per
 * installment (one multiply, one add, one divide for the half modes).
 */
function nonNegativeRounder(mode: RoundingMode): (rate: PeriodRate, base: bigint) => bigint {
  switch (mode) {
    case 'down':
    case 'floor':
      return (p, base) => (base * p.rateNum) / p.rateDen;
    case 'up':
    case 'ceiling':
      return (p, base) => (base * p.rateNum + p.rateDen - 1n) / p.rateDen;
    case 'half_up':
      // floor((2·base·num + den) / 2·den) rounds base·num/den half up
      return (p, base) => (base * p.twiceNum + p.rateDen) / p.twiceDen;
    case 'half_down':
      return (p, base) => (base * p.twiceNum + p.rateDen - 1n) / p.twiceDen;
    case 'half_even':
      return (p, base) => {
        const shifted = base * p.twiceNum + p.rateDen;
        const quotient = shifted / p.twiceDen;
        // an exact tie lands on quotient; keep it only when even
        return shifted % p.twiceDen === 0n && quotient % 2n === 1n ? quotient - 1n : quotient;
      };
  }
}

function row(number: number, kind: InstallmentKind, period: Period, principal: bigint, interest: bigint, capitalizedInterest: bigint, balance: bigint): Installment {
  return {
    number,
    kind,
    periodStart: period.start,
    dueDate: period.end,
    days: period.days,
    principal,
    interest,
    capitalizedInterest,
    payment: principal + interest,
    balance,
  };
}

/** Conventions whose year fraction is days / a fixed basis, so periods of equal days share one rate. */
const FIXED_BASIS: Partial<Record<DayCountConvention, number>> = {
  '30/360': 360,
  '30E/360': 360,
  '30E/360 ISDA': 360,
  '30/360 US': 360,
  'ACT/360': 360,
  'ACT/365F': 365,
  'ACT/364': 364,
};

const THIRTY_360 = new Set<DayCountConvention>(['30/360', '30E/360', '30E/360 ISDA', '30/360 US']);

/**
 * The interest periods of the schedule. Under the 30/360 family a regular
 * monthly (bimonthly, quarterly …) period counts 30 days per month and a
 * regular semimonthly period 15, whatever the calendar dates: that is how a
 * 30/360 loan accrues (each month is 1/12 of a year, so a monthly period
 * accrues exactly annual_rate / 12). An odd first period is counted from the
 * disbursement date by the convention's own rule.
 */
function buildPeriods(terms: ScheduleTerms, dayCount: DayCountConvention): Period[] {
  const start = parseDate(terms.disbursementDate, 'disbursement_date');
  const endOfMonth = terms.endOfMonth ?? true;
  const firstPaymentDate = terms.firstPaymentDate === undefined ? undefined : parseDate(terms.firstPaymentDate, 'first_payment_date');
  const dates = dueDates({ start, firstPaymentDate, frequency: terms.frequency, count: terms.term, endOfMonth });
  const termination = dates[dates.length - 1];
  const basis = FIXED_BASIS[dayCount];
  const months = monthsPerPeriod(terms.frequency);
  const regularThirtyDays = THIRTY_360.has(dayCount) ? (months > 0 ? 30 * months : terms.frequency === 'semimonthly' ? 15 : 0) : 0;
  const firstIsRegular = firstPaymentDate === undefined || firstPeriodKind(start, firstPaymentDate, terms.frequency, endOfMonth) === 'regular';
  const { num: rateNum, den: rateDen } = terms.annualRate;
  // Periods of equal day counts share one rate (the common case: every regular 30/360 month).
  const byDays = new Map<number, PeriodRate>();
  const periods: Period[] = [];
  let previous = start;
  let previousText = formatDate(start);
  for (let i = 0; i < dates.length; i++) {
    const end = dates[i] as YearMonthDay;
    const endText = formatDate(end);
    let days: number;
    let rate: PeriodRate | undefined;
    if (basis !== undefined) {
      if (regularThirtyDays > 0 && (i > 0 || firstIsRegular)) days = regularThirtyDays;
      else if (THIRTY_360.has(dayCount)) days = countDays(dayCount, previous, end, { terminationDate: termination }).days;
      else days = toDayNumber(end) - toDayNumber(previous);
      rate = byDays.get(days);
      if (rate === undefined) {
        rate = periodRate(rateNum * BigInt(days), rateDen * BigInt(basis));
        byDays.set(days, rate);
      }
    } else {
      const reference = dayCount === 'ACT/ACT ISMA' ? ismaReference(end, terms.frequency, endOfMonth) : {};
      const counted = countDays(dayCount, previous, end, { terminationDate: termination, ...reference });
      days = counted.days;
      rate = periodRate(rateNum * counted.yearFraction.num, rateDen * counted.yearFraction.den);
    }
    periods.push({ start: previousText, end: endText, days, rate });
    previous = end;
    previousText = endText;
  }
  return periods;
}

/**
 * ACT/ACT ISMA counts a period against its regular (reference) period: the one
 * regular period that ends on the due date, at the schedule's frequency. That
 * is what makes a long or short odd first period come out right.
 */
export function ismaReference(dueDate: YearMonthDay, frequency: Frequency, endOfMonth: boolean): { referenceStart: YearMonthDay; referenceEnd: YearMonthDay; frequency: number; endOfMonth: boolean } {
  if (monthsPerPeriod(frequency) === 0) {
    // ICMA Rule 251 counts against regular coupon periods of whole months; a weekly or
    // semimonthly period has no such reference, and guessing one would misprice it.
    throw new EngineError('invalid_argument', `ACT/ACT ISMA needs a month-based frequency (monthly … annual), not ${frequency}`, 'day_count');
  }
  const referenceStart = shiftPeriods(dueDate, frequency, -1, endOfMonth);
  return { referenceStart, referenceEnd: dueDate, frequency: periodsPerYear(frequency), endOfMonth };
}

/**
 * The exact level payment X (before rounding to minor units) that takes
 * `balance` to `balloon` over `periods`: forward recurrences G_k = G_{k-1}(1+r_k)
 * and F_k = F_{k-1}(1+r_k) + 1 give X = (balance·G_n − balloon) / F_n. With one
 * rate for every period the closed form X = (B(1+r)^n − balloon)·r / ((1+r)^n − 1)
 * is used. The caller rounds it once, to the payment increment.
 */
function levelPayment(balance: bigint, balloon: bigint, periods: readonly Period[]): Ratio {
  const first = (periods[0] as Period).rate;
  // Periods of equal length share one rate object (see buildPeriods).
  const uniform = periods.every((p) => p.rate === first);
  const n = periods.length;
  if (uniform) {
    const { rateNum: k, rateDen: d } = first;
    if (k === 0n) return ratio(balance - balloon, BigInt(n));
    const growth = (d + k) ** BigInt(n); // (1 + r)^n · d^n
    const base = d ** BigInt(n);
    return ratio((balance * growth - balloon * base) * k, d * (growth - base));
  }
  // Rationals over the running common denominator Π den_i.
  let gNum = 1n;
  let fNum = 0n;
  let den = 1n;
  for (const { rate: p } of periods) {
    const factor = p.rateDen + p.rateNum; // (1 + r) · den
    gNum *= factor;
    den *= p.rateDen;
    fNum = fNum * factor + den;
  }
  // X = (B·gNum/den − balloon) / (fNum/den) = (B·gNum − balloon·den) / fNum
  return ratio(balance * gNum - balloon * den, fNum);
}
