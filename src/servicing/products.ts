/**
 * Product rules (pure): a product version's terms are consistent, a loan's amount,
 * term and rate are inside them, and terms round-trip through jsonb with amounts as
 * minor-unit strings.
 */
import { buildSchedule, compare, parseDecimal } from '../engine/index.js';
import { AppError } from '../platform/errors.js';
import type { FeeRule, LoanTerms, ProductTerms } from './model.js';

function invalid(pointer: string, detail: string): AppError {
  return new AppError('validation_failed', { detail, errors: [{ pointer, location: 'body', detail }] });
}

/** Cross-field checks the request schema cannot express. Throws validation_failed naming the field. */
export function checkProductTerms(terms: ProductTerms): void {
  if (terms.minAmount <= 0n) throw invalid('#/min_amount', 'min_amount must be positive');
  if (terms.maxAmount < terms.minAmount) throw invalid('#/max_amount', 'max_amount must be at least min_amount');
  if (terms.maxTerm < terms.minTerm) throw invalid('#/max_term', 'max_term must be at least min_term');
  if (compare(parseDecimal(terms.maxRate, 'max_rate'), parseDecimal(terms.minRate, 'min_rate')) < 0) throw invalid('#/max_rate', 'max_rate must be at least min_rate');
  const names = new Set<string>();
  let previous = 0;
  terms.delinquencyBuckets.forEach((b, index) => {
    if (names.has(b.name)) throw invalid(`#/delinquency_buckets/${index}/name`, `bucket name ${b.name} is used twice`);
    if (b.minDays <= previous) throw invalid(`#/delinquency_buckets/${index}/min_days`, 'buckets start at 1 day or more and are listed in increasing order');
    names.add(b.name);
    previous = b.minDays;
  });
  // A schedule at the product's extremes must build: the engine refuses what it cannot price.
  buildSchedule({ principal: terms.maxAmount, currency: terms.currency, annualRate: parseDecimal(terms.maxRate), term: terms.maxTerm, frequency: terms.frequency, disbursementDate: '2026-01-15', interestMethod: terms.interestMethod, amortization: terms.amortization, dayCount: terms.dayCount });
}

/** The loan's amount, term and rate against its product version. */
export function checkLoanAgainstProduct(terms: ProductTerms, loan: { principal: bigint; term: number; annualRate: string }): void {
  const outside = (pointer: string, detail: string) => new AppError('outside_product_limits', { detail, errors: [{ pointer, location: 'body', detail }] });
  if (loan.principal < terms.minAmount || loan.principal > terms.maxAmount) throw outside('#/principal', 'principal is outside the product minimum and maximum amount');
  if (loan.term < terms.minTerm || loan.term > terms.maxTerm) throw outside('#/term', `term must be from ${terms.minTerm} to ${terms.maxTerm} installments`);
  const rate = parseDecimal(loan.annualRate, 'annual_rate');
  if (compare(rate, parseDecimal(terms.minRate)) < 0 || compare(rate, parseDecimal(terms.maxRate)) > 0) {
    throw outside('#/annual_rate', `annual_rate must be from ${terms.minRate} to ${terms.maxRate}`);
  }
}

type FeeJson = { kind: 'fixed'; amount: string } | { kind: 'percent'; rate: string };

function feeToJson(fee: FeeRule | null): FeeJson | null {
  if (fee === null) return null;
  return fee.kind === 'fixed' ? { kind: 'fixed', amount: fee.amount.toString() } : { kind: 'percent', rate: fee.rate };
}

function feeFromJson(fee: FeeJson | null): FeeRule | null {
  if (fee === null) return null;
  return fee.kind === 'fixed' ? { kind: 'fixed', amount: BigInt(fee.amount) } : { kind: 'percent', rate: fee.rate };
}

interface TermsJson extends Omit<LoanTerms, 'minAmount' | 'maxAmount' | 'principal' | 'originationFee' | 'lateFee'> {
  minAmount: string;
  maxAmount: string;
  principal?: string;
  originationFee: FeeJson | null;
  lateFee: { fee: FeeJson; graceDays: number } | null;
}

export function termsToJson(terms: ProductTerms | LoanTerms): string {
  const json: TermsJson = {
    ...(terms as Omit<LoanTerms, "principal">),
    minAmount: terms.minAmount.toString(),
    maxAmount: terms.maxAmount.toString(),
    ...('principal' in terms ? { principal: terms.principal.toString() } : {}),
    originationFee: feeToJson(terms.originationFee),
    lateFee: terms.lateFee === null ? null : { fee: feeToJson(terms.lateFee.fee) as FeeJson, graceDays: terms.lateFee.graceDays },
  };
  return JSON.stringify(json);
}

function parseTerms(json: unknown): TermsJson {
  return (typeof json === 'string' ? JSON.parse(json) : json) as TermsJson;
}

export function productTermsFromJson(json: unknown): ProductTerms {
  const t = parseTerms(json);
  const { principal: _p, annualRate: _r, term: _t, firstPaymentDate: _f, ...rest } = t;
  return {
    ...rest,
    minAmount: BigInt(t.minAmount),
    maxAmount: BigInt(t.maxAmount),
    originationFee: feeFromJson(t.originationFee),
    lateFee: t.lateFee === null ? null : { fee: feeFromJson(t.lateFee.fee) as FeeRule, graceDays: t.lateFee.graceDays },
  };
}

export function loanTermsFromJson(json: unknown): LoanTerms {
  const t = parseTerms(json);
  return { ...productTermsFromJson(t), principal: BigInt(t.principal ?? '0'), annualRate: t.annualRate, term: t.term, firstPaymentDate: t.firstPaymentDate ?? null };
}
