import { addDays, compareDates, formatDate, parseDate } from './dates.js';
import { type DayCountConvention, countDays } from './day-count.js';
import { EngineError } from './errors.js';
import type { Ratio } from './ratio.js';
import { type RoundingMode, divRound } from './rounding.js';
import type { Frequency } from './calendar.js';
import { type Installment, type Schedule, type ScheduleTerms, ismaReference } from './schedule.js';

/**
 * Interest accrual as of any date, by the loan's day count: for payoff quotes,
 * end-of-day accrual postings and interest-to-date figures.
 *
 * Accrual inside a period is cumulative: the interest accrued from the period
 * start to a date is `round(balance × rate × yf(start, date))`, and one day's
 * accrual is the difference of two cumulative figures. Daily postings therefore
 * add up exactly to the period's interest, whatever the rounding; no drift.
 */
export interface AccrualTerms {
  readonly annualRate: Ratio;
  readonly dayCount: DayCountConvention;
  readonly rounding: RoundingMode;
}

export interface AccrualPeriod {
  /** 'YYYY-MM-DD', where interest starts (disbursement or the last due date). */
  readonly start: string;
  /** 'YYYY-MM-DD', the due date that ends the period. */
  readonly end: string;
  /**
   * The period's day count as the schedule counted it. Under the 30/360 family
   * a regular month counts 30 days even when the formula gives 29 or 31 (Jan 31
   * to Feb 29); accrual reaches exactly this count on the due date.
   */
  readonly days?: number | undefined;
  /** The schedule's frequency; ACT/ACT ISMA needs it for the reference period. */
  readonly frequency?: Frequency | undefined;
  /** The schedule's end-of-month rule (default true), for the ISMA reference period. */
  readonly endOfMonth?: boolean | undefined;
}

/** Interest on `balance` accrued from `period.start` to `asOf` (start ≤ asOf ≤ end). */
export function accruedInterest(balance: bigint, terms: AccrualTerms, period: AccrualPeriod, asOf: string): bigint {
  if (balance < 0n) throw new EngineError('invalid_amount', 'balance must not be negative', 'balance');
  const fraction = elapsedFraction(terms.dayCount, period, asOf);
  return divRound(balance * terms.annualRate.num * fraction.num, terms.annualRate.den * fraction.den, terms.rounding);
}

/**
 * Interest for the one day that ends on `date` (from date − 1 to date), as the
 * difference of cumulative accruals, so the days of a period sum exactly to
 * {@link accruedInterest} at its end.
 */
export function dailyAccrual(balance: bigint, terms: AccrualTerms, period: AccrualPeriod, date: string): bigint {
  const day = parseDate(date, 'date');
  const start = parseDate(period.start, 'period_start');
  if (compareDates(day, start) <= 0) throw new EngineError('date_order', 'the accrual day must be after the period start', 'date');
  const previous = formatDate(addDays(day, -1));
  return accruedInterest(balance, terms, period, date) - accruedInterest(balance, terms, period, previous);
}

function elapsedFraction(dayCount: DayCountConvention, period: AccrualPeriod, asOf: string): Ratio {
  const start = parseDate(period.start, 'period_start');
  const end = parseDate(period.end, 'period_end');
  const date = parseDate(asOf, 'as_of');
  if (compareDates(date, start) < 0) throw new EngineError('date_order', 'as_of is before the period start', 'as_of');
  if (compareDates(date, end) > 0) throw new EngineError('date_order', 'as_of is after the period end', 'as_of');
  const basis = fixedBasisOf(dayCount);
  const reference =
    dayCount !== 'ACT/ACT ISMA' ? {} : period.frequency === undefined ? { referenceStart: start, referenceEnd: end } : ismaReference(end, period.frequency, period.endOfMonth ?? true);
  const counted = countDays(dayCount, start, date, { terminationDate: end, ...reference });
  // ACT/ACT conventions: the convention's own year fraction, which on the due date is the schedule's
  if (basis === undefined) return counted.yearFraction;
  // days/basis conventions: never past the period's scheduled days, and exactly them on the due date
  const scheduled = period.days ?? counted.days;
  const days = compareDates(date, end) === 0 ? scheduled : Math.min(counted.days, scheduled);
  return { num: BigInt(days), den: BigInt(basis) };
}

function fixedBasisOf(dayCount: DayCountConvention): number | undefined {
  switch (dayCount) {
    case '30/360':
    case '30E/360':
    case '30E/360 ISDA':
    case '30/360 US':
    case 'ACT/360':
      return 360;
    case 'ACT/365F':
      return 365;
    case 'ACT/364':
      return 364;
    default:
      return undefined;
  }
}

export interface ScheduleAccrual {
  /** The installment whose period contains as_of (the first one due on or after it), or null when as_of is after the last due date. */
  readonly installment: number | null;
  readonly periodStart: string | null;
  readonly dueDate: string | null;
  /** Interest accrued in the current period up to as_of. */
  readonly accruedInterest: bigint;
  /** Scheduled principal outstanding at as_of, assuming every earlier installment was paid. */
  readonly principalOutstanding: bigint;
  /** Interest of every installment due on or before as_of (due or capitalized) plus the current accrual. */
  readonly interestToDate: bigint;
  /** principal outstanding + accrued interest: the payoff amount on a loan paid as scheduled. */
  readonly payoffAmount: bigint;
}

/**
 * Where a schedule stands on `asOf`: the current period, the interest accrued
 * in it, and the payoff amount if every earlier installment was paid as
 * scheduled. Servicing computes payoff quotes on actual balances with
 * {@link accruedInterest}; this is the schedule-level figure.
 */
export function scheduleAccrualAsOf(terms: ScheduleTerms, schedule: Schedule, asOf: string): ScheduleAccrual {
  const date = parseDate(asOf, 'as_of');
  const first = schedule.installments[0];
  if (first === undefined) throw new EngineError('invalid_argument', 'the schedule has no installments', 'schedule');
  if (compareDates(date, parseDate(first.periodStart)) < 0) throw new EngineError('date_order', 'as_of is before the disbursement date', 'as_of');
  const accrualTerms: AccrualTerms = {
    annualRate: terms.annualRate,
    dayCount: terms.dayCount ?? '30/360',
    rounding: terms.interestRounding ?? 'half_up',
  };
  const flat = terms.interestMethod === 'flat';
  let interestToDate = 0n;
  let balanceBefore = terms.principal;
  for (const installment of schedule.installments) {
    if (compareDates(parseDate(installment.dueDate), date) <= 0) {
      interestToDate += installment.interest + installment.capitalizedInterest;
      balanceBefore = installment.balance;
      continue;
    }
    // In a grace period the accrual is interest that will be capitalized; it is owed on payoff all the same.
    const accrued = accruedInterest(flat ? terms.principal : balanceBefore, accrualTerms, periodOf(installment, terms), asOf);
    return {
      installment: installment.number,
      periodStart: installment.periodStart,
      dueDate: installment.dueDate,
      accruedInterest: accrued,
      principalOutstanding: balanceBefore,
      interestToDate: interestToDate + accrued,
      payoffAmount: balanceBefore + accrued,
    };
  }
  return {
    installment: null,
    periodStart: null,
    dueDate: null,
    accruedInterest: 0n,
    principalOutstanding: 0n,
    interestToDate,
    payoffAmount: 0n,
  };
}

function periodOf(installment: Installment, terms: ScheduleTerms): AccrualPeriod {
  return { start: installment.periodStart, end: installment.dueDate, days: installment.days, frequency: terms.frequency, endOfMonth: terms.endOfMonth };
}
