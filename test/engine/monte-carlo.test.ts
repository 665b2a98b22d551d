import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createRandom, percentile, preparePool, projectPool, runMonteCarlo, type ProjectionAssumptions } from '../../src/engine/index.js';
import { expectEngineError } from '../support/engine.js';

const pool = { balance: 10_000_000, wac: 0.065, netRate: 0.06, originalTerm: 360, remainingTerm: 300, age: 60 };
const assumptions: ProjectionAssumptions = {
  prepayment: { model: 'psa', speed: 150 },
  default: { model: 'sda', speed: 200 },
  severity: 0.35,
  monthsToLiquidation: 12,
};

describe('seeded PRNG', () => {
  it('the same seed gives the same sequence, another seed another, all in (0, 1)', () => {
    const a = createRandom(42);
    const b = createRandom(42);
    const c = createRandom(43);
    const xs = Array.from({ length: 1000 }, () => a());
    expect(Array.from({ length: 1000 }, () => b())).toEqual(xs);
    expect(Array.from({ length: 1000 }, () => c())).not.toEqual(xs);
    for (const x of xs) {
      expect(x).toBeGreaterThan(0);
      expect(x).toBeLessThan(1);
    }
  });

  it('seeds that differ only above 32 bits give different sequences', () => {
    expect(createRandom(1)()).not.toBe(createRandom(1 + 2 ** 32)());
  });

  it('is uniform enough: mean and variance of 200,000 draws within 4 standard errors of 1/2 and 1/12', () => {
    const next = createRandom(7);
    const n = 200_000;
    let s = 0;
    let s2 = 0;
    for (let k = 0; k < n; k++) {
      const u = next();
      s += u;
      s2 += u * u;
    }
    const mean = s / n;
    const variance = s2 / n - mean * mean;
    expect(Math.abs(mean - 0.5)).toBeLessThan(4 * Math.sqrt(1 / 12 / n));
    expect(Math.abs(variance - 1 / 12)).toBeLessThan(4 * Math.sqrt(1 / 180 / n));
  });
});

describe('percentile (linear between order statistics, type 7)', () => {
  it('matches numpy on small samples', () => {
    const xs = Float64Array.of(1, 2, 3, 4);
    expect(percentile(xs, 0.5)).toBeCloseTo(2.5, 15);
    expect(percentile(xs, 0.05)).toBeCloseTo(1.15, 15);
    expect(percentile(xs, 0.95)).toBeCloseTo(3.85, 15);
    expect(percentile(Float64Array.of(9), 0.3)).toBe(9);
    expect(percentile(new Float64Array(0), 0.5)).toBeNaN();
  });
});

describe('runMonteCarlo', () => {
  it('the same seed gives the same result, to the bit', () => {
    const a = runMonteCarlo(pool, assumptions, { paths: 40, seed: 2026 });
    const b = runMonteCarlo(pool, assumptions, { paths: 40, seed: 2026 });
    expect(Array.from(b.pathLoss)).toEqual(Array.from(a.pathLoss));
    expect(Array.from(b.pathYield)).toEqual(Array.from(a.pathYield));
    expect(Array.from(b.pathWalYears)).toEqual(Array.from(a.pathWalYears));
    expect(b.loss).toEqual(a.loss);
    expect(b.yield).toEqual(a.yield);
    expect(b.walYears).toEqual(a.walYears);
  });

  it('a different seed gives different paths', () => {
    const a = runMonteCarlo(pool, assumptions, { paths: 40, seed: 1 });
    const b = runMonteCarlo(pool, assumptions, { paths: 40, seed: 2 });
    expect(Array.from(b.pathLoss)).not.toEqual(Array.from(a.pathLoss));
    expect(Array.from(b.pathWalYears)).not.toEqual(Array.from(a.pathWalYears));
    for (let k = 0; k < 40; k++) expect(b.pathLoss[k]).not.toBe(a.pathLoss[k]);
  });

  it('with zero volatility every path is the base projection', () => {
    const base = projectPool(pool, assumptions, { pricing: { price: 98 } }).summary;
    const mc = runMonteCarlo(pool, assumptions, { paths: 5, seed: 9, prepaymentVolatility: 0, defaultVolatility: 0, price: 98 });
    for (const d of [mc.loss, mc.walYears, mc.yield]) expect(d.p5).toBe(d.p95);
    expect(mc.loss.p50).toBe(base.totalLoss);
    expect(mc.walYears.p50).toBe(base.walYears);
    expect(mc.yield.p50).toBe(base.yield);
  });

  it('reports p5 ≤ p50 ≤ p95 of loss, yield and WAL, within the path minimum and maximum', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 31 }), fc.integer({ min: 1, max: 25 }), (seed, paths) => {
        const mc = runMonteCarlo(pool, assumptions, { paths, seed, horizonMonths: 120 });
        expect(mc.paths).toBe(paths);
        expect(mc.pathLoss.length).toBe(paths);
        for (const d of [mc.loss, mc.lossRate, mc.yield, mc.walYears]) {
          expect(d.min).toBeLessThanOrEqual(d.p5);
          expect(d.p5).toBeLessThanOrEqual(d.p50);
          expect(d.p50).toBeLessThanOrEqual(d.p95);
          expect(d.p95).toBeLessThanOrEqual(d.max);
        }
        expect(mc.loss.mean).toBeCloseTo(mc.lossRate.mean * pool.balance, 3);
      }),
      { numRuns: 15 },
    );
  });

  it('more default volatility spreads the losses wider; more prepayment volatility spreads the WAL wider', () => {
    const calm = runMonteCarlo(pool, assumptions, { paths: 200, seed: 5, prepaymentVolatility: 0.05, defaultVolatility: 0.05 });
    const wild = runMonteCarlo(pool, assumptions, { paths: 200, seed: 5, prepaymentVolatility: 0.6, defaultVolatility: 1 });
    expect(wild.loss.p95 - wild.loss.p5).toBeGreaterThan(2 * (calm.loss.p95 - calm.loss.p5));
    expect(wild.walYears.p95 - wild.walYears.p5).toBeGreaterThan(2 * (calm.walYears.p95 - calm.walYears.p5));
  });

  it('the multipliers have mean 1: the mean loss of many paths is near the base loss', () => {
    const base = projectPool(pool, assumptions).summary.totalLoss;
    const mc = runMonteCarlo(pool, assumptions, { paths: 400, seed: 11, prepaymentVolatility: 0.1, defaultVolatility: 0.2 });
    expect(Math.abs(mc.loss.mean / base - 1)).toBeLessThan(0.05);
  });

  it('accepts a prepared heterogeneous pool and labels its basis and model', () => {
    const loans = preparePool({
      balance: Float64Array.of(100_000, 250_000, 80_000),
      rate: Float64Array.of(0.05, 0.07, 0.04),
      remainingTerm: Float64Array.of(360, 240, 120),
      age: Float64Array.of(0, 60, 100),
    });
    const mc = runMonteCarlo(loans, assumptions, { paths: 10, seed: 3 });
    expect(mc.basis).toBe('analytics_float64');
    expect(mc.model).toBe('lognormal_ar1_multipliers');
    expect(mc.months).toBe(360);
    expect(mc.yieldPaths).toBe(10);
    expect(mc.parameters).toEqual({ prepaymentVolatility: 0.25, defaultVolatility: 0.5, persistence: 0.9, correlation: 0 });
  });

  it('refuses bad options with the field at fault', () => {
    expectEngineError(() => runMonteCarlo(pool, assumptions, { paths: 0, seed: 1 }), 'invalid_argument', 'options.paths');
    expectEngineError(() => runMonteCarlo(pool, assumptions, { paths: 1, seed: 1.5 }), 'invalid_argument', 'options.seed');
    expectEngineError(() => runMonteCarlo(pool, assumptions, { paths: 1, seed: 1, persistence: 1 }), 'invalid_argument', 'options.persistence');
    expectEngineError(() => runMonteCarlo(pool, assumptions, { paths: 1, seed: 1, correlation: -2 }), 'invalid_argument', 'options.correlation');
    expectEngineError(() => runMonteCarlo(pool, assumptions, { paths: 1, seed: 1, price: -5 }), 'invalid_argument', 'options.price');
    expectEngineError(() => runMonteCarlo({ ...pool, wac: -1 }, assumptions, { paths: 1, seed: 1 }), 'invalid_rate', 'pool.wac');
  });
});
