import { type YearMonthDay, addMonths, compareDates, daysBetween, daysInYear, isLastDayOfMonth, isLeapYear, parseDate, toDayNumber } from './dates.js';
import { EngineError } from './errors.js';
import { type Ratio, ZERO, add, ratio, reduce } from './ratio.js';

/**
 * Day count conventions, named as in the ISDA 2006 Definitions, section 4.16.
 * A year fraction is returned as an exact ratio, so interest computed from it
 * is exact until the one named rounding at the end.
 */
export const DAY_COUNT_CONVENTIONS = [
  '30/360', // 4.16(f) "30/360", "360/360", "Bond Basis"
  '30E/360', // 4.16(g) "30E/360", "Eurobond Basis"
  '30E/360 ISDA', // 4.16(h) "30E/360 (ISDA)"
  '30/360 US', // Excel DAYS360 with method FALSE (the US/NASD rule)
  'ACT/360', // 4.16(e) "Actual/360"
  'ACT/365F', // 4.16(d) "Actual/365 (Fixed)"
  'ACT/364', // Actual/364
  'ACT/ACT ISDA', // 4.16(b) "Actual/Actual (ISDA)"
  'ACT/ACT ISMA', // 4.16(c) "Actual/Actual (ICMA)", ICMA Rule 251
  'ACT/ACT AFB', // Actual/Actual (AFB), the FBF master agreement method
] as const;
export type DayCountConvention = (typeof DAY_COUNT_CONVENTIONS)[number];

export function isDayCountConvention(value: unknown): value is DayCountConvention {
  return typeof value === 'string' && (DAY_COUNT_CONVENTIONS as readonly string[]).includes(value);
}

export interface DayCountOptions {
  /** 30E/360 ISDA: the termination (maturity) date; a last-of-February end date equal to it is not moved to the 30th. */
  readonly terminationDate?: YearMonthDay | undefined;
  /** ACT/ACT ISMA: the regular coupon (reference) period that contains the accrual period. */
  readonly referenceStart?: YearMonthDay | undefined;
  readonly referenceEnd?: YearMonthDay | undefined;
  /** ACT/ACT ISMA: regular periods per year (1, 2, 3, 4, 6 or 12). */
  readonly frequency?: number | undefined;
  /**
   * ACT/ACT ISMA: notional reference periods (before a long first period, after
   * a long last one, or counted back from the end date) roll with the
   * end-of-month rule: a reference date on the last day of its month steps to
   * the last day of the month.
   */
  readonly endOfMonth?: boolean | undefined;
}

export interface DayCount {
  /** The day count numerator: actual days, or 30/360 days for the 30/360 family. */
  readonly days: number;
  /** The year fraction, exact. */
  readonly yearFraction: Ratio;
}

function thirty360(y1: number, m1: number, d1: number, y2: number, m2: number, d2: number): number {
  return 360 * (y2 - y1) + 30 * (m2 - m1) + (d2 - d1);
}

function isLastOfFebruary(date: YearMonthDay): boolean {
  return date.month === 2 && isLastDayOfMonth(date);
}

/** Day count between two dates (start ≤ end) under `convention`. */
export function countDays(convention: DayCountConvention, start: YearMonthDay, end: YearMonthDay, options: DayCountOptions = {}): DayCount {
  const order = compareDates(end, start);
  if (order < 0) throw new EngineError('date_order', 'the end date is before the start date', 'end');
  // An empty period is zero under every convention. (The DAYS360 rule alone would give
  // 28 Feb → 28 Feb −2 days: the start moves to the 30th, the end does not.)
  if (order === 0) return { days: 0, yearFraction: ZERO };
  switch (convention) {
    case '30/360': {
      const d1 = start.day === 31 ? 30 : start.day;
      const d2 = end.day === 31 && d1 >= 30 ? 30 : end.day;
      return over360(thirty360(start.year, start.month, d1, end.year, end.month, d2));
    }
    case '30E/360': {
      const d1 = start.day === 31 ? 30 : start.day;
      const d2 = end.day === 31 ? 30 : end.day;
      return over360(thirty360(start.year, start.month, d1, end.year, end.month, d2));
    }
    case '30E/360 ISDA': {
      const d1 = isLastDayOfMonth(start) ? 30 : start.day;
      const isTermination = options.terminationDate !== undefined && compareDates(end, options.terminationDate) === 0;
      const d2 = end.day === 31 || (isLastOfFebruary(end) && !isTermination) ? 30 : end.day;
      return over360(thirty360(start.year, start.month, d1, end.year, end.month, d2));
    }
    case '30/360 US': {
      // Excel DAYS360(start, end, FALSE): a start on the last day of its month
      // (February included) becomes the 30th; an end on the 31st becomes the
      // 1st of the next month when the start is before the 30th, else the 30th.
      const d1 = isLastDayOfMonth(start) ? 30 : start.day;
      let { year: y2, month: m2, day: d2 } = end;
      if (d2 === 31) {
        if (d1 < 30) {
          d2 = 1;
          m2 += 1;
          if (m2 === 13) {
            m2 = 1;
            y2 += 1;
          }
        } else {
          d2 = 30;
        }
      }
      return over360(thirty360(start.year, start.month, d1, y2, m2, d2));
    }
    case 'ACT/360':
      return actualOver(start, end, 360);
    case 'ACT/365F':
      return actualOver(start, end, 365);
    case 'ACT/364':
      return actualOver(start, end, 364);
    case 'ACT/ACT ISDA':
      return { days: daysBetween(start, end), yearFraction: actActIsda(start, end) };
    case 'ACT/ACT ISMA':
      return { days: daysBetween(start, end), yearFraction: actActIsma(start, end, options) };
    case 'ACT/ACT AFB':
      return { days: daysBetween(start, end), yearFraction: actActAfb(start, end) };
  }
}

/** {@link countDays} over ISO date strings. */
export function dayCount(
  convention: string,
  start: string,
  end: string,
  options: { terminationDate?: string; referenceStart?: string; referenceEnd?: string; frequency?: number; endOfMonth?: boolean } = {},
): DayCount {
  if (!isDayCountConvention(convention)) {
    throw new EngineError('unknown_convention', `unknown day count convention "${convention}"; use one of ${DAY_COUNT_CONVENTIONS.join(', ')}`, 'convention');
  }
  return countDays(convention, parseDate(start, 'start'), parseDate(end, 'end'), {
    terminationDate: options.terminationDate === undefined ? undefined : parseDate(options.terminationDate, 'termination_date'),
    referenceStart: options.referenceStart === undefined ? undefined : parseDate(options.referenceStart, 'reference_start'),
    referenceEnd: options.referenceEnd === undefined ? undefined : parseDate(options.referenceEnd, 'reference_end'),
    frequency: options.frequency,
    endOfMonth: options.endOfMonth,
  });
}

function over360(days: number): DayCount {
  return { days, yearFraction: reduce(ratio(BigInt(days), 360n)) };
}

function actualOver(start: YearMonthDay, end: YearMonthDay, basis: number): DayCount {
  const days = daysBetween(start, end);
  return { days, yearFraction: reduce(ratio(BigInt(days), BigInt(basis))) };
}

/** 4.16(b): days in a leap year over 366 plus days in a non-leap year over 365. */
function actActIsda(start: YearMonthDay, end: YearMonthDay): Ratio {
  if (start.year === end.year) return reduce(ratio(BigInt(daysBetween(start, end)), BigInt(daysInYear(start.year))));
  const firstPart = ratio(BigInt(daysBetween(start, { year: start.year + 1, month: 1, day: 1 })), BigInt(daysInYear(start.year)));
  const wholeYears = ratio(BigInt(end.year - start.year - 1));
  const lastPart = ratio(BigInt(daysBetween({ year: end.year, month: 1, day: 1 }, end)), BigInt(daysInYear(end.year)));
  return add(add(firstPart, wholeYears), lastPart);
}

/**
 * 4.16(c) / ICMA Rule 251: days in the period over (frequency × days in the
 * reference period). A period longer than its reference period, or one that
 * starts before it (a long first coupon), is split into notional regular
 * periods, as in QuantLib's ActualActual(ISMA).
 *
 * The reference period is, in order: the one given; with a frequency, the
 * regular period ending on the given reference end (or on the end date), or
 * starting on the given reference start; without a frequency, the accrual
 * period itself, its length in months estimated as QuantLib does (and a
 * period too short to round to one month is measured against the year that
 * follows its start).
 */
function actActIsma(start: YearMonthDay, end: YearMonthDay, options: DayCountOptions): Ratio {
  if (compareDates(start, end) === 0) return ZERO;
  const endOfMonth = options.endOfMonth ?? false;
  let refStart = options.referenceStart;
  let refEnd = options.referenceEnd;
  let months: number;
  if (options.frequency !== undefined) {
    if (!Number.isInteger(options.frequency) || ![1, 2, 3, 4, 6, 12].includes(options.frequency)) {
      throw new EngineError('invalid_argument', 'frequency must be 1, 2, 3, 4, 6 or 12 periods per year', 'frequency');
    }
    months = 12 / options.frequency;
    if (refStart === undefined) {
      refEnd ??= end;
      refStart = addMonths(refEnd, -months, endOfMonth);
    } else {
      refEnd ??= addMonths(refStart, months, endOfMonth);
    }
  } else {
    refStart ??= start;
    refEnd ??= end;
    months = Math.round((12 * daysBetween(refStart, refEnd)) / 365);
  }
  if (compareDates(refEnd, refStart) <= 0) {
    throw new EngineError('invalid_argument', 'reference_end must be after reference_start', 'reference_end');
  }
  if (months === 0) {
    // QuantLib: a reference period too short to round to a month is replaced by the year from the start.
    refStart = start;
    refEnd = addMonths(start, 12);
    months = 12;
  }
  if (compareDates(refEnd, start) <= 0) {
    throw new EngineError('invalid_argument', 'reference_end must be after the start date', 'reference_end');
  }
  return ismaFraction(start, end, refStart, refEnd, months, endOfMonth, 0);
}

function ismaFraction(
  d1: YearMonthDay,
  d2: YearMonthDay,
  refStart: YearMonthDay,
  refEnd: YearMonthDay,
  months: number,
  endOfMonth: boolean,
  depth: number,
): Ratio {
  if (depth > 2000) throw new EngineError('invalid_argument', 'reference period too far from the accrual period', 'reference_start');
  if (compareDates(d1, d2) === 0) return ZERO;
  const period = ratio(BigInt(months), 12n);
  if (compareDates(d2, refEnd) <= 0) {
    if (compareDates(d1, refStart) >= 0) {
      return reduce(ratio(BigInt(months) * BigInt(daysBetween(d1, d2)), 12n * BigInt(daysBetween(refStart, refEnd))));
    }
    // Long first period: d1 lies before the reference period.
    const previousRef = addMonths(refStart, -months, endOfMonth);
    if (compareDates(d2, refStart) > 0) {
      return add(
        ismaFraction(d1, refStart, previousRef, refStart, months, endOfMonth, depth + 1),
        ismaFraction(refStart, d2, refStart, refEnd, months, endOfMonth, depth + 1),
      );
    }
    return ismaFraction(d1, d2, previousRef, refStart, months, endOfMonth, depth + 1);
  }
  if (compareDates(refStart, d1) > 0) {
    throw new EngineError('invalid_argument', 'the accrual period must not span the whole reference period on both sides', 'reference_start');
  }
  let sum = ismaFraction(d1, refEnd, refStart, refEnd, months, endOfMonth, depth + 1);
  for (let i = 0; ; i++) {
    const newRefStart = addMonths(refEnd, months * i, endOfMonth);
    const newRefEnd = addMonths(refEnd, months * (i + 1), endOfMonth);
    if (compareDates(d2, newRefEnd) < 0) return add(sum, ismaFraction(newRefStart, d2, newRefStart, newRefEnd, months, endOfMonth, depth + 1));
    sum = add(sum, period);
    if (i > 12 * 400) throw new EngineError('invalid_argument', 'accrual period too long', 'end');
  }
}

/**
 * Actual/Actual (AFB): whole years counted back from the end date, then the
 * remaining stub over 366 if it contains a 29 February, else 365.
 */
function actActAfb(start: YearMonthDay, end: YearMonthDay): Ratio {
  if (compareDates(start, end) === 0) return ZERO;
  let stubEnd = end;
  let years = 0;
  for (;;) {
    let candidate = { year: stubEnd.year - 1, month: stubEnd.month, day: Math.min(stubEnd.day, stubEnd.month === 2 && !isLeapYear(stubEnd.year - 1) ? 28 : stubEnd.day) };
    // One year before 29 Feb is 28 Feb; one year before 1 Mar after a leap day keeps 1 Mar.
    if (candidate.month === 2 && candidate.day === 28 && isLeapYear(candidate.year)) candidate = { ...candidate, day: 29 };
    if (compareDates(candidate, start) < 0) break;
    years += 1;
    stubEnd = candidate;
    if (compareDates(candidate, start) === 0) break;
  }
  let basis = 365;
  for (const year of [start.year, stubEnd.year]) {
    if (isLeapYear(year)) {
      const leapDay = toDayNumber({ year, month: 2, day: 29 });
      if (toDayNumber(start) <= leapDay && leapDay < toDayNumber(stubEnd)) basis = 366;
    }
  }
  return add(ratio(BigInt(years)), reduce(ratio(BigInt(daysBetween(start, stubEnd)), BigInt(basis))));
}
