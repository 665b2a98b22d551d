import { EngineError } from './errors.js';

/**
 * Calendar dates without time zones. The engine's public functions take and
 * return ISO 8601 calendar dates ('YYYY-MM-DD', proleptic Gregorian, years
 * 0001–9999). Internally a date is a day number (days since 1970-01-01), which
 * makes differences and ordering integer arithmetic; conversion uses Howard
 * Hinnant's civil-from-days algorithms, which are exact for every date here.
 */
export interface YearMonthDay {
  readonly year: number;
  readonly month: number; // 1–12
  readonly day: number; // 1–31
}

const ISO_DATE = /^(\d{4})-(\d{2})-(\d{2})$/;

export function isLeapYear(year: number): boolean {
  return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
}

const MONTH_DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31] as const;

export function daysInMonth(year: number, month: number): number {
  return month === 2 && isLeapYear(year) ? 29 : (MONTH_DAYS[month - 1] ?? 0);
}

export function daysInYear(year: number): number {
  return isLeapYear(year) ? 366 : 365;
}

/** Parses 'YYYY-MM-DD' and checks that the day exists (no 2023-02-29). */
export function parseDate(text: string, field = 'date'): YearMonthDay {
  const match = ISO_DATE.exec(text);
  if (match) {
    const year = Number(match[1]);
    const month = Number(match[2]);
    const day = Number(match[3]);
    if (year >= 1 && month >= 1 && month <= 12 && day >= 1 && day <= daysInMonth(year, month)) {
      return { year, month, day };
    }
  }
  throw new EngineError('invalid_date', `${field} must be a calendar date in the form YYYY-MM-DD`, field);
}

export function isIsoDate(text: unknown): text is string {
  if (typeof text !== 'string') return false;
  try {
    parseDate(text);
    return true;
  } catch {
    return false;
  }
}

// Schedules format a date per installment; table lookups keep that to one concatenation.
const TWO_DIGITS = Array.from({ length: 32 }, (_, n) => String(n).padStart(2, '0'));
const MONTH_DAY = Array.from({ length: 13 * 32 }, (_, i) => `-${TWO_DIGITS[Math.floor(i / 32)]}-${TWO_DIGITS[i % 32]}`);

// Year prefixes are made once each (a pure memo of constant strings): turning a number into a
// string was most of the cost of formatting a schedule's dates.
const YEARS: (string | undefined)[] = new Array<string | undefined>(10_000);

export function formatDate(date: YearMonthDay): string {
  const year = (YEARS[date.year] ??= String(date.year).padStart(4, '0'));
  return year + (MONTH_DAY[date.month * 32 + date.day] as string);
}

/** Days since 1970-01-01 (negative before). */
export function toDayNumber(date: YearMonthDay): number {
  const y = date.month <= 2 ? date.year - 1 : date.year;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const mp = (date.month + 9) % 12;
  const doy = Math.floor((153 * mp + 2) / 5) + date.day - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}

export function fromDayNumber(dayNumber: number): YearMonthDay {
  const z = dayNumber + 719468;
  const era = Math.floor(z / 146097);
  const doe = z - era * 146097;
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36524) - Math.floor(doe / 146096)) / 365);
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const day = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const month = mp < 10 ? mp + 3 : mp - 9;
  return { year: yoe + era * 400 + (month <= 2 ? 1 : 0), month, day };
}

/** Day number of an ISO date string. */
export function dayNumber(text: string, field = 'date'): number {
  return toDayNumber(parseDate(text, field));
}

/** ISO date string of a day number. */
export function isoDate(dayNumber: number): string {
  return formatDate(fromDayNumber(dayNumber));
}

/** Actual days from `start` to `end` (negative when end is earlier). */
export function daysBetween(start: YearMonthDay, end: YearMonthDay): number {
  return toDayNumber(end) - toDayNumber(start);
}

export function addDays(date: YearMonthDay, days: number): YearMonthDay {
  return fromDayNumber(toDayNumber(date) + days);
}

export function isLastDayOfMonth(date: YearMonthDay): boolean {
  return date.day === daysInMonth(date.year, date.month);
}

export function compareDates(a: YearMonthDay, b: YearMonthDay): number {
  return a.year - b.year || a.month - b.month || a.day - b.day;
}

/**
 * Adds calendar months. A day that does not exist in the target month is
 * clamped to its last day (Jan 31 + 1 month = Feb 28/29). With `endOfMonth`,
 * a date on the last day of its month stays on the last day (Feb 28 + 1 month
 * = Mar 31), the end-of-month rule of ISDA and of most loan systems.
 */
export function addMonths(date: YearMonthDay, months: number, endOfMonth = false): YearMonthDay {
  const index = date.year * 12 + (date.month - 1) + months;
  const year = Math.floor(index / 12);
  const month = index - year * 12 + 1;
  const last = daysInMonth(year, month);
  const day = endOfMonth && isLastDayOfMonth(date) ? last : Math.min(date.day, last);
  return { year, month, day };
}

/** Adds months to an anchor day-of-month: the result's day is `anchorDay`, clamped to the month's length. */
export function addMonthsToAnchor(date: YearMonthDay, months: number, anchorDay: number): YearMonthDay {
  const index = date.year * 12 + (date.month - 1) + months;
  const year = Math.floor(index / 12);
  const month = index - year * 12 + 1;
  return { year, month, day: Math.min(anchorDay, daysInMonth(year, month)) };
}
