/**
 * Forecasting: the API's shapes for loans, pools and assumptions (zod, shared by the
 * routes and the scenario store), their mapping onto the engine's projection
 * (src/engine/projection.ts), and the answer's shape. Projections are analytics on
 * Float64 — amounts are JSON numbers and every answer says `basis: "analytics_float64"`;
 * nothing here is money of record.
 */
import { z } from 'zod';
import {
  PROJECTION_COLUMNS,
  type LoanArrays,
  type MonteCarloResult,
  type PoolProjection,
  type PoolSummary,
  type ProjectionAssumptions,
  type ProjectionSummary,
} from '../engine/index.js';
import { defineProblems } from '../platform/errors.js';

export const ForecastProblem = defineProblems({
  scenario_not_found: { status: 404, title: 'Scenario not found', description: 'No saved scenario has this id.' },
  scenario_name_taken: { status: 409, title: 'Scenario name taken', description: 'Another scenario has this name (names are unique, ignoring case).' },
  scenario_version_conflict: {
    status: 412,
    title: 'Scenario changed meanwhile',
    description: 'The If-Match version is not the scenario\'s current version; read it again and retry.',
  },
  forecast_not_found: { status: 404, title: 'Forecast not found', description: 'No forecast has this id, or it is not yours to see.' },
  empty_book: { status: 422, title: 'Nothing to project', description: 'The loan book has no active monthly loans in this currency.' },
  book_unavailable: { status: 503, title: 'Loan book unavailable', description: 'This process has no loan book wired in (servicing) to project.' },
  assumptions_required: { status: 400, title: 'Assumptions required', description: 'Give `assumptions` or a `scenario_id`.' },
});

/** A JSON number or a numeric string; finite. */
const num = z
  .union([z.number(), z.string().max(40).regex(/^-?\d+(\.\d+)?$/, 'must be a decimal number')])
  .transform((v) => (typeof v === 'number' ? v : Number(v)))
  .refine((v) => Number.isFinite(v), 'must be a finite number');
const fraction = num.refine((v) => v >= 0 && v <= 1, 'must be a fraction from 0 to 1');
const amount = num.refine((v) => v >= 0 && v <= 1e15, 'must be from 0 to 10^15');
const months = (max: number) => z.number().int().min(0).max(max);
const speed = num.refine((v) => v >= 0 && v <= 10_000, 'must be a speed in percent, 0 to 10,000');

export const prepaymentSchema = z.discriminatedUnion('model', [
  z.strictObject({ model: z.literal('smm'), rate: fraction }),
  z.strictObject({ model: z.literal('cpr'), rate: fraction }),
  z.strictObject({ model: z.literal('psa'), speed }),
]);
export const defaultSchema = z.discriminatedUnion('model', [
  z.strictObject({ model: z.literal('mdr'), rate: fraction }),
  z.strictObject({ model: z.literal('cdr'), rate: fraction }),
  z.strictObject({ model: z.literal('sda'), speed }),
]);

export const assumptionsSchema = z
  .strictObject({
    prepayment: prepaymentSchema.describe('SMM or CPR as a fraction (`rate`), or PSA as a speed in percent (`speed`)'),
    default: defaultSchema.nullable().default(null).describe('MDR or CDR as a fraction, or SDA as a speed in percent; null: no defaults'),
    severity: fraction.default(0).describe('loss severity: fraction of the defaulted balance lost at liquidation'),
    months_to_liquidation: months(360).default(0).describe('months from default to liquidation (recovery lag)'),
    servicer_advances: z.boolean().default(true).describe('the servicer advances principal and interest on defaulted loans until liquidation'),
    default_stop_months: months(360).optional().describe('no new defaults in the last N months before maturity; default months_to_liquidation'),
    servicing_fee: fraction.optional().describe('annual servicing fee; the net rate is the gross rate minus it where no net rate is given'),
  })
  .meta({ id: 'ForecastAssumptions' });
export type AssumptionsBody = z.infer<typeof assumptionsSchema>;

export const poolSchema = z
  .strictObject({
    balance: amount,
    wac: fraction.describe('gross weighted-average coupon, annual fraction'),
    net_rate: fraction.optional(),
    original_term: months(1200).optional(),
    remaining_term: months(1200).refine((v) => v >= 1, 'must be at least 1'),
    age: months(1200).optional(),
  })
  .meta({ id: 'ForecastPool' });

export const loanSchema = z.strictObject({
  balance: amount,
  annual_rate: fraction,
  net_rate: fraction.optional(),
  remaining_term: months(1200).refine((v) => v >= 1, 'must be at least 1'),
  age: months(1200).default(0),
});

export function engineAssumptions(a: AssumptionsBody): ProjectionAssumptions {
  return {
    prepayment: a.prepayment,
    default: a.default,
    severity: a.severity,
    monthsToLiquidation: a.months_to_liquidation,
    servicerAdvances: a.servicer_advances,
    defaultStopMonths: a.default_stop_months,
    servicingFee: a.servicing_fee ?? null,
  };
}

export function enginePool(p: z.infer<typeof poolSchema>): PoolSummary {
  return { balance: p.balance, wac: p.wac, netRate: p.net_rate, originalTerm: p.original_term, remainingTerm: p.remaining_term, age: p.age };
}

export type LoanBody = z.infer<typeof loanSchema>;

/** A loan list as the engine's struct of arrays. */
export function loanArrays(loans: readonly LoanBody[]): LoanArrays {
  const n = loans.length;
  // Shared memory, so the calculation threads (threads.ts) read slices without a copy.
  const column = () => new Float64Array(new SharedArrayBuffer(n * Float64Array.BYTES_PER_ELEMENT));
  const balance = column();
  const rate = column();
  const remainingTerm = column();
  const age = column();
  const anyNet = loans.some((l) => l.net_rate !== undefined);
  const netRate = anyNet ? column() : undefined;
  loans.forEach((l, i) => {
    balance[i] = l.balance;
    rate[i] = l.annual_rate;
    remainingTerm[i] = l.remaining_term;
    age[i] = l.age;
    if (netRate) netRate[i] = l.net_rate ?? l.annual_rate;
  });
  return { balance, rate, remainingTerm, age, ...(netRate ? { netRate } : {}) };
}

export type PeriodRow = Record<string, number>;

/** The projection's columns as rows, with the API's column names. */
export function periodRows(p: PoolProjection): PeriodRow[] {
  const rows: PeriodRow[] = [];
  for (let m = 0; m < p.months; m++) {
    const row: PeriodRow = {};
    for (const [key, name] of PROJECTION_COLUMNS) row[name] = p.columns[key][m] as number;
    rows.push(row);
  }
  return rows;
}

export interface SummaryView {
  wal_years: number;
  total_principal: number;
  total_interest: number;
  total_loss: number;
  total_defaults: number;
  cumulative_default_rate: number;
  ending_balance: number;
  price: number | null;
  yield: number | null;
  modified_duration: number | null;
  convexity: number | null;
  discount_rate: number | null;
  npv: number | null;
}

export function summaryView(s: ProjectionSummary): SummaryView {
  return {
    wal_years: s.walYears,
    total_principal: s.totalPrincipal,
    total_interest: s.totalInterest,
    total_loss: s.totalLoss,
    total_defaults: s.totalDefaults,
    cumulative_default_rate: s.cumulativeDefaultRate,
    ending_balance: s.endingBalance,
    price: s.price,
    yield: s.yield,
    modified_duration: s.modifiedDuration,
    convexity: s.convexity,
    discount_rate: s.discountRate,
    npv: s.npv,
  };
}

export function monteCarloView(r: MonteCarloResult) {
  const d = (x: MonteCarloResult['loss']) => ({ mean: x.mean, p5: x.p5, p50: x.p50, p95: x.p95, min: x.min, max: x.max });
  return {
    model: r.model,
    simulations: r.paths,
    seed: r.seed,
    parameters: { prepayment_volatility: r.parameters.prepaymentVolatility, default_volatility: r.parameters.defaultVolatility, persistence: r.parameters.persistence, correlation: r.parameters.correlation },
    price: r.price,
    loss: d(r.loss),
    loss_rate: d(r.lossRate),
    yield: d(r.yield),
    wal_years: d(r.walYears),
    yield_paths: r.yieldPaths,
  };
}
