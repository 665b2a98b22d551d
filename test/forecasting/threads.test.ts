/**
 * The calculation thread pool: a loan list projected across threads equals the engine's
 * single-threaded projection (up to the order of floating-point additions), bad input is
 * the engine's error naming the loan, and progress reaches 1.
 */
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { EngineError, projectLoans, type LoanArrays } from '../../src/engine/index.js';
import { createCalculationPool } from '../../src/forecasting/threads.js';

const pool = createCalculationPool(2);
afterAll(async () => pool.close());

function loansOf(rows: readonly { balance: number; rate: number; term: number; age: number }[]): LoanArrays {
  return {
    balance: Float64Array.from(rows, (r) => r.balance),
    rate: Float64Array.from(rows, (r) => r.rate),
    remainingTerm: Float64Array.from(rows, (r) => r.term),
    age: Float64Array.from(rows, (r) => r.age),
  };
}

const close = (a: number, b: number) => Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b));

describe('calculation threads', () => {
  it('project a loan list exactly as the engine does on one thread (property)', async () => {
    const row = fc.record({ balance: fc.integer({ min: 0, max: 1_000_000 }), rate: fc.integer({ min: 0, max: 200 }).map((bp) => bp / 1000), term: fc.integer({ min: 1, max: 360 }), age: fc.integer({ min: 0, max: 120 }) });
    await fc.assert(
      fc.asyncProperty(fc.array(row, { minLength: 1, maxLength: 300 }), fc.integer({ min: 0, max: 400 }), fc.integer({ min: 0, max: 300 }), async (rows, psa, sda) => {
        const loans = loansOf(rows);
        const assumptions = { prepayment: { model: 'psa' as const, speed: psa }, default: { model: 'sda' as const, speed: sda }, severity: 0.35, monthsToLiquidation: 6 };
        const fractions: number[] = [];
        const threaded = await pool.projectLoans(loans, assumptions, {}, (f) => fractions.push(f));
        const single = projectLoans(loans, assumptions);
        expect(threaded.months).toBe(single.months);
        expect(fractions.at(-1)).toBe(1);
        for (const key of Object.keys(single.columns) as (keyof typeof single.columns)[]) {
          single.columns[key].forEach((v, m) => expect(close(threaded.columns[key][m] as number, v), `${key}[${m}]`).toBe(true));
        }
        expect(close(threaded.summary.totalPrincipal, single.summary.totalPrincipal)).toBe(true);
      }),
      { numRuns: 25 },
    );
  });

  it('refuses a bad loan with the engine error naming it, before any thread runs', async () => {
    const loans = loansOf([{ balance: 1000, rate: 0.05, term: 12, age: 0 }, { balance: 1000, rate: 0.05, term: 0, age: 0 }]);
    const error = await pool.projectLoans(loans, { prepayment: { model: 'cpr', rate: 0.1 } }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(EngineError);
    expect((error as EngineError).field).toMatch(/remaining_term/);
  });
});
