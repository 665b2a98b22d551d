import { allVectors } from '../support/vectors.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { appendixJApr } from '../../src/engine/apr.js';
import { addDays, formatDate, parseDate } from '../../src/engine/dates.js';
import { cumipmt, ipmt, irr, npv, pmt, ppmt, rate, xirr, xnpv } from '../../src/engine/irr.js';
import { engineError } from '../support/engine.js';

// ---------------------------------------------------------------------------
// Published vectors (../shared/vectors/finance-dev.json from the repo root).
// Each kind is iterated, so a vector added to the file is tested automatically;
// a vector whose shape the adapters below do not know fails loudly.

interface Vector {
  readonly id: string;
  readonly kind: string;
  readonly inputs: Record<string, unknown>;
  readonly expected: Record<string, unknown>;
  readonly tolerance: Record<string, unknown>;
  readonly verified: boolean;
  readonly verification?: string;
}

const VECTORS = allVectors() as Vector[];
const ofKind = (kind: string): Vector[] => VECTORS.filter((v) => v.kind === kind);

function num(value: unknown, what: string): number {
  if (typeof value !== 'number') throw new Error(`vector field ${what} is not a number`);
  return value;
}

/** A rate written as a number or as "0.08/12". */
function rateOf(value: unknown): number {
  if (typeof value === 'number') return value;
  if (typeof value === 'string') {
    const [a = '', b = '1'] = value.split('/');
    const result = Number(a) / Number(b);
    if (Number.isFinite(result)) return result;
  }
  throw new Error(`unreadable rate ${JSON.stringify(value)}`);
}

/** The inputs of a vector: its `cases` (numbered _1, _2 … in `expected`) or the inputs themselves. */
function casesOf(v: Vector): { inputs: Record<string, unknown>; suffix: string }[] {
  const cases = v.inputs.cases;
  if (Array.isArray(cases)) return cases.map((c, k) => ({ inputs: c as Record<string, unknown>, suffix: `_${k + 1}` }));
  return [{ inputs: v.inputs, suffix: '' }];
}

function toleranceOf(v: Vector, key: string): number {
  const specific = v.tolerance[key];
  return typeof specific === 'number' ? specific : num(v.tolerance.abs, `${v.id}.tolerance.abs`);
}

function expectClose(actual: number, expected: number, tolerance: number): void {
  expect(Math.abs(actual - expected), `${actual} vs ${expected} (±${tolerance})`).toBeLessThanOrEqual(tolerance);
}

/** Spreadsheet products other than Excel print payments as positive numbers. */
const inSignOf = (expected: number, excelValue: number): number => (expected < 0 ? excelValue : -excelValue);

/** The unverified PMT vector's note: Microsoft's prose figure is the exact payment truncated to the cent. */
function checkTruncated(v: Vector): void {
  expect(v.kind, 'only PMT vectors carry a truncation note').toBe('spreadsheet_pmt');
  expect(v.verification).toMatch(/truncated/);
  const exact = Math.abs(pmt(rateOf(v.inputs.rate), num(v.inputs.nper, 'nper'), num(v.inputs.pv, 'pv')));
  const published = Math.abs(num(v.expected.pmt, 'pmt'));
  expect(Math.trunc(exact * 100) / 100).toBe(published);
  expect(Math.round(exact * 100) / 100).not.toBe(published);
}

function forKind(kind: string, check: (v: Vector) => void): void {
  describe(`finance-dev.json: ${kind}`, () => {
    const vectors = ofKind(kind);
    it('has vectors of this kind', () => expect(vectors.length).toBeGreaterThan(0));
    for (const v of vectors) {
      if (v.verified) it(v.id, () => check(v));
      // A vector its own authors marked unverified is not an oracle for the value; its note says
      // what the published figure is, and that claim is what gets checked.
      else it(`${v.id} (unverified: the published figure is the exact value truncated)`, () => checkTruncated(v));
    }
  });
}

forKind('spreadsheet_xirr', (v) => {
  const values = v.inputs.values as number[];
  const dates = v.inputs.dates as string[];
  const flows = values.map((amount, k) => ({ date: dates[k] as string, amount }));
  expectClose(xirr(flows), num(v.expected.xirr, 'xirr'), toleranceOf(v, 'xirr'));
  expectClose(xirr(flows, 0.1), num(v.expected.xirr, 'xirr'), toleranceOf(v, 'xirr'));
});

forKind('spreadsheet_xnpv', (v) => {
  const values = v.inputs.values as number[];
  const dates = v.inputs.dates as string[];
  const flows = values.map((amount, k) => ({ date: dates[k] as string, amount }));
  expectClose(xnpv(rateOf(v.inputs.rate), flows), num(v.expected.xnpv, 'xnpv'), toleranceOf(v, 'xnpv'));
});

forKind('spreadsheet_npv', (v) => {
  for (const { inputs, suffix } of casesOf(v)) {
    const key = `npv${suffix}`;
    expectClose(npv(rateOf(inputs.rate), inputs.cfs as number[]), num(v.expected[key], key), toleranceOf(v, key));
  }
});

forKind('spreadsheet_pmt', (v) => {
  for (const { inputs, suffix } of casesOf(v)) {
    const r = rateOf(inputs.rate);
    const n = num(inputs.nper ?? inputs.n, 'nper');
    const pv = num(inputs.pv, 'pv');
    const fv = typeof inputs.fv === 'number' ? inputs.fv : 0;
    const checks: [string, 0 | 1][] = [
      [`pmt${suffix}`, 0],
      [`pmt_end${suffix}`, 0],
      [`pmt_begin${suffix}`, 1],
    ];
    let checked = 0;
    for (const [key, type] of checks) {
      const expected = v.expected[key];
      if (typeof expected !== 'number') continue;
      expectClose(inSignOf(expected, pmt(r, n, pv, fv, type)), expected, toleranceOf(v, key));
      checked++;
    }
    expect(checked, `no known expected key in ${v.id}`).toBeGreaterThan(0);
  }
});

forKind('spreadsheet_ipmt', (v) => {
  const i = v.inputs;
  expectClose(ipmt(rateOf(i.rate), num(i.per, 'per'), num(i.nper, 'nper'), num(i.pv, 'pv')), num(v.expected.ipmt, 'ipmt'), toleranceOf(v, 'ipmt'));
});

forKind('spreadsheet_ppmt', (v) => {
  const i = v.inputs;
  expectClose(ppmt(rateOf(i.rate), num(i.per, 'per'), num(i.nper, 'nper'), num(i.pv, 'pv')), num(v.expected.ppmt, 'ppmt'), toleranceOf(v, 'ppmt'));
});

forKind('spreadsheet_rate', (v) => {
  const i = v.inputs;
  const monthly = rate(num(i.nper, 'nper'), num(i.pmt, 'pmt'), num(i.pv, 'pv'));
  expectClose(monthly, num(v.expected.monthly_rate, 'monthly_rate'), toleranceOf(v, 'monthly_rate'));
  if (typeof v.expected.annual_rate === 'number') expectClose(monthly * 12, v.expected.annual_rate, toleranceOf(v, 'annual_rate'));
});

forKind('spreadsheet_cumipmt', (v) => {
  const i = v.inputs;
  const keys = Object.keys(v.expected).filter((k) => /^cumipmt_\d+_\d+$/.test(k));
  expect(keys.length).toBeGreaterThan(0);
  for (const key of keys) {
    const [, start = '', end = ''] = key.split('_');
    const type = num(i.type ?? 0, 'type') === 1 ? 1 : 0;
    const got = cumipmt(rateOf(i.rate), num(i.nper, 'nper'), num(i.pv, 'pv'), Number(start), Number(end), type);
    expectClose(got, num(v.expected[key], key), toleranceOf(v, key));
  }
});

forKind('spreadsheet_apr', (v) => {
  // FormCalc Apr(principal, payment, periods) = 12 × the periodic rate.
  for (const { inputs, suffix } of casesOf(v)) {
    const key = `apr${suffix}`;
    const n = num(inputs.n, 'n');
    const pv = num(inputs.pv, 'pv');
    const payment = num(inputs.pmt, 'pmt');
    const expected = num(v.expected[key], key);
    expectClose(12 * rate(n, -payment, pv), expected, toleranceOf(v, key));
    // The same loan through Regulation Z Appendix J (regular monthly schedule) agrees.
    const cents = (x: number): bigint => BigInt(Math.round(x * 100));
    const apr = appendixJApr({
      advances: [{ date: '2024-01-15', amount: cents(pv) }],
      paymentSeries: [{ firstDate: '2024-02-15', amount: cents(payment), count: n, frequency: 'monthly' }],
    });
    expectClose(apr.aprNumber, 12 * rate(n, -payment, pv), 1e-10);
  }
});

// ---------------------------------------------------------------------------
// Excel semantics not covered by the vectors


describe('spreadsheet semantics', () => {
  it('npv discounts the first value one period; irr is the npv root over values from period 0', () => {
    const values = [-1000, 300, 400, 500];
    const r = irr(values);
    expect(Math.abs(values[0]! + npv(r, values.slice(1)))).toBeLessThan(1e-9);
    expect(npv(0, [1, 2, 3])).toBe(6);
  });

  it('pmt at a zero rate is a straight split; ipmt + ppmt = pmt', () => {
    expect(pmt(0, 10, 1000)).toBe(-100);
    expect(pmt(0, 10, 1000, 500, 1)).toBe(-150);
    for (const per of [1, 2, 17, 36]) {
      for (const type of [0, 1] as const) {
        expect(ipmt(0.01, per, 36, 8000, 0, type) + ppmt(0.01, per, 36, 8000, 0, type)).toBeCloseTo(pmt(0.01, 36, 8000, 0, type), 9);
      }
    }
    expect(ipmt(0.01, 1, 36, 8000, 0, 1)).toBe(0);
  });

  it('rate handles a zero rate, annuity-due and a future value', () => {
    expect(rate(10, -100, 1000)).toBeCloseTo(0, 12);
    const r = rate(24, -95, 2000, -100, 1);
    expect(pmt(r, 24, 2000, -100, 1)).toBeCloseTo(-95, 9);
  });

  it('cumipmt sums ipmt over the periods, inclusive', () => {
    let sum = 0;
    for (let per = 3; per <= 7; per++) sum += ipmt(0.005, per, 60, 10_000);
    expect(cumipmt(0.005, 60, 10_000, 3, 7, 0)).toBeCloseTo(sum, 9);
  });

  it('xnpv counts days from the first flow, not the earliest', () => {
    const one = xnpv(0.1, [
      { date: '2024-01-01', amount: -100 },
      { date: '2025-01-01', amount: 110 },
    ]);
    expect(one).toBeCloseTo(-100 + 110 / Math.pow(1.1, 366 / 365), 12);
  });
});

describe('errors', () => {
  const cases: [string, () => unknown, string, string][] = [
    ['xirr without a negative flow', () => xirr([{ date: '2024-01-01', amount: 1 }, { date: '2024-06-01', amount: 2 }]), 'no_root', 'flows'],
    ['irr without a positive value', () => irr([-1, -2, -3]), 'no_root', 'values'],
    ['xnpv with a date before the first', () => xnpv(0.1, [{ date: '2024-02-01', amount: -1 }, { date: '2024-01-01', amount: 2 }]), 'date_order', 'flows[1].date'],
    ['xnpv with a bad date', () => xnpv(0.1, [{ date: '2024-02-30', amount: -1 }]), 'invalid_date', 'flows[0].date'],
    ['xnpv with rate ≤ −1', () => xnpv(-1, [{ date: '2024-01-01', amount: -1 }]), 'invalid_rate', 'rate'],
    ['npv with no values', () => npv(0.1, []), 'invalid_argument', 'values'],
    ['npv with NaN', () => npv(0.1, [1, Number.NaN]), 'invalid_argument', 'values[1]'],
    ['pmt with nper 0', () => pmt(0.1, 0, 100), 'invalid_argument', 'nper'],
    ['pmt with type 2', () => pmt(0.1, 10, 100, 0, 2 as never), 'invalid_argument', 'type'],
    ['ipmt with per beyond nper', () => ipmt(0.1, 11, 10, 100), 'invalid_argument', 'per'],
    ['cumipmt with zero rate', () => cumipmt(0, 10, 100, 1, 2, 0), 'invalid_rate', 'rate'],
    ['cumipmt with end before start', () => cumipmt(0.1, 10, 100, 5, 4, 0), 'invalid_argument', 'end_period'],
    ['rate with nothing to solve', () => rate(10, 0, 100, 100), 'no_root', 'pv'],
    ['rate that no payment reaches', () => rate(10, 10, 100, 100), 'no_root', 'pmt'],
  ];
  for (const [name, fn, code, field] of cases) {
    it(`${name} → ${code} on ${field}`, () => {
      const error = engineError(fn);
      expect(error.code).toBe(code);
      expect(error.field).toBe(field);
    });
  }
});

// ---------------------------------------------------------------------------
// Properties

const plusDays = (date: string, days: number): string => formatDate(addDays(parseDate(date), days));

describe('properties', () => {
  it('xnpv(xirr(flows), flows) ≈ 0 for an investment followed by returns', () => {
    // Returns from 30 days on: sooner, a halving puts 1 + r below 1e-100, past what a float can hold.
    fc.assert(
      fc.property(
        fc.integer({ min: 1_000, max: 1_000_000 }),
        fc.array(fc.record({ day: fc.integer({ min: 30, max: 3650 }), weight: fc.double({ min: 0.01, max: 1, noNaN: true }) }), { minLength: 1, maxLength: 30 }),
        fc.double({ min: 0.5, max: 3, noNaN: true }),
        fc.double({ min: -0.5, max: 1, noNaN: true }),
        (invested, returns, multiple, guess) => {
          const weights = returns.reduce((s, r) => s + r.weight, 0);
          const flows = [
            { date: '2020-01-01', amount: -invested },
            ...returns.map((r) => ({ date: plusDays('2020-01-01', r.day), amount: (invested * multiple * r.weight) / weights })),
          ];
          const r = xirr(flows, guess);
          const scale = flows.reduce((s, f) => s + Math.abs(f.amount), 0);
          expect(Math.abs(xnpv(r, flows)) / scale).toBeLessThan(1e-9);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('irr of level flows matches rate()', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 120 }), fc.double({ min: 0.0001, max: 0.1, noNaN: true }), (n, i) => {
        const payment = -pmt(i, n, 10_000);
        const values = [-10_000, ...Array.from({ length: n }, () => payment)];
        expect(irr(values)).toBeCloseTo(i, 10);
        expect(rate(n, -payment, 10_000)).toBeCloseTo(i, 10);
      }),
      { numRuns: 300 },
    );
  });

  it('all-positive (or all-negative) flows have no rate', () => {
    fc.assert(
      fc.property(fc.array(fc.double({ min: 0.01, max: 1e6, noNaN: true }), { minLength: 1, maxLength: 20 }), fc.boolean(), (amounts, negate) => {
        const values = amounts.map((a) => (negate ? -a : a));
        expect(engineError(() => irr(values)).code).toBe('no_root');
        const flows = values.map((amount, k) => ({ date: plusDays('2024-01-01', 30 * k), amount }));
        expect(engineError(() => xirr(flows)).code).toBe('no_root');
      }),
      { numRuns: 200 },
    );
  });
});
