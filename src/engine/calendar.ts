import { type YearMonthDay, addDays, addMonthsToAnchor, compareDates, daysInMonth, isLastDayOfMonth } from './dates.js';
import { EngineError } from './errors.js';

/** Payment frequencies. The names of Appendix J unit periods are used where they coincide. */
export const FREQUENCIES = ['monthly', 'semimonthly', 'biweekly', 'weekly', 'four_weekly', 'bimonthly', 'quarterly', 'semiannual', 'annual'] as const;
export type Frequency = (typeof FREQUENCIES)[number];

export function isFrequency(value: unknown): value is Frequency {
  return typeof value === 'string' && (FREQUENCIES as readonly string[]).includes(value);
}

export function assertFrequency(value: string, field = 'frequency'): Frequency {
  if (!isFrequency(value)) throw new EngineError('unknown_frequency', `unknown frequency "${value}"; use one of ${FREQUENCIES.join(', ')}`, field);
  return value;
}

interface FrequencyRule {
  readonly perYear: number;
  /** Whole months per period, or 0 for day-based and semimonthly frequencies. */
  readonly months: number;
  /** Days per period for day-based frequencies, else 0. */
  readonly days: number;
}

const RULES: Readonly<Record<Frequency, FrequencyRule>> = {
  monthly: { perYear: 12, months: 1, days: 0 },
  semimonthly: { perYear: 24, months: 0, days: 0 },
  biweekly: { perYear: 26, months: 0, days: 14 },
  weekly: { perYear: 52, months: 0, days: 7 },
  four_weekly: { perYear: 13, months: 0, days: 28 },
  bimonthly: { perYear: 6, months: 2, days: 0 },
  quarterly: { perYear: 4, months: 3, days: 0 },
  semiannual: { perYear: 2, months: 6, days: 0 },
  annual: { perYear: 1, months: 12, days: 0 },
};

/** Regular periods per year: monthly 12, biweekly 26, four_weekly 13 … */
export function periodsPerYear(frequency: Frequency): number {
  return RULES[frequency].perYear;
}

/** Months per period for month-based frequencies (monthly 1 … annual 12); 0 otherwise. */
export function monthsPerPeriod(frequency: Frequency): number {
  return RULES[frequency].months;
}

/** Days per period for week-based frequencies (weekly 7, biweekly 14, four_weekly 28); 0 otherwise. */
export function daysPerPeriod(frequency: Frequency): number {
  return RULES[frequency].days;
}

/**
 * The date `n` regular periods after (negative: before) `anchor`, stepping from
 * the anchor itself so a clamped month end does not drift (Jan 31, Feb 28,
 * Mar 31). With `endOfMonth`, an anchor on the last day of its month keeps every
 * date on the last day of its month.
 *
 * Semimonthly dates come in pairs per month: an anchor on day d ≤ 15 pays on d
 * and d + 15 (the last day when shorter); an anchor on day d > 15 pays on d − 15
 * and d. With `endOfMonth`, an anchor on the 15th or on the last day of its
 * month pays on the 15th and the last day.
 */
export function shiftPeriods(anchor: YearMonthDay, frequency: Frequency, n: number, endOfMonth = false): YearMonthDay {
  const rule = RULES[frequency];
  if (rule.days > 0) return addDays(anchor, rule.days * n);
  const anchorDay = endOfMonth && isLastDayOfMonth(anchor) ? 31 : anchor.day;
  if (rule.months > 0) return addMonthsToAnchor(anchor, rule.months * n, anchorDay);
  // semimonthly: index the half-months from the anchor
  const firstHalf = anchorDay <= 15;
  const lowDay = firstHalf ? anchorDay : anchorDay === 31 ? 15 : anchorDay - 15;
  const highDay = endOfMonth && anchorDay === 15 ? 31 : firstHalf ? anchorDay + 15 : anchorDay;
  const slot = (firstHalf ? 0 : 1) + n; // 0 = low day of the anchor month
  const monthOffset = Math.floor(slot / 2);
  const isLow = slot - monthOffset * 2 === 0;
  const base = { year: anchor.year, month: anchor.month, day: 1 };
  const target = addMonthsToAnchor(base, monthOffset, 1);
  const day = Math.min(isLow ? lowDay : highDay, daysInMonth(target.year, target.month));
  return { ...target, day };
}

export interface DueDatePlan {
  /** The disbursement (or interest start) date. */
  readonly start: YearMonthDay;
  /** The first due date; default one regular period after `start`. */
  readonly firstPaymentDate?: YearMonthDay | undefined;
  readonly frequency: Frequency;
  readonly count: number;
  readonly endOfMonth?: boolean | undefined;
}

/**
 * The `count` due dates of a loan. With a first payment date, that date and
 * regular periods stepped from it; without one, regular periods stepped from
 * the start, so a start on the 31st pays on the 31st (or the month's last day)
 * every month rather than on the day of the first, clamped, due date.
 */
export function dueDates(plan: DueDatePlan): YearMonthDay[] {
  if (!Number.isInteger(plan.count) || plan.count < 1) throw new EngineError('invalid_argument', 'the number of installments must be a positive integer', 'term');
  const { start, firstPaymentDate, frequency, endOfMonth } = plan;
  const first = firstPaymentDate ?? shiftPeriods(start, frequency, 1, endOfMonth);
  if (compareDates(first, start) <= 0) {
    throw new EngineError('date_order', 'the first payment date must be after the disbursement date', 'first_payment_date');
  }
  const dates: YearMonthDay[] = [first];
  for (let i = 1; i < plan.count; i++) {
    dates.push(firstPaymentDate === undefined ? shiftPeriods(start, frequency, i + 1, endOfMonth) : shiftPeriods(firstPaymentDate, frequency, i, endOfMonth));
  }
  return dates;
}

export type FirstPeriodKind = 'regular' | 'short' | 'long';

/**
 * Whether the first period is regular, short or long. It is regular when one
 * regular period after the start is the first due date (the date
 * {@link dueDates} picks by default: Jan 31 → Feb 28) or one regular period
 * before the first due date is the start (Feb 28 → Mar 31 under the
 * end-of-month rule). Otherwise it is short when the start is after that
 * notional period start, long when before.
 */
export function firstPeriodKind(start: YearMonthDay, firstPaymentDate: YearMonthDay, frequency: Frequency, endOfMonth = false): FirstPeriodKind {
  if (compareDates(firstPaymentDate, start) <= 0) {
    throw new EngineError('date_order', 'the first payment date must be after the disbursement date', 'first_payment_date');
  }
  if (compareDates(shiftPeriods(start, frequency, 1, endOfMonth), firstPaymentDate) === 0) return 'regular';
  const notionalStart = shiftPeriods(firstPaymentDate, frequency, -1, endOfMonth);
  const order = compareDates(start, notionalStart);
  return order === 0 ? 'regular' : order > 0 ? 'short' : 'long';
}
