import { allVectors } from '../support/vectors.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type AprInput,
  type AprUnitPeriod,
  type UnitPeriod,
  appendixJApr,
  appendixJSchedule,
  aprWithinTolerance,
} from '../../src/engine/apr.js';
import { addDays, addMonthsToAnchor, formatDate, fromDayNumber, parseDate } from '../../src/engine/dates.js';
import { type Ratio, compare, mulInt, parseDecimal, toDecimalString } from '../../src/engine/ratio.js';
import { engineError } from '../support/engine.js';

// ---------------------------------------------------------------------------
// helpers

/** Dollars (as published) to cents. */
const usd = (dollars: number): bigint => BigInt(Math.round(dollars * 100));
const plusDays = (date: string, days: number): string => formatDate(addDays(parseDate(date), days));
/** The APR as a percentage rounded half-up to 2 decimals, the form Appendix J publishes. */
const percent2 = (apr: Ratio): string => toDecimalString(mulInt(apr, 100n), 2, 'half_up');
/** A percentage (as a JSON number) as an exact annual fraction. */
const fractionOfPercent = (value: number): Ratio => {
  const r = parseDecimal(String(value));
  return { num: r.num, den: r.den * 100n };
};


// ---------------------------------------------------------------------------
// Regulation Z, Appendix J, paragraph (c): every published example.
// Source: 12 CFR 1026 Appendix J (c)(1)–(c)(6) as transcribed in
// simontreanor/FSharp.Finance.Personal tests/AprUsActuarialTests.fs (dates and
// amounts of (c)(1)–(c)(5)(i)) and checked against the published unit-period
// counts t and fractions f of each example. (c)(5)(ii)–(iv) state only the term
// and (c)(6) only the counts, so their dates below are reconstructed to give
// exactly the published t and f; the APR depends on nothing else.

interface Example {
  readonly paragraph: string;
  readonly input: AprInput;
  /** As published, percent to 2 decimals. */
  readonly published: string;
  readonly unitPeriod: AprUnitPeriod;
  readonly perYear: number;
  /** Published t and f of each payment series' first payment, in date order. */
  readonly counts: readonly (readonly [number, number, number])[];
  readonly regular: boolean;
}

const C6I_START = '1978-09-01';

const EXAMPLES: readonly Example[] = [
  // (c)(1)(i) Monthly payments (regular first period)
  {
    paragraph: '(c)(1)(i)',
    input: { advances: [{ date: '1978-01-10', amount: usd(5000) }], paymentSeries: [{ firstDate: '1978-02-10', amount: usd(230), count: 24, frequency: 'monthly' }] },
    published: '9.69',
    unitPeriod: 'monthly',
    perYear: 12,
    counts: [[1, 0, 30]],
    regular: true,
  },
  // (c)(1)(ii) Monthly payments (long first period)
  {
    paragraph: '(c)(1)(ii)',
    input: { advances: [{ date: '1978-02-10', amount: usd(6000) }], paymentSeries: [{ firstDate: '1978-04-01', amount: usd(200), count: 36, frequency: 'monthly' }] },
    published: '11.82',
    unitPeriod: 'monthly',
    perYear: 12,
    counts: [[1, 19, 30]],
    regular: true,
  },
  // (c)(1)(iii) Semimonthly payments (short first period)
  {
    paragraph: '(c)(1)(iii)',
    input: { advances: [{ date: '1978-02-23', amount: usd(5000) }], paymentSeries: [{ firstDate: '1978-03-01', amount: usd(219.17), count: 24, frequency: 'semimonthly' }] },
    published: '10.34',
    unitPeriod: 'semimonthly',
    perYear: 24,
    counts: [[0, 6, 15]],
    regular: true,
  },
  // (c)(1)(iv) Quarterly payments (long first period)
  {
    paragraph: '(c)(1)(iv)',
    input: { advances: [{ date: '1978-05-23', amount: usd(10000) }], paymentSeries: [{ firstDate: '1978-10-01', amount: usd(385), count: 40, frequency: 'quarterly' }] },
    published: '8.97',
    unitPeriod: 'quarterly',
    perYear: 4,
    counts: [[1, 39, 90]],
    regular: true,
  },
  // (c)(1)(v) Weekly payments (long first period)
  {
    paragraph: '(c)(1)(v)',
    input: { advances: [{ date: '1978-03-20', amount: usd(500) }], paymentSeries: [{ firstDate: '1978-04-21', amount: usd(17.6), count: 30, frequency: 'weekly' }] },
    published: '14.96',
    unitPeriod: 'weekly',
    perYear: 52,
    counts: [[4, 4, 7]],
    regular: true,
  },
  // (c)(2)(i) Monthly payments (regular first period and irregular first payment)
  {
    paragraph: '(c)(2)(i)',
    input: {
      advances: [{ date: '1978-01-10', amount: usd(5000) }],
      payments: [{ date: '1978-02-10', amount: usd(250) }],
      paymentSeries: [{ firstDate: '1978-03-10', amount: usd(230), count: 23, frequency: 'monthly' }],
    },
    published: '10.08',
    unitPeriod: 'monthly',
    perYear: 12,
    counts: [[1, 0, 30], [2, 0, 30]],
    regular: true,
  },
  // (c)(2)(ii) Payments every 4 weeks (long first period and irregular first payment)
  {
    paragraph: '(c)(2)(ii)',
    input: {
      advances: [{ date: '1978-03-18', amount: usd(400) }],
      payments: [{ date: '1978-04-20', amount: usd(39.5) }],
      paymentSeries: [{ firstDate: '1978-05-18', amount: usd(38.31), count: 11, frequency: 'four_weekly' }],
    },
    published: '28.50',
    unitPeriod: 'four_weekly',
    perYear: 13,
    counts: [[1, 5, 28], [2, 5, 28]],
    regular: true,
  },
  // (c)(3)(i) Monthly payments (regular first period and irregular final payment)
  {
    paragraph: '(c)(3)(i)',
    input: {
      advances: [{ date: '1978-01-10', amount: usd(5000) }],
      payments: [{ date: '1980-01-10', amount: usd(280) }],
      paymentSeries: [{ firstDate: '1978-02-10', amount: usd(230), count: 23, frequency: 'monthly' }],
    },
    published: '10.50',
    unitPeriod: 'monthly',
    perYear: 12,
    counts: [[1, 0, 30], [24, 0, 30]],
    regular: true,
  },
  // (c)(3)(ii) Payments every 2 weeks (short first period and irregular final payment)
  {
    paragraph: '(c)(3)(ii)',
    input: {
      advances: [{ date: '1978-04-03', amount: usd(200) }],
      payments: [{ date: plusDays('1978-04-11', 14 * 19), amount: usd(30) }],
      paymentSeries: [{ firstDate: '1978-04-11', amount: usd(9.5), count: 19, frequency: 'biweekly' }],
    },
    published: '12.22',
    unitPeriod: 'biweekly',
    perYear: 26,
    counts: [[0, 8, 14], [19, 8, 14]],
    regular: true,
  },
  // (c)(4)(i) Monthly payments (regular first period, irregular first payment, and irregular final payment)
  {
    paragraph: '(c)(4)(i)',
    input: {
      advances: [{ date: '1978-01-10', amount: usd(5000) }],
      payments: [
        { date: '1978-02-10', amount: usd(250) },
        { date: '1980-01-10', amount: usd(280) },
      ],
      paymentSeries: [{ firstDate: '1978-03-10', amount: usd(230), count: 22, frequency: 'monthly' }],
    },
    published: '10.90',
    unitPeriod: 'monthly',
    perYear: 12,
    counts: [[1, 0, 30], [2, 0, 30], [24, 0, 30]],
    regular: true,
  },
  // (c)(4)(ii) Payments every two months (short first period, irregular first payment, and irregular final payment)
  {
    paragraph: '(c)(4)(ii)',
    input: {
      advances: [{ date: '1978-01-10', amount: usd(8000) }],
      payments: [
        { date: '1978-03-01', amount: usd(449.36) },
        { date: '1981-05-01', amount: usd(200) },
      ],
      paymentSeries: [{ firstDate: '1978-05-01', amount: usd(465), count: 18, frequency: 'bimonthly' }],
    },
    published: '7.30',
    unitPeriod: 'bimonthly',
    perYear: 6,
    counts: [[0, 52, 60], [1, 52, 60], [19, 52, 60]],
    regular: true,
  },
  // (c)(5)(i) Single advance, single payment (term of less than 1 year, measured in days): 255 days
  {
    paragraph: '(c)(5)(i)',
    input: { advances: [{ date: '1978-01-03', amount: usd(1000) }], payments: [{ date: '1978-09-15', amount: usd(1080) }] },
    published: '11.45',
    unitPeriod: 'term',
    perYear: 365 / 255,
    counts: [[1, 0, 1]],
    regular: true,
  },
  // (c)(5)(ii) Single advance, single payment (term of less than 1 year, measured in exact months): 6 months
  {
    paragraph: '(c)(5)(ii)',
    input: { advances: [{ date: '1978-01-10', amount: usd(1000) }], payments: [{ date: '1978-07-10', amount: usd(1044) }] },
    published: '8.80',
    unitPeriod: 'term',
    perYear: 2,
    counts: [[1, 0, 1]],
    regular: true,
  },
  // (c)(5)(iii) Single advance, single payment (term of more than 1 year, measured in exact months): 18 months
  {
    paragraph: '(c)(5)(iii)',
    input: { advances: [{ date: '1978-01-10', amount: usd(1000) }], payments: [{ date: '1979-07-10', amount: usd(1135.19) }] },
    published: '8.76',
    unitPeriod: 'annual',
    perYear: 1,
    counts: [[1, 6, 12]],
    regular: true,
  },
  // (c)(5)(iv) Single advance, single payment (term of exactly 2 years)
  {
    paragraph: '(c)(5)(iv)',
    input: { advances: [{ date: '1978-01-10', amount: usd(1000) }], payments: [{ date: '1980-01-10', amount: usd(1240) }] },
    published: '11.36',
    unitPeriod: 'annual',
    perYear: 1,
    counts: [[2, 0, 12]],
    regular: true,
  },
  // (c)(6)(i) Complex single advance transaction: payments every 4 weeks with skipped payments
  {
    paragraph: '(c)(6)(i)',
    input: {
      advances: [{ date: C6I_START, amount: usd(2135) }],
      paymentSeries: [
        { firstDate: plusDays(C6I_START, 26), amount: usd(100), count: 9, frequency: 'four_weekly' },
        { firstDate: plusDays(C6I_START, 10 * 28 + 12), amount: usd(100), count: 6, frequency: 'four_weekly' },
        { firstDate: plusDays(C6I_START, 16 * 28 + 26), amount: usd(100), count: 6, frequency: 'four_weekly' },
        { firstDate: plusDays(C6I_START, 23 * 28 + 12), amount: usd(100), count: 3, frequency: 'four_weekly' },
      ],
    },
    published: '12.00',
    unitPeriod: 'four_weekly',
    perYear: 13,
    counts: [[0, 26, 28], [10, 12, 28], [16, 26, 28], [23, 12, 28]],
    regular: false,
  },
  // (c)(6)(ii) Complex single advance transaction: monthly payments, skipped payments and single payments
  {
    paragraph: '(c)(6)(ii)',
    input: {
      advances: [{ date: '1978-01-10', amount: usd(7350) }],
      payments: [
        { date: '1979-01-22', amount: usd(2000) },
        { date: '1979-12-08', amount: usd(1000) },
      ],
      paymentSeries: [
        { firstDate: '1978-07-22', amount: usd(1000), count: 3, frequency: 'monthly' },
        { firstDate: '1979-07-22', amount: usd(750), count: 3, frequency: 'monthly' },
      ],
    },
    published: '10.22',
    unitPeriod: 'monthly',
    perYear: 12,
    counts: [[6, 12, 30], [12, 12, 30], [18, 12, 30], [22, 29, 30]],
    regular: false,
  },
];

describe('Regulation Z Appendix J (c) examples', () => {
  it('covers all seventeen published examples', () => {
    expect(EXAMPLES).toHaveLength(17);
  });

  for (const example of EXAMPLES) {
    it(`${example.paragraph}: APR ${example.published}%`, () => {
      const result = appendixJApr(example.input);
      expect(percent2(result.apr)).toBe(example.published);
      expect(Math.abs(result.aprNumber * 100 - Number(example.published))).toBeLessThanOrEqual(0.005);
      expect(result.unitPeriod).toBe(example.unitPeriod);
      expect(result.unitPeriodsPerYear).toBeCloseTo(example.perYear, 12);
      expect(result.regular).toBe(example.regular);
      expect(result.aprNumber).toBeCloseTo(result.unitPeriodRate * result.unitPeriodsPerYear, 15);

      // (b)(5): the published t and f of the first payment of each run.
      const payments = appendixJSchedule(example.input).cashFlows.filter((flow) => flow.kind === 'payment');
      const runStarts = payments.filter((flow, k) => {
        const previous = payments[k - 1];
        return k === 0 || previous === undefined || previous.amount !== flow.amount || flow.t - previous.t !== 1 || compare(flow.f, previous.f) !== 0;
      });
      expect(runStarts.map((flow) => [flow.t, Number(flow.f.num), Number(flow.f.den)])).toEqual(example.counts);
    });
  }
});

// Cross-checks beyond the regulation's own examples: FSharp.Finance.Personal
// tests/AprUsActuarialTests.fs ExtraExamples (confirmed there against Excel).
describe('Appendix J cross-checks (FSharp.Finance.Personal extra examples)', () => {
  const cases: [string, AprInput, string, AprUnitPeriod][] = [
    ['daily payments', { advances: [{ date: '2023-10-26', amount: usd(1000) }], payments: [0, 1, 2, 3, 4].map((k) => ({ date: plusDays('2023-11-30', k), amount: usd(220) })) }, '94.15', 'daily'],
    ['weekly, long first period', { advances: [{ date: '2023-10-28', amount: usd(1000) }], paymentSeries: [{ firstDate: '2023-11-30', amount: usd(250), count: 5, frequency: 'weekly' }] }, '176.52', 'weekly'],
    ['weekly, regular first period', { advances: [{ date: '2023-11-23', amount: usd(1000) }], paymentSeries: [{ firstDate: '2023-11-30', amount: usd(250), count: 5, frequency: 'weekly' }] }, '412.40', 'weekly'],
    ['weekly, short first period', { advances: [{ date: '2023-11-24', amount: usd(1000) }], paymentSeries: [{ firstDate: '2023-11-30', amount: usd(250), count: 5, frequency: 'weekly' }] }, '434.30', 'weekly'],
    ['yearly payments, odd days / 365', { advances: [{ date: '2023-10-26', amount: usd(1000) }], paymentSeries: [{ firstDate: '2023-11-30', amount: usd(500), count: 5, frequency: 'annual' }] }, '78.34', 'annual'],
    ['(c)(1)(iv) modified: shorter first period', { advances: [{ date: '1978-06-23', amount: usd(10000) }], paymentSeries: [{ firstDate: '1978-10-01', amount: usd(385), count: 40, frequency: 'quarterly' }] }, '9.15', 'quarterly'],
    ['(c)(1)(iv) modified: first period under a unit-period', { advances: [{ date: '1978-07-23', amount: usd(10000) }], paymentSeries: [{ firstDate: '1978-10-01', amount: usd(385), count: 40, frequency: 'quarterly' }] }, '9.32', 'quarterly'],
  ];
  for (const [name, input, published, unit] of cases) {
    it(`${name}: ${published}%`, () => {
      const result = appendixJApr(input);
      expect(percent2(result.apr)).toBe(published);
      expect(result.unitPeriod).toBe(unit);
    });
  }
});

// ---------------------------------------------------------------------------
// Published vectors (../shared/vectors/finance-dev.json from the repo root)

interface Vector {
  readonly id: string;
  readonly kind: string;
  readonly inputs: Record<string, unknown>;
  readonly expected: Record<string, unknown>;
  readonly tolerance: Record<string, unknown>;
  readonly verified: boolean;
}

const VECTORS = allVectors() as Vector[];
const ofKind = (kind: string): Vector[] => VECTORS.filter((v) => v.kind === kind);

function num(value: unknown, what: string): number {
  if (typeof value !== 'number') throw new Error(`vector field ${what} is not a number`);
  return value;
}
function str(value: unknown, what: string): string {
  if (typeof value !== 'string') throw new Error(`vector field ${what} is not a string`);
  return value;
}

/** The vectors' unit-period wording; an unknown wording fails the test so it gets mapped. */
const VECTOR_UNIT_PERIODS: Record<string, UnitPeriod> = {
  '1 month': 'monthly',
  '2 months': 'bimonthly',
  '3 months': 'quarterly',
  '6 months': 'semiannual',
  '1 year': 'annual',
  '1 week': 'weekly',
  '2 weeks': 'biweekly',
  '4 weeks': 'four_weekly',
  semimonth: 'semimonthly',
};

describe('finance-dev.json: apr_reg_z_appendix_j', () => {
  const vectors = ofKind('apr_reg_z_appendix_j');
  it('has vectors of this kind', () => expect(vectors.length).toBeGreaterThan(0));
  for (const v of vectors) {
    it(v.id, () => {
      const i = v.inputs;
      const unit = VECTOR_UNIT_PERIODS[str(i.unit_period, 'unit_period')];
      if (!unit) throw new Error(`unmapped unit period "${String(i.unit_period)}"`);
      const input: AprInput = {
        advances: [{ date: str(i.advance_date, 'advance_date'), amount: usd(num(i.amount_advanced, 'amount_advanced')) }],
        paymentSeries: [{ firstDate: str(i.first_payment_date, 'first_payment_date'), amount: usd(num(i.payment, 'payment')), count: num(i.payments, 'payments'), frequency: unit }],
      };
      const result = appendixJApr(input);
      const published = num(v.expected.apr_percent, 'apr_percent');
      expect(Math.abs(result.aprNumber * 100 - published)).toBeLessThanOrEqual(num(v.tolerance.abs, 'tolerance.abs'));
      expect(percent2(result.apr)).toBe(published.toFixed(2));
      expect(result.unitPeriod).toBe(unit);
      expect(result.unitPeriodsPerYear).toBe(num(i.unit_periods_per_year_w, 'w'));
      const transaction = v.tolerance.transaction_class;
      if (transaction !== undefined) expect(result.regular).toBe(transaction === 'regular');
      const tf = i.first_payment_t_f as { t: number; f: string } | undefined;
      if (tf) {
        const first = appendixJSchedule(input).cashFlows.find((flow) => flow.kind === 'payment');
        const [fNum = '', fDen = ''] = tf.f.split('/');
        expect(first?.t).toBe(tf.t);
        expect(compare(first?.f ?? { num: -1n, den: 1n }, { num: BigInt(fNum), den: BigInt(fDen) })).toBe(0);
      }
    });
  }
});

describe('finance-dev.json: apr_tolerance_rule (§1026.22(a)(2)–(3))', () => {
  const vectors = ofKind('apr_tolerance_rule');
  it('has vectors of this kind', () => expect(vectors.length).toBeGreaterThan(0));
  for (const v of vectors) {
    it(v.id, () => {
      const transaction = str(v.inputs.transaction, 'transaction').startsWith('irregular') ? 'irregular' : 'regular';
      const cases = v.inputs.cases as { disclosed: number; actual: number }[];
      const results = v.expected.case_results as boolean[];
      expect(cases.length).toBe(results.length);
      cases.forEach((c, k) => {
        expect(aprWithinTolerance(fractionOfPercent(c.disclosed), fractionOfPercent(c.actual), transaction)).toBe(results[k]);
      });
      // The stated maximum error is the inclusive boundary, in both directions.
      const max = fractionOfPercent(num(v.expected.max_abs_error_pp, 'max_abs_error_pp'));
      expect(aprWithinTolerance('0.10', { num: 10n * max.den + 100n * max.num, den: 100n * max.den }, transaction)).toBe(true);
      expect(aprWithinTolerance({ num: 10n * max.den - 100n * max.num, den: 100n * max.den }, '0.10', transaction)).toBe(true);
      expect(aprWithinTolerance('0.10', { num: 10n * max.den + 100n * max.num + 1n, den: 100n * max.den }, transaction)).toBe(false);
    });
  }
});

// ---------------------------------------------------------------------------
// Decisions and validation

describe('appendixJApr decisions', () => {
  const advance = { date: '2024-01-15', amount: 100_000n };

  it('gives exactly 0 when the payments total the amount advanced', () => {
    const result = appendixJApr({ advances: [advance], paymentSeries: [{ firstDate: '2024-02-15', amount: 10_000n, count: 10, frequency: 'monthly' }] });
    expect(result.apr).toEqual({ num: 0n, den: 1n });
    expect(result.aprNumber).toBe(0);
    expect(result.unitPeriodRate).toBe(0);
  });

  it('refuses payments that do not repay the advance (no non-negative rate)', () => {
    const error = engineError(() => appendixJApr({ advances: [advance], paymentSeries: [{ firstDate: '2024-02-15', amount: 9_999n, count: 10, frequency: 'monthly' }] }));
    expect(error.code).toBe('no_root');
    expect(error.field).toBe('payments');
  });

  it('refuses a single payment on the day of the advance', () => {
    const error = engineError(() => appendixJApr({ advances: [advance], payments: [{ date: '2024-01-15', amount: 100_100n }] }));
    expect(error.code).toBe('no_root');
  });

  it('uses an explicit unit period, and calls the transaction irregular when payments do not follow it', () => {
    const input: AprInput = { advances: [advance], paymentSeries: [{ firstDate: '2024-02-15', amount: 10_500n, count: 10, frequency: 'monthly' }] };
    const auto = appendixJApr(input);
    const weekly = appendixJApr({ ...input, unitPeriod: 'weekly' });
    expect(auto.unitPeriod).toBe('monthly');
    expect(auto.regular).toBe(true);
    expect(weekly.unitPeriod).toBe('weekly');
    expect(weekly.unitPeriodsPerYear).toBe(52);
    expect(weekly.regular).toBe(false);
    // Same cash flows, a different (b)(1) nominal rate, but of the same size.
    expect(Math.abs(weekly.aprNumber - auto.aprNumber)).toBeLessThan(0.005);
  });

  it('calls multiple advances irregular and discounts each advance from the start of the term', () => {
    const result = appendixJApr({
      advances: [
        { date: '2024-01-01', amount: 50_000n },
        { date: '2024-04-01', amount: 50_000n },
      ],
      paymentSeries: [{ firstDate: '2024-02-01', amount: 9_000n, count: 12, frequency: 'monthly' }],
    });
    expect(result.regular).toBe(false);
    expect(result.unitPeriod).toBe('monthly');
    const schedule = appendixJSchedule({
      advances: [
        { date: '2024-01-01', amount: 50_000n },
        { date: '2024-04-01', amount: 50_000n },
      ],
      paymentSeries: [{ firstDate: '2024-02-01', amount: 9_000n, count: 12, frequency: 'monthly' }],
    });
    expect(schedule.cashFlows.filter((f) => f.kind === 'advance').map((f) => f.t)).toEqual([0, 3]);
  });

  it('counts a month-end series last day to last day ((b)(3)(iv))', () => {
    // Paid on the 31st: Feb 29 and Apr 30 stand for the 31st, so every payment is a whole number of months out.
    const schedule = appendixJSchedule({ advances: [{ date: '2024-01-31', amount: 100_000n }], paymentSeries: [{ firstDate: '2024-02-29', amount: 9_000n, count: 3, frequency: 'monthly' }] });
    // A series that starts on Feb 29 is anchored on the 29th (same day of month, clamped).
    expect(schedule.cashFlows.filter((f) => f.kind === 'payment').map((f) => f.date)).toEqual(['2024-02-29', '2024-03-29', '2024-04-29']);
    const eom = appendixJSchedule({
      advances: [{ date: '2024-01-31', amount: 100_000n }],
      payments: ['2024-02-29', '2024-03-31', '2024-04-30', '2024-05-31'].map((date) => ({ date, amount: 26_000n })),
    });
    const payments = eom.cashFlows.filter((f) => f.kind === 'payment');
    expect(payments.map((f) => [f.t, Number(f.f.num)])).toEqual([[1, 0], [2, 0], [3, 0], [4, 0]]);
    expect(eom.regular).toBe(true);
  });
});

describe('appendixJApr validation', () => {
  const good: AprInput = { advances: [{ date: '2024-01-15', amount: 100_000n }], paymentSeries: [{ firstDate: '2024-02-15', amount: 9_000n, count: 12, frequency: 'monthly' }] };
  const cases: [string, AprInput, string, string][] = [
    ['no advances', { ...good, advances: [] }, 'advances', 'invalid_argument'],
    ['no payments', { advances: good.advances }, 'payments', 'invalid_argument'],
    ['bad unit period', { ...good, unitPeriod: 'fortnightly' as never }, 'unit_period', 'unknown_frequency'],
    ['bad series count', { ...good, paymentSeries: [{ firstDate: '2024-02-15', amount: 9_000n, count: 0, frequency: 'monthly' }] }, 'payment_series[0].count', 'invalid_argument'],
    ['fractional series count', { ...good, paymentSeries: [{ firstDate: '2024-02-15', amount: 9_000n, count: 2.5, frequency: 'monthly' }] }, 'payment_series[0].count', 'invalid_argument'],
    ['daily series', { ...good, paymentSeries: [{ firstDate: '2024-02-15', amount: 9_000n, count: 3, frequency: 'daily' }] }, 'payment_series[0].frequency', 'unknown_frequency'],
    ['series amount as number', { ...good, paymentSeries: [{ firstDate: '2024-02-15', amount: 9000 as never, count: 3, frequency: 'monthly' }] }, 'payment_series[0].amount', 'invalid_amount'],
    ['bad series date', { ...good, paymentSeries: [{ firstDate: '2024-02-30', amount: 9_000n, count: 3, frequency: 'monthly' }] }, 'payment_series[0].first_date', 'invalid_date'],
    ['series before the advance', { ...good, paymentSeries: [{ firstDate: '2024-01-14', amount: 9_000n, count: 3, frequency: 'monthly' }] }, 'payment_series[0].first_date', 'date_order'],
    ['advance amount zero', { ...good, advances: [{ date: '2024-01-15', amount: 0n }] }, 'advances[0].amount', 'invalid_amount'],
    ['payment before the first advance', { ...good, payments: [{ date: '2024-03-01', amount: 1n }, { date: '2024-01-01', amount: 1n }] }, 'payments[1].date', 'date_order'],
  ];
  for (const [name, input, field, code] of cases) {
    it(`${name} → ${code} on ${field}`, () => {
      const error = engineError(() => appendixJApr(input));
      expect(error.code).toBe(code);
      expect(error.field).toBe(field);
    });
  }

  it('names the offending payment in any position (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 30 }), fc.nat(), fc.constantFrom('date', 'amount'), (length, at, what) => {
        const bad = at % length;
        const payments = Array.from({ length }, (_, k) => ({
          date: k === bad && what === 'date' ? '2024-13-01' : plusDays('2024-02-01', 7 * k),
          amount: k === bad && what === 'amount' ? -5n : 1_000n,
        }));
        const error = engineError(() => appendixJApr({ advances: [{ date: '2024-01-01', amount: 10_000n }], payments }));
        expect(error.field).toBe(`payments[${bad}].${what}`);
        expect(error.code).toBe(what === 'date' ? 'invalid_date' : 'invalid_amount');
      }),
      { numRuns: 200 },
    );
  });
});

describe('aprWithinTolerance', () => {
  it('compares exactly with an inclusive boundary', () => {
    expect(aprWithinTolerance('0.1', '0.10125', 'regular')).toBe(true);
    expect(aprWithinTolerance('0.1', '0.1012500000000000000001', 'regular')).toBe(false);
    expect(aprWithinTolerance('0.1', '0.0975', 'irregular')).toBe(true);
    expect(aprWithinTolerance('0.1', '0.09749', 'irregular')).toBe(false);
  });
  it('accepts the result of appendixJApr', () => {
    const result = appendixJApr(EXAMPLES[0]?.input as AprInput);
    expect(aprWithinTolerance('0.0969', result.apr, 'regular')).toBe(true);
    expect(aprWithinTolerance('0.0982', result.apr, 'regular')).toBe(false);
  });
  it('rejects a bad transaction kind or rate', () => {
    expect(engineError(() => aprWithinTolerance('0.1', '0.1', 'odd' as never)).field).toBe('transaction');
    expect(engineError(() => aprWithinTolerance('ten', '0.1', 'regular')).field).toBe('disclosed');
  });
});

// ---------------------------------------------------------------------------
// Properties

describe('appendixJApr properties', () => {
  it('recovers 12·i from a level-payment loan priced at periodic rate i on a regular monthly schedule', () => {
    const base = 8035; // 1992-01-01
    fc.assert(
      fc.property(
        fc.double({ min: 1e-4, max: 0.05, noNaN: true }),
        fc.integer({ min: 1, max: 480 }),
        fc.bigInt({ min: 10n ** 11n, max: 10n ** 13n }),
        fc.integer({ min: 0, max: 365 * 60 }),
        (i, n, payment, offset) => {
          const start = fromDayNumber(base + offset);
          // Advance = payment × annuity factor, to the minor unit; with payments of
          // at least 10^11 minor units that rounding moves 12·i by under 3e-10.
          const advance = BigInt(Math.round((Number(payment) * -Math.expm1(-n * Math.log1p(i))) / i));
          const payments = Array.from({ length: n }, (_, k) => ({ date: formatDate(addMonthsToAnchor(start, k + 1, start.day)), amount: payment }));
          const result = appendixJApr({ advances: [{ date: formatDate(start), amount: advance }], payments });
          expect(Math.abs(result.aprNumber - 12 * i)).toBeLessThanOrEqual(1e-9);
          expect(result.regular).toBe(true);
          expect(result.unitPeriodsPerYear).toBe(12);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('solves any repaying monthly schedule to a residual near zero', () => {
    fc.assert(
      fc.property(fc.integer({ min: 2, max: 360 }), fc.integer({ min: 1, max: 60 }), fc.integer({ min: 101, max: 300 }), (n, lead, markupPercent) => {
        const advance = 1_000_000n;
        const payment = (advance * BigInt(markupPercent)) / 100n / BigInt(n) + 1n;
        const input: AprInput = {
          advances: [{ date: '2020-01-31', amount: advance }],
          paymentSeries: [{ firstDate: plusDays('2020-01-31', lead), amount: payment, count: n, frequency: 'monthly' }],
        };
        const { unitPeriodRate: i } = appendixJApr(input);
        const schedule = appendixJSchedule(input);
        let balance = 0;
        for (const flow of schedule.cashFlows) {
          const factor = (1 + (Number(flow.f.num) / Number(flow.f.den)) * i) * Math.pow(1 + i, flow.t);
          balance += (flow.kind === 'payment' ? 1 : -1) * (Number(flow.amount) / factor);
        }
        // The (b)(8) equation balances to a billionth of the amount advanced.
        expect(Math.abs(balance) / Number(advance)).toBeLessThan(1e-9);
      }),
      { numRuns: 300 },
    );
  });
});

describe('Appendix J (b)(3): a month to a date that does not exist ends on the last day', () => {
  it('29 January to 28 February is one whole month: the term is a month, 12 unit-periods a year', () => {
    // A single advance and a single payment one month later: the APR is 12 × the monthly rate.
    const result = appendixJApr({ advances: [{ date: '2014-01-29', amount: 1_000_000n }], payments: [{ date: '2014-02-28', amount: 1_010_000n }] });
    expect(result.unitPeriod).toBe('term');
    expect(result.unitPeriodsPerYear).toBe(12);
    expect(Math.abs(result.aprNumber - 0.12)).toBeLessThan(1e-12);
  });

  it('30 January to 30 April is three whole months, 31 January to 30 April too', () => {
    for (const start of ['2014-01-30', '2014-01-31']) {
      const result = appendixJApr({ advances: [{ date: start, amount: 1_000_000n }], payments: [{ date: '2014-04-30', amount: 1_030_000n }] });
      expect(result.unitPeriodsPerYear, start).toBe(4);
    }
  });
});
