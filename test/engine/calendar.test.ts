/**
 * Payment calendars: every frequency, the end-of-month rule, semimonthly
 * pairs, odd first periods and argument errors. Expected dates are written out
 * by hand from the rule, and properties compare against the JavaScript Date as
 * an independent calendar.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  FREQUENCIES,
  type Frequency,
  type YearMonthDay,
  assertFrequency,
  daysPerPeriod,
  dueDates,
  firstPeriodKind,
  formatDate,
  isFrequency,
  monthsPerPeriod,
  parseDate,
  periodsPerYear,
  shiftPeriods,
} from '../../src/engine/index.js';
import { expectEngineError } from '../support/engine.js';

const d = (text: string): YearMonthDay => parseDate(text);
const iso = (dates: readonly YearMonthDay[]): string[] => dates.map(formatDate);


/** Calendar arithmetic by the JavaScript Date (UTC), independent of dates.ts. */
function jsDate(date: YearMonthDay): Date {
  const js = new Date(0);
  js.setUTCFullYear(date.year, date.month - 1, date.day);
  return js;
}
function fromJs(js: Date): YearMonthDay {
  return { year: js.getUTCFullYear(), month: js.getUTCMonth() + 1, day: js.getUTCDate() };
}
function jsAddDays(date: YearMonthDay, days: number): YearMonthDay {
  const js = jsDate(date);
  js.setUTCDate(js.getUTCDate() + days);
  return fromJs(js);
}
function jsLastDay(year: number, month: number): number {
  const js = new Date(0);
  js.setUTCFullYear(year, month, 0); // day 0 of the next month
  return js.getUTCDate();
}

const anyDate = fc.record({ year: fc.integer({ min: 1900, max: 2200 }), month: fc.integer({ min: 1, max: 12 }), day: fc.integer({ min: 1, max: 31 }) }).map((x) => ({ ...x, day: Math.min(x.day, jsLastDay(x.year, x.month)) }));

describe('frequencies', () => {
  it('have the regular periods per year, months or days per period of their names', () => {
    const table: Record<Frequency, [perYear: number, months: number, days: number]> = {
      monthly: [12, 1, 0],
      semimonthly: [24, 0, 0],
      biweekly: [26, 0, 14],
      weekly: [52, 0, 7],
      four_weekly: [13, 0, 28],
      bimonthly: [6, 2, 0],
      quarterly: [4, 3, 0],
      semiannual: [2, 6, 0],
      annual: [1, 12, 0],
    };
    expect([...FREQUENCIES].sort()).toEqual(Object.keys(table).sort());
    for (const frequency of FREQUENCIES) {
      expect([periodsPerYear(frequency), monthsPerPeriod(frequency), daysPerPeriod(frequency)], frequency).toEqual(table[frequency]);
      expect(isFrequency(frequency)).toBe(true);
      expect(assertFrequency(frequency)).toBe(frequency);
    }
  });

  it('rejects unknown names', () => {
    expect(isFrequency('fortnightly')).toBe(false);
    expect(isFrequency(12)).toBe(false);
    expectEngineError(() => assertFrequency('fortnightly'), 'unknown_frequency', 'frequency');
    expectEngineError(() => assertFrequency('Monthly', 'payment_frequency'), 'unknown_frequency', 'payment_frequency');
  });
});

describe('dueDates: every frequency from 2024-01-15', () => {
  const expected: Record<Frequency, string[]> = {
    monthly: ['2024-02-15', '2024-03-15', '2024-04-15', '2024-05-15'],
    semimonthly: ['2024-01-30', '2024-02-15', '2024-02-29', '2024-03-15'],
    biweekly: ['2024-01-29', '2024-02-12', '2024-02-26', '2024-03-11'],
    weekly: ['2024-01-22', '2024-01-29', '2024-02-05', '2024-02-12'],
    four_weekly: ['2024-02-12', '2024-03-11', '2024-04-08', '2024-05-06'],
    bimonthly: ['2024-03-15', '2024-05-15', '2024-07-15', '2024-09-15'],
    quarterly: ['2024-04-15', '2024-07-15', '2024-10-15', '2025-01-15'],
    semiannual: ['2024-07-15', '2025-01-15', '2025-07-15', '2026-01-15'],
    annual: ['2025-01-15', '2026-01-15', '2027-01-15', '2028-01-15'],
  };
  it.each(FREQUENCIES)('%s', (frequency) => {
    expect(iso(dueDates({ start: d('2024-01-15'), frequency, count: 4 }))).toEqual(expected[frequency]);
  });

  it('day-based frequencies step by 7, 14 or 28 actual days (property, JavaScript Date as reference)', () => {
    fc.assert(
      fc.property(anyDate, fc.constantFrom<Frequency>('weekly', 'biweekly', 'four_weekly'), fc.integer({ min: 1, max: 60 }), (start, frequency, count) => {
        const step = { weekly: 7, biweekly: 14, four_weekly: 28 }[frequency as 'weekly' | 'biweekly' | 'four_weekly'];
        const dates = dueDates({ start, frequency, count });
        expect(dates).toHaveLength(count);
        dates.forEach((date, i) => expect(date).toEqual(jsAddDays(start, step * (i + 1))));
      }),
      { numRuns: 500 },
    );
  });

  it('month-based frequencies keep the start day, clamped to short months, and never drift (property)', () => {
    fc.assert(
      fc.property(anyDate, fc.constantFrom<Frequency>('monthly', 'bimonthly', 'quarterly', 'semiannual', 'annual'), fc.integer({ min: 1, max: 40 }), (start, frequency, count) => {
        const months = { monthly: 1, bimonthly: 2, quarterly: 3, semiannual: 6, annual: 12 }[frequency as 'monthly'];
        const dates = dueDates({ start, frequency, count });
        dates.forEach((date, i) => {
          const index = start.year * 12 + start.month - 1 + months * (i + 1);
          const year = Math.floor(index / 12);
          const month = (index % 12) + 1;
          expect(date).toEqual({ year, month, day: Math.min(start.day, jsLastDay(year, month)) });
        });
      }),
      { numRuns: 500 },
    );
  });

  it('due dates are strictly increasing and after the start for every frequency (property)', () => {
    fc.assert(
      fc.property(anyDate, fc.constantFrom(...FREQUENCIES), fc.boolean(), fc.integer({ min: 1, max: 50 }), (start, frequency, endOfMonth, count) => {
        const dates = dueDates({ start, frequency, count, endOfMonth });
        expect(dates).toHaveLength(count);
        let previous = jsDate(start).getTime();
        for (const date of dates) {
          const time = jsDate(date).getTime();
          expect(time).toBeGreaterThan(previous);
          previous = time;
        }
      }),
      { numRuns: 500 },
    );
  });
});

describe('the end-of-month rule', () => {
  it('a 31 January start pays on the last day of shorter months and the 31st of long ones, with or without the rule (no drift to the 28th)', () => {
    for (const endOfMonth of [false, true]) {
      expect(iso(dueDates({ start: d('2023-01-31'), frequency: 'monthly', count: 4, endOfMonth }))).toEqual(['2023-02-28', '2023-03-31', '2023-04-30', '2023-05-31']);
      expect(iso(dueDates({ start: d('2024-01-31'), frequency: 'monthly', count: 3, endOfMonth }))).toEqual(['2024-02-29', '2024-03-31', '2024-04-30']);
    }
  });

  it('an anchor on 30 April moves to 31 May only under the rule', () => {
    expect(iso([1, 2, 3].map((n) => shiftPeriods(d('2024-04-30'), 'monthly', n, true)))).toEqual(['2024-05-31', '2024-06-30', '2024-07-31']);
    expect(iso([1, 2, 3].map((n) => shiftPeriods(d('2024-04-30'), 'monthly', n, false)))).toEqual(['2024-05-30', '2024-06-30', '2024-07-30']);
  });

  it('an anchor on 28 February of a common year is a month end only under the rule', () => {
    expect(formatDate(shiftPeriods(d('2023-02-28'), 'monthly', 1, true))).toBe('2023-03-31');
    expect(formatDate(shiftPeriods(d('2023-02-28'), 'monthly', 1, false))).toBe('2023-03-28');
    // 28 February 2024 is not a month end.
    expect(formatDate(shiftPeriods(d('2024-02-28'), 'monthly', 1, true))).toBe('2024-03-28');
  });

  it('quarterly from 29 February 2024 under the rule', () => {
    expect(iso(dueDates({ start: d('2024-02-29'), frequency: 'quarterly', count: 4, endOfMonth: true }))).toEqual(['2024-05-31', '2024-08-31', '2024-11-30', '2025-02-28']);
    expect(iso(dueDates({ start: d('2024-02-29'), frequency: 'quarterly', count: 4 }))).toEqual(['2024-05-29', '2024-08-29', '2024-11-29', '2025-02-28']);
  });

  it('with a first payment date, later dates step from it', () => {
    expect(iso(dueDates({ start: d('2024-01-10'), firstPaymentDate: d('2024-02-29'), frequency: 'monthly', count: 3, endOfMonth: true }))).toEqual(['2024-02-29', '2024-03-31', '2024-04-30']);
    expect(iso(dueDates({ start: d('2024-01-10'), firstPaymentDate: d('2024-02-29'), frequency: 'monthly', count: 3, endOfMonth: false }))).toEqual(['2024-02-29', '2024-03-29', '2024-04-29']);
  });
});

describe('semimonthly pairs', () => {
  const pairsFrom = (anchor: string, endOfMonth: boolean, n = 6): string[] => iso(Array.from({ length: n }, (_, i) => shiftPeriods(d(anchor), 'semimonthly', i, endOfMonth)));

  it('1st and 16th', () => {
    expect(pairsFrom('2024-01-01', false)).toEqual(['2024-01-01', '2024-01-16', '2024-02-01', '2024-02-16', '2024-03-01', '2024-03-16']);
    expect(pairsFrom('2024-01-16', true)).toEqual(['2024-01-16', '2024-02-01', '2024-02-16', '2024-03-01', '2024-03-16', '2024-04-01']);
  });

  it('15th and the last day, from a month-end or a 15th anchor under the end-of-month rule', () => {
    expect(pairsFrom('2023-01-31', true)).toEqual(['2023-01-31', '2023-02-15', '2023-02-28', '2023-03-15', '2023-03-31', '2023-04-15']);
    expect(pairsFrom('2023-01-15', true)).toEqual(['2023-01-15', '2023-01-31', '2023-02-15', '2023-02-28', '2023-03-15', '2023-03-31']);
    expect(pairsFrom('2024-04-30', true)).toEqual(['2024-04-30', '2024-05-15', '2024-05-31', '2024-06-15', '2024-06-30', '2024-07-15']);
  });

  it('15th and 30th without the rule (the 30th clamped in February)', () => {
    expect(pairsFrom('2023-01-15', false)).toEqual(['2023-01-15', '2023-01-30', '2023-02-15', '2023-02-28', '2023-03-15', '2023-03-30']);
  });

  it('d and d + 15 for other anchors, backwards too', () => {
    expect(pairsFrom('2024-03-10', false, 4)).toEqual(['2024-03-10', '2024-03-25', '2024-04-10', '2024-04-25']);
    expect(iso([-1, -2, -3].map((n) => shiftPeriods(d('2024-03-10'), 'semimonthly', n)))).toEqual(['2024-02-25', '2024-02-10', '2024-01-25']);
    expect(iso([-1, -2].map((n) => shiftPeriods(d('2024-01-05'), 'semimonthly', n)))).toEqual(['2023-12-20', '2023-12-05']);
  });
});

describe('shiftPeriods', () => {
  it('shifting by 0 returns the anchor (property)', () => {
    fc.assert(
      fc.property(anyDate, fc.constantFrom(...FREQUENCIES), fc.boolean(), (anchor, frequency, endOfMonth) => {
        expect(shiftPeriods(anchor, frequency, 0, endOfMonth)).toEqual(anchor);
      }),
      { numRuns: 500 },
    );
  });

  it('n periods forward then n back returns a non-clamped anchor (property)', () => {
    // Non-clamped: every date of the anchor's series exists in every month (for
    // month-based frequencies a day ≤ 28; for semimonthly a pair of days both
    // ≤ 28: d ≤ 13 or 16 ≤ d ≤ 28), and, under the end-of-month rule, none of
    // them lands on a month end (≤ 27, else 28 February would count as one).
    // Day-based frequencies never clamp.
    const day = (frequency: Frequency, endOfMonth: boolean): fc.Arbitrary<number> => {
      const top = endOfMonth ? 27 : 28;
      if (daysPerPeriod(frequency) > 0) return fc.integer({ min: 1, max: 31 });
      if (frequency === 'semimonthly') return fc.oneof(fc.integer({ min: 1, max: top - 15 }), fc.integer({ min: 16, max: top }));
      return fc.integer({ min: 1, max: top });
    };
    const caseArb = fc.tuple(fc.constantFrom(...FREQUENCIES), fc.boolean()).chain(([frequency, endOfMonth]) =>
      fc.record({
        frequency: fc.constant(frequency),
        year: fc.integer({ min: 1900, max: 2200 }),
        month: fc.integer({ min: 1, max: 12 }),
        day: day(frequency, endOfMonth),
        n: fc.integer({ min: -300, max: 300 }),
        endOfMonth: fc.constant(endOfMonth),
      }),
    );
    fc.assert(
      fc.property(caseArb, ({ frequency, year, month, day: rawDay, n, endOfMonth }) => {
        const anchor = { year, month, day: Math.min(rawDay, jsLastDay(year, month)) };
        const there = shiftPeriods(anchor, frequency, n, endOfMonth);
        expect(shiftPeriods(there, frequency, -n, endOfMonth)).toEqual(anchor);
      }),
      { numRuns: 2000 },
    );
  });

  it('month-end anchors under the rule come back too (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1900, max: 2200 }), fc.integer({ min: 1, max: 12 }), fc.constantFrom<Frequency>('monthly', 'bimonthly', 'quarterly', 'semiannual', 'annual', 'semimonthly'), fc.integer({ min: -100, max: 100 }), (year, month, frequency, n) => {
        const anchor = { year, month, day: jsLastDay(year, month) };
        const there = shiftPeriods(anchor, frequency, n, true);
        if (frequency !== 'semimonthly' || n % 2 === 0) expect(there.day).toBe(jsLastDay(there.year, there.month));
        expect(shiftPeriods(there, frequency, -n, true)).toEqual(anchor);
      }),
      { numRuns: 1000 },
    );
  });
});

describe('firstPeriodKind', () => {
  it('regular, short and long monthly first periods', () => {
    expect(firstPeriodKind(d('2024-01-15'), d('2024-02-15'), 'monthly')).toBe('regular');
    expect(firstPeriodKind(d('2024-01-10'), d('2024-02-01'), 'monthly')).toBe('short');
    expect(firstPeriodKind(d('2024-01-10'), d('2024-03-01'), 'monthly')).toBe('long');
    expect(firstPeriodKind(d('2023-12-20'), d('2024-02-01'), 'monthly')).toBe('long');
  });

  it('the default first due date is regular: 31 January → 28 February', () => {
    const start = d('2023-01-31');
    const [first] = dueDates({ start, frequency: 'monthly', count: 1 });
    expect(formatDate(first as YearMonthDay)).toBe('2023-02-28');
    expect(firstPeriodKind(start, first as YearMonthDay, 'monthly')).toBe('regular');
    // Counted back from the first due date under the end-of-month rule: 28 Feb 2023 → 31 Mar 2023.
    expect(firstPeriodKind(d('2023-02-28'), d('2023-03-31'), 'monthly', true)).toBe('regular');
    // Without the rule, 31 March less one month is 28 February too (clamped).
    expect(firstPeriodKind(d('2023-02-28'), d('2023-03-31'), 'monthly', false)).toBe('regular');
    expect(firstPeriodKind(d('2023-02-27'), d('2023-03-31'), 'monthly', true)).toBe('long');
  });

  it('the default first due date is regular for every frequency (property)', () => {
    fc.assert(
      fc.property(anyDate, fc.constantFrom(...FREQUENCIES), fc.boolean(), (start, frequency, endOfMonth) => {
        const [first] = dueDates({ start, frequency, count: 1, endOfMonth });
        expect(firstPeriodKind(start, first as YearMonthDay, frequency, endOfMonth)).toBe('regular');
      }),
      { numRuns: 500 },
    );
  });

  it('weekly, semimonthly and quarterly odd periods', () => {
    expect(firstPeriodKind(d('2024-01-01'), d('2024-01-05'), 'weekly')).toBe('short');
    expect(firstPeriodKind(d('2024-01-01'), d('2024-01-12'), 'weekly')).toBe('long');
    expect(firstPeriodKind(d('2024-01-05'), d('2024-01-16'), 'semimonthly')).toBe('short');
    expect(firstPeriodKind(d('2023-12-20'), d('2024-01-16'), 'semimonthly')).toBe('long');
    expect(firstPeriodKind(d('2024-01-01'), d('2024-04-01'), 'quarterly')).toBe('regular');
    expect(firstPeriodKind(d('2024-01-01'), d('2024-05-15'), 'quarterly')).toBe('long');
  });
});

describe('argument errors', () => {
  it('a first payment date on or before the start is a date_order error', () => {
    expectEngineError(() => dueDates({ start: d('2024-01-15'), firstPaymentDate: d('2024-01-15'), frequency: 'monthly', count: 3 }), 'date_order', 'first_payment_date');
    expectEngineError(() => dueDates({ start: d('2024-01-15'), firstPaymentDate: d('2024-01-01'), frequency: 'weekly', count: 3 }), 'date_order', 'first_payment_date');
    expectEngineError(() => firstPeriodKind(d('2024-01-15'), d('2024-01-14'), 'monthly'), 'date_order', 'first_payment_date');
  });

  it('the number of installments must be a positive integer', () => {
    for (const count of [0, -1, 1.5, Number.NaN]) {
      expectEngineError(() => dueDates({ start: d('2024-01-15'), frequency: 'monthly', count }), 'invalid_argument', 'term');
    }
  });
});
