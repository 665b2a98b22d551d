/**
 * Versioned risk-based pricing as data: a score maps to a risk grade A–E, a grade to
 * a nominal annual rate and a maximum term. Every version stays in the registry so a
 * recorded decision replays with the pricing it was made with.
 *
 * `offerFor` turns an amount, term and rate into the offer the applicant sees: the
 * monthly installment from the engine's schedule (monthly, 30/360, payment rounded
 * half up: the same terms servicing books the loan with) and the APR by Regulation Z
 * Appendix J over that schedule's own cash flows. With no finance charge beyond
 * interest the APR equals the note rate within the § 1026.22(a)(2) tolerance; it is
 * computed rather than copied so a later fee shows up in it. Pure: the disbursement
 * date is an argument, never the clock.
 */
import { type Schedule, appendixJApr, buildSchedule, minorUnits, parseDecimal, toDecimalString } from '../engine/index.js';
import type { Offer, PricingResult, RiskGrade } from './model.js';

export interface GradeTerms {
  readonly grade: RiskGrade;
  /** The lowest score of the grade (inclusive). */
  readonly minScore: number;
  /** Nominal annual rate, exact decimal string. */
  readonly annualRate: string;
  readonly maxTermMonths: number;
}

export interface Pricing {
  readonly version: string;
  /** Highest grade first; a score takes the first grade whose minScore it reaches. */
  readonly grades: readonly GradeTerms[];
  /** The term when the applicant asks for none (capped at the grade's maximum). */
  readonly defaultTermMonths: number;
  readonly minTermMonths: number;
  readonly maxTermMonths: number;
  /** The smallest amount lent, in whole currency units (decimal string): below it no offer or counter-offer is made. */
  readonly minAmount: string;
}

const PR_2026_1: Pricing = {
  version: 'pr-2026.1',
  grades: [
    { grade: 'A', minScore: 800, annualRate: '0.0699', maxTermMonths: 84 },
    { grade: 'B', minScore: 700, annualRate: '0.0899', maxTermMonths: 84 },
    { grade: 'C', minScore: 600, annualRate: '0.1199', maxTermMonths: 60 },
    { grade: 'D', minScore: 500, annualRate: '0.1599', maxTermMonths: 48 },
    { grade: 'E', minScore: 0, annualRate: '0.1999', maxTermMonths: 36 },
  ],
  defaultTermMonths: 36,
  minTermMonths: 12,
  maxTermMonths: 84,
  minAmount: '1000',
};

const REGISTRY: ReadonlyMap<string, Pricing> = new Map([[PR_2026_1.version, PR_2026_1]]);

export const PRICING_VERSIONS: readonly string[] = [...REGISTRY.keys()];

/** The pricing of a version. Throws on an unknown version (a configuration bug). */
export function getPricing(version: string): Pricing {
  const pricing = REGISTRY.get(version);
  if (pricing === undefined) throw new Error(`unknown pricing version "${version}" (known: ${PRICING_VERSIONS.join(', ')})`);
  return pricing;
}

export function gradeFor(pricing: Pricing, score: number): GradeTerms {
  const grade = pricing.grades.find((g) => score >= g.minScore) ?? pricing.grades[pricing.grades.length - 1];
  if (grade === undefined) throw new Error(`pricing ${pricing.version} has no grades`);
  return grade;
}

/** Whether `term` is a term this pricing lends at (an integer number of months within its range). */
export function isAllowedTerm(pricing: Pricing, term: number): boolean {
  return Number.isInteger(term) && term >= pricing.minTermMonths && term <= pricing.maxTermMonths;
}

/** The pricing's minimum amount in minor units of `currency`. */
export function minimumAmount(pricing: Pricing, currency: string): bigint {
  const min = parseDecimal(pricing.minAmount, 'min_amount');
  return (min.num * 10n ** BigInt(minorUnits(currency))) / min.den;
}

/**
 * Grade, rate and term for a score. The term is the requested one (or the default)
 * capped at the grade's maximum; a requested term outside the pricing's range is a
 * caller bug here (the pipeline's validation stage refuses it first).
 */
export function priceApplication(version: string, score: number, requestedTerm: number | null): PricingResult {
  const pricing = getPricing(version);
  if (requestedTerm !== null && !isAllowedTerm(pricing, requestedTerm)) {
    throw new RangeError(`term ${requestedTerm} is outside ${pricing.minTermMonths}..${pricing.maxTermMonths} months`);
  }
  const grade = gradeFor(pricing, score);
  const wanted = requestedTerm ?? pricing.defaultTermMonths;
  return {
    pricingVersion: pricing.version,
    grade: grade.grade,
    annualRate: grade.annualRate,
    termMonths: Math.min(wanted, grade.maxTermMonths),
    maxTermMonths: grade.maxTermMonths,
  };
}

/** The schedule an offer is quoted from: level monthly installments, 30/360, the engine's default roundings. */
export function offerSchedule(amount: bigint, termMonths: number, annualRate: string, currency: string, disbursementDate: string): Schedule {
  return buildSchedule({
    principal: amount,
    currency,
    annualRate: parseDecimal(annualRate, 'annual_rate'),
    term: termMonths,
    frequency: 'monthly',
    disbursementDate,
  });
}

/** The level monthly installment of `amount` (0 for nothing lent). */
export function installmentFor(amount: bigint, termMonths: number, annualRate: string, currency: string, disbursementDate: string): bigint {
  return amount <= 0n ? 0n : offerSchedule(amount, termMonths, annualRate, currency, disbursementDate).payment;
}

/** APR places: hundredths of a percent, as disclosed (6.99 % = "0.0699"). */
const APR_PLACES = 4;

/** The offer for an amount at a rate and term: installment from the engine schedule, APR by Appendix J. */
export function offerFor(amount: bigint, termMonths: number, annualRate: string, currency: string, disbursementDate: string): Offer {
  const schedule = offerSchedule(amount, termMonths, annualRate, currency, disbursementDate);
  const payments = schedule.installments.filter((i) => i.payment > 0n).map((i) => ({ date: i.dueDate, amount: i.payment }));
  const apr = appendixJApr({ advances: [{ date: disbursementDate, amount }], payments });
  return {
    currency,
    amount,
    termMonths,
    annualRate,
    apr: toDecimalString(apr.apr, APR_PLACES, 'half_even'),
    monthlyPayment: schedule.payment,
  };
}
