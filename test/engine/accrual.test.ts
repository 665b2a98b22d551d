import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  DAY_COUNT_CONVENTIONS,
  EngineError,
  ROUNDING_MODES,
  accruedInterest,
  buildSchedule,
  dailyAccrual,
  parseDecimal,
  scheduleAccrualAsOf,
  type ScheduleTerms,
} from '../../src/engine/index.js';

const addUtcDays = (a: string, days: number): string => new Date(Date.parse(`${a}T00:00:00Z`) + days * 86_400_000).toISOString().slice(0, 10);

describe('accruedInterest', () => {
  const terms = { annualRate: parseDecimal('0.073'), dayCount: 'ACT/365F' as const, rounding: 'half_even' as const };

  it('accrues balance × rate × days / 365 to the date, with the named rounding', () => {
    // 100,000.00 × 0.073 × 10 / 365 = 200.00 exactly
    expect(accruedInterest(10_000_000n, terms, { start: '2026-03-01', end: '2026-04-01' }, '2026-03-11')).toBe(20_000n);
    // 1,234.56 × 0.073 × 1 / 365 = 0.246912 → 0.25
    expect(accruedInterest(123_456n, terms, { start: '2026-03-01', end: '2026-04-01' }, '2026-03-02')).toBe(25n);
    expect(accruedInterest(123_456n, { ...terms, rounding: 'down' }, { start: '2026-03-01', end: '2026-04-01' }, '2026-03-02')).toBe(24n);
  });

  it('under 30/360 a regular month reaches exactly its 30 days on the due date, even in February', () => {
    const t = { annualRate: parseDecimal('0.12'), dayCount: '30/360' as const, rounding: 'half_up' as const };
    const february = { start: '2024-01-31', end: '2024-02-29', days: 30 };
    expect(accruedInterest(1_000_000n, t, february, '2024-02-29')).toBe(10_000n); // 10,000.00 × 1 %
    expect(accruedInterest(1_000_000n, t, february, '2024-02-28')).toBe(9_333n); // 28/360
  });

  it('rejects dates outside the period', () => {
    const period = { start: '2026-03-01', end: '2026-04-01' };
    expect(() => accruedInterest(1n, terms, period, '2026-02-28')).toThrowError(EngineError);
    expect(() => accruedInterest(1n, terms, period, '2026-04-02')).toThrowError(EngineError);
    expect(() => accruedInterest(-1n, terms, period, '2026-03-02')).toThrowError(EngineError);
  });
});

const loanArb = fc.record({
  principal: fc.bigInt({ min: 1n, max: 1_000_000_000n }),
  term: fc.integer({ min: 1, max: 36 }),
  rateMillionths: fc.integer({ min: 0, max: 1_000_000 }),
  dayCount: fc.constantFrom(...DAY_COUNT_CONVENTIONS),
  rounding: fc.constantFrom(...ROUNDING_MODES),
  offset: fc.integer({ min: 0, max: 365 * 40 }),
  firstPaymentOffset: fc.option(fc.integer({ min: 1, max: 70 }), { nil: undefined }),
});

function termsOf(r: typeof loanArb extends fc.Arbitrary<infer T> ? T : never): ScheduleTerms {
  const disbursementDate = addUtcDays('2000-01-01', r.offset);
  return {
    principal: r.principal,
    currency: 'USD',
    annualRate: { num: BigInt(r.rateMillionths), den: 1_000_000n },
    term: r.term,
    frequency: 'monthly',
    disbursementDate,
    firstPaymentDate: r.firstPaymentOffset === undefined ? undefined : addUtcDays(disbursementDate, r.firstPaymentOffset),
    dayCount: r.dayCount,
    interestRounding: r.rounding,
  };
}

describe('accrual agrees with the schedule (property)', () => {
  it('accrued interest on each due date equals that installment’s interest', () => {
    fc.assert(
      fc.property(loanArb, (r) => {
        const terms = termsOf(r);
        const schedule = buildSchedule(terms);
        let balance = terms.principal;
        for (const row of schedule.installments) {
          const accrued = accruedInterest(balance, { annualRate: terms.annualRate, dayCount: r.dayCount, rounding: r.rounding }, { start: row.periodStart, end: row.dueDate, days: row.days, frequency: 'monthly' }, row.dueDate);
          expect(accrued).toBe(row.interest + row.capitalizedInterest);
          balance = row.balance;
        }
      }),
      { numRuns: 300 },
    );
  });

  it('daily accruals over a period add up exactly to the period’s interest', () => {
    fc.assert(
      fc.property(loanArb, (r) => {
        const terms = termsOf(r);
        const row = buildSchedule(terms).installments[0]!;
        const accrualTerms = { annualRate: terms.annualRate, dayCount: r.dayCount, rounding: r.rounding };
        const period = { start: row.periodStart, end: row.dueDate, days: row.days, frequency: 'monthly' as const };
        let sum = 0n;
        for (let day = addUtcDays(row.periodStart, 1); day <= row.dueDate; day = addUtcDays(day, 1)) {
          const daily = dailyAccrual(terms.principal, accrualTerms, period, day);
          expect(daily >= 0n).toBe(true);
          sum += daily;
        }
        expect(sum).toBe(row.interest + row.capitalizedInterest);
      }),
      { numRuns: 300 },
    );
  });
});

describe('scheduleAccrualAsOf', () => {
  const terms: ScheduleTerms = { principal: 1_200_000n, currency: 'USD', annualRate: parseDecimal('0.12'), term: 12, frequency: 'monthly', disbursementDate: '2026-01-15', dayCount: 'ACT/365F' };
  const schedule = buildSchedule(terms);

  it('mid-period: principal after the last due installment plus interest accrued since it', () => {
    const position = scheduleAccrualAsOf(terms, schedule, '2026-03-25');
    const previous = schedule.installments[1]!;
    expect(position.installment).toBe(3);
    expect(position.periodStart).toBe('2026-03-15');
    expect(position.principalOutstanding).toBe(previous.balance);
    // 10 days at 12 % ACT/365F on the balance after installment 2
    expect(position.accruedInterest).toBe((previous.balance * 12n * 10n * 2n + 36_500n) / 73_000n);
    expect(position.payoffAmount).toBe(previous.balance + position.accruedInterest);
    expect(position.interestToDate).toBe(schedule.installments[0]!.interest + previous.interest + position.accruedInterest);
  });

  it('on disbursement nothing has accrued; after the last due date nothing is owed', () => {
    expect(scheduleAccrualAsOf(terms, schedule, '2026-01-15')).toMatchObject({ installment: 1, accruedInterest: 0n, payoffAmount: 1_200_000n });
    expect(scheduleAccrualAsOf(terms, schedule, '2027-06-01')).toMatchObject({ installment: null, payoffAmount: 0n, interestToDate: schedule.totalInterest + schedule.totalCapitalizedInterest });
    expect(() => scheduleAccrualAsOf(terms, schedule, '2026-01-14')).toThrowError(EngineError);
  });
});
