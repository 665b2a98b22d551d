import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  AMORTIZATIONS,
  DAY_COUNT_CONVENTIONS,
  FREQUENCIES,
  INTEREST_METHODS,
  ROUNDING_MODES,
  buildSchedule,
  dayCount,
  isoDate,
  monthsPerPeriod,
  parseDate,
  periodsPerYear,
  shiftPeriods,
  toDayNumber,
  parseDecimal,
  type DayCountConvention,
  type Frequency,
  type RoundingMode,
  type Schedule,
  type ScheduleTerms,
} from '../../src/engine/index.js';
import { engineError } from '../support/engine.js';
import { vectorById, vectorsOf } from '../support/vectors.js';

const cents = (text: string | number): bigint => BigInt(Math.round(Number(text) * 100));
/** A published payment (possibly with more decimals) to cents, by the test's rounding: half_up, or down for truncated figures. */
const roundCents = (value: number, mode: RoundingMode): bigint => {
  const hundredths = Math.abs(value) * 100;
  return BigInt(mode === 'down' ? Math.floor(hundredths + 1e-9) : Math.round(hundredths));
};

/** "0.08/12" → annual 0.08 paid monthly; 0.1 → annual 0.1 paid annually (the spreadsheet's periodic-rate notation). */
function spreadsheetRate(rate: unknown): { annualRate: string; frequency: Frequency } {
  if (typeof rate === 'string' && rate.endsWith('/12')) return { annualRate: rate.slice(0, -3), frequency: 'monthly' };
  return { annualRate: String(rate), frequency: 'annual' };
}

function loan(principal: bigint, annualRate: string, term: number, frequency: Frequency = 'monthly', extra: Partial<ScheduleTerms> = {}): Schedule {
  return buildSchedule({ principal, currency: 'USD', annualRate: parseDecimal(annualRate), term, frequency, disbursementDate: '2026-01-15', ...extra });
}

describe('published level-payment examples', () => {
  it('200,000 at 6 % over 360 months: payment 1,199.10, month 12 and the final row to the cent', () => {
    const v = vectorById('amort-200k-6pct-30y-cents');
    const expected = v.expected as Record<string, Record<string, number>> & { payment: number; total_interest: number; total_of_payments: number };
    const s = loan(20_000_000n, '0.06', 360);
    expect(s.payment).toBe(cents(expected.payment));
    const rows = [
      [s.installments[0], expected.month_1],
      [s.installments[11], expected.month_12],
    ] as const;
    for (const [row, want] of rows) {
      expect(row?.interest).toBe(cents(want!.interest!));
      expect(row?.principal).toBe(cents(want!.principal!));
      expect(row?.balance).toBe(cents(want!.balance!));
    }
    const last = s.installments[359];
    expect(last?.payment).toBe(cents(expected.final_payment_360!.payment!));
    expect(last?.interest).toBe(cents(expected.final_payment_360!.interest!));
    expect(last?.principal).toBe(cents(expected.final_payment_360!.principal!));
    expect(last?.balance).toBe(0n);
    expect(s.totalInterest).toBe(cents(expected.total_interest));
    expect(s.totalPayments).toBe(cents(expected.total_of_payments));
  });

  it('HP 12c owner’s handbook: 50,000 at 13.25 % for 30 years', () => {
    const v = vectorById('hp12c-amort-50k-13.25pct-30y');
    const expected = v.expected as { payment: number; payment_1: { interest: number; principal: number }; balance_after_1: number };
    const s = loan(5_000_000n, '0.1325', 360);
    expect(s.payment).toBe(cents(expected.payment));
    expect(s.installments[0]?.interest).toBe(cents(expected.payment_1.interest));
    expect(s.installments[0]?.principal).toBe(cents(expected.payment_1.principal));
    expect(s.installments[0]?.balance).toBe(cents(expected.balance_after_1));
  });

  // Excel PMT / Adobe FormCalc Pmt / Claris PMT: the level payment, rounded to the cent.
  const pmtCases = [
    ...vectorsOf('spreadsheet_pmt').flatMap((v) => {
      const inputs = v.inputs as { rate?: unknown; nper?: number; n?: number; pv?: number; fv?: number; cases?: { pv: number; rate: unknown; n: number }[] };
      const expected = v.expected as Record<string, number>;
      // A vector marked unverified publishes a truncated figure (its note says so): reproduce it with rounding 'down'.
      const rounding: RoundingMode = (v as { verified?: boolean }).verified === false ? 'down' : 'half_up';
      if (inputs.cases) return inputs.cases.map((c, i) => ({ id: `${v.id}[${i}]`, pv: c.pv, rate: c.rate, n: c.n, pmt: expected[`pmt_${i + 1}`]!, rounding }));
      if (inputs.fv || !inputs.pv) return []; // a savings goal, not a loan
      return [{ id: v.id, pv: inputs.pv, rate: inputs.rate, n: (inputs.nper ?? inputs.n)!, pmt: expected.pmt ?? expected.pmt_end!, rounding }];
    }),
  ];
  it.each(pmtCases)('$id: payment $pmt', ({ pv, rate, n, pmt, rounding }) => {
    const { annualRate, frequency } = spreadsheetRate(rate);
    const s = loan(cents(pv), annualRate, n, frequency, { paymentRounding: rounding });
    expect(s.payment).toBe(roundCents(pmt, rounding));
  });

  it('Excel IPMT and PPMT examples are the schedule rows, to the cent', () => {
    for (const v of [...vectorsOf('spreadsheet_ipmt'), ...vectorsOf('spreadsheet_ppmt')]) {
      const inputs = v.inputs as { rate: unknown; per: number; nper: number; pv: number };
      const { annualRate, frequency } = spreadsheetRate(inputs.rate);
      const s = loan(cents(inputs.pv), annualRate, inputs.nper, frequency);
      const row = s.installments[inputs.per - 1]!;
      const [field, value] = Object.entries(v.expected)[0] as [string, number];
      const actual = field === 'ipmt' ? row.interest : row.principal;
      // The schedule pays a payment rounded to the cent and carries cent-rounded balances; a float
      // spreadsheet does neither, so the rows drift apart by up to about a cent per period.
      const diff = actual - cents(Math.abs(value).toFixed(2));
      const bound = BigInt(inputs.per);
      expect(diff >= -bound && diff <= bound, `${v.id}: ${actual} vs ${value}`).toBe(true);
      if (inputs.per === 1) expect(diff, v.id).toBe(0n);
    }
  });

  it('Excel CUMIPMT over months 13–24 equals the sum of the schedule’s interest rows within rounding', () => {
    const v = vectorById('excel-cumipmt-year2');
    const expected = v.expected as { cumipmt_13_24: number; cumipmt_1_1: number };
    const s = loan(12_500_000n, '0.09', 360);
    const sum = s.installments.slice(12, 24).reduce((acc, row) => acc + row.interest, 0n);
    const diff = Number(sum) / 100 + expected.cumipmt_13_24;
    expect(Math.abs(diff)).toBeLessThanOrEqual(0.06); // 12 rows, each rounded to the cent
    expect(s.installments[0]?.interest).toBe(cents(-expected.cumipmt_1_1));
  });
});

describe('periods and day counts', () => {
  it('a regular monthly period under 30/360 accrues exactly annual_rate / 12, even over February and 31-day months', () => {
    const s = loan(1_000_000_00n, '0.0725', 24, 'monthly', { disbursementDate: '2024-01-31' });
    let balance = 1_000_000_00n;
    for (const row of s.installments) {
      expect(row.days).toBe(30);
      // interest = balance × 0.0725 / 12, half up
      expect(row.interest).toBe((balance * 725n * 2n + 120000n) / 240000n);
      balance = row.balance;
    }
    expect(s.installments.slice(0, 4).map((r) => r.dueDate)).toEqual(['2024-02-29', '2024-03-31', '2024-04-30', '2024-05-31']);
  });

  it('a long odd first period accrues its extra days by the day count and the payment prices them', () => {
    const regular = loan(1_200_000n, '0.12', 12, 'monthly', { disbursementDate: '2026-01-15', dayCount: 'ACT/365F' });
    const long = loan(1_200_000n, '0.12', 12, 'monthly', { disbursementDate: '2026-01-15', firstPaymentDate: '2026-03-01', dayCount: 'ACT/365F' });
    expect(long.installments[0]?.days).toBe(45);
    // 12,000.00 × 0.12 × 45/365 = 177.534… → 177.53
    expect(long.installments[0]?.interest).toBe(17753n);
    expect(long.payment).toBeGreaterThan(regular.payment);
    expect(long.installments[1]?.periodStart).toBe('2026-03-01');
    expect(long.installments[11]?.dueDate).toBe('2027-02-01');
  });

  it('a short odd first period under 30/360 counts its 30/360 days', () => {
    const s = loan(1_200_000n, '0.12', 12, 'monthly', { disbursementDate: '2026-01-20', firstPaymentDate: '2026-02-01' });
    expect(s.installments[0]?.days).toBe(11);
    // 12,000.00 × 0.12 × 11/360 = 44.00
    expect(s.installments[0]?.interest).toBe(4400n);
    expect(s.installments[1]?.days).toBe(30);
  });

  it('a 31-day month whose interest exceeds the level payment capitalizes the excess and stays level', () => {
    // 36 % over 15 years under ACT/365F: the level payment barely exceeds an average month's
    // interest, and a 31-day month's is more than it.
    const s = loan(1_000_000n, '0.36', 180, 'monthly', { dayCount: 'ACT/365F' });
    const capitalizing = s.installments.filter((r) => r.capitalizedInterest > 0n);
    expect(capitalizing.length).toBeGreaterThan(0);
    for (const r of capitalizing) {
      expect(r.days).toBe(31);
      expect(r).toMatchObject({ principal: 0n, payment: s.payment, interest: s.payment });
    }
    // no installment before the last is empty: the loan runs its full term
    for (const r of s.installments.slice(0, -1)) expect(r.payment).toBe(s.payment);
    expect(s.installments.at(-1)!.balance).toBe(0n);
  });

  it('ACT/360 charges more than ACT/365F on the same dates', () => {
    const a = loan(10_000_000n, '0.09', 12, 'monthly', { dayCount: 'ACT/360' });
    const b = loan(10_000_000n, '0.09', 12, 'monthly', { dayCount: 'ACT/365F' });
    expect(a.totalInterest).toBeGreaterThan(b.totalInterest);
  });
});

describe('methods and features', () => {
  it('equal principal: every installment but the last repays the same principal; interest declines', () => {
    const s = loan(1_000_000n, '0.10', 12, 'monthly', { amortization: 'equal_principal' });
    for (const row of s.installments.slice(0, 11)) expect(row.principal).toBe(83_333n);
    expect(s.installments[11]?.principal).toBe(1_000_000n - 11n * 83_333n);
    expect(s.installments[0]?.interest).toBe(8_333n);
    expect(s.installments[1]!.interest).toBeLessThan(s.installments[0]!.interest);
  });

  it('flat interest charges every period on the original principal', () => {
    const s = loan(1_200_000n, '0.12', 12, 'monthly', { interestMethod: 'flat' });
    for (const row of s.installments) expect(row.interest).toBe(12_000n);
    expect(s.totalInterest).toBe(144_000n);
    expect(s.payment).toBe(112_000n);
  });

  it('interest-only periods pay interest only, then the rest amortizes', () => {
    const s = loan(1_200_000n, '0.12', 12, 'monthly', { interestOnlyPeriods: 3 });
    for (const row of s.installments.slice(0, 3)) {
      expect(row.kind).toBe('interest_only');
      expect(row.principal).toBe(0n);
      expect(row.interest).toBe(12_000n);
    }
    expect(s.installments[3]?.kind).toBe('amortizing');
    expect(s.installments.at(-1)?.balance).toBe(0n);
    // the amortizing part is a 9-month level payment on 12,000.00 at 1 % a month: PMT = 1,400.88
    expect(s.payment).toBe(140_088n);
  });

  it('grace periods are a payment holiday whose interest is capitalized', () => {
    const s = loan(1_200_000n, '0.12', 12, 'monthly', { gracePrincipalPeriods: 2 });
    expect(s.installments[0]).toMatchObject({ kind: 'grace', payment: 0n, capitalizedInterest: 12_000n, balance: 1_212_000n });
    expect(s.installments[1]).toMatchObject({ kind: 'grace', payment: 0n, capitalizedInterest: 12_120n, balance: 1_224_120n });
    expect(s.totalCapitalizedInterest).toBe(24_120n);
    expect(s.totalPrincipal).toBe(1_224_120n);
  });

  it('a balloon is left for the last installment', () => {
    const s = loan(1_000_000n, '0.06', 12, 'monthly', { balloon: 400_000n });
    expect(s.installments[10]!.balance).toBeGreaterThan(400_000n);
    const last = s.installments[11]!;
    expect(last.principal).toBeGreaterThan(400_000n);
    expect(last.payment - s.payment).toBeGreaterThan(390_000n);
    expect(last.balance).toBe(0n);
  });

  it('payment rounding is configurable: ceiling to whole dollars', () => {
    const s = loan(20_000_000n, '0.06', 360, 'monthly', { paymentRounding: 'ceiling', paymentIncrement: 100n });
    expect(s.payment).toBe(120_000n);
    expect(s.installments.at(-1)!.payment).toBeLessThan(120_000n);
  });

  it('a zero rate splits the principal evenly, the last installment taking the remainder', () => {
    const s = loan(1_000n, '0', 3);
    expect(s.installments.map((r) => r.principal)).toEqual([333n, 333n, 334n]);
    expect(s.totalInterest).toBe(0n);
  });

  it('JPY has no minor unit; KWD has three', () => {
    expect(buildSchedule({ principal: 1_000_000n, currency: 'JPY', annualRate: parseDecimal('0.03'), term: 12, frequency: 'monthly', disbursementDate: '2026-01-15' }).payment).toBe(84_694n);
    expect(buildSchedule({ principal: 1_000_000n, currency: 'KWD', annualRate: parseDecimal('0.03'), term: 12, frequency: 'monthly', disbursementDate: '2026-01-15' }).payment).toBe(84_694n);
  });
});

describe('invalid terms are rejected with the field at fault', () => {
  const base: ScheduleTerms = { principal: 100_000n, currency: 'USD', annualRate: parseDecimal('0.05'), term: 12, frequency: 'monthly', disbursementDate: '2026-01-15' };
  it.each([
    [{ principal: 0n }, 'principal'],
    [{ term: 0 }, 'term'],
    [{ term: 2.5 }, 'term'],
    [{ annualRate: parseDecimal('-0.01') }, 'annual_rate'],
    [{ currency: 'XXX' }, 'currency'],
    [{ disbursementDate: '2026-02-30' }, 'disbursement_date'],
    [{ firstPaymentDate: '2026-01-10' }, 'first_payment_date'],
    [{ interestOnlyPeriods: 12 }, 'interest_only_periods'],
    [{ gracePrincipalPeriods: -1 }, 'grace_principal_periods'],
    [{ balloon: 100_000n }, 'balloon'],
    [{ dayCount: 'ACT/ACT ISMA', frequency: 'biweekly' }, 'day_count'],
  ] as const)('%o → %s', (patch, field) => {
    expect(engineError(() => buildSchedule({ ...base, ...patch })).field).toBe(field);
  });
});

// ---------------------------------------------------------------------------
// Invariants over 10,000 random loans. The interest check does not call the
// engine's rounding: it verifies the defining inequality of each rounding mode
// on the exact product balance × rate × days / basis, and counts actual days
// with the platform's Date, independently of src/engine/dates.ts.

function isRoundingOf(q: bigint, n: bigint, d: bigint, mode: RoundingMode): boolean {
  // n ≥ 0, d > 0: is q the rounding of n / d under mode?
  switch (mode) {
    case 'down':
    case 'floor':
      return q * d <= n && n < (q + 1n) * d;
    case 'up':
    case 'ceiling':
      return (q - 1n) * d < n && n <= q * d;
    case 'half_up':
      return (2n * q - 1n) * d <= 2n * n && 2n * n < (2n * q + 1n) * d;
    case 'half_down':
      return (2n * q - 1n) * d < 2n * n && 2n * n <= (2n * q + 1n) * d;
    case 'half_even': {
      const gap = 2n * n - 2n * q * d;
      const abs = gap < 0n ? -gap : gap;
      return abs < d || (abs === d && q % 2n === 0n);
    }
  }
}

const BASIS: Partial<Record<DayCountConvention, bigint>> = { '30/360': 360n, '30E/360': 360n, '30E/360 ISDA': 360n, '30/360 US': 360n, 'ACT/360': 360n, 'ACT/365F': 365n, 'ACT/364': 364n };
const ACTUAL = new Set<DayCountConvention>(['ACT/360', 'ACT/365F', 'ACT/364', 'ACT/ACT ISDA', 'ACT/ACT ISMA', 'ACT/ACT AFB']);
const actualDays = (a: string, b: string): number => (Date.parse(`${b}T00:00:00Z`) - Date.parse(`${a}T00:00:00Z`)) / 86_400_000;
const addUtcDays = (a: string, days: number): string => new Date(Date.parse(`${a}T00:00:00Z`) + days * 86_400_000).toISOString().slice(0, 10);

const loanArb = fc
  .record({
    principal: fc.bigInt({ min: 1n, max: 1_000_000_000n }),
    term: fc.integer({ min: 1, max: 480 }),
    // 0 to 100 %, in millionths
    rateMillionths: fc.oneof(fc.integer({ min: 0, max: 1_000_000 }), fc.constantFrom(0, 50_000, 60_000, 1_000_000)),
    frequency: fc.constantFrom(...FREQUENCIES),
    interestMethod: fc.constantFrom(...INTEREST_METHODS),
    amortization: fc.constantFrom(...AMORTIZATIONS),
    dayCount: fc.constantFrom(...DAY_COUNT_CONVENTIONS),
    interestRounding: fc.constantFrom(...ROUNDING_MODES),
    paymentRounding: fc.constantFrom(...ROUNDING_MODES),
    paymentIncrement: fc.constantFrom(1n, 1n, 1n, 5n, 100n),
    disbursementOffset: fc.integer({ min: 0, max: 365 * 60 }),
    firstPaymentOffset: fc.option(fc.integer({ min: 1, max: 120 }), { nil: undefined }),
    interestOnly: fc.nat({ max: 24 }),
    grace: fc.nat({ max: 6 }),
    balloonPerMille: fc.option(fc.integer({ min: 0, max: 999 }), { nil: undefined }),
    endOfMonth: fc.boolean(),
  })
  // ACT/ACT ISMA needs whole-month periods (tested to be refused otherwise)
  .filter((r) => r.dayCount !== 'ACT/ACT ISMA' || monthsPerPeriod(r.frequency) > 0)
  .map((r) => {
    const disbursementDate = addUtcDays('1990-01-01', r.disbursementOffset);
    const interestOnly = Math.min(r.interestOnly, Math.max(0, r.term - 1));
    const grace = Math.min(r.grace, Math.max(0, r.term - 1 - interestOnly));
    const terms: ScheduleTerms = {
      principal: r.principal,
      currency: 'USD',
      annualRate: { num: BigInt(r.rateMillionths), den: 1_000_000n },
      term: r.term,
      frequency: r.frequency,
      disbursementDate,
      firstPaymentDate: r.firstPaymentOffset === undefined ? undefined : addUtcDays(disbursementDate, r.firstPaymentOffset),
      interestMethod: r.interestMethod,
      amortization: r.amortization,
      dayCount: r.dayCount,
      interestRounding: r.interestRounding,
      paymentRounding: r.paymentRounding,
      paymentIncrement: r.paymentIncrement,
      interestOnlyPeriods: interestOnly,
      gracePrincipalPeriods: grace,
      balloon: r.balloonPerMille === undefined ? undefined : (r.principal * BigInt(r.balloonPerMille)) / 1000n,
      endOfMonth: r.endOfMonth,
    };
    return terms;
  });

/** Plain checks: vitest's expect costs microseconds, and this runs millions of times. */
function check(condition: boolean, message: string): void {
  if (!condition) throw new Error(message);
}
function same<T>(actual: T, expected: T, what: string): void {
  if (actual !== expected) throw new Error(`${what}: ${String(actual)} !== ${String(expected)}`);
}

function checkInvariants(terms: ScheduleTerms): void {
  const s = buildSchedule(terms);
  const rows = s.installments;
  same(rows.length, terms.term, 'installment count');
  const rate = terms.annualRate;
  const dc = terms.dayCount!;
  const flat = terms.interestMethod === 'flat';
  let balance = terms.principal;
  let principalSum = 0n;
  let interestSum = 0n;
  let capitalizedSum = 0n;
  let graceCapitalized = 0n;
  let amortizedBase = terms.principal;
  const periodRates: [bigint, bigint][] = [];
  let previousDue = terms.disbursementDate;
  const thirtyDayMonth = monthsPerPeriod(terms.frequency) * 30 || (terms.frequency === 'semimonthly' ? 15 : 0);
  for (const row of rows) {
    for (const amount of [row.principal, row.interest, row.payment, row.balance, row.capitalizedInterest]) check(amount >= 0n, `row ${row.number}: negative amount ${amount}`);
    same(row.periodStart, previousDue, 'row.periodStart');
    check(row.dueDate > row.periodStart, `row ${row.number}: due date not after period start`);
    if (terms.firstPaymentDate !== undefined && row.number === 1) same(row.dueDate, terms.firstPaymentDate, 'row.dueDate');
    same(row.payment, row.principal + row.interest, 'row.payment');
    // day counts, independently where the rule is simple
    if (ACTUAL.has(dc)) same(row.days, actualDays(row.periodStart, row.dueDate), 'row.days');
    const regular = row.number > 1 || terms.firstPaymentDate === undefined;
    if (!ACTUAL.has(dc) && regular && thirtyDayMonth > 0) same(row.days, thirtyDayMonth, 'row.days');
    // interest: the exact product, rounded by the named mode
    // flat: the original principal, plus what the grace periods capitalized once amortization starts
    const base = flat ? (row.kind === 'amortizing' ? terms.principal + graceCapitalized : terms.principal) : balance;
    let num: bigint;
    let den: bigint;
    const basis = BASIS[dc];
    if (basis !== undefined) {
      num = base * rate.num * BigInt(row.days);
      den = rate.den * basis;
      if (row.kind === 'amortizing') periodRates.push([rate.num * BigInt(row.days), den]);
    } else {
      // ACT/ACT ISMA: the reference period is the regular period that ends on the due date
      const referenceStart = isoDate(toDayNumber(shiftPeriods(parseDate(row.dueDate), terms.frequency, -1, terms.endOfMonth)));
      const reference = { referenceStart, referenceEnd: row.dueDate, frequency: periodsPerYear(terms.frequency), endOfMonth: terms.endOfMonth };
      const yf = dayCount(dc, row.periodStart, row.dueDate, { terminationDate: rows.at(-1)!.dueDate, ...reference }).yearFraction;
      num = base * rate.num * yf.num;
      den = rate.den * yf.den;
      if (row.kind === 'amortizing') periodRates.push([rate.num * yf.num, den]);
    }
    // the accrued interest is due, or capitalized (grace, or beyond a level payment)
    const accrued = row.interest + row.capitalizedInterest;
    if (row.capitalizedInterest > 0n && row.kind === 'amortizing') {
      check(row.principal === 0n && row.payment === s.payment, `row ${row.number}: capitalizes but does not pay the level payment`);
    }
    check(isRoundingOf(accrued, num, den, terms.interestRounding!), `row ${row.number}: interest ${accrued} is not ${terms.interestRounding} of ${num}/${den}`);
    if (row.kind !== 'amortizing') same(row.principal, 0n, 'row.principal');
    if (row.kind === 'grace') same(row.payment, 0n, 'row.payment');
    balance = balance + row.capitalizedInterest - row.principal;
    same(row.balance, balance, 'row.balance');
    principalSum += row.principal;
    interestSum += row.interest;
    capitalizedSum += row.capitalizedInterest;
    if (row.kind === 'grace') graceCapitalized += row.capitalizedInterest;
    if (row.kind === 'grace') amortizedBase = row.balance;
    previousDue = row.dueDate;
  }
  same(balance, 0n, 'balance');
  // The level payment is the exact annuity over the amortizing periods' own rates,
  // rounded once: B·Π(1+r) − X·Σ_k Π_{i>k}(1+r) = balloon, i.e. X = num / fSum.
  if (!flat && terms.amortization === 'equal_installments') {
    let growth = 1n;
    let fSum = 0n;
    let common = 1n;
    for (const [rn, rd] of periodRates) {
      growth *= rd + rn;
      common *= rd;
      fSum = fSum * (rd + rn) + common;
    }
    const numerator = amortizedBase * growth - (terms.balloon ?? 0n) * common;
    const increment = terms.paymentIncrement ?? 1n;
    check(s.payment % increment === 0n, `payment ${s.payment} is not a multiple of ${increment}`);
    check(isRoundingOf(s.payment / increment, numerator, fSum * increment, terms.paymentRounding!), `payment ${s.payment} is not the ${terms.paymentRounding} rounding of the exact annuity`);
  }
  same(principalSum, terms.principal + capitalizedSum, 'principalSum');
  same(s.totalPrincipal, principalSum, 's.totalPrincipal');
  same(s.totalInterest, interestSum, 's.totalInterest');
  same(s.totalCapitalizedInterest, capitalizedSum, 's.totalCapitalizedInterest');
  same(s.totalPayments, principalSum + interestSum, 's.totalPayments');
}

describe('schedule invariants (property)', () => {
  it('hold for 10,000 random loans: principal sums exactly, balance ends at zero, nothing negative, interest re-derived row by row', { timeout: 300_000 }, () => {
    fc.assert(fc.property(loanArb, checkInvariants), { numRuns: 10_000 });
  });
});
