/**
 * The deterministic heterogeneous pool and the assumptions of bench/pool.ts, shared with its
 * worker threads. bench/reference/pool.c generates the same pool with the same integer hash
 * and the same double operations, so the two project identical loans.
 */
import type { LoanArrays, ProjectionAssumptions } from '../../src/engine/index.js';

export const BENCH_ASSUMPTIONS: ProjectionAssumptions = {
  prepayment: { model: 'psa', speed: 150 },
  default: { model: 'sda', speed: 100 },
  severity: 0.35,
  monthsToLiquidation: 12,
  servicerAdvances: true,
  defaultStopMonths: 12,
  servicingFee: 0.0025,
};

function hash32(value: number): number {
  let x = value >>> 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

function uniform(loan: number, field: number): number {
  return hash32((Math.imul(loan, 4) + field + 0x9e3779b9) >>> 0) / 4294967296;
}

/** Balances 50,000.00–800,000.00, gross rates 3.00–8.99 %, 25 % 180-month and 75 % 360-month loans of every age. */
export function generatePool(count: number, shared = false): LoanArrays {
  const make = (): Float64Array => (shared ? new Float64Array(new SharedArrayBuffer(count * 8)) : new Float64Array(count));
  const balance = make();
  const rate = make();
  const remainingTerm = make();
  const age = make();
  for (let i = 0; i < count; i++) {
    balance[i] = 50000 + Math.floor(uniform(i, 0) * 75000000) / 100;
    rate[i] = (300 + Math.floor(uniform(i, 1) * 600)) / 10000;
    const original = uniform(i, 2) < 0.25 ? 180 : 360;
    const term = 1 + Math.floor(uniform(i, 3) * original);
    remainingTerm[i] = term;
    age[i] = original - term;
  }
  return { balance, rate, remainingTerm, age };
}

export interface WorkerRequest {
  readonly id: number;
  readonly pool: LoanArrays;
  readonly from: number;
  readonly to: number;
  readonly months: number;
}

export interface WorkerReply {
  readonly id: number;
  readonly months: number;
  readonly originalBalance: number;
  readonly loans: number;
  readonly data: Float64Array;
  readonly seconds: number;
}
