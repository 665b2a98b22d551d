import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  PROJECTION_BASIS,
  PROJECTION_COLUMNS,
  amortizedBalance,
  cdrToMdr,
  cprToSmm,
  mergeProjectionTotals,
  preparePool,
  projectLoan,
  projectLoans,
  projectPool,
  projectionFromTotals,
  projectionTotals,
  psaCpr,
  sdaCdr,
  smmToCpr,
  type LoanArrays,
  type PoolProjection,
  type ProjectionAssumptions,
  type ProjectionColumns,
} from '../../src/engine/index.js';
import { expectEngineError } from '../support/engine.js';
import { vectorById } from '../support/vectors.js';

/**
 * Published values from the SIFMA (The Bond Market Association) Uniform Practices,
 * Chapter SF "Standard Formulas for the Analysis of Mortgage-Backed Securities and Other
 * Related Securities", 02/01/99 (https://www.sifma.org/wp-content/uploads/2017/08/chsf.pdf),
 * read through the transcriptions in github.com/crmerrill/bma-standard-formulas
 * (docs/BMA_Calcs2.txt for the text, tests/fixtures/bma_cashflow_a.csv and
 * bma_cashflow_b.csv for the two sample cash-flow tables). The document forbids
 * reproduction, so only individual figures are recorded here, each with its page.
 */

const close = (actual: number, expected: number, tolerance: number, what = ''): void => {
  expect(Math.abs(actual - expected), `${what} ${actual} vs ${expected} (±${tolerance})`).toBeLessThanOrEqual(tolerance);
};
const num = (value: unknown): number => {
  if (typeof value !== 'number') throw new Error(`not a number: ${JSON.stringify(value)}`);
  return value;
};
const sum = (column: Float64Array): number => column.reduce((s, v) => s + v, 0);

describe('SF B.1 cash flows: the first month of a 9.5 % / 9.0 % pass-through at 150 % PSA', () => {
  // finance-dev.json: "sifma-sf4-first-month-cash-flow" (SF-4/SF-5).
  const vector = vectorById('sifma-sf4-first-month-cash-flow');
  const tolerance = num(vector.tolerance?.abs);
  const projection = projectLoan(
    { balance: 1, rate: num(vector.inputs.gross_coupon_pct) / 100, remainingTerm: num(vector.inputs.term_months), age: 0 },
    { prepayment: { model: 'psa', speed: 150 }, servicingFee: (num(vector.inputs.gross_coupon_pct) - num(vector.inputs.net_coupon_pct)) / 100 },
  );
  const c = projection.columns;
  const at = (column: Float64Array): number => column[0] as number;

  it('the unscheduled prepayment given in the example is the first month of 150 % PSA on the amortized balance', () => {
    close(at(c.voluntaryPrepayments), num(vector.inputs.unscheduled_prepayments_fraction_of_par), tolerance);
  });

  const expected: [string, (c: ProjectionColumns) => number][] = [
    ['scheduled_amortization', (x) => at(x.expectedAmortization)],
    ['gross_interest', (x) => at(x.grossInterest)],
    ['servicing_fee', (x) => at(x.servicingFee)],
    ['pt_principal', (x) => at(x.totalPrincipal)],
    ['pt_interest', (x) => at(x.totalInterest)],
    ['pt_cash_flow', (x) => at(x.cashFlow)],
  ];
  for (const [key, value] of expected) {
    it(`${key} = ${String(vector.expected[key])}`, () => close(value(c), num(vector.expected[key]), tolerance, key));
  }

  it('says it is analytics on binary floats', () => {
    expect(projection.basis).toBe('analytics_float64');
    expect(PROJECTION_BASIS).toBe('analytics_float64');
  });
});

describe('SF B.1–B.2: amortized balance and prepayment-rate conventions', () => {
  it('BAL of the 9.5 % loan with 344 and 343 of 359 months left (SF-7): 0.99213300 and 0.99157471', () => {
    close(amortizedBalance(0.095, 344, 359), 0.992133, 5e-9);
    close(amortizedBalance(0.095, 343, 359), 0.99157471, 5e-9);
  });

  it('the prepayment speed of 6/89 from the pool factors (SF-7/8): SMM 0.435270 %, CPR 5.1000 %, 150.00 % PSA in month 17', () => {
    const f1 = 0.85150625;
    const f2 = 0.84732282;
    const scheduled = f1 * (amortizedBalance(0.095, 343, 359) / amortizedBalance(0.095, 344, 359));
    close(scheduled, 0.85102709, 5e-9);
    close(f1 - scheduled, 0.00047916, 5e-9);
    close(scheduled - f2, 0.00370427, 5e-9);
    const smm = (scheduled - f2) / scheduled;
    close(smm, 0.0043527, 5e-9);
    const cpr = smmToCpr(smm);
    close(cpr, 0.051, 5e-7);
    close((100 * cpr) / Math.min(0.002 * 17, 0.06), 150, 0.005);
    // and the other way: 150 % PSA in month 17 is 5.1 % CPR
    close(psaCpr(150, 17), 0.051, 1e-15);
    close(cprToSmm(psaCpr(150, 17)), smm, 1e-8);
  });

  it('the prepayment rate conversion table (SF-9): SMM 0.50 / 1.00 / 3.00 / 9.00 % → CPR 5.8 / 11.4 / 30.6 / 67.8 %, PSA 97 / 189 / 510 / 1129', () => {
    for (const [smm, cpr, psa] of [
      [0.005, 5.8, 97],
      [0.01, 11.4, 189],
      [0.03, 30.6, 510],
      [0.09, 67.8, 1129],
    ] as const) {
      const annual = smmToCpr(smm);
      close(annual * 100, cpr, 0.05, `CPR of SMM ${smm}`);
      close((annual / 0.06) * 100, psa, 0.5, `PSA of SMM ${smm}`);
    }
  });

  it('PSA: 0.2 % CPR a month of age to 6 % at month 30, scaled by speed, capped at 100 %', () => {
    expect(psaCpr(100, 1)).toBeCloseTo(0.002, 15);
    expect(psaCpr(100, 30)).toBeCloseTo(0.06, 15);
    expect(psaCpr(100, 200)).toBeCloseTo(0.06, 15);
    expect(psaCpr(100, 0)).toBeCloseTo(0.002, 15); // MONTH is at least 1
    expect(psaCpr(5000, 30)).toBe(1);
  });

  it('SDA (SF-20, and the annual default rates of Cash Flow B, SF-23): 0.02 % at month 1, 0.6 % from 30 to 60, 0.5905 % at 61, 0.03 % from 120', () => {
    close(sdaCdr(100, 1), 0.0002, 1e-15);
    close(sdaCdr(100, 30), 0.006, 1e-15);
    close(sdaCdr(100, 60), 0.006, 1e-15);
    close(sdaCdr(100, 61), 0.005905, 1e-15);
    close(sdaCdr(100, 120), 0.0003, 1e-15);
    close(sdaCdr(100, 360), 0.0003, 1e-15);
    close(sdaCdr(200, 45), 0.012, 1e-15);
    // Cash Flow B's rounded MDR column: 0.000017 in month 1, 0.000501 from month 30.
    close(cdrToMdr(sdaCdr(100, 1)), 0.000017, 5e-7);
    close(cdrToMdr(sdaCdr(100, 30)), 0.000501, 5e-7);
  });
});

describe('SF G.1 yield example: GNMA I 9.0 % (9.5 % gross), 360 months, 150 % PSA, 14-day delay, priced at par (SF-50/51)', () => {
  const projection = projectLoan(
    { balance: 100, rate: 0.095, netRate: 0.09, remainingTerm: 360 },
    { prepayment: { model: 'psa', speed: 150 } },
    { pricing: { price: 100, delayDays: 14 } },
  );
  const s = projection.summary;
  const cf = projection.columns.cashFlow;

  it('cash flows per 100: 0.8242, 0.8491, 0.8738 … 0.0562 in month 360', () => {
    close(cf[0] as number, 0.8242, 5e-5);
    close(cf[1] as number, 0.8491, 5e-5);
    close(cf[2] as number, 0.8738, 5e-5);
    expect(cf.length).toBe(360);
    close(cf[359] as number, 0.0562, 5e-5);
  });

  it('yield 9.10675 %, mortgage yield 8.93863 %', () => {
    close(num(s.yield), 0.0910675, 5e-8);
    close(num(s.mortgageYield), 0.0893863, 5e-8);
  });

  it('average life 9.77844, duration 5.73147, modified duration 5.48186 years, convexity 54.4326 years²', () => {
    close(s.walYears, 9.77844, 5e-6);
    close(num(s.macaulayDuration), 5.73147, 5e-6);
    close(num(s.modifiedDuration), 5.48186, 5e-6);
    close(num(s.convexity), 54.4326, 5e-5);
  });

  it('price at that yield is par again, and NPV at it is the price × balance / 100', () => {
    const again = projectLoan(
      { balance: 100, rate: 0.095, netRate: 0.09, remainingTerm: 360 },
      { prepayment: { model: 'psa', speed: 150 } },
      { pricing: { yield: num(s.yield), discountRate: num(s.yield), delayDays: 14 } },
    ).summary;
    close(num(again.price), 100, 1e-9);
    close(num(again.npv), 100, 1e-9);
    close(num(again.modifiedDuration), num(s.modifiedDuration), 1e-12);
  });
});

/** The sample cash flows of SF C.6 (SF-22): new 30-year 8 % loans, 12 months to liquidation, 20 % severity, P&I advanced. */
function sampleCashFlow(prepayment: ProjectionAssumptions['prepayment'], defaults: NonNullable<ProjectionAssumptions['default']>): PoolProjection {
  return projectPool(
    { balance: 100_000_000, wac: 0.08, originalTerm: 360, remainingTerm: 360 },
    { prepayment, default: defaults, severity: 0.2, monthsToLiquidation: 12, servicerAdvances: true },
  );
}

type Row = readonly [month: number, values: Partial<Record<keyof ProjectionColumns, number>>];

/** The tables print whole dollars: each figure must be within half a dollar of the projection. */
function checkRows(projection: PoolProjection, rows: readonly Row[]): void {
  for (const [month, values] of rows) {
    for (const [column, published] of Object.entries(values) as [keyof ProjectionColumns, number][]) {
      close(projection.columns[column][month - 1] as number, published, 0.5, `month ${month} ${column}`);
    }
  }
}

describe('SF C.6 Cash Flow A: 1 % SMM, 1 % MDR (SF-23…)', () => {
  const a = sampleCashFlow({ model: 'smm', rate: 0.01 }, { model: 'mdr', rate: 0.01 });

  it('months 1, 2, 13 (the first liquidation), 48 and 120', () => {
    checkRows(a, [
      [1, { performingBalance: 97_934_244, newDefaults: 1_000_000, foreclosureBalance: 999_329, expectedAmortization: 67_098, voluntaryPrepayments: 999_329, amortizationFromDefaults: 671, actualAmortization: 66_427, expectedInterest: 666_667, interestLost: 6_667, actualInterest: 660_000 }],
      [2, { performingBalance: 95_910_689, newDefaults: 979_342, foreclosureBalance: 1_977_334, voluntaryPrepayments: 978_680, interestLost: 13_191 }],
      [13, { performingBalance: 76_203_943, foreclosureBalance: 10_453_093, expectedAmortization: 64_118, principalRecovery: 791_646, principalLoss: 200_000, expectedInterest: 589_936 }],
      [48, { performingBalance: 36_484_857, newDefaults: 372_649, foreclosureBalance: 5_004_723, principalRecovery: 378_868, principalLoss: 96_016 }],
      [120, { performingBalance: 7_766_959, foreclosureBalance: 1_065_414, actualAmortization: 13_233, principalRecovery: 80_543, principalLoss: 20_625 }],
    ]);
  });

  it('no new defaults in the last 12 months (month 349 on), and the loss capped at the amortized default balance in month 359', () => {
    checkRows(a, [
      [348, { newDefaults: 82, performingBalance: 7_461 }],
      [349, { newDefaults: 0, performingBalance: 6_793, foreclosureBalance: 854 }],
      // 20 % of month 347's 90 of new defaults is 18, more than their amortized balance of 13 (SF C.3 note i).
      [359, { principalLoss: 13, principalRecovery: 0, performingBalance: 577 }],
      [360, { performingBalance: 0, foreclosureBalance: 0, actualAmortization: 577, principalLoss: 7 }],
    ]);
    for (let month = 349; month <= 360; month++) expect(a.columns.newDefaults[month - 1]).toBe(0);
  });

  it('totals: new defaults 47,576,640, expected amortization 5,510,477, prepayments 47,527,662, amortization from defaults 614,780, actual amortization 4,895,697, recoveries 37,446,547, losses 9,515,314', () => {
    const c = a.columns;
    close(sum(c.newDefaults), 47_576_640, 0.5);
    close(sum(c.expectedAmortization), 5_510_477, 0.5);
    close(sum(c.voluntaryPrepayments), 47_527_662, 0.5);
    close(sum(c.amortizationFromDefaults), 614_780, 0.5);
    close(sum(c.actualAmortization), 4_895_697, 0.5);
    close(sum(c.principalRecovery), 37_446_547, 0.5);
    close(sum(c.principalLoss), 9_515_314, 0.5);
    close(a.summary.totalLoss, 9_515_314, 0.5);
  });
});

describe('SF C.6 Cash Flow B: 150 % PSA, 100 % SDA', () => {
  const b = sampleCashFlow({ model: 'psa', speed: 150 }, { model: 'sda', speed: 100 });

  it('months 1, 30 (peak of both ramps), 31, 61 (SDA starts to fall), 73, 120, 121 and 349', () => {
    checkRows(b, [
      [1, { performingBalance: 99_906_219, newDefaults: 1_667, foreclosureBalance: 1_666, expectedAmortization: 67_098, voluntaryPrepayments: 25_018, actualAmortization: 67_097, interestLost: 11, actualInterest: 666_656 }],
      [30, { performingBalance: 86_051_329, newDefaults: 43_543, foreclosureBalance: 441_856, voluntaryPrepayments: 679_304, principalRecovery: 22_515, principalLoss: 5_696 }],
      [31, { performingBalance: 85_263_063, newDefaults: 43_144, voluntaryPrepayments: 673_082, expectedInterest: 576_621 }],
      [61, { performingBalance: 64_488_603, newDefaults: 32_121, foreclosureBalance: 409_329, principalRecovery: 28_781, principalLoss: 7_304 }],
      [73, { performingBalance: 57_601_835, newDefaults: 23_140, principalRecovery: 25_276, principalLoss: 6_424 }],
      [120, { performingBalance: 36_902_132, newDefaults: 932, foreclosureBalance: 32_329 }],
      [121, { performingBalance: 36_550_166, newDefaults: 923, foreclosureBalance: 28_652 }],
      [349, { performingBalance: 536_461, newDefaults: 0, foreclosureBalance: 156, principalLoss: 6 }],
    ]);
  });

  it('the effective SMM and MDR columns are the curves: SMM 0.00025 and 0.007828, MDR 0.000017 and 0.000501 in months 1 and 30', () => {
    close(b.columns.smm[0] as number, 0.00025, 5e-6);
    close(b.columns.smm[29] as number, 0.007828, 5e-7);
    close(b.columns.mdr[0] as number, 0.000017, 5e-7);
    close(b.columns.mdr[29] as number, 0.000501, 5e-7);
  });

  it('totals: new defaults 2,776,019 (2.78 % cumulative), prepayments 76,052,023, recoveries 2,184,008, losses 555,201', () => {
    const c = b.columns;
    close(sum(c.newDefaults), 2_776_019, 0.5);
    close(sum(c.expectedAmortization), 21_208_767, 0.5);
    close(sum(c.voluntaryPrepayments), 76_052_023, 0.5);
    close(sum(c.amortizationFromDefaults), 36_809, 0.5);
    close(sum(c.principalRecovery), 2_184_008, 0.5);
    close(sum(c.principalLoss), 555_201, 0.5);
    close(b.summary.cumulativeDefaultRate * 100, 2.78, 0.005);
  });
});

describe('SF C.4 cumulative default matrix: new 8 % 30-year loans (SF-21)', () => {
  // % of original balance, printed to two decimals.
  const cells: [psa: number, sda: number, percent: number][] = [
    [100, 50, 1.56],
    [100, 300, 8.97],
    [150, 100, 2.78],
    [150, 250, 6.79],
    [200, 150, 3.74],
    [300, 200, 4.11],
    [500, 50, 0.74],
    [500, 300, 4.35],
  ];
  for (const [psa, sda, percent] of cells) {
    it(`${psa} % PSA, ${sda} % SDA: ${percent} %`, () => {
      const p = projectPool(
        { balance: 1, wac: 0.08, originalTerm: 360, remainingTerm: 360 },
        { prepayment: { model: 'psa', speed: psa }, default: { model: 'sda', speed: sda }, monthsToLiquidation: 12, severity: 0.2 },
      );
      close(p.summary.cumulativeDefaultRate * 100, percent, 0.005);
    });
  }
});

// ---------------------------------------------------------------------------
// Behaviour the standard describes in words

describe('servicer advancing, liquidation lag and the default stop', () => {
  const pool = { balance: 1_000_000, wac: 0.07, netRate: 0.065, remainingTerm: 240, age: 24 };
  const base: ProjectionAssumptions = { prepayment: { model: 'cpr', rate: 0.08 }, default: { model: 'cdr', rate: 0.03 }, severity: 0.4, monthsToLiquidation: 6 };

  it('with P&I advanced investors get expected amortization and interest; without, actual, and the defaults amortize nothing', () => {
    const advanced = projectPool(pool, { ...base, servicerAdvances: true }).columns;
    const not = projectPool(pool, { ...base, servicerAdvances: false }).columns;
    for (let t = 0; t < 60; t++) {
      close(advanced.totalInterest[t] as number, advanced.expectedInterest[t] as number, 1e-9);
      close(not.totalInterest[t] as number, not.actualInterest[t] as number, 1e-9);
      expect(not.amortizationFromDefaults[t]).toBe(0);
      close(advanced.totalPrincipal[t] as number, (advanced.expectedAmortization[t] as number) + (advanced.voluntaryPrepayments[t] as number) + (advanced.principalRecovery[t] as number), 1e-9);
      close(not.totalPrincipal[t] as number, (not.actualAmortization[t] as number) + (not.voluntaryPrepayments[t] as number) + (not.principalRecovery[t] as number), 1e-9);
    }
    // The performing balance does not depend on advancing. The loss is severity × the balance at default
    // either way, until near maturity the advanced (amortized) default balance caps it (SF C.3 note i).
    for (let t = 0; t < 240; t++) close(advanced.performingBalance[t] as number, not.performingBalance[t] as number, 1e-6);
    for (let t = 0; t < 200; t++) close(advanced.principalLoss[t] as number, not.principalLoss[t] as number, 1e-9);
    expect(advanced.principalLoss[239]).toBeLessThan(not.principalLoss[239] as number);
    expect(sum(not.principalRecovery)).toBeGreaterThan(sum(advanced.principalRecovery));
  });

  it('defaults liquidate exactly monthsToLiquidation later', () => {
    const c = projectPool(pool, base).columns;
    for (let t = 0; t < 6; t++) expect(c.principalRecovery[t]).toBe(0);
    close(c.principalLoss[6] as number, (c.newDefaults[0] as number) * 0.4, 1e-9);
    close(c.principalLoss[20] as number, (c.newDefaults[14] as number) * 0.4, 1e-9);
  });

  it('no new defaults in the last defaultStopMonths before maturity (default: the liquidation lag)', () => {
    const lag = projectPool(pool, base).columns.newDefaults;
    expect(lag[240 - 7]).toBeGreaterThan(0);
    for (let t = 240 - 6; t < 240; t++) expect(lag[t]).toBe(0);
    const stop = projectPool(pool, { ...base, defaultStopMonths: 30 }).columns.newDefaults;
    expect(stop[240 - 31]).toBeGreaterThan(0);
    for (let t = 240 - 30; t < 240; t++) expect(stop[t]).toBe(0);
  });

  it('without advancing, defaults in the last months liquidate after maturity: the projection runs on to them', () => {
    const p = projectPool(pool, { ...base, servicerAdvances: false, defaultStopMonths: 0 });
    expect(p.months).toBe(246);
    expect(p.columns.principalLoss[245]).toBeGreaterThan(0);
    close(p.summary.endingBalance, 0, 1e-6);
  });

  it('0 months to liquidation and 0 % severity: a default is paid in full in its month (SF C.2 note g)', () => {
    const c = projectPool(pool, { ...base, monthsToLiquidation: 0, severity: 0 }).columns;
    for (let t = 0; t < 240; t++) {
      close(c.principalRecovery[t] as number, c.newDefaults[t] as number, 1e-9);
      expect(c.foreclosureBalance[t]).toBe(0);
      expect(c.principalLoss[t]).toBe(0);
    }
  });

  it('a horizon cuts the projection and leaves the balance in the last row', () => {
    const p = projectPool(pool, { ...base }, { horizonMonths: 36 });
    expect(p.months).toBe(36);
    close(p.summary.endingBalance, (p.columns.performingBalance[35] as number) + (p.columns.foreclosureBalance[35] as number), 1e-9);
    expect(p.summary.endingBalance).toBeGreaterThan(0);
  });

  it('a zero rate amortizes in equal parts', () => {
    const c = projectLoan({ balance: 1200, rate: 0, remainingTerm: 12 }, { prepayment: { model: 'smm', rate: 0 } }).columns;
    for (let t = 0; t < 12; t++) close(c.actualAmortization[t] as number, 100, 1e-9);
  });

  it('a 100 % SMM pays everything off in the first month', () => {
    const p = projectLoan({ balance: 500, rate: 0.05, remainingTerm: 100 }, { prepayment: { model: 'smm', rate: 1 } });
    close(p.columns.totalPrincipal[0] as number, 500, 1e-9);
    close(p.columns.performingBalance[0] as number, 0, 1e-9);
    close(p.summary.walYears, 1 / 12, 1e-12);
  });

  it('multipliers of 1 change nothing, bit for bit', () => {
    const plain = preparePool({ balance: 1000, rate: 0.06, remainingTerm: 120, age: 5 });
    const a: ProjectionAssumptions = { prepayment: { model: 'psa', speed: 200 }, default: { model: 'sda', speed: 150 }, severity: 0.3, monthsToLiquidation: 9 };
    const without = projectionTotals(plain, a);
    const ones = new Float64Array(without.months).fill(1);
    const withOnes = projectionTotals(plain, a, { smmMultipliers: ones, mdrMultipliers: ones });
    expect(Array.from(withOnes.data)).toEqual(Array.from(without.data));
  });

  it('every column has an HTTP name', () => {
    const p = projectLoan({ balance: 1, rate: 0.05, remainingTerm: 12 }, { prepayment: { model: 'smm', rate: 0 } });
    expect(PROJECTION_COLUMNS.map(([name]) => name).sort()).toEqual(Object.keys(p.columns).sort());
    for (const [, snake] of PROJECTION_COLUMNS) expect(snake).toMatch(/^[a-z_]+$/);
  });
});

// ---------------------------------------------------------------------------
// Invariants

const assumptionsArb: fc.Arbitrary<ProjectionAssumptions> = fc.record({
  prepayment: fc.oneof(
    fc.record({ model: fc.constant('smm' as const), rate: fc.double({ min: 0, max: 1, noNaN: true }) }),
    fc.record({ model: fc.constant('cpr' as const), rate: fc.double({ min: 0, max: 1, noNaN: true }) }),
    fc.record({ model: fc.constant('psa' as const), speed: fc.double({ min: 0, max: 3000, noNaN: true }) }),
  ),
  default: fc.oneof(
    fc.constant(undefined),
    fc.record({ model: fc.constant('mdr' as const), rate: fc.double({ min: 0, max: 1, noNaN: true }) }),
    fc.record({ model: fc.constant('cdr' as const), rate: fc.double({ min: 0, max: 1, noNaN: true }) }),
    fc.record({ model: fc.constant('sda' as const), speed: fc.double({ min: 0, max: 5000, noNaN: true }) }),
  ),
  severity: fc.double({ min: 0, max: 1, noNaN: true }),
  monthsToLiquidation: fc.integer({ min: 0, max: 36 }),
  servicerAdvances: fc.boolean(),
  defaultStopMonths: fc.option(fc.integer({ min: 0, max: 40 }), { nil: undefined }),
  servicingFee: fc.double({ min: 0, max: 0.01, noNaN: true }),
});

const loanArb = fc.record({
  balance: fc.double({ min: 0, max: 2_000_000, noNaN: true }),
  rate: fc.double({ min: 0.01, max: 0.25, noNaN: true }),
  remainingTerm: fc.integer({ min: 1, max: 480 }),
  age: fc.integer({ min: 0, max: 360 }),
});

function arrays(loans: readonly { balance: number; rate: number; remainingTerm: number; age: number }[]): LoanArrays {
  return {
    balance: Float64Array.from(loans, (l) => l.balance),
    rate: Float64Array.from(loans, (l) => l.rate),
    remainingTerm: Float64Array.from(loans, (l) => l.remainingTerm),
    age: Float64Array.from(loans, (l) => l.age),
  };
}

describe('invariants (fast-check)', () => {
  it('every month: principal passed through + losses + ending balance (performing + in foreclosure) = beginning balance', () => {
    fc.assert(
      fc.property(fc.array(loanArb, { minLength: 1, maxLength: 8 }), assumptionsArb, (loans, a) => {
        const p = projectLoans(arrays(loans), a);
        const c = p.columns;
        const scale = Math.max(1, p.originalBalance);
        for (let t = 0; t < p.months; t++) {
          const ending = (c.performingBalance[t] as number) + (c.foreclosureBalance[t] as number);
          const accounted = (c.totalPrincipal[t] as number) + (c.principalLoss[t] as number) + ending;
          expect(Math.abs(accounted - (c.beginningBalance[t] as number))).toBeLessThanOrEqual(1e-9 * scale);
          expect(c.performingBalance[t]).toBeGreaterThanOrEqual(-1e-9 * scale);
          expect(c.foreclosureBalance[t]).toBeGreaterThanOrEqual(-1e-9 * scale);
          expect(c.principalLoss[t]).toBeGreaterThanOrEqual(0);
          expect(c.principalRecovery[t]).toBeGreaterThanOrEqual(-1e-9 * scale);
        }
        // Over the whole life everything is paid, lost or still outstanding at the end.
        expect(Math.abs(p.summary.totalPrincipal + p.summary.totalLoss + p.summary.endingBalance - p.originalBalance)).toBeLessThanOrEqual(1e-9 * scale);
        expect(Math.abs(p.summary.endingBalance)).toBeLessThanOrEqual(1e-9 * scale);
      }),
      { numRuns: 150 },
    );
  });

  it('prepayment and default rates, as given and as realized by the pool, are in [0, 1]', () => {
    fc.assert(
      fc.property(fc.double({ min: 0, max: 100_000, noNaN: true }), fc.integer({ min: -5, max: 1500 }), fc.double({ min: 0, max: 1, noNaN: true }), (speed, month, rate) => {
        for (const r of [psaCpr(speed, month), sdaCdr(speed, month), cprToSmm(rate), smmToCpr(rate), cdrToMdr(rate)]) {
          expect(r).toBeGreaterThanOrEqual(0);
          expect(r).toBeLessThanOrEqual(1);
        }
      }),
    );
    fc.assert(
      fc.property(fc.array(loanArb, { minLength: 1, maxLength: 5 }), assumptionsArb, (loans, a) => {
        const c = projectLoans(arrays(loans), a).columns;
        for (let t = 0; t < c.smm.length; t++) {
          for (const r of [c.smm[t] as number, c.mdr[t] as number]) {
            expect(r).toBeGreaterThanOrEqual(0);
            expect(r).toBeLessThanOrEqual(1 + 1e-12);
          }
        }
      }),
      { numRuns: 100 },
    );
  });

  it('a pool of N identical loans is N × one loan', () => {
    fc.assert(
      fc.property(loanArb, fc.integer({ min: 2, max: 40 }), assumptionsArb, (loan, n, a) => {
        const one = projectLoan(loan, a).columns;
        const pool = projectLoans(arrays(Array.from({ length: n }, () => loan)), a).columns;
        for (const [name] of PROJECTION_COLUMNS) {
          if (name === 'month' || name === 'smm' || name === 'mdr') {
            for (let t = 0; t < one.month.length; t++) close(pool[name][t] as number, one[name][t] as number, 1e-12, name);
            continue;
          }
          for (let t = 0; t < one.month.length; t++) {
            const expected = n * (one[name][t] as number);
            close(pool[name][t] as number, expected, 1e-12 * Math.max(1, n * loan.balance), name);
          }
        }
      }),
      { numRuns: 60 },
    );
  });

  it('a heterogeneous pool is the sum of its loans, however it is split (as the threads split it)', () => {
    fc.assert(
      fc.property(fc.array(loanArb, { minLength: 2, maxLength: 12 }), assumptionsArb, fc.nat(), (loans, a, cut) => {
        const prepared = preparePool(arrays(loans));
        const whole = projectionTotals(prepared, a);
        const split = Math.min(loans.length, cut % (loans.length + 1));
        const parts = mergeProjectionTotals([
          projectionTotals(prepared, a, { from: 0, to: split }),
          projectionTotals(prepared, a, { from: split, to: loans.length }),
        ]);
        const singles = mergeProjectionTotals(loans.map((loan) => projectionTotals(preparePool(loan), a)));
        const scale = Math.max(1, whole.originalBalance);
        expect(parts.months).toBe(whole.months);
        expect(singles.months).toBe(whole.months);
        for (let j = 0; j < whole.data.length; j++) {
          close(parts.data[j] as number, whole.data[j] as number, 1e-12 * scale);
          close(singles.data[j] as number, whole.data[j] as number, 1e-12 * scale);
        }
        const p = projectionFromTotals(parts, a);
        close(p.originalBalance, whole.originalBalance, 1e-9);
        expect(p.loans).toBe(loans.length);
      }),
      { numRuns: 80 },
    );
  });

  it('the yield at a price prices back to that price', () => {
    fc.assert(
      fc.property(loanArb.filter((l) => l.balance > 1), fc.double({ min: 60, max: 140, noNaN: true }), fc.integer({ min: 0, max: 60 }), (loan, price, delayDays) => {
        const a: ProjectionAssumptions = { prepayment: { model: 'psa', speed: 150 } };
        const y = projectLoan(loan, a, { pricing: { price, delayDays } }).summary.yield;
        expect(y).not.toBeNull();
        const back = projectLoan(loan, a, { pricing: { yield: num(y), delayDays } }).summary.price;
        close(num(back), price, 1e-8 * price);
      }),
      { numRuns: 100 },
    );
  });
});

// ---------------------------------------------------------------------------
// Validation

describe('invalid input is refused with the field at fault', () => {
  const ok: ProjectionAssumptions = { prepayment: { model: 'psa', speed: 100 } };
  const loans = (): LoanArrays => arrays([
    { balance: 1, rate: 0.05, remainingTerm: 10, age: 0 },
    { balance: 1, rate: 0.05, remainingTerm: 10, age: 0 },
    { balance: 1, rate: 0.05, remainingTerm: 10, age: 0 },
  ]);

  it('loan arrays: the element at fault', () => {
    const bad = loans();
    bad.remainingTerm[2] = 10.5;
    expectEngineError(() => projectLoans(bad, ok), 'invalid_argument', 'loans.remaining_term[2]');
    const negative = loans();
    negative.balance[1] = -1;
    expectEngineError(() => projectLoans(negative, ok), 'invalid_amount', 'loans.balance[1]');
    const nan = loans();
    nan.rate[0] = NaN;
    expectEngineError(() => projectLoans(nan, ok), 'invalid_rate', 'loans.rate[0]');
    expectEngineError(() => projectLoans({ ...loans(), age: new Float64Array(2) }, ok), 'invalid_argument', 'loans.age');
    expectEngineError(() => projectLoans({ ...loans(), netRate: Float64Array.of(0.06, 0.04, 0.04) }, ok), 'invalid_rate', 'loans.net_rate[0]');
  });

  it('a pool summary and a loan', () => {
    expectEngineError(() => projectPool({ balance: 1, wac: 1.5, remainingTerm: 10, age: 0 }, ok), 'invalid_rate', 'pool.wac');
    expectEngineError(() => projectPool({ balance: 1, wac: 0.05, remainingTerm: 10 }, ok), 'invalid_argument', 'pool.age');
    expectEngineError(() => projectPool({ balance: 1, wac: 0.05, remainingTerm: 10, originalTerm: 5 }, ok), 'invalid_argument', 'pool.original_term');
    expectEngineError(() => projectPool({ balance: 1, wac: 0.05, netRate: 0.06, remainingTerm: 10, age: 0 }, ok), 'invalid_rate', 'pool.net_rate');
    expectEngineError(() => projectLoan({ balance: 1, rate: 0.05, remainingTerm: 0 }, ok), 'invalid_argument', 'loan.remaining_term');
    expectEngineError(() => projectLoan({ balance: Infinity, rate: 0.05, remainingTerm: 10 }, ok), 'invalid_amount', 'loan.balance');
  });

  it('assumptions', () => {
    const loan = { balance: 1, rate: 0.05, remainingTerm: 10 };
    expectEngineError(() => projectLoan(loan, { prepayment: { model: 'psa', speed: -1 } }), 'invalid_argument', 'assumptions.prepayment.speed');
    expectEngineError(() => projectLoan(loan, { prepayment: { model: 'abs', rate: 0.01 } } as unknown as ProjectionAssumptions), 'invalid_argument', 'assumptions.prepayment.model');
    expectEngineError(() => projectLoan(loan, { prepayment: { model: 'cpr', rate: 1.2 } }), 'invalid_rate', 'assumptions.prepayment.rate');
    expectEngineError(() => projectLoan(loan, { ...ok, default: { model: 'cdx' } } as unknown as ProjectionAssumptions), 'invalid_argument', 'assumptions.default.model');
    expectEngineError(() => projectLoan(loan, { ...ok, severity: 2 }), 'invalid_rate', 'assumptions.severity');
    expectEngineError(() => projectLoan(loan, { ...ok, monthsToLiquidation: 1.5 }), 'invalid_argument', 'assumptions.months_to_liquidation');
    expectEngineError(() => projectLoan(loan, { ...ok, defaultStopMonths: -1 }), 'invalid_argument', 'assumptions.default_stop_months');
    expectEngineError(() => projectLoan({ ...loan, netRate: 0.04 }, { ...ok, servicingFee: 0.005 }), 'invalid_argument', 'assumptions.servicing_fee');
  });

  it('pricing and options', () => {
    const loan = { balance: 1, rate: 0.05, remainingTerm: 10 };
    expectEngineError(() => projectLoan(loan, ok, { pricing: { price: 100, yield: 0.05 } }), 'invalid_argument', 'pricing.yield');
    expectEngineError(() => projectLoan(loan, ok, { pricing: { price: 0 } }), 'invalid_argument', 'pricing.price');
    expectEngineError(() => projectLoan(loan, ok, { pricing: { discountRate: -3 } }), 'invalid_rate', 'pricing.discount_rate');
    expectEngineError(() => projectLoan(loan, ok, { horizonMonths: 0 }), 'invalid_argument', 'options.horizon_months');
    expectEngineError(() => projectLoan(loan, ok, { smmMultipliers: new Float64Array(3) }), 'invalid_argument', 'options.smm_multipliers');
    expectEngineError(() => projectLoan(loan, ok, { mdrMultipliers: new Float64Array(10).fill(-1) }), 'invalid_argument', 'options.mdr_multipliers[0]');
    expectEngineError(() => projectLoans({ balance: 1, rate: 0.05, remainingTerm: 10 } as unknown as LoanArrays, ok), 'invalid_argument', 'loans');
    expectEngineError(() => mergeProjectionTotals([]), 'invalid_argument', 'parts');
  });
});
