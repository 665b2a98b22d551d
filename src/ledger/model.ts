/** The general ledger: the chart of accounts, journal entry shapes and the part's problems. */
import { defineProblems } from '../platform/errors.js';

/** The chart of accounts (seeded by migrations/0003_ledger.sql). */
export const ACCOUNT_CODES = [
  'cash_clearing',
  'loans_receivable_principal',
  'interest_receivable',
  'fees_receivable',
  'borrower_credit_balances',
  'suspense',
  'interest_income',
  'fee_income',
  'recoveries',
  'charge_off_losses',
] as const;
export type AccountCode = (typeof ACCOUNT_CODES)[number];

export const ACCOUNT_TYPES = ['asset', 'liability', 'equity', 'income', 'expense'] as const;
export type AccountType = (typeof ACCOUNT_TYPES)[number];

export interface Account {
  readonly code: string;
  readonly number: string;
  readonly name: string;
  readonly type: AccountType;
  readonly normalBalance: 'debit' | 'credit';
}

export type Side = 'debit' | 'credit';

export interface JournalLineInput {
  readonly account: AccountCode;
  readonly currency: string;
  readonly side: Side;
  /** Minor units, > 0. */
  readonly amount: bigint;
}

export interface JournalEntryInput {
  /** 'YYYY-MM-DD': the business date the entry belongs to. */
  readonly entryDate: string;
  readonly description: string;
  readonly loanId?: string | undefined;
  /** What caused it, e.g. 'loan.disbursement', 'payment', 'manual'. */
  readonly sourceType: string;
  readonly sourceId?: string | undefined;
  readonly createdBy?: string | undefined;
  readonly lines: readonly JournalLineInput[];
}

export interface JournalLine {
  readonly lineNo: number;
  readonly account: string;
  readonly currency: string;
  readonly side: Side;
  readonly amount: bigint;
}

export interface JournalEntry {
  readonly id: string;
  readonly entryDate: string;
  readonly postedAt: Date;
  readonly description: string;
  readonly loanId: string | null;
  readonly sourceType: string;
  readonly sourceId: string | null;
  readonly reversesEntryId: string | null;
  readonly lines: readonly JournalLine[];
}

export interface TrialBalanceRow {
  readonly account: Account;
  readonly currency: string;
  /** Sum of debits and of credits, both ≥ 0, in minor units. */
  readonly debits: bigint;
  readonly credits: bigint;
}

export interface TrialBalance {
  readonly asOf: string | null;
  readonly rows: readonly TrialBalanceRow[];
  /** Per currency: total debits, total credits; they are equal in a sound ledger. */
  readonly totals: readonly { currency: string; debits: bigint; credits: bigint }[];
}

export const LedgerProblem = defineProblems({
  unbalanced_entry: {
    status: 422,
    title: 'Journal entry does not balance',
    description: 'A journal entry needs at least two lines, and its debits must equal its credits in every currency. Nothing was posted.',
  },
  entry_not_found: { status: 404, title: 'Journal entry not found', description: 'No journal entry has this id.' },
  entry_already_reversed: {
    status: 409,
    title: 'Journal entry already reversed',
    description: 'Each entry can be reversed once; the reversal itself can be reversed to restore it.',
  },
});
