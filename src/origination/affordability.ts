/**
 * Collateral and affordability: the ratios a decision is made on, and the largest
 * amount the policy's limits allow (the counter-offer).
 *
 *   LTV = loan amount / collateral value            (null when unsecured)
 *   DTI = (existing debt payments + installment) / monthly income
 *   PTI = installment / monthly income               (both null when income is 0)
 *
 * The installment is the engine schedule's level payment at the priced rate and term,
 * so what is checked here is exactly what the offer quotes. Reported ratios are 4
 * places half-even; limits are checked on the exact ratios (a DTI of 0.45004 is over a
 * 0.45 limit even though it reports as "0.4500"), and `maxAffordableAmount` uses the
 * same check, so the amount it returns always passes it.
 *
 * Existing debts the applicant did not state count as 0 here (the scorecard scores
 * "unknown" in a bin of its own, and the policy sees `monthly_debt_payments: null`).
 */
import { type Ratio, compare, minorUnits, parseDecimal, ratio, toDecimalString } from '../engine/index.js';
import type { AffordabilityResult, CollateralResult } from './model.js';
import { installmentFor } from './pricing.js';

export const LIMIT_NAMES = ['max_debt_to_income', 'max_payment_to_income', 'max_loan_to_value', 'max_loan_amount', 'min_score'] as const;
export type LimitName = (typeof LIMIT_NAMES)[number];

/** The limits that bound an amount, in the order a counter-offer reports them. */
export const AMOUNT_LIMITS = ['max_payment_to_income', 'max_debt_to_income', 'max_loan_to_value', 'max_loan_amount'] as const;
export type AmountLimit = (typeof AMOUNT_LIMITS)[number];

/** The applicant's facts the limits are checked against. */
export interface AffordabilityFacts {
  readonly currency: string;
  readonly monthlyIncome: bigint;
  readonly monthlyDebtPayments: bigint | null;
  readonly collateralValue: bigint;
}

const RATIO_PLACES = 4;

function fourPlaces(num: bigint, den: bigint): string {
  return toDecimalString(ratio(num, den), RATIO_PLACES, 'half_even');
}

/** LTV, 4 places half-even; null when there is no collateral. */
export function loanToValue(loanAmount: bigint, collateralValue: bigint): string | null {
  return collateralValue === 0n ? null : fourPlaces(loanAmount, collateralValue);
}

export function assessCollateral(loanAmount: bigint, collateralValue: bigint): CollateralResult {
  return { ltv: loanToValue(loanAmount, collateralValue) };
}

/** Existing debt payments / income (without the new loan), 4 places; null when debts are unknown or income is 0. */
export function existingDebtToIncome(monthlyDebtPayments: bigint | null, monthlyIncome: bigint): string | null {
  return monthlyDebtPayments === null || monthlyIncome === 0n ? null : fourPlaces(monthlyDebtPayments, monthlyIncome);
}

/** Installment, DTI and PTI of `loanAmount` at the priced rate and term. */
export function assessAffordability(facts: AffordabilityFacts, loanAmount: bigint, annualRate: string, termMonths: number, disbursementDate: string): AffordabilityResult {
  const monthlyPayment = installmentFor(loanAmount, termMonths, annualRate, facts.currency, disbursementDate);
  const debts = facts.monthlyDebtPayments ?? 0n;
  const income = facts.monthlyIncome;
  return {
    monthlyPayment,
    debtToIncome: income === 0n ? null : fourPlaces(debts + monthlyPayment, income),
    paymentToIncome: income === 0n ? null : fourPlaces(monthlyPayment, income),
  };
}

function limitRatio(limits: Readonly<Record<string, string>>, name: LimitName): Ratio | null {
  const text = limits[name];
  return text === undefined ? null : parseDecimal(text, name);
}

/** `max_loan_amount` (whole currency units) in minor units, rounded down. */
function maxLoanAmountMinor(limits: Readonly<Record<string, string>>, currency: string): bigint | null {
  const limit = limitRatio(limits, 'max_loan_amount');
  return limit === null ? null : (limit.num * 10n ** BigInt(minorUnits(currency))) / limit.den;
}

/** num / den > limit, exactly (den > 0). */
function over(num: bigint, den: bigint, limit: Ratio): boolean {
  return compare(ratio(num, den), limit) > 0;
}

/**
 * The amount limits `loanAmount` (with its installment `monthlyPayment`) breaks, in
 * AMOUNT_LIMITS order. A limit the policy does not set is not checked; with no income
 * every income limit is broken by any amount (nothing is affordable from no income,
 * even when a tiny amount's installment rounds to 0); an unsecured loan has no LTV to break.
 */
export function exceededLimits(limits: Readonly<Record<string, string>>, facts: AffordabilityFacts, loanAmount: bigint, monthlyPayment: bigint): AmountLimit[] {
  const broken: AmountLimit[] = [];
  const income = facts.monthlyIncome;
  const pti = limitRatio(limits, 'max_payment_to_income');
  if (pti !== null && (income === 0n ? loanAmount > 0n : over(monthlyPayment, income, pti))) broken.push('max_payment_to_income');
  const dti = limitRatio(limits, 'max_debt_to_income');
  const obligations = (facts.monthlyDebtPayments ?? 0n) + monthlyPayment;
  if (dti !== null && (income === 0n ? loanAmount > 0n || obligations > 0n : over(obligations, income, dti))) broken.push('max_debt_to_income');
  const ltv = limitRatio(limits, 'max_loan_to_value');
  if (ltv !== null && facts.collateralValue > 0n && over(loanAmount, facts.collateralValue, ltv)) broken.push('max_loan_to_value');
  const maxAmount = maxLoanAmountMinor(limits, facts.currency);
  if (maxAmount !== null && loanAmount > maxAmount) broken.push('max_loan_amount');
  return broken;
}

/** floor(limit × base) for a non-negative base. */
function floorTimes(limit: Ratio, base: bigint): bigint {
  return (limit.num * base) / limit.den;
}

/**
 * The largest amount, in minor units rounded down to a whole currency unit (100 minor
 * in USD, 1 in JPY), whose installment at `annualRate` over `termMonths` keeps DTI,
 * PTI, LTV and the amount within `limits` — and not above `ceiling` when one is given.
 * 0 when nothing fits. Exact: a bisection over whole units, each step pricing the
 * amount with the engine schedule and checking it with `exceededLimits`. The level
 * payment is round(amount × annuity factor), non-decreasing in the amount, so the
 * amounts that fit form a prefix and the bisection finds its end.
 *
 * Throws when nothing bounds the amount (no income limit, no LTV on a secured loan, no
 * maximum amount and no ceiling): a policy without limits cannot make a counter-offer.
 */
export function maxAffordableAmount(
  limits: Readonly<Record<string, string>>,
  facts: AffordabilityFacts,
  annualRate: string,
  termMonths: number,
  disbursementDate: string,
  ceiling: bigint | null = null,
): bigint {
  const unit = 10n ** BigInt(minorUnits(facts.currency));
  const bounds: bigint[] = [];
  if (ceiling !== null) bounds.push(ceiling);
  const maxAmount = maxLoanAmountMinor(limits, facts.currency);
  if (maxAmount !== null) bounds.push(maxAmount);
  const ltv = limitRatio(limits, 'max_loan_to_value');
  if (ltv !== null && facts.collateralValue > 0n) bounds.push(floorTimes(ltv, facts.collateralValue));
  // The largest installment the income limits allow; an amount whose installment fits is at
  // most (payment + 1) × term, because the level payment is at least amount / term − ½ at a rate ≥ 0.
  const pti = limitRatio(limits, 'max_payment_to_income');
  const dti = limitRatio(limits, 'max_debt_to_income');
  const paymentCaps: bigint[] = [];
  if (pti !== null) paymentCaps.push(floorTimes(pti, facts.monthlyIncome));
  if (dti !== null) paymentCaps.push(floorTimes(dti, facts.monthlyIncome) - (facts.monthlyDebtPayments ?? 0n));
  if (paymentCaps.length > 0) {
    const payment = paymentCaps.reduce((a, c) => (c < a ? c : a));
    if (payment < 0n) return 0n; // existing debts alone break the DTI limit
    bounds.push((payment + 1n) * BigInt(termMonths));
  }
  if (bounds.length === 0) throw new Error('no limit bounds the amount: set max_payment_to_income, max_debt_to_income, max_loan_amount or a ceiling');
  const upper = bounds.reduce((a, c) => (c < a ? c : a));
  const fits = (units: bigint): boolean => {
    const amount = units * unit;
    if (ceiling !== null && amount > ceiling) return false;
    const payment = installmentFor(amount, termMonths, annualRate, facts.currency, disbursementDate);
    return exceededLimits(limits, facts, amount, payment).length === 0;
  };
  let lo = 0n; // fits (nothing lent breaks nothing)
  let hi = upper / unit + 1n; // does not fit
  while (hi - lo > 1n) {
    const mid = (lo + hi) / 2n;
    if (fits(mid)) lo = mid;
    else hi = mid;
  }
  return lo * unit;
}
