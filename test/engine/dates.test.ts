/**
 * Calendar dates: day numbers, leap years, strict ISO parsing and month
 * arithmetic, checked against the JavaScript Date (UTC) as an independent
 * proleptic Gregorian calendar.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type YearMonthDay,
  EngineError,
  addDays,
  addMonths,
  addMonthsToAnchor,
  compareDates,
  dayNumber,
  daysBetween,
  daysInMonth,
  daysInYear,
  formatDate,
  fromDayNumber,
  isIsoDate,
  isLastDayOfMonth,
  isLeapYear,
  isoDate,
  parseDate,
  toDayNumber,
} from '../../src/engine/index.js';

const MS_PER_DAY = 86_400_000;

/** Days since 1970-01-01 by the JavaScript Date; setUTCFullYear keeps years 1–99 literal. */
function jsDayNumber(date: YearMonthDay): number {
  const js = new Date(0);
  js.setUTCFullYear(date.year, date.month - 1, date.day);
  return js.getTime() / MS_PER_DAY;
}

function jsFromDayNumber(days: number): YearMonthDay {
  const js = new Date(days * MS_PER_DAY);
  return { year: js.getUTCFullYear(), month: js.getUTCMonth() + 1, day: js.getUTCDate() };
}

function jsLastDay(year: number, month: number): number {
  const js = new Date(0);
  js.setUTCFullYear(year, month, 0);
  return js.getUTCDate();
}

const FIRST = jsDayNumber({ year: 1, month: 1, day: 1 });
const LAST = jsDayNumber({ year: 9999, month: 12, day: 31 });
const anyDayNumber = fc.integer({ min: FIRST, max: LAST });

describe('day numbers', () => {
  it('known anchors', () => {
    expect(toDayNumber({ year: 1970, month: 1, day: 1 })).toBe(0);
    expect(toDayNumber({ year: 1969, month: 12, day: 31 })).toBe(-1);
    expect(toDayNumber({ year: 2000, month: 3, day: 1 })).toBe(11017);
    expect(dayNumber('0001-01-01')).toBe(-719162);
    expect(dayNumber('9999-12-31')).toBe(2932896);
  });

  it('round-trip over years 1..9999 and agree with the JavaScript Date (property)', () => {
    fc.assert(
      fc.property(anyDayNumber, (n) => {
        const date = fromDayNumber(n);
        expect(date).toEqual(jsFromDayNumber(n));
        expect(toDayNumber(date)).toBe(n);
        expect(jsDayNumber(date)).toBe(n);
        const text = isoDate(n);
        expect(text).toMatch(/^\d{4}-\d{2}-\d{2}$/);
        expect(formatDate(parseDate(text))).toBe(text);
        expect(dayNumber(text)).toBe(n);
      }),
      { numRuns: 2000 },
    );
  });

  it('differences and additions are integer day arithmetic (property)', () => {
    fc.assert(
      fc.property(anyDayNumber, anyDayNumber, (a, b) => {
        const da = fromDayNumber(a);
        const db = fromDayNumber(b);
        expect(daysBetween(da, db)).toBe(b - a);
        expect(addDays(da, b - a)).toEqual(db);
        expect(Math.sign(compareDates(da, db))).toBe(Math.sign(a - b));
      }),
      { numRuns: 1000 },
    );
  });
});

describe('leap years', () => {
  it('Gregorian rule: every 4th year, not centuries, but every 400th', () => {
    expect(isLeapYear(1900)).toBe(false);
    expect(isLeapYear(2000)).toBe(true);
    expect(isLeapYear(2023)).toBe(false);
    expect(isLeapYear(2024)).toBe(true);
    expect(isLeapYear(2100)).toBe(false);
    expect(isLeapYear(2400)).toBe(true);
    expect(isLeapYear(4)).toBe(true);
    expect(daysInMonth(1900, 2)).toBe(28);
    expect(daysInMonth(2000, 2)).toBe(29);
    expect(daysInYear(1900)).toBe(365);
    expect(daysInYear(2000)).toBe(366);
  });

  it('month lengths agree with the JavaScript Date for every month of years 1..9999 (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 9999 }), fc.integer({ min: 1, max: 12 }), (year, month) => {
        expect(daysInMonth(year, month)).toBe(jsLastDay(year, month));
        expect(isLeapYear(year)).toBe(jsLastDay(year, 2) === 29);
        expect(daysInYear(year)).toBe(jsDayNumber({ year: year + 1, month: 1, day: 1 }) - jsDayNumber({ year, month: 1, day: 1 }));
      }),
      { numRuns: 1000 },
    );
  });
});

describe('parseDate', () => {
  it('accepts real calendar dates', () => {
    expect(parseDate('2024-02-29')).toEqual({ year: 2024, month: 2, day: 29 });
    expect(parseDate('2000-02-29')).toEqual({ year: 2000, month: 2, day: 29 });
    expect(parseDate('0001-01-01')).toEqual({ year: 1, month: 1, day: 1 });
    expect(parseDate('9999-12-31')).toEqual({ year: 9999, month: 12, day: 31 });
    expect(isIsoDate('2024-12-31')).toBe(true);
  });

  const rejected = [
    '2023-02-29', // not a leap year
    '1900-02-29', // century, not a leap year
    '2024-02-30',
    '2024-04-31',
    '2024-13-01',
    '2024-00-10',
    '2024-01-00',
    '0000-01-01', // year 0 is outside 0001–9999
    '2024-1-01',
    '2024-01-1',
    '24-01-01',
    '10000-01-01',
    '+2024-01-01',
    '2024/01/01',
    '20240101',
    ' 2024-01-01',
    '2024-01-01 ',
    '2024-01-01\n',
    '2024-01-01T00:00:00Z',
    '２０２４-01-01', // full-width digits
    '',
  ];
  it.each(rejected)('rejects %j', (text) => {
    let thrown: unknown;
    try {
      parseDate(text, 'due_date');
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(EngineError);
    expect((thrown as EngineError).code).toBe('invalid_date');
    expect((thrown as EngineError).field).toBe('due_date');
    expect(isIsoDate(text)).toBe(false);
  });

  it('isIsoDate is false for non-strings', () => {
    for (const value of [undefined, null, 20240101, new Date(0), {}]) expect(isIsoDate(value)).toBe(false);
  });
});

describe('month arithmetic', () => {
  it('clamps to the last day of a shorter month', () => {
    expect(formatDate(addMonths(parseDate('2023-01-31'), 1))).toBe('2023-02-28');
    expect(formatDate(addMonths(parseDate('2024-01-31'), 1))).toBe('2024-02-29');
    expect(formatDate(addMonths(parseDate('2024-03-31'), -1))).toBe('2024-02-29');
    expect(formatDate(addMonths(parseDate('2023-11-30'), 3))).toBe('2024-02-29');
    expect(formatDate(addMonths(parseDate('2024-02-29'), 12))).toBe('2025-02-28');
    expect(formatDate(addMonths(parseDate('2024-01-15'), -13))).toBe('2022-12-15');
  });

  it('keeps a month end on the month end under the end-of-month rule', () => {
    expect(formatDate(addMonths(parseDate('2023-02-28'), 1, true))).toBe('2023-03-31');
    expect(formatDate(addMonths(parseDate('2023-02-28'), 1, false))).toBe('2023-03-28');
    expect(formatDate(addMonths(parseDate('2024-04-30'), 1, true))).toBe('2024-05-31');
    expect(formatDate(addMonths(parseDate('2024-04-30'), 1, false))).toBe('2024-05-30');
    expect(formatDate(addMonths(parseDate('2024-04-29'), 1, true))).toBe('2024-05-29');
  });

  it('addMonthsToAnchor uses the anchor day, clamped', () => {
    expect(formatDate(addMonthsToAnchor(parseDate('2023-02-28'), 1, 31))).toBe('2023-03-31');
    expect(formatDate(addMonthsToAnchor(parseDate('2023-02-28'), 2, 30))).toBe('2023-04-30');
  });

  it('matches the JavaScript Date month roll with clamping, and inverts for days ≤ 28 (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 9000 }), fc.integer({ min: 1, max: 12 }), fc.integer({ min: 1, max: 31 }), fc.integer({ min: -1200, max: 1200 }), (year, month, rawDay, months) => {
        const date = { year, month, day: Math.min(rawDay, jsLastDay(year, month)) };
        const result = addMonths(date, months);
        const first = new Date(0);
        first.setUTCFullYear(year, month - 1 + months, 1);
        const targetYear = first.getUTCFullYear();
        const targetMonth = first.getUTCMonth() + 1;
        expect(result).toEqual({ year: targetYear, month: targetMonth, day: Math.min(date.day, jsLastDay(targetYear, targetMonth)) });
        if (date.day <= 28) expect(addMonths(result, -months)).toEqual(date);
        if (isLastDayOfMonth(date)) expect(isLastDayOfMonth(addMonths(date, months, true))).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });
});
