import { EngineError } from './errors.js';

/**
 * Cash-flow projection of a mortgage or loan pool by the SIFMA (The Bond Market
 * Association) Uniform Practices, Chapter SF "Standard Formulas for the Analysis of
 * Mortgage-Backed Securities and Other Related Securities" (02/01/99):
 *
 *   B.1  level-payment amortization through the amortized-balance ratio
 *        BAL = (1 − (1 + C/1200)^−M) / (1 − (1 + C/1200)^−M0) at the gross coupon C;
 *        interest passed through at the net coupon, the difference being the servicing fee.
 *   B.2  prepayment rates as SMM, CPR (1 − SMM)^12 = 1 − CPR, or PSA by loan age:
 *        CPR = min(PSA/100 × 0.2 % × max(1, min(MONTH, 30)), 100 %).
 *   C.3  the default cash-flow formulas, one loan (or one pool summary) at a time:
 *        NEW DEF(i)  = PERF BAL(i−1) × MDR(i)                        (before amortization)
 *        VOL PREPAY  = PERF BAL(i−1) × [SCH AM(i)/SCH AM(i−1)] × SMM(i) (after amortization)
 *        ACT AM      = (PERF BAL(i−1) − NEW DEF(i)) × [1 − SCH AM(i)/SCH AM(i−1)]
 *        EXP AM      = (PERF BAL(i−1) + FCL(i−1) − ADB(i)) × [1 − …]
 *        AM DEF      = (NEW DEF(i) + FCL(i−1) − ADB(i)) × [1 − …] if P&I are advanced, else 0
 *        FCL(i)      = NEW DEF(i) + FCL(i−1) − ADB(i) − AM DEF(i)
 *        ADB(i)      = NEW DEF(i−L) × SCH AM(i−1)/SCH AM(i−1−L) if advanced, else NEW DEF(i−L)
 *        PRIN LOSS   = min(NEW DEF(i−L) × severity, ADB(i));  PRIN RECOV = ADB(i) − PRIN LOSS
 *        EXP INT     = (PERF BAL(i−1) + FCL(i−1)) × net rate;  LOST INT = (NEW DEF(i) + FCL(i−1)) × net rate
 *        PERF BAL(i) = PERF BAL(i−1) − NEW DEF(i) − VOL PREPAY(i) − ACT AM(i)
 *        with ACT AM + NEW DEF + VOL PREPAY ≤ PERF BAL(i−1) (C.2.e: the prepayment is capped),
 *        and MDR = 0 in the last n months before the scheduled maturity (C.3 note j).
 *   C.4  the Standard Default Assumption: 0.02 % CDR × MONTH up to 0.60 % at month 30, flat
 *        to month 60, falling by 0.0095 % a month to 0.03 % at month 120, then flat; scaled by
 *        SDA/100; MDR = 1 − (1 − CDR)^(1/12).
 *   G.1  yield (semiannual bond-equivalent), average life, Macaulay and modified duration and
 *        cash-flow convexity, with cash flows at T_K = K/12 + delay/360 years after settlement
 *        on the first day of the first accrual month.
 *
 * Both the default and the prepayment of a month are fractions of the prior month's performing
 * balance — the default before, the prepayment after, the month's scheduled amortization —
 * and the prepayment is the amount cut when the two would exceed that balance.
 *
 * This is analytics on binary floats (Float64Array), not money of record: every result says so
 * with `basis: 'analytics_float64'`. Rates are annual fractions (0.095 = 9.5 %); PSA and SDA
 * speeds are percentages (150 = 150 % PSA); prices are per 100 of the starting balance.
 *
 * A pool is projected loan by loan (each with its own balance, rate, remaining term and age)
 * into one aggregate of 12 sums per month, so memory is O(loans) for the input and O(months)
 * for the result. The per-month SMM and MDR depend only on the loan's age (MONTH) and the
 * assumptions; they are computed once per projection as vectors by MONTH.
 */

export const PROJECTION_BASIS = 'analytics_float64';

export type PrepaymentAssumption =
  | { readonly model: 'smm'; readonly rate: number }
  | { readonly model: 'cpr'; readonly rate: number }
  | { readonly model: 'psa'; readonly speed: number };

export type DefaultAssumption =
  | { readonly model: 'mdr'; readonly rate: number }
  | { readonly model: 'cdr'; readonly rate: number }
  | { readonly model: 'sda'; readonly speed: number };

export interface ProjectionAssumptions {
  readonly prepayment: PrepaymentAssumption;
  /** No defaults when absent (or null). */
  readonly default?: DefaultAssumption | null | undefined;
  /** Loss severity, a fraction of the balance at default (0 … 1). Default 0. */
  readonly severity?: number | undefined;
  /** Months from default to liquidation (SF C.2.f); 0 liquidates in the month of default. Default 0. */
  readonly monthsToLiquidation?: number | undefined;
  /** Whether the servicer advances principal and interest on defaulted loans until liquidation. Default true. */
  readonly servicerAdvances?: boolean | undefined;
  /** No new defaults in the last N months before each loan's scheduled maturity. Default monthsToLiquidation (SF C.3 note j). */
  readonly defaultStopMonths?: number | undefined;
  /**
   * Annual servicing fee (0.005 = 50 bp): the net rate is the gross rate minus this fee.
   * Used only where the input gives no net rate; giving both is an error.
   */
  readonly servicingFee?: number | null | undefined;
}

/** The assumptions with every default filled in. */
export interface NormalizedAssumptions {
  readonly prepayment: PrepaymentAssumption;
  readonly default: DefaultAssumption | null;
  readonly severity: number;
  readonly monthsToLiquidation: number;
  readonly servicerAdvances: boolean;
  readonly defaultStopMonths: number;
  readonly servicingFee: number | null;
}

/** One loan (or one representative loan). */
export interface LoanTerms {
  readonly balance: number;
  /** Gross annual rate. */
  readonly rate: number;
  /** Net annual rate passed through; default rate − assumptions.servicingFee. */
  readonly netRate?: number | undefined;
  /** Whole months of scheduled payments left (≥ 1). */
  readonly remainingTerm: number;
  /** Whole months since origination. Default 0. */
  readonly age?: number | undefined;
}

/** A pool given as one weighted-average loan (WAC, WAM, WALA). */
export interface PoolSummary {
  readonly balance: number;
  /** Gross weighted-average coupon. */
  readonly wac: number;
  readonly netRate?: number | undefined;
  readonly originalTerm?: number | undefined;
  readonly remainingTerm: number;
  /** Default originalTerm − remainingTerm (one of the two is required). */
  readonly age?: number | undefined;
}

/** A heterogeneous pool as struct-of-arrays, one element per loan, all of one length. */
export interface LoanArrays {
  readonly balance: Float64Array;
  readonly rate: Float64Array;
  readonly netRate?: Float64Array | undefined;
  readonly remainingTerm: Float64Array;
  readonly age: Float64Array;
}

export type PoolInput = LoanTerms | PoolSummary | LoanArrays;

/** A validated pool, ready to be projected many times (scenarios, Monte Carlo). */
export interface PreparedPool {
  readonly count: number;
  readonly balance: Float64Array;
  readonly rate: Float64Array;
  readonly netRate: Float64Array | null;
  readonly remainingTerm: Float64Array;
  readonly age: Float64Array;
  readonly originalBalance: number;
  readonly maxRemainingTerm: number;
  readonly maxAge: number;
}

export interface PricingInput {
  /** Price per 100 of the starting balance; the result carries the yield at this price. */
  readonly price?: number | undefined;
  /** Bond-equivalent yield (annual fraction); the result carries the price at this yield. Give price or yield, not both. */
  readonly yield?: number | undefined;
  /** Bond-equivalent annual rate for the NPV. */
  readonly discountRate?: number | undefined;
  /** Actual delay days between the homeowner's due date and the investor's payment date (SF E.2). Default 0. */
  readonly delayDays?: number | undefined;
}

export interface ProjectionOptions {
  /** Project at most this many months; balances left at the horizon stay in the last row. Default: until every loan is paid or liquidated. */
  readonly horizonMonths?: number | undefined;
  readonly pricing?: PricingInput | undefined;
  /** Multipliers on every loan's SMM by projection month (index 0 = month 1); the product is capped at 1. */
  readonly smmMultipliers?: Float64Array | undefined;
  /** Multipliers on every loan's MDR by projection month; the product is capped at 1. */
  readonly mdrMultipliers?: Float64Array | undefined;
}

/** Per-month columns, each of length `months` (index 0 = month 1). Amounts are in the input's currency units. */
export interface ProjectionColumns {
  readonly month: Float64Array;
  /** Performing + in foreclosure at the start of the month. */
  readonly beginningBalance: Float64Array;
  /** Gross P&I due: expected amortization + gross interest. */
  readonly scheduledPayment: Float64Array;
  /** Performing balance at the end of the month. */
  readonly performingBalance: Float64Array;
  readonly newDefaults: Float64Array;
  /** Loans in foreclosure at the end of the month. */
  readonly foreclosureBalance: Float64Array;
  readonly expectedAmortization: Float64Array;
  readonly voluntaryPrepayments: Float64Array;
  readonly amortizationFromDefaults: Float64Array;
  readonly actualAmortization: Float64Array;
  /** Interest at the gross rate on the balance that expected interest is computed on. */
  readonly grossInterest: Float64Array;
  readonly servicingFee: Float64Array;
  /** At the net rate. */
  readonly expectedInterest: Float64Array;
  readonly interestLost: Float64Array;
  readonly actualInterest: Float64Array;
  readonly principalRecovery: Float64Array;
  readonly principalLoss: Float64Array;
  /** Principal passed to investors: expected (advanced) or actual amortization, + prepayments + recoveries. */
  readonly totalPrincipal: Float64Array;
  /** Interest passed to investors: expected interest when P&I are advanced, else actual interest. */
  readonly totalInterest: Float64Array;
  readonly cashFlow: Float64Array;
  /** The pool's effective SMM: voluntary prepayments ÷ the amortized performing balance they were taken from. */
  readonly smm: Float64Array;
  /** The pool's effective MDR: new defaults ÷ the prior month's performing balance. */
  readonly mdr: Float64Array;
}

export type ProjectionColumnName = keyof ProjectionColumns;

/** Column names as the HTTP API spells them. */
export const PROJECTION_COLUMNS: readonly (readonly [ProjectionColumnName, string])[] = [
  ['month', 'month'],
  ['beginningBalance', 'beginning_balance'],
  ['scheduledPayment', 'scheduled_payment'],
  ['performingBalance', 'performing_balance'],
  ['newDefaults', 'new_defaults'],
  ['foreclosureBalance', 'foreclosure_balance'],
  ['expectedAmortization', 'expected_amortization'],
  ['voluntaryPrepayments', 'voluntary_prepayments'],
  ['amortizationFromDefaults', 'amortization_from_defaults'],
  ['actualAmortization', 'actual_amortization'],
  ['grossInterest', 'gross_interest'],
  ['servicingFee', 'servicing_fee'],
  ['expectedInterest', 'expected_interest'],
  ['interestLost', 'interest_lost'],
  ['actualInterest', 'actual_interest'],
  ['principalRecovery', 'principal_recovery'],
  ['principalLoss', 'principal_loss'],
  ['totalPrincipal', 'total_principal'],
  ['totalInterest', 'total_interest'],
  ['cashFlow', 'cash_flow'],
  ['smm', 'smm'],
  ['mdr', 'mdr'],
];

export interface ProjectionSummary {
  /** Principal-weighted average time to receipt, in years (delay included). */
  readonly walYears: number;
  readonly totalPrincipal: number;
  readonly totalInterest: number;
  readonly totalLoss: number;
  readonly totalDefaults: number;
  /** Σ new defaults ÷ starting balance. */
  readonly cumulativeDefaultRate: number;
  /** Balance left at the horizon (0 when projected to the end). */
  readonly endingBalance: number;
  /** Per 100 of the starting balance; given, or from the yield. */
  readonly price: number | null;
  /** Semiannual bond-equivalent yield; given, or solved from the price. */
  readonly yield: number | null;
  /** The same yield compounded monthly (SF G.1.b). */
  readonly mortgageYield: number | null;
  readonly macaulayDuration: number | null;
  readonly modifiedDuration: number | null;
  /** Cash-flow convexity in years² (SF G.1.f). */
  readonly convexity: number | null;
  readonly discountRate: number | null;
  /** Present value of the cash flows at the discount rate, in currency units. */
  readonly npv: number | null;
}

export interface PoolProjection {
  readonly basis: typeof PROJECTION_BASIS;
  readonly months: number;
  readonly originalBalance: number;
  readonly loans: number;
  readonly assumptions: NormalizedAssumptions;
  readonly columns: ProjectionColumns;
  readonly summary: ProjectionSummary;
}

/**
 * The raw monthly sums a projection accumulates, months × TOTALS_WIDTH, row-major by month
 * (data[(month − 1) × TOTALS_WIDTH + column]). Totals of disjoint parts of a pool add up
 * (see {@link mergeProjectionTotals}), which is how a pool split across threads is combined.
 */
export interface ProjectionTotals {
  readonly months: number;
  readonly originalBalance: number;
  readonly loans: number;
  readonly data: Float64Array;
}

/** Column order of {@link ProjectionTotals.data}. */
export const TOTALS_LAYOUT = [
  'performing_balance',
  'foreclosure_balance',
  'new_defaults',
  /** (NEW DEF + FCL(i−1) − ADB) × (1 − SCH AM ratio): AM DEF when P&I are advanced, EXP AM − ACT AM always. */
  'defaulted_amortization',
  'voluntary_prepayments',
  'actual_amortization',
  'gross_interest',
  'expected_interest',
  'interest_lost',
  'principal_recovery',
  'principal_loss',
  /** Σ PERF BAL(i−1) × SCH AM(i)/SCH AM(i−1): the balance the SMM applies to. */
  'prepayment_base',
] as const;
export const TOTALS_WIDTH = TOTALS_LAYOUT.length;

/** Longest remaining term or age accepted (100 years). */
export const MAX_TERM_MONTHS = 1200;

// ---------------------------------------------------------------------------
// Rate conventions (SF B.2, C.4)

/** SMM from CPR: 1 − (1 − CPR)^(1/12). */
export function cprToSmm(cpr: number): number {
  return 1 - Math.pow(1 - cpr, 1 / 12);
}

/** CPR from SMM: 1 − (1 − SMM)^12. */
export function smmToCpr(smm: number): number {
  return 1 - Math.pow(1 - smm, 12);
}

/** MDR from CDR (the same conversion as SMM from CPR, SF C.4.g). */
export const cdrToMdr = cprToSmm;

/** The CPR of `speed` % PSA in MONTH `month` of the loans' life (MONTH = age + 1 in the first projected month). */
export function psaCpr(speed: number, month: number): number {
  return Math.min((speed / 100) * 0.002 * Math.max(1, Math.min(month, 30)), 1);
}

/** The annual default rate of `speed` % SDA in MONTH `month`. */
export function sdaCdr(speed: number, month: number): number {
  const m = Math.max(1, month);
  let base: number;
  if (m <= 30) base = 0.0002 * m;
  else if (m <= 60) base = 0.006;
  else if (m <= 120) base = 0.006 - 0.000095 * (m - 60);
  else base = 0.0003;
  return Math.min((speed / 100) * base, 1);
}

/**
 * The amortized loan balance as a fraction of par (SF B.1): a level-payment loan at gross
 * annual rate `rate` with `remainingTerm` of `originalTerm` months left.
 */
export function amortizedBalance(rate: number, remainingTerm: number, originalTerm: number): number {
  checkRate(rate, 'rate');
  checkMonths(originalTerm, 'original_term', 1);
  checkMonths(remainingTerm, 'remaining_term', 0);
  if (remainingTerm > originalTerm) throw new EngineError('invalid_argument', 'remaining_term must not exceed original_term', 'remaining_term');
  const c = rate / 12;
  if (c === 0) return remainingTerm / originalTerm;
  return (1 - Math.pow(1 + c, -remainingTerm)) / (1 - Math.pow(1 + c, -originalTerm));
}

// ---------------------------------------------------------------------------
// Validation

function finite(value: unknown, field: string, code: 'invalid_argument' | 'invalid_rate' | 'invalid_amount' = 'invalid_argument'): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) throw new EngineError(code, `${field} must be a finite number`, field);
  return value;
}

function checkFraction(value: unknown, field: string): number {
  const v = finite(value, field, 'invalid_rate');
  if (v < 0 || v > 1) throw new EngineError('invalid_rate', `${field} must be a fraction from 0 to 1`, field);
  return v;
}

function checkRate(value: unknown, field: string): number {
  const v = finite(value, field, 'invalid_rate');
  if (v < 0 || v > 1) throw new EngineError('invalid_rate', `${field} must be an annual rate from 0 to 1 (0.06 = 6 %)`, field);
  return v;
}

function checkMonths(value: unknown, field: string, min: number): number {
  const v = finite(value, field);
  if (!Number.isInteger(v) || v < min || v > MAX_TERM_MONTHS) {
    throw new EngineError('invalid_argument', `${field} must be a whole number of months from ${min} to ${MAX_TERM_MONTHS}`, field);
  }
  return v;
}

function checkSpeed(value: unknown, field: string): number {
  const v = finite(value, field);
  if (v < 0) throw new EngineError('invalid_argument', `${field} must be a speed in percent, 0 or more`, field);
  return v;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

/** Validates the assumptions and fills in the defaults; throws EngineError naming the field. */
export function normalizeAssumptions(assumptions: ProjectionAssumptions | NormalizedAssumptions): NormalizedAssumptions {
  if (!isObject(assumptions)) throw new EngineError('invalid_argument', 'assumptions must be an object', 'assumptions');
  const a = assumptions as unknown as Record<string, unknown>;
  const p = a.prepayment;
  if (!isObject(p)) throw new EngineError('invalid_argument', 'assumptions.prepayment must be { model, rate | speed }', 'assumptions.prepayment');
  let prepayment: PrepaymentAssumption;
  if (p.model === 'smm' || p.model === 'cpr') prepayment = { model: p.model, rate: checkFraction(p.rate, 'assumptions.prepayment.rate') };
  else if (p.model === 'psa') prepayment = { model: 'psa', speed: checkSpeed(p.speed, 'assumptions.prepayment.speed') };
  else throw new EngineError('invalid_argument', "assumptions.prepayment.model must be 'smm', 'cpr' or 'psa'", 'assumptions.prepayment.model');

  let defaults: DefaultAssumption | null = null;
  const d = a.default;
  if (d !== undefined && d !== null) {
    if (!isObject(d)) throw new EngineError('invalid_argument', 'assumptions.default must be { model, rate | speed }', 'assumptions.default');
    if (d.model === 'mdr' || d.model === 'cdr') defaults = { model: d.model, rate: checkFraction(d.rate, 'assumptions.default.rate') };
    else if (d.model === 'sda') defaults = { model: 'sda', speed: checkSpeed(d.speed, 'assumptions.default.speed') };
    else throw new EngineError('invalid_argument', "assumptions.default.model must be 'mdr', 'cdr' or 'sda'", 'assumptions.default.model');
  }
  const severity = a.severity === undefined ? 0 : checkFraction(a.severity, 'assumptions.severity');
  const monthsToLiquidation = a.monthsToLiquidation === undefined ? 0 : checkMonths(a.monthsToLiquidation, 'assumptions.months_to_liquidation', 0);
  if (a.servicerAdvances !== undefined && typeof a.servicerAdvances !== 'boolean') {
    throw new EngineError('invalid_argument', 'assumptions.servicer_advances must be true or false', 'assumptions.servicer_advances');
  }
  const servicerAdvances = a.servicerAdvances ?? true;
  const defaultStopMonths = a.defaultStopMonths === undefined ? monthsToLiquidation : checkMonths(a.defaultStopMonths, 'assumptions.default_stop_months', 0);
  const servicingFee = a.servicingFee === undefined || a.servicingFee === null ? null : checkRate(a.servicingFee, 'assumptions.servicing_fee');
  return Object.freeze({ prepayment, default: defaults, severity, monthsToLiquidation, servicerAdvances, defaultStopMonths, servicingFee });
}

function isLoanArrays(input: PoolInput): input is LoanArrays {
  return input.balance instanceof Float64Array;
}

function isPoolSummary(input: PoolInput): input is PoolSummary {
  return 'wac' in input;
}

function single(balance: number, rate: number, netRate: number | undefined, remainingTerm: number, age: number): PreparedPool {
  return {
    count: 1,
    balance: Float64Array.of(balance),
    rate: Float64Array.of(rate),
    netRate: netRate === undefined ? null : Float64Array.of(netRate),
    remainingTerm: Float64Array.of(remainingTerm),
    age: Float64Array.of(age),
    originalBalance: balance,
    maxRemainingTerm: remainingTerm,
    maxAge: age,
  };
}

function checkNet(net: unknown, gross: number, field: string): number {
  const v = checkRate(net, field);
  if (v > gross) throw new EngineError('invalid_rate', `${field} must not exceed the gross rate`, field);
  return v;
}

/**
 * Validates a loan, a pool summary or loan arrays once, so that it can be projected many
 * times. Loan arrays are used in place, not copied. Throws EngineError with the field path
 * (`loan.rate`, `pool.wac`, `loans.remaining_term[17]`).
 */
export function preparePool(input: PoolInput): PreparedPool {
  if (!isObject(input)) throw new EngineError('invalid_argument', 'the pool must be a loan, a pool summary or loan arrays', 'pool');
  if (isLoanArrays(input)) return prepareArrays(input);
  if (isPoolSummary(input)) {
    const balance = finite(input.balance, 'pool.balance', 'invalid_amount');
    if (balance < 0) throw new EngineError('invalid_amount', 'pool.balance must not be negative', 'pool.balance');
    const wac = checkRate(input.wac, 'pool.wac');
    const net = input.netRate === undefined ? undefined : checkNet(input.netRate, wac, 'pool.net_rate');
    const remaining = checkMonths(input.remainingTerm, 'pool.remaining_term', 1);
    let age: number;
    if (input.age !== undefined) age = checkMonths(input.age, 'pool.age', 0);
    else if (input.originalTerm !== undefined) {
      const original = checkMonths(input.originalTerm, 'pool.original_term', 1);
      if (original < remaining) throw new EngineError('invalid_argument', 'pool.original_term must not be less than pool.remaining_term', 'pool.original_term');
      age = original - remaining;
    } else throw new EngineError('invalid_argument', 'pool.age or pool.original_term is required', 'pool.age');
    if (input.originalTerm !== undefined) checkMonths(input.originalTerm, 'pool.original_term', 1);
    return single(balance, wac, net, remaining, age);
  }
  const loan = input as unknown as Record<string, unknown>;
  const balance = finite(loan.balance, 'loan.balance', 'invalid_amount');
  if (balance < 0) throw new EngineError('invalid_amount', 'loan.balance must not be negative', 'loan.balance');
  const rate = checkRate(loan.rate, 'loan.rate');
  const net = loan.netRate === undefined ? undefined : checkNet(loan.netRate, rate, 'loan.net_rate');
  const remaining = checkMonths(loan.remainingTerm, 'loan.remaining_term', 1);
  const age = loan.age === undefined ? 0 : checkMonths(loan.age, 'loan.age', 0);
  return single(balance, rate, net, remaining, age);
}

function prepareArrays(input: LoanArrays): PreparedPool {
  const { balance, rate, remainingTerm, age } = input;
  const netRate = input.netRate ?? null;
  const n = balance.length;
  const arrays: [string, unknown][] = [['rate', rate], ['remaining_term', remainingTerm], ['age', age]];
  if (netRate) arrays.push(['net_rate', netRate]);
  for (const [name, array] of arrays) {
    if (!(array instanceof Float64Array)) throw new EngineError('invalid_argument', `loans.${name} must be a Float64Array`, `loans.${name}`);
    if (array.length !== n) throw new EngineError('invalid_argument', `loans.${name} must have one element per loan (${n})`, `loans.${name}`);
  }
  let total = 0;
  let maxRemaining = 0;
  let maxAge = 0;
  for (let k = 0; k < n; k++) {
    const b = balance[k] as number;
    // One combined test per field keeps the scan cheap; the message is built only on failure.
    if (!(b >= 0 && b < Infinity)) throw new EngineError('invalid_amount', `loans.balance[${k}] must be a finite amount, 0 or more`, `loans.balance[${k}]`);
    const r = rate[k] as number;
    if (!(r >= 0 && r <= 1)) throw new EngineError('invalid_rate', `loans.rate[${k}] must be an annual rate from 0 to 1`, `loans.rate[${k}]`);
    if (netRate) {
      const nr = netRate[k] as number;
      if (!(nr >= 0 && nr <= r)) throw new EngineError('invalid_rate', `loans.net_rate[${k}] must be from 0 to the gross rate`, `loans.net_rate[${k}]`);
    }
    const m = remainingTerm[k] as number;
    if (!(m >= 1 && m <= MAX_TERM_MONTHS && Math.floor(m) === m)) {
      throw new EngineError('invalid_argument', `loans.remaining_term[${k}] must be a whole number of months from 1 to ${MAX_TERM_MONTHS}`, `loans.remaining_term[${k}]`);
    }
    const g = age[k] as number;
    if (!(g >= 0 && g <= MAX_TERM_MONTHS && Math.floor(g) === g)) {
      throw new EngineError('invalid_argument', `loans.age[${k}] must be a whole number of months from 0 to ${MAX_TERM_MONTHS}`, `loans.age[${k}]`);
    }
    total += b;
    if (m > maxRemaining) maxRemaining = m;
    if (g > maxAge) maxAge = g;
  }
  return { count: n, balance, rate, netRate, remainingTerm, age, originalBalance: total, maxRemainingTerm: maxRemaining, maxAge };
}

// ---------------------------------------------------------------------------
// The projection kernel

/** SMM and MDR by MONTH of loan life (index = MONTH; index 0 unused), for MONTH up to maxMonth. */
export interface RateCurves {
  readonly smm: Float64Array;
  readonly mdr: Float64Array;
}

export function rateCurves(assumptions: NormalizedAssumptions, maxMonth: number): RateCurves {
  const smm = new Float64Array(maxMonth + 1);
  const mdr = new Float64Array(maxMonth + 1);
  const p = assumptions.prepayment;
  if (p.model === 'smm') smm.fill(p.rate);
  else if (p.model === 'cpr') smm.fill(cprToSmm(p.rate));
  else for (let m = 1; m <= maxMonth; m++) smm[m] = cprToSmm(psaCpr(p.speed, m));
  const d = assumptions.default;
  if (d?.model === 'mdr') mdr.fill(d.rate);
  else if (d?.model === 'cdr') mdr.fill(cdrToMdr(d.rate));
  else if (d?.model === 'sda') for (let m = 1; m <= maxMonth; m++) mdr[m] = cdrToMdr(sdaCdr(d.speed, m));
  smm[0] = 0;
  mdr[0] = 0;
  return { smm, mdr };
}

/** Months a pool needs: to the last maturity, or to the last liquidation when defaulted loans are not advanced past it. */
export function projectionMonths(pool: PreparedPool, assumptions: NormalizedAssumptions, horizonMonths?: number): number {
  const tail = assumptions.default && !assumptions.servicerAdvances ? Math.max(0, assumptions.monthsToLiquidation - assumptions.defaultStopMonths) : 0;
  const natural = pool.maxRemainingTerm + tail;
  if (horizonMonths === undefined) return natural;
  return Math.min(natural, checkMonths(horizonMonths, 'options.horizon_months', 1));
}

function checkMultipliers(values: Float64Array | undefined, months: number, field: string): Float64Array {
  if (values === undefined) return new Float64Array(months).fill(1);
  if (!(values instanceof Float64Array) || values.length < months) {
    throw new EngineError('invalid_argument', `${field} must be a Float64Array with a value for each of the ${months} months`, field);
  }
  for (let i = 0; i < months; i++) {
    const v = values[i] as number;
    if (!(v >= 0 && v < Infinity)) throw new EngineError('invalid_argument', `${field}[${i}] must be a finite multiplier, 0 or more`, `${field}[${i}]`);
  }
  return values;
}

/**
 * Projects loans [from, to) of a prepared pool and adds their monthly sums into `into`
 * (a fresh zeroed ProjectionTotals when omitted). The pool and options are validated by
 * the caller's preparePool / this function; the loop itself allocates nothing per loan.
 */
export function projectionTotals(
  pool: PreparedPool,
  assumptions: ProjectionAssumptions | NormalizedAssumptions,
  options: ProjectionOptions & { readonly from?: number; readonly to?: number; readonly into?: ProjectionTotals } = {},
): ProjectionTotals {
  const a = normalizeAssumptions(assumptions);
  if (pool.netRate && a.servicingFee !== null) {
    throw new EngineError('invalid_argument', 'give either net rates or assumptions.servicing_fee, not both', 'assumptions.servicing_fee');
  }
  const from = options.from ?? 0;
  const to = options.to ?? pool.count;
  if (!Number.isInteger(from) || !Number.isInteger(to) || from < 0 || to > pool.count || from > to) {
    throw new EngineError('invalid_argument', `from and to must select loans within 0 … ${pool.count}`, 'options.from');
  }
  const months = options.into?.months ?? projectionMonths(pool, a, options.horizonMonths);
  const totals = options.into ?? { months, originalBalance: 0, loans: 0, data: new Float64Array(months * TOTALS_WIDTH) };
  if (totals.data.length !== months * TOTALS_WIDTH) throw new EngineError('invalid_argument', 'into.data does not match into.months', 'options.into');
  const curves = rateCurves(a, pool.maxAge + months);
  const smmMul = checkMultipliers(options.smmMultipliers, months, 'options.smm_multipliers');
  const mdrMul = checkMultipliers(options.mdrMultipliers, months, 'options.mdr_multipliers');
  let original = 0;
  for (let k = from; k < to; k++) original += pool.balance[k] as number;
  const scaled = options.smmMultipliers !== undefined || options.mdrMultipliers !== undefined;
  accumulate(pool, a, curves, smmMul, mdrMul, scaled, from, to, months, totals.data);
  return { months, originalBalance: totals.originalBalance + original, loans: totals.loans + (to - from), data: totals.data };
}

/** A packed-double JS array (zeros): V8 checks such an array once per loop iteration, a typed array on every access. */
function doubles(length: number): number[] {
  const array: number[] = [];
  for (let j = 0; j < length; j++) array.push(0.5);
  for (let j = 0; j < length; j++) array[j] = 0;
  return array;
}

/**
 * The inner loop. Per loan and month it does one division (the amortization fraction
 * c / ((1 + c)^k − 1), with (1 + c)^k carried down by one multiplication a month instead
 * of a power), reads SMM and MDR from the per-MONTH vectors, and keeps the defaults of the
 * last L months in a small ring buffer shared by all loans; nothing is allocated per loan.
 *
 * Written for V8: everything the month loop touches lives in one packed-double array, and
 * every scalar it reads has a machine representation (int32 through `| 0`, float64 through a
 * Float64Array, flags as 0/1). Read straight from objects, V8 keeps such values tagged and
 * re-checks their type on every month of every loan; measured on a 200,000-loan pool the
 * straightforward version (typed arrays, plain locals) took twice as long as this one.
 */
function accumulate(
  pool: PreparedPool,
  a: NormalizedAssumptions,
  curves: RateCurves,
  smmMul: Float64Array,
  mdrMul: Float64Array,
  scaled: boolean,
  from: number,
  to: number,
  months: number,
  out: Float64Array,
): void {
  const W = TOTALS_WIDTH | 0;
  const { balance, rate, netRate, remainingTerm, age } = pool;
  // The work array: [accumulators, months × W | SMM, MDR by MONTH | SMM, MDR multipliers by
  // projection month | ring of (new defaults, SCH AM(k − 1)/SCH AM(0)) for cohorts k = i − L … i].
  const maxMonth = curves.smm.length - 1;
  const curveAt = months * W;
  const multiplierAt = curveAt + 2 * (maxMonth + 1);
  const ringAt = multiplierAt + 2 * months;
  const work = doubles(ringAt + 2 * (a.monthsToLiquidation + 1));
  for (let m = 0; m <= maxMonth; m++) {
    work[curveAt + 2 * m] = curves.smm[m] as number;
    work[curveAt + 2 * m + 1] = curves.mdr[m] as number;
  }
  for (let t = 0; t < months; t++) {
    work[multiplierAt + 2 * t] = smmMul[t] as number;
    work[multiplierAt + 2 * t + 1] = mdrMul[t] as number;
  }
  const reals = Float64Array.of(a.servicingFee ?? 0, a.severity);
  const fee = reals[0] as number;
  const severity = reals[1] as number;
  const lag = a.monthsToLiquidation | 0;
  const advances = a.servicerAdvances ? 1 : 0;
  const stop = a.defaultStopMonths | 0;
  const hasDefaults = a.default !== null ? 1 : 0;
  const isScaled = scaled ? 1 : 0;
  const horizon = months | 0;
  const tail = hasDefaults === 1 && advances === 0 ? Math.max(0, lag - stop) | 0 : 0;
  const ring = (lag + 1) | 0; // cohort k sits in ring slot (k − 1) mod (L + 1)

  for (let k = from | 0; k < to; k++) {
    let perf = balance[k] as number;
    if (perf === 0) continue;
    const grossAnnual = rate[k] as number;
    const c = grossAnnual / 12;
    const n = (netRate ? (netRate[k] as number) : grossAnnual - fee) / 12;
    // Whole months as int32, so that month arithmetic and indexing stay in integer registers.
    const term = (remainingTerm[k] as number) | 0;
    const loanAge = (age[k] as number) | 0;
    const last = Math.min(horizon, term + tail) | 0;
    const lastDefaultMonth = hasDefaults === 1 ? (term - stop) | 0 : 0;
    const v = 1 / (1 + c);
    let growth = c > 0 ? Math.pow(1 + c, term) : 1; // (1 + c)^k, k = payments left before this month's
    let fcl = 0;
    let schedule = 1; // SCH AM(i − 1) / SCH AM(0)
    const ringEnd = ringAt + 2 * ring;
    let write = ringAt; // slot of month i
    let read = ring === 1 ? ringAt : ringAt + 2; // slot of month i − L
    let row = 0; // (i − 1) × W
    for (let i = 1; i <= last; i++) {
      const left = term - i + 1;
      // 1 − SCH AM(i)/SCH AM(i − 1) = c / ((1 + c)^k − 1); all of it in the last month.
      const f = left === 1 ? 1 : left <= 0 ? 0 : c > 0 ? c / (growth - 1) : 1 / left;
      growth *= v;
      const month = loanAge + i;
      const curve = curveAt + 2 * month;
      let smm = work[curve] as number;
      let mdr = i <= lastDefaultMonth ? (work[curve + 1] as number) : 0;
      if (isScaled === 1) {
        const multiplier = multiplierAt + 2 * (i - 1);
        smm *= work[multiplier] as number;
        if (smm > 1) smm = 1;
        mdr *= work[multiplier + 1] as number;
        if (mdr > 1) mdr = 1;
      }
      const newDefaults = perf * mdr;
      work[write] = newDefaults;
      work[write + 1] = schedule;
      let adb = 0;
      let loss = 0;
      if (i > lag) {
        const defaulted = work[read] as number;
        if (defaulted !== 0) {
          adb = advances === 1 ? defaulted * (schedule / (work[read + 1] as number)) : defaulted;
          loss = defaulted * severity;
          if (loss > adb) loss = adb;
        }
      }
      write += 2;
      if (write === ringEnd) write = ringAt;
      read += 2;
      if (read === ringEnd) read = ringAt;

      // EXP AM = ACT AM + the scheduled amortization of the defaulted loans (AM DEF when advanced).
      const actualAmortization = (perf - newDefaults) * f;
      const defaultedAmortization = (newDefaults + fcl - adb) * f;
      const prepaymentBase = perf * (1 - f);
      let prepayments = prepaymentBase * smm;
      if (actualAmortization + newDefaults + prepayments > perf) {
        prepayments = perf - actualAmortization - newDefaults;
        if (prepayments < 0) prepayments = 0;
      }
      const accruing = perf + fcl;
      // Rounding can leave −1e-14 of a paid-off balance; a balance is never negative.
      let nextPerf = perf - newDefaults - prepayments - actualAmortization;
      if (nextPerf < 0) nextPerf = 0;
      let nextFcl = advances === 1 ? newDefaults + fcl - adb - defaultedAmortization : newDefaults + fcl - adb;
      if (nextFcl < 0) nextFcl = 0;
      work[row] = (work[row] as number) + nextPerf;
      work[row + 1] = (work[row + 1] as number) + nextFcl;
      work[row + 2] = (work[row + 2] as number) + newDefaults;
      work[row + 3] = (work[row + 3] as number) + defaultedAmortization;
      work[row + 4] = (work[row + 4] as number) + prepayments;
      work[row + 5] = (work[row + 5] as number) + actualAmortization;
      work[row + 6] = (work[row + 6] as number) + accruing * c;
      work[row + 7] = (work[row + 7] as number) + accruing * n;
      work[row + 8] = (work[row + 8] as number) + (newDefaults + fcl) * n;
      work[row + 9] = (work[row + 9] as number) + (adb - loss);
      work[row + 10] = (work[row + 10] as number) + loss;
      work[row + 11] = (work[row + 11] as number) + prepaymentBase;
      row += W;
      perf = nextPerf;
      fcl = nextFcl;
      schedule *= 1 - f;
      if (perf === 0 && fcl === 0 && hasDefaults === 0) break;
    }
  }
  for (let j = 0; j < curveAt; j++) out[j] = (out[j] as number) + (work[j] as number);
}

/** Adds totals of disjoint parts of one pool (e.g. from threads); shorter parts are padded with zeros. */
export function mergeProjectionTotals(parts: readonly ProjectionTotals[]): ProjectionTotals {
  const list: unknown = parts;
  if (!Array.isArray(list) || parts.length === 0) throw new EngineError('invalid_argument', 'parts must be a non-empty list of projection totals', 'parts');
  let months = 0;
  for (const part of parts) months = Math.max(months, part.months);
  const data = new Float64Array(months * TOTALS_WIDTH);
  let originalBalance = 0;
  let loans = 0;
  for (const part of parts) {
    if (part.data.length !== part.months * TOTALS_WIDTH) throw new EngineError('invalid_argument', 'a part has data of the wrong length', 'parts');
    for (let j = 0; j < part.data.length; j++) data[j] = (data[j] as number) + (part.data[j] as number);
    originalBalance += part.originalBalance;
    loans += part.loans;
  }
  return { months, originalBalance, loans, data };
}

// ---------------------------------------------------------------------------
// Columns and summary

/** The per-month columns and the summary of accumulated totals. */
export function projectionFromTotals(totals: ProjectionTotals, assumptions: ProjectionAssumptions | NormalizedAssumptions, pricing?: PricingInput): PoolProjection {
  const a = normalizeAssumptions(assumptions);
  const T = totals.months;
  const W = TOTALS_WIDTH;
  const d = totals.data;
  const col = (): Float64Array => new Float64Array(T);
  const c = {
    month: col(),
    beginningBalance: col(),
    scheduledPayment: col(),
    performingBalance: col(),
    newDefaults: col(),
    foreclosureBalance: col(),
    expectedAmortization: col(),
    voluntaryPrepayments: col(),
    amortizationFromDefaults: col(),
    actualAmortization: col(),
    grossInterest: col(),
    servicingFee: col(),
    expectedInterest: col(),
    interestLost: col(),
    actualInterest: col(),
    principalRecovery: col(),
    principalLoss: col(),
    totalPrincipal: col(),
    totalInterest: col(),
    cashFlow: col(),
    smm: col(),
    mdr: col(),
  } satisfies ProjectionColumns;
  let beginning = totals.originalBalance;
  let priorPerforming = totals.originalBalance;
  for (let t = 0; t < T; t++) {
    const r = t * W;
    const at = (j: number): number => d[r + j] as number;
    c.month[t] = t + 1;
    c.beginningBalance[t] = beginning;
    c.performingBalance[t] = at(0);
    c.foreclosureBalance[t] = at(1);
    c.newDefaults[t] = at(2);
    c.expectedAmortization[t] = at(5) + at(3);
    c.voluntaryPrepayments[t] = at(4);
    c.amortizationFromDefaults[t] = a.servicerAdvances ? at(3) : 0;
    c.actualAmortization[t] = at(5);
    c.grossInterest[t] = at(6);
    c.expectedInterest[t] = at(7);
    c.servicingFee[t] = at(6) - at(7);
    c.interestLost[t] = at(8);
    c.actualInterest[t] = at(7) - at(8);
    c.principalRecovery[t] = at(9);
    c.principalLoss[t] = at(10);
    c.scheduledPayment[t] = at(5) + at(3) + at(6);
    const principal = (a.servicerAdvances ? at(5) + at(3) : at(5)) + at(4) + at(9);
    const interest = a.servicerAdvances ? at(7) : at(7) - at(8);
    c.totalPrincipal[t] = principal;
    c.totalInterest[t] = interest;
    c.cashFlow[t] = principal + interest;
    c.smm[t] = at(11) > 0 ? at(4) / at(11) : 0;
    c.mdr[t] = priorPerforming > 0 ? at(2) / priorPerforming : 0;
    priorPerforming = at(0);
    beginning = at(0) + at(1);
  }
  const summary = cashflowSummary(c, totals.originalBalance, pricing);
  return { basis: PROJECTION_BASIS, months: T, originalBalance: totals.originalBalance, loans: totals.loans, assumptions: a, columns: c, summary };
}

/** Projects a loan, a pool summary or loan arrays (or an already prepared pool). */
export function project(input: PoolInput | PreparedPool, assumptions: ProjectionAssumptions, options: ProjectionOptions = {}): PoolProjection {
  const pool = asPreparedPool(input);
  const a = normalizeAssumptions(assumptions);
  return projectionFromTotals(projectionTotals(pool, a, options), a, options.pricing);
}

/** A prepared pool as it is; anything else through {@link preparePool}. */
export function asPreparedPool(input: PoolInput | PreparedPool): PreparedPool {
  return isPreparedPool(input) ? input : preparePool(input);
}

function isPreparedPool(input: PoolInput | PreparedPool): input is PreparedPool {
  return isObject(input) && 'count' in input && 'maxRemainingTerm' in input;
}

/** One loan. */
export function projectLoan(loan: LoanTerms, assumptions: ProjectionAssumptions, options?: ProjectionOptions): PoolProjection {
  return project(preparePoolAs(loan, 'loan'), assumptions, options);
}

/** A pool given by its summary (balance, WAC, net rate, terms, age) as one representative loan. */
export function projectPool(pool: PoolSummary, assumptions: ProjectionAssumptions, options?: ProjectionOptions): PoolProjection {
  return project(preparePoolAs(pool, 'pool'), assumptions, options);
}

/** A heterogeneous pool, loan by loan, aggregated. */
export function projectLoans(loans: LoanArrays, assumptions: ProjectionAssumptions, options?: ProjectionOptions): PoolProjection {
  return project(preparePoolAs(loans, 'loans'), assumptions, options);
}

function preparePoolAs(input: PoolInput, kind: 'loan' | 'pool' | 'loans'): PreparedPool {
  if (!isObject(input)) throw new EngineError('invalid_argument', `${kind} must be an object`, kind);
  const isArrays = isObject(input) && input.balance instanceof Float64Array;
  const isSummary = isObject(input) && 'wac' in input;
  const actual = isArrays ? 'loans' : isSummary ? 'pool' : 'loan';
  if (actual !== kind) throw new EngineError('invalid_argument', `expected ${kind === 'loans' ? 'loan arrays' : `a ${kind}`}`, kind);
  return preparePool(input);
}

// ---------------------------------------------------------------------------
// Yield, price, duration, convexity, NPV (SF G.1)

interface Flows {
  readonly cashFlow: Float64Array;
  readonly totalPrincipal: Float64Array;
  readonly principalLoss: Float64Array;
  readonly totalInterest: Float64Array;
  readonly newDefaults: Float64Array;
  readonly performingBalance: Float64Array;
  readonly foreclosureBalance: Float64Array;
}

/** Present value Σ CF_K × e^(−2 T_K x) with x = ln(1 + Y/2), and its first two derivatives' sums. */
function presentValue(cashFlow: Float64Array, x: number, delayYears: number): { pv: number; t1: number; t2: number } {
  // T_K = K/12 + delay; discount e^(−2 T_K x) by recurrence over K.
  const step = Math.exp(-x / 6);
  let discount = Math.exp(-2 * delayYears * x);
  let pv = 0;
  let t1 = 0; // Σ T CF e^(−2Tx)
  let t2 = 0; // Σ T (T + 1/2) CF e^(−2Tx)
  for (let k = 0; k < cashFlow.length; k++) {
    discount *= step;
    const time = (k + 1) / 12 + delayYears;
    const value = (cashFlow[k] as number) * discount;
    pv += value;
    t1 += time * value;
    t2 += time * (time + 0.5) * value;
  }
  return { pv, t1, t2 };
}

/** The bond-equivalent yield at which the cash flows are worth `target`; NaN when there is none. */
function solveYield(cashFlow: Float64Array, target: number, delayYears: number): number {
  let total = 0;
  for (let k = 0; k < cashFlow.length; k++) total += cashFlow[k] as number;
  if (!(total > 0) || !(target > 0)) return NaN;
  // PV(x) is decreasing and convex in x = ln(1 + Y/2): Newton converges from the left of the root.
  let x = Math.log1p(0.05);
  for (let iteration = 0; iteration < 100; iteration++) {
    const { pv, t1 } = presentValue(cashFlow, x, delayYears);
    const derivative = -2 * t1;
    if (!(derivative < 0)) break;
    const next = x - (pv - target) / derivative;
    if (!Number.isFinite(next)) break;
    if (Math.abs(next - x) <= 1e-15 * Math.max(1, Math.abs(x))) return 2 * Math.expm1(next);
    x = next;
  }
  // Fallback: bisection on a bracket.
  let lo = -5;
  let hi = 5;
  if (presentValue(cashFlow, lo, delayYears).pv < target || presentValue(cashFlow, hi, delayYears).pv > target) return NaN;
  for (let iteration = 0; iteration < 200 && hi - lo > 1e-15; iteration++) {
    const mid = (lo + hi) / 2;
    if (presentValue(cashFlow, mid, delayYears).pv > target) lo = mid;
    else hi = mid;
  }
  return 2 * Math.expm1((lo + hi) / 2);
}

function checkPricing(pricing: PricingInput | undefined): { price?: number; yield?: number; discountRate?: number; delayYears: number } {
  if (pricing === undefined) return { delayYears: 0 };
  if (!isObject(pricing)) throw new EngineError('invalid_argument', 'pricing must be an object', 'pricing');
  const out: { price?: number; yield?: number; discountRate?: number; delayYears: number } = { delayYears: 0 };
  if (pricing.price !== undefined && pricing.yield !== undefined) throw new EngineError('invalid_argument', 'give pricing.price or pricing.yield, not both', 'pricing.yield');
  if (pricing.price !== undefined) {
    const price = finite(pricing.price, 'pricing.price');
    if (price <= 0) throw new EngineError('invalid_argument', 'pricing.price must be positive (per 100 of balance)', 'pricing.price');
    out.price = price;
  }
  if (pricing.yield !== undefined) {
    const y = finite(pricing.yield, 'pricing.yield', 'invalid_rate');
    if (y <= -2) throw new EngineError('invalid_rate', 'pricing.yield must be greater than −2 (−200 %)', 'pricing.yield');
    out.yield = y;
  }
  if (pricing.discountRate !== undefined) {
    const r = finite(pricing.discountRate, 'pricing.discount_rate', 'invalid_rate');
    if (r <= -2) throw new EngineError('invalid_rate', 'pricing.discount_rate must be greater than −2 (−200 %)', 'pricing.discount_rate');
    out.discountRate = r;
  }
  if (pricing.delayDays !== undefined) {
    const delay = finite(pricing.delayDays, 'pricing.delay_days');
    if (delay < 0 || delay > 360) throw new EngineError('invalid_argument', 'pricing.delay_days must be from 0 to 360', 'pricing.delay_days');
    out.delayYears = delay / 360;
  }
  return out;
}

/** Summary metrics of projected cash flows (SF G.1), per 100 of `originalBalance` for prices. */
export function cashflowSummary(flows: Flows, originalBalance: number, pricing?: PricingInput): ProjectionSummary {
  const p = checkPricing(pricing);
  const T = flows.cashFlow.length;
  let totalPrincipal = 0;
  let totalInterest = 0;
  let totalLoss = 0;
  let totalDefaults = 0;
  let weighted = 0;
  for (let k = 0; k < T; k++) {
    const principal = flows.totalPrincipal[k] as number;
    totalPrincipal += principal;
    totalInterest += flows.totalInterest[k] as number;
    totalLoss += flows.principalLoss[k] as number;
    totalDefaults += flows.newDefaults[k] as number;
    weighted += ((k + 1) / 12 + p.delayYears) * principal;
  }
  const endingBalance = T === 0 ? originalBalance : (flows.performingBalance[T - 1] as number) + (flows.foreclosureBalance[T - 1] as number);
  let price: number | null = null;
  let y: number | null = null;
  if (p.price !== undefined) {
    price = p.price;
    const solved = solveYield(flows.cashFlow, (p.price / 100) * originalBalance, p.delayYears);
    y = Number.isFinite(solved) ? solved : null;
  } else if (p.yield !== undefined) {
    y = p.yield;
    price = originalBalance > 0 ? (presentValue(flows.cashFlow, Math.log1p(p.yield / 2), p.delayYears).pv / originalBalance) * 100 : null;
  }
  let macaulay: number | null = null;
  let modified: number | null = null;
  let convexity: number | null = null;
  let mortgageYield: number | null = null;
  if (y !== null) {
    const half = 1 + y / 2;
    const { pv, t1, t2 } = presentValue(flows.cashFlow, Math.log(half), p.delayYears);
    if (pv > 0) {
      macaulay = t1 / pv;
      modified = macaulay / half;
      convexity = t2 / (half * half * pv);
    }
    mortgageYield = 12 * (Math.pow(half, 1 / 6) - 1);
  }
  const npv = p.discountRate === undefined ? null : presentValue(flows.cashFlow, Math.log1p(p.discountRate / 2), p.delayYears).pv;
  return {
    walYears: totalPrincipal > 0 ? weighted / totalPrincipal : 0,
    totalPrincipal,
    totalInterest,
    totalLoss,
    totalDefaults,
    cumulativeDefaultRate: originalBalance > 0 ? totalDefaults / originalBalance : 0,
    endingBalance,
    price,
    yield: y,
    mortgageYield,
    macaulayDuration: macaulay,
    modifiedDuration: modified,
    convexity,
    discountRate: p.discountRate ?? null,
    npv,
  };
}
