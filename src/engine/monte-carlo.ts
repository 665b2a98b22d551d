import { EngineError } from './errors.js';
import {
  PROJECTION_BASIS,
  type NormalizedAssumptions,
  type PoolInput,
  type PreparedPool,
  type ProjectionAssumptions,
  TOTALS_WIDTH,
  asPreparedPool,
  normalizeAssumptions,
  projectionFromTotals,
  projectionMonths,
  projectionTotals,
} from './projection.js';

/**
 * Monte Carlo around a base projection. Seeded and deterministic: the same seed, pool,
 * assumptions and options give the same numbers on every machine (xoshiro128** from a
 * splitmix32-expanded seed, Box–Muller normals; no Math.random).
 *
 * The model — lognormal multipliers on the base SMM and MDR, driven by two mean-reverting
 * factors in calendar (projection) time:
 *
 *   x_t = φ x_{t−1} + √(1 − φ²) ε_t,   x_0 ~ N(0, 1)      (stationary AR(1), unit variance)
 *   ε^d_t = ρ ε^p_t + √(1 − ρ²) η_t                      (correlated prepayment/default shocks)
 *   SMM_t = min(1, SMM_base(MONTH) × exp(σ_p x^p_t − σ_p²/2))
 *   MDR_t = min(1, MDR_base(MONTH) × exp(σ_d x^d_t − σ_d²/2))
 *
 * so each multiplier has mean 1 and log-volatility σ at every month, and φ sets how long a
 * shock to speeds lasts (φ = 0.9: a half-life of about 6.6 months). The whole pool shares
 * one path — the factors are systematic (rates, house prices), not loan-level noise.
 *
 * Each path is a full projection of the pool under its multipliers; loss, WAL and the yield
 * at the given price are collected per path, and the percentiles are the linear
 * interpolation between order statistics (p = (n − 1) × q; Hyndman–Fan type 7, numpy's default).
 */

export interface MonteCarloOptions {
  /** Number of paths (1 … 1,000,000). */
  readonly paths: number;
  /** Any integer; the same seed gives the same result. */
  readonly seed: number;
  /** σ_p, log-volatility of the SMM multiplier. Default 0.25. */
  readonly prepaymentVolatility?: number | undefined;
  /** σ_d, log-volatility of the MDR multiplier. Default 0.5. */
  readonly defaultVolatility?: number | undefined;
  /** φ, month-to-month persistence of both factors, in [0, 1). Default 0.9. */
  readonly persistence?: number | undefined;
  /** ρ, correlation of the prepayment and default shocks, in [−1, 1]. Default 0. */
  readonly correlation?: number | undefined;
  /** Price per 100 of the starting balance for the yields. Default 100 (par). */
  readonly price?: number | undefined;
  /** Actual delay days (SF E.2) for yield and WAL. Default 0. */
  readonly delayDays?: number | undefined;
  readonly horizonMonths?: number | undefined;
}

export interface Distribution {
  readonly mean: number;
  readonly p5: number;
  readonly p50: number;
  readonly p95: number;
  readonly min: number;
  readonly max: number;
}

export interface MonteCarloResult {
  readonly basis: typeof PROJECTION_BASIS;
  readonly model: 'lognormal_ar1_multipliers';
  readonly paths: number;
  readonly seed: number;
  readonly months: number;
  readonly price: number;
  readonly parameters: {
    readonly prepaymentVolatility: number;
    readonly defaultVolatility: number;
    readonly persistence: number;
    readonly correlation: number;
  };
  /** Total principal loss per path, in currency units. */
  readonly loss: Distribution;
  /** Total loss ÷ starting balance. */
  readonly lossRate: Distribution;
  /** Bond-equivalent yield at `price` (paths without a yield are left out; see yieldPaths). */
  readonly yield: Distribution;
  readonly walYears: Distribution;
  /** Paths whose yield could be solved. */
  readonly yieldPaths: number;
  readonly pathLoss: Float64Array;
  readonly pathYield: Float64Array;
  readonly pathWalYears: Float64Array;
}

// ---------------------------------------------------------------------------
// Seeded PRNG

/** xoshiro128** (Blackman & Vigna), state from splitmix32 of the seed. Returns uniforms in (0, 1). */
export function createRandom(seed: number): () => number {
  if (!Number.isSafeInteger(seed)) throw new EngineError('invalid_argument', 'seed must be an integer', 'seed');
  // Fold the safe integer into 32 bits without losing the high part.
  let s = (seed >>> 0) ^ Math.imul(Math.floor(seed / 4294967296) | 0, 0x9e3779b9);
  const splitmix32 = (): number => {
    s = (s + 0x9e3779b9) | 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
  let a = splitmix32();
  let b = splitmix32();
  let c = splitmix32();
  let d = splitmix32();
  if ((a | b | c | d) === 0) a = 1;
  return (): number => {
    const result = Math.imul(rotl(Math.imul(b, 5), 7), 9) >>> 0;
    const t = b << 9;
    c ^= a;
    d ^= b;
    b ^= c;
    a ^= d;
    c ^= t;
    d = rotl(d, 11);
    return (result + 0.5) / 4294967296;
  };
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** Standard normals by Box–Muller, both of each pair used. */
function createNormal(uniform: () => number): () => number {
  let spare = NaN;
  return (): number => {
    if (!Number.isNaN(spare)) {
      const value = spare;
      spare = NaN;
      return value;
    }
    const radius = Math.sqrt(-2 * Math.log(uniform()));
    const angle = 2 * Math.PI * uniform();
    spare = radius * Math.sin(angle);
    return radius * Math.cos(angle);
  };
}

// ---------------------------------------------------------------------------

function parameter(value: unknown, field: string, fallback: number, min: number, max: number, maxInclusive = true): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || (maxInclusive ? value > max : value >= max)) {
    throw new EngineError('invalid_argument', `${field} must be a number from ${min} to ${max}${maxInclusive ? '' : ' (exclusive)'}`, field);
  }
  return value;
}

/** Type-7 percentile of sorted values. */
export function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN;
  const position = (sorted.length - 1) * q;
  const lower = Math.floor(position);
  const upper = Math.min(lower + 1, sorted.length - 1);
  const low = sorted[lower] as number;
  return low + ((sorted[upper] as number) - low) * (position - lower);
}

function distribution(values: Float64Array): Distribution {
  const sorted = Float64Array.from(values).sort();
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    mean: sorted.length > 0 ? sum / sorted.length : NaN,
    p5: percentile(sorted, 0.05),
    p50: percentile(sorted, 0.5),
    p95: percentile(sorted, 0.95),
    min: sorted.length > 0 ? (sorted[0] as number) : NaN,
    max: sorted.length > 0 ? (sorted[sorted.length - 1] as number) : NaN,
  };
}

/**
 * Runs `options.paths` seeded stochastic projections of the pool (a loan, a pool summary,
 * loan arrays or a prepared pool) around the base assumptions.
 */
export function runMonteCarlo(input: PoolInput | PreparedPool, assumptions: ProjectionAssumptions, options: MonteCarloOptions): MonteCarloResult {
  if (typeof options !== 'object' || options === null) throw new EngineError('invalid_argument', 'options must be an object', 'options');
  const paths = options.paths;
  if (!Number.isInteger(paths) || paths < 1 || paths > 1_000_000) throw new EngineError('invalid_argument', 'options.paths must be a whole number from 1 to 1,000,000', 'options.paths');
  if (!Number.isSafeInteger(options.seed)) throw new EngineError('invalid_argument', 'options.seed must be an integer', 'options.seed');
  const sigmaP = parameter(options.prepaymentVolatility, 'options.prepayment_volatility', 0.25, 0, 5);
  const sigmaD = parameter(options.defaultVolatility, 'options.default_volatility', 0.5, 0, 5);
  const phi = parameter(options.persistence, 'options.persistence', 0.9, 0, 1, false);
  const rho = parameter(options.correlation, 'options.correlation', 0, -1, 1);
  const price = options.price ?? 100;
  if (typeof price !== 'number' || !Number.isFinite(price) || price <= 0) throw new EngineError('invalid_argument', 'options.price must be positive (per 100 of balance)', 'options.price');

  const pool = asPreparedPool(input);
  const a: NormalizedAssumptions = normalizeAssumptions(assumptions);
  const months = projectionMonths(pool, a, options.horizonMonths);
  const pricing = { price, delayDays: options.delayDays };

  const normal = createNormal(createRandom(options.seed));
  const innovation = Math.sqrt(1 - phi * phi);
  const orthogonal = Math.sqrt(1 - rho * rho);
  const smmMultipliers = new Float64Array(months);
  const mdrMultipliers = new Float64Array(months);
  const data = new Float64Array(months * TOTALS_WIDTH);
  const pathLoss = new Float64Array(paths);
  const pathYield = new Float64Array(paths);
  const pathWal = new Float64Array(paths);

  for (let path = 0; path < paths; path++) {
    let xp = normal();
    let xd = rho * xp + orthogonal * normal();
    for (let t = 0; t < months; t++) {
      const ep = normal();
      const ed = rho * ep + orthogonal * normal();
      xp = phi * xp + innovation * ep;
      xd = phi * xd + innovation * ed;
      smmMultipliers[t] = Math.exp(sigmaP * xp - (sigmaP * sigmaP) / 2);
      mdrMultipliers[t] = Math.exp(sigmaD * xd - (sigmaD * sigmaD) / 2);
    }
    data.fill(0);
    const totals = projectionTotals(pool, a, { smmMultipliers, mdrMultipliers, into: { months, originalBalance: 0, loans: 0, data } });
    const { summary } = projectionFromTotals(totals, a, pricing);
    pathLoss[path] = summary.totalLoss;
    pathYield[path] = summary.yield ?? NaN;
    pathWal[path] = summary.walYears;
  }

  const solved = pathYield.filter((y) => !Number.isNaN(y));
  const lossRate = pool.originalBalance > 0 ? pathLoss.map((l) => l / pool.originalBalance) : new Float64Array(paths);
  return {
    basis: PROJECTION_BASIS,
    model: 'lognormal_ar1_multipliers',
    paths,
    seed: options.seed,
    months,
    price,
    parameters: { prepaymentVolatility: sigmaP, defaultVolatility: sigmaD, persistence: phi, correlation: rho },
    loss: distribution(pathLoss),
    lossRate: distribution(lossRate),
    yield: distribution(solved),
    walYears: distribution(pathWal),
    yieldPaths: solved.length,
    pathLoss,
    pathYield,
    pathWalYears: pathWal,
  };
}
