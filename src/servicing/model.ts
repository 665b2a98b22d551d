/**
 * Servicing: loan products, loan accounts, their transactions and the part's problems.
 * Types only (and the problem catalogue); the rules live in loan-state.ts (pure),
 * products.ts (pure) and service.ts (transactions, locks, ledger).
 */
import type {
  AllocationStrategyName,
  Amortization,
  DayCountConvention,
  Frequency,
  InterestMethod,
  OverpaymentMode,
  RoundingMode,
} from '../engine/index.js';
import { defineProblems } from '../platform/errors.js';

export const LOAN_STATUSES = ['pending_disbursement', 'active', 'paid_off', 'overpaid', 'charged_off', 'written_off', 'cancelled'] as const;
export type LoanStatus = (typeof LOAN_STATUSES)[number];

export const TRANSACTION_TYPES = ['disbursement', 'repayment', 'fee', 'late_fee', 'charge_off', 'write_off', 'recovery'] as const;
export type TransactionType = (typeof TRANSACTION_TYPES)[number];

/** A fee: a fixed amount in minor units, or a fraction of a base amount (exact decimal string, "0.05" = 5 %). */
export type FeeRule = { readonly kind: 'fixed'; readonly amount: bigint } | { readonly kind: 'percent'; readonly rate: string };

export interface LateFeeRule {
  readonly fee: FeeRule;
  /** Charged once per installment still unpaid this many days after its due date. */
  readonly graceDays: number;
}

export interface DelinquencyBucket {
  readonly name: string;
  /** Days past due from which the bucket applies (the first bucket usually starts at 1). */
  readonly minDays: number;
}

/** The terms a product version fixes; a loan keeps a copy of them (and of its version). */
export interface ProductTerms {
  readonly currency: string;
  readonly interestMethod: InterestMethod;
  readonly amortization: Amortization;
  readonly dayCount: DayCountConvention;
  readonly frequency: Frequency;
  readonly interestRounding: RoundingMode;
  readonly paymentRounding: RoundingMode;
  readonly allocationStrategy: AllocationStrategyName;
  readonly overpayment: OverpaymentMode;
  readonly originationFee: FeeRule | null;
  readonly lateFee: LateFeeRule | null;
  readonly delinquencyBuckets: readonly DelinquencyBucket[];
  /** Days past due at which the end-of-day run charges the loan off; null = never by policy. */
  readonly chargeOffDays: number | null;
  readonly minAmount: bigint;
  readonly maxAmount: bigint;
  readonly minTerm: number;
  readonly maxTerm: number;
  /** Exact decimal strings, annual fractions. */
  readonly minRate: string;
  readonly maxRate: string;
  readonly multiTranche: boolean;
}

export interface Product {
  readonly id: string;
  readonly version: number;
  readonly code: string;
  readonly name: string;
  readonly terms: ProductTerms;
  readonly createdAt: Date;
}

/** The loan's own terms: the product version's, plus what was agreed for this loan. */
export interface LoanTerms extends ProductTerms {
  /** Approved amount, minor units. */
  readonly principal: bigint;
  readonly annualRate: string;
  readonly term: number;
  /** 'YYYY-MM-DD'; default one period after the first disbursement. */
  readonly firstPaymentDate: string | null;
}

export const ServicingProblem = defineProblems({
  product_not_found: { status: 404, title: 'Loan product not found', description: 'No loan product has this id (or version).' },
  product_code_taken: {
    status: 409,
    title: 'Product code already used',
    description: 'Another product has this code; publish a new version of it instead (POST /v1/products/{id}/versions).',
  },
  loan_not_found: { status: 404, title: 'Loan not found', description: 'No loan has this id, or it is not yours to see.' },
  transaction_not_found: { status: 404, title: 'Transaction not found', description: 'The loan has no transaction with this id.' },
  outside_product_limits: {
    status: 422,
    title: 'Outside the product limits',
    description: 'The amount, term or rate is outside what the product version allows; the detail names the limit.',
  },
  invalid_loan_state: {
    status: 409,
    title: 'Not allowed in the loan state',
    description: 'The loan is in a state that does not allow this operation. `state` names the state and `operation` the operation.',
  },
  future_value_date: {
    status: 422,
    title: 'Value date after the business date',
    description: 'Transactions take effect on or before the current business date; the detail gives both dates.',
  },
  value_date_too_early: {
    status: 422,
    title: 'Value date before the loan began',
    description: 'A transaction cannot take effect before the loan was disbursed (or a disbursement before the loan was booked).',
  },
  amount_exceeds_limit: {
    status: 422,
    title: 'Amount exceeds what is allowed',
    description: 'The amount is more than the loan allows here (a disbursement above the approved amount, a recovery above the charged-off balance).',
  },
  schedule_capitalizes: {
    status: 422,
    title: 'Schedule would capitalize interest',
    description: 'Disbursed on this date, the first period is so long that its interest exceeds the installment, so the schedule would add interest to principal; servicing does not take such loans yet. Disburse nearer the first payment date.',
  },
  not_reversible: {
    status: 409,
    title: 'Transaction cannot be reversed',
    description: 'Only repayments, recoveries and fees can be reversed, once each; a disbursement or charge-off is corrected differently.',
  },
  business_date_order: {
    status: 409,
    title: 'Business date out of order',
    description: 'End of day closes the current business date or a later one, never an earlier one.',
  },
  loan_busy: {
    // 5xx, so the platform releases the Idempotency-Key and the same request can be retried.
    status: 503,
    title: 'Loan busy',
    description: 'Another operation on this loan held it longer than the wait allowed (a long end-of-day chunk or a burst of payments). Nothing was changed; retry after the Retry-After interval with the same Idempotency-Key.',
  },
  eod_run_not_found: { status: 404, title: 'End-of-day run not found', description: 'No end-of-day run has this id.' },
  eod_run_in_progress: {
    status: 409,
    title: 'End-of-day run in progress',
    description: 'Another end-of-day run is still closing a date; wait for it (GET /v1/eod/runs/{id}) or resume it.',
  },
});
