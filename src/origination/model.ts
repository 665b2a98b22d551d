/**
 * Origination: applications, the decision they get, and the contracts between the
 * pipeline's pure stages (scorecard.ts, policy.ts, pricing.ts, affordability.ts,
 * reasons.ts, pipeline.ts), the external providers (providers/) and the service.
 *
 * What the decision runs on is `DecisionInput`: the facts of an application without
 * personal data. Name, email, national id and date of birth never reach a stage (the
 * date of birth is collected for identity, never scored: Regulation B § 1002.6(b)(2)).
 * Every amount is bigint minor units, every ratio an exact decimal string; the stages
 * are deterministic, so a decision replays exactly from its recorded input, versions
 * and provider outcomes.
 */
import { defineProblems } from '../platform/errors.js';

export const DECISION_OUTCOMES = ['approved', 'declined', 'referred', 'counter_offer'] as const;
export type DecisionOutcome = (typeof DECISION_OUTCOMES)[number];

/** Stage names, in the order the pipeline runs them; also the `stage` label of loan_processing_duration_seconds. */
export const STAGES = ['validation', 'company_verification', 'collateral', 'scorecard', 'pricing', 'affordability', 'policy', 'decision'] as const;
export type StageName = (typeof STAGES)[number];

/** The facts a decision runs on (no personal data). */
export interface DecisionInput {
  readonly currency: string;
  /** Requested amount, minor units, > 0. */
  readonly loanAmount: bigint;
  /** Gross monthly income, minor units, ≥ 0. */
  readonly monthlyIncome: bigint;
  /** Existing monthly debt payments, minor units; null when the applicant did not say. */
  readonly monthlyDebtPayments: bigint | null;
  /** Years in current employment, exact decimal string ("7", "2.5"). */
  readonly employmentYears: string;
  /** Number of existing loans, integer ≥ 0. */
  readonly existingLoans: number;
  /** Repayment score from the credit history, exact decimal string in [0, 1]. */
  readonly repaymentScore: string;
  /** Collateral value, minor units; 0 = unsecured. */
  readonly collateralValue: bigint;
  /** Employer, verified by the company-verification provider; null = none given. */
  readonly company: string | null;
  /** Requested term in months; null = the pricing's default term. */
  readonly requestedTermMonths: number | null;
  readonly purpose: string | null;
}

// ---- providers ---------------------------------------------------------------------

/** Why a provider gave no usable answer. Any of these sends the application to manual review. */
export type ProviderFailure = 'timeout' | 'upstream_error' | 'malformed' | 'oversized' | 'circuit_open' | 'network';

/** The company-verification stage's outcome, recorded in the decision (a replay reuses it, never calls out). */
export type CompanyVerification =
  | {
      readonly status: 'verified' | 'not_found';
      readonly provider: 'serper';
      /** Top results that support the finding (title and link only). */
      readonly evidence: readonly { readonly title: string; readonly link: string }[];
      readonly cached: boolean;
    }
  | { readonly status: 'unavailable'; readonly provider: 'serper'; readonly failure: ProviderFailure; readonly detail: string }
  | { readonly status: 'skipped'; readonly reason: 'not_configured' | 'no_company' };

export interface CompanyVerifier {
  verify(company: string): Promise<CompanyVerification>;
}

/** What the underwriters' narrative sees: the decision's facts, never PII unless configured. */
export interface NarrativeRequest {
  readonly outcome: DecisionOutcome;
  readonly facts: Readonly<Record<string, string | number | boolean | null>>;
  readonly reasons: readonly AdverseReason[];
}

export type Narrative =
  | { readonly status: 'written'; readonly provider: 'gemini'; readonly text: string }
  | { readonly status: 'unavailable'; readonly provider: 'gemini'; readonly failure: ProviderFailure; readonly detail: string }
  | { readonly status: 'skipped'; readonly reason: 'not_configured' };

export interface NarrativeWriter {
  write(request: NarrativeRequest): Promise<Narrative>;
}

// ---- stage results -----------------------------------------------------------------

export interface CollateralResult {
  /** Loan-to-value, exact decimal string rounded half-even to 4 places; null when unsecured. */
  readonly ltv: string | null;
}

export interface ScoredAttribute {
  /** Stable attribute name: repayment_score, existing_loans, employment_years, debt_to_income, loan_to_value. */
  readonly attribute: string;
  /** The value as scored (decimal string). */
  readonly value: string;
  /** The bin's label, e.g. "[0.90, 1.00]". */
  readonly bin: string;
  readonly points: number;
  readonly maxPoints: number;
}

export interface ScoreResult {
  readonly scorecardVersion: string;
  readonly score: number;
  readonly maxScore: number;
  readonly attributes: readonly ScoredAttribute[];
}

export type RiskGrade = 'A' | 'B' | 'C' | 'D' | 'E';

export interface PricingResult {
  readonly pricingVersion: string;
  readonly grade: RiskGrade;
  /** Nominal annual rate, exact decimal string. */
  readonly annualRate: string;
  readonly termMonths: number;
  readonly maxTermMonths: number;
}

export interface AffordabilityResult {
  /** The new loan's installment at the priced rate and term (engine schedule), minor units. */
  readonly monthlyPayment: bigint;
  /** (existing debt payments + new installment) / income, 4 places; null when income is 0. */
  readonly debtToIncome: string | null;
  /** new installment / income, 4 places; null when income is 0. */
  readonly paymentToIncome: string | null;
}

export interface PolicyRuleHit {
  /** The decision-table node and rule that fired (JDM ids), for the trace. */
  readonly nodeId: string;
  readonly nodeName: string;
  readonly ruleId: string;
  /** The rule's output: approve | decline | refer, and its reason code when it is a knockout or a referral. */
  readonly outcome: 'approve' | 'decline' | 'refer';
  readonly reasonCode: string | null;
}

export interface PolicyResult {
  readonly policyId: string;
  readonly policyVersion: number;
  /** The combined outcome: any decline → decline, else any refer → refer, else approve. */
  readonly outcome: 'approve' | 'decline' | 'refer';
  readonly hits: readonly PolicyRuleHit[];
  /** Limits the policy sets for the offer (decimal strings), e.g. max_debt_to_income, max_loan_to_value. */
  readonly limits: Readonly<Record<string, string>>;
}

export interface AdverseReason {
  /** Stable code, e.g. "repayment_history", "debt_to_income_too_high". */
  readonly code: string;
  /** Human-readable text for the adverse-action notice. */
  readonly text: string;
  /** Where it came from: a scorecard attribute (points lost), a knockout rule, or an underwriter's review. */
  readonly source:
    | { readonly kind: 'scorecard'; readonly attribute: string; readonly pointsLost: number }
    | { readonly kind: 'rule'; readonly nodeId: string; readonly ruleId: string }
    | { readonly kind: 'review'; readonly reviewerId: string };
}

export interface Offer {
  readonly currency: string;
  readonly amount: bigint;
  readonly termMonths: number;
  readonly annualRate: string;
  /** Reg Z Appendix J APR from the engine, exact decimal string. */
  readonly apr: string;
  readonly monthlyPayment: bigint;
}

/** The stage results as recorded; a stage that did not run is absent. */
export interface StageResults {
  readonly company_verification?: CompanyVerification;
  readonly collateral?: CollateralResult;
  readonly scorecard?: ScoreResult;
  readonly pricing?: PricingResult;
  readonly affordability?: AffordabilityResult;
  readonly policy?: PolicyResult;
}

/** The deterministic part of a decision: what a replay must reproduce exactly. */
export interface DecisionResult {
  readonly outcome: DecisionOutcome;
  /** 1–4 for declined and counter_offer; for referred, why it was referred; empty for approved. */
  readonly reasons: readonly AdverseReason[];
  /** For approved and counter_offer. */
  readonly offer: Offer | null;
  readonly stages: StageResults;
}

/** Milliseconds per stage; recorded, never part of what a replay compares. */
export type StageTimings = Partial<Record<StageName, number>>;

export const OriginationProblem = defineProblems({
  application_not_found: { status: 404, title: 'Application not found', description: 'No application has this id, or it is not yours to see.' },
  application_velocity_exceeded: {
    status: 429,
    title: 'Too many applications',
    description: 'This applicant has reached the number of applications allowed in 24 hours (APPLICATIONS_PER_DAY). Retry-After says when the oldest one ages out.',
  },
  policy_not_found: { status: 404, title: 'Policy not found', description: 'No policy version has this id.' },
  invalid_policy: {
    status: 422,
    title: 'Invalid policy',
    description: 'The uploaded content is not a decision graph the engine can evaluate; `errors[]` says where.',
  },
  no_champion_policy: { status: 503, title: 'No policy decides', description: 'No policy version is assigned as champion; an admin activates one (POST /v1/policies/{id}/activation).' },
  invalid_application_state: {
    status: 409,
    title: 'Not allowed in the application state',
    description: 'The application is in a state that does not allow this operation. `state` names the state and `operation` the operation.',
  },
  maker_checker: {
    status: 403,
    title: 'Four-eyes rule',
    description: 'An underwriter may not decide an application they submitted or are the applicant of, nor give both approvals an amount above the dual-approval threshold needs.',
  },
  no_offer: { status: 409, title: 'No offer to accept', description: 'Only an approved application or a counter-offer can be accepted.' },
  product_required: {
    status: 422,
    title: 'Product required',
    description: 'Booking needs a loan product: name product_id in the application or in the acceptance.',
  },
  borrower_required: {
    status: 422,
    title: 'Borrower required',
    description: 'The application was made for someone without a borrower account; name borrower_id when accepting.',
  },
});
