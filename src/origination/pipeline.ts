/**
 * The credit-decision pipeline: an application's facts in, a decision out, in the
 * stage order of model.ts STAGES:
 *
 *   validation → company_verification → collateral → scorecard → pricing →
 *   affordability → policy → decision
 *
 * Affordability comes after pricing because DTI and PTI use the installment at the
 * priced rate and term. Apart from the verification call (whose outcome is recorded,
 * so a replay passes it back in) every stage is a pure function of the input and the
 * scorecard, pricing and policy versions: the same input gives the same result,
 * deep-equal. The clock is read only through `deps.now` for timings, which are not
 * part of the result; the schedule and APR use `deps.decisionDate`.
 *
 * Decision rules:
 *  - the policy declines → declined, with the knockout reasons first;
 *  - the policy refers, or the verification provider gave no answer → referred
 *    (a provider anomaly never approves: the pipeline enforces it even if a policy
 *    version forgot the rule);
 *  - the policy approves and the requested amount and term fit the policy's limits
 *    → approved with the offer;
 *  - the policy approves but the amount breaks a limit (DTI, PTI, LTV, maximum amount)
 *    or the term is over the grade's maximum → counter_offer with the largest amount
 *    that fits at the priced term (or the requested amount at the shorter term), or
 *    declined when that amount is under the pricing's minimum, with the limits that
 *    cut it as the first reasons.
 */
import { ONE, ZERO, compare, formatMoney, isCurrency, isIsoDate, minorUnits, parseDecimal } from '../engine/index.js';
import { AppError, type FieldError } from '../platform/errors.js';
import { type AffordabilityFacts, type AmountLimit, assessAffordability, assessCollateral, exceededLimits, existingDebtToIncome, maxAffordableAmount } from './affordability.js';
import type { AdverseReason, CompanyVerification, DecisionInput, DecisionResult, PolicyResult, ScoreResult, StageName, StageTimings } from './model.js';
import type { CompiledPolicy, PolicyFacts } from './policy.js';
import { policyNumber } from './policy.js';
import defaultPolicy from './policies/default.json' with { type: 'json' };
import { getPricing, installmentFor, isAllowedTerm, minimumAmount, offerFor, priceApplication } from './pricing.js';
import { type ReasonCode, MAX_REASONS, referralReasons, ruleReason, selectReasons } from './reasons.js';
import { scoreApplication } from './scorecard.js';

export const DEFAULT_SCORECARD_VERSION = 'sc-2026.1';
export const DEFAULT_PRICING_VERSION = 'pr-2026.1';
export const DEFAULT_POLICY_ID = 'default';
export const DEFAULT_POLICY_VERSION = 1;

/** The default policy shipped in the repository (src/origination/policies/default.json), a fresh copy. */
export function loadDefaultPolicyContent(): unknown {
  return structuredClone(defaultPolicy);
}

export interface PipelineDeps {
  readonly policy: CompiledPolicy;
  readonly scorecardVersion: string;
  readonly pricingVersion: string;
  readonly verify: (company: string) => Promise<CompanyVerification>;
  /** YYYY-MM-DD: the disbursement date the offer's schedule and APR are computed from. */
  readonly decisionDate: string;
  /** Milliseconds, for stage timings only. */
  readonly now: () => number;
}

export interface PipelineOutput {
  readonly result: DecisionResult;
  readonly timings: StageTimings;
}

/** Amounts above this (minor units) are refused: the policy compares numbers, exact to 15 significant digits. */
const MAX_AMOUNT = 10n ** 15n;
const MAX_EMPLOYMENT_YEARS = parseDecimal('100');

/**
 * The validation stage: what the request schema cannot say. Throws AppError
 * validation_failed listing every bad field (snake_case JSON pointers of the request).
 */
export function validateDecisionInput(input: DecisionInput, pricingVersion: string, decisionDate: string): void {
  const errors: FieldError[] = [];
  const bad = (field: string, detail: string): void => {
    errors.push({ pointer: `#/${field}`, location: 'body', detail });
  };
  const currencyOk = isCurrency(input.currency);
  if (!currencyOk) bad('currency', 'currency must be an ISO 4217 code with a minor unit');
  const pricing = getPricing(pricingVersion);
  if (input.loanAmount <= 0n) bad('loan_amount', 'loan_amount must be positive');
  else if (input.loanAmount > MAX_AMOUNT) bad('loan_amount', 'loan_amount is too large');
  else if (currencyOk && input.loanAmount < minimumAmount(pricing, input.currency)) bad('loan_amount', `loan_amount must be at least ${pricing.minAmount} ${input.currency}`);
  const amount = (field: string, value: bigint): void => {
    if (value < 0n) bad(field, `${field} must not be negative`);
    else if (value > MAX_AMOUNT) bad(field, `${field} is too large`);
  };
  amount('monthly_income', input.monthlyIncome);
  if (input.monthlyDebtPayments !== null) amount('monthly_debt_payments', input.monthlyDebtPayments);
  amount('collateral_value', input.collateralValue);
  const decimalIn = (field: string, text: string, min: typeof ZERO, max: typeof ONE): void => {
    try {
      const value = parseDecimal(text, field, 12);
      if (compare(value, min) < 0 || compare(value, max) > 0) bad(field, `${field} must be from ${formatBound(min)} to ${formatBound(max)}`);
    } catch {
      bad(field, `${field} must be a decimal number such as "0.92"`);
    }
  };
  decimalIn('repayment_score', input.repaymentScore, ZERO, ONE);
  decimalIn('employment_years', input.employmentYears, ZERO, MAX_EMPLOYMENT_YEARS);
  if (!Number.isSafeInteger(input.existingLoans) || input.existingLoans < 0) bad('existing_loans', 'existing_loans must be a whole number, 0 or more');
  if (input.requestedTermMonths !== null && !isAllowedTerm(pricing, input.requestedTermMonths)) {
    bad('requested_term_months', `requested_term_months must be a whole number of months from ${pricing.minTermMonths} to ${pricing.maxTermMonths}`);
  }
  if (input.company !== null && input.company.trim() === '') bad('company', 'company must not be blank (leave it out instead)');
  if (!isIsoDate(decisionDate)) throw new Error('the pipeline needs decisionDate as a YYYY-MM-DD calendar date');
  if (errors.length > 0) throw new AppError('validation_failed', { detail: errors.map((e) => e.detail).join('; '), errors });
}

function formatBound(r: typeof ZERO): string {
  return (r.num / r.den).toString();
}

/** The verification stage: never throws; a thrown provider error is an unavailable answer. */
async function verifyCompany(company: string | null, verify: PipelineDeps['verify']): Promise<CompanyVerification> {
  if (company === null) return { status: 'skipped', reason: 'no_company' };
  try {
    return await verify(company);
  } catch (error) {
    return { status: 'unavailable', provider: 'serper', failure: 'upstream_error', detail: error instanceof Error ? error.message : String(error) };
  }
}

function money(amount: bigint | null, currency: string): number | null {
  return amount === null ? null : policyNumber(formatMoney(amount, currency));
}

function ratioNumber(text: string | null): number | null {
  return text === null ? null : policyNumber(text);
}

/** What the policy sees (see policy.ts on numbers). */
export function policyFacts(
  input: DecisionInput,
  stages: { verification: CompanyVerification; ltv: string | null; existingDti: string | null; score: ScoreResult; grade: string; annualRate: string; termMonths: number; monthlyPayment: bigint; dti: string | null; pti: string | null },
): PolicyFacts {
  const c = input.currency;
  return {
    currency: c,
    loan_amount: money(input.loanAmount, c),
    monthly_income: money(input.monthlyIncome, c),
    monthly_debt_payments: money(input.monthlyDebtPayments, c),
    collateral_value: money(input.collateralValue, c),
    employment_years: policyNumber(input.employmentYears),
    existing_loans: input.existingLoans,
    repayment_score: policyNumber(input.repaymentScore),
    purpose: input.purpose,
    company_verification: stages.verification.status,
    verification_failure: stages.verification.status === 'unavailable' ? stages.verification.failure : null,
    loan_to_value: ratioNumber(stages.ltv),
    existing_debt_to_income: ratioNumber(stages.existingDti),
    debt_to_income: ratioNumber(stages.dti),
    payment_to_income: ratioNumber(stages.pti),
    monthly_payment: money(stages.monthlyPayment, c),
    score: stages.score.score,
    max_score: stages.score.maxScore,
    grade: stages.grade,
    annual_rate: policyNumber(stages.annualRate),
    term_months: stages.termMonths,
    requested_term_months: input.requestedTermMonths,
  };
}

const LIMIT_REASON: Readonly<Record<AmountLimit, ReasonCode>> = {
  max_payment_to_income: 'income_insufficient',
  max_debt_to_income: 'debt_to_income_too_high',
  max_loan_to_value: 'insufficient_collateral',
  max_loan_amount: 'amount_exceeds_limit',
};

/** A broken limit as a reason, sourced to the policy rule that set the limit. */
function limitReason(policy: CompiledPolicy, result: PolicyResult, limit: AmountLimit): AdverseReason {
  const source = policy.limitSource(result, limit);
  // A limit set outside a decision table (an expression node) has no rule id; name the limit instead.
  return ruleReason(LIMIT_REASON[limit], source?.nodeId ?? 'limits', source?.ruleId ?? limit);
}

/**
 * The limits that cut the amount to `offered`: those broken one currency unit above
 * it. A limit the requested amount breaks but the offer is not held back by (a DTI
 * limit when the PTI limit binds first) is not a principal reason; when none binds
 * at the next unit (the offer is the requested amount rounded down) every broken
 * limit is reported.
 */
function bindingLimits(
  limits: Readonly<Record<string, string>>,
  facts: AffordabilityFacts,
  offered: bigint,
  broken: readonly AmountLimit[],
  annualRate: string,
  termMonths: number,
  decisionDate: string,
): AmountLimit[] {
  if (broken.length === 0) return [];
  const next = offered + 10n ** BigInt(minorUnits(facts.currency));
  const atNext = exceededLimits(limits, facts, next, installmentFor(next, termMonths, annualRate, facts.currency, decisionDate));
  const binding = broken.filter((limit) => atNext.includes(limit));
  return binding.length > 0 ? binding : [...broken];
}

/** Runs the pipeline. Throws AppError validation_failed for input the validation stage refuses. */
export async function runPipeline(input: DecisionInput, deps: PipelineDeps): Promise<PipelineOutput> {
  const timings: Partial<Record<StageName, number>> = {};
  const timed = async <T>(stage: StageName, run: () => T | Promise<T>): Promise<T> => {
    const start = deps.now();
    try {
      return await run();
    } finally {
      timings[stage] = deps.now() - start;
    }
  };

  await timed('validation', () => validateDecisionInput(input, deps.pricingVersion, deps.decisionDate));
  const verification = await timed('company_verification', () => verifyCompany(input.company, deps.verify));
  const collateral = await timed('collateral', () => assessCollateral(input.loanAmount, input.collateralValue));
  const existingDti = existingDebtToIncome(input.monthlyDebtPayments, input.monthlyIncome);
  const scorecard = await timed('scorecard', () =>
    scoreApplication(deps.scorecardVersion, {
      repaymentScore: input.repaymentScore,
      existingLoans: input.existingLoans,
      employmentYears: input.employmentYears,
      debtToIncome: existingDti,
      loanToValue: collateral.ltv,
    }),
  );
  const pricing = await timed('pricing', () => priceApplication(deps.pricingVersion, scorecard.score, input.requestedTermMonths));
  const facts: AffordabilityFacts = {
    currency: input.currency,
    monthlyIncome: input.monthlyIncome,
    monthlyDebtPayments: input.monthlyDebtPayments,
    collateralValue: input.collateralValue,
  };
  const affordability = await timed('affordability', () => assessAffordability(facts, input.loanAmount, pricing.annualRate, pricing.termMonths, deps.decisionDate));
  const policy = await timed('policy', () =>
    deps.policy.evaluate(
      policyFacts(input, {
        verification,
        ltv: collateral.ltv,
        existingDti,
        score: scorecard,
        grade: pricing.grade,
        annualRate: pricing.annualRate,
        termMonths: pricing.termMonths,
        monthlyPayment: affordability.monthlyPayment,
        dti: affordability.debtToIncome,
        pti: affordability.paymentToIncome,
      }),
    ),
  );
  const stages = { company_verification: verification, collateral, scorecard, pricing, affordability, policy };

  const result = await timed('decision', (): DecisionResult => {
    if (policy.outcome === 'decline') {
      return { outcome: 'declined', reasons: selectReasons(scorecard, policy.hits), offer: null, stages };
    }
    if (policy.outcome === 'refer' || verification.status === 'unavailable') {
      const reasons = referralReasons(policy.hits);
      if (verification.status === 'unavailable' && !reasons.some((r) => r.code === 'verification_unavailable')) {
        reasons.unshift(ruleReason('verification_unavailable', 'pipeline', 'provider_unavailable'));
      }
      return { outcome: 'referred', reasons: reasons.slice(0, MAX_REASONS), offer: null, stages };
    }
    const broken = exceededLimits(policy.limits, facts, input.loanAmount, affordability.monthlyPayment);
    const termCut = input.requestedTermMonths !== null && pricing.termMonths < input.requestedTermMonths;
    if (broken.length === 0 && !termCut) {
      return { outcome: 'approved', reasons: [], offer: offerFor(input.loanAmount, pricing.termMonths, pricing.annualRate, input.currency, deps.decisionDate), stages };
    }
    const offered = broken.length === 0 ? input.loanAmount : maxAffordableAmount(policy.limits, facts, pricing.annualRate, pricing.termMonths, deps.decisionDate, input.loanAmount);
    const binding = bindingLimits(policy.limits, facts, offered, broken, pricing.annualRate, pricing.termMonths, deps.decisionDate);
    const reasons = selectReasons(
      scorecard,
      policy.hits,
      binding.map((limit) => limitReason(deps.policy, policy, limit)),
    );
    if (offered < minimumAmount(getPricing(deps.pricingVersion), input.currency)) {
      return { outcome: 'declined', reasons, offer: null, stages };
    }
    return { outcome: 'counter_offer', reasons, offer: offerFor(offered, pricing.termMonths, pricing.annualRate, input.currency, deps.decisionDate), stages };
  });
  return { result, timings };
}
