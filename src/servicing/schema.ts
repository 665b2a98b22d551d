/** Kysely table types for migrations/0005_servicing.sql. */
import type { ColumnType, Generated, JSONColumnType } from 'kysely';

type Json = JSONColumnType<object, string, string>;

export interface LoanProductsTable {
  id: string;
  version: number;
  code: string;
  name: string;
  currency: string;
  terms: Json;
  created_at: Generated<Date>;
  created_by: string | null;
}

export interface LoansTable {
  id: string;
  borrower_id: string;
  product_id: string;
  product_version: number;
  status: string;
  currency: string;
  principal: bigint;
  terms: Json;
  state: Json;
  gl: JSONColumnType<Record<string, string>, string, string>;
  last_seq: Generated<number>;
  as_of: string | null;
  principal_outstanding: Generated<bigint>;
  days_past_due: Generated<number>;
  delinquency_bucket: Generated<string>;
  next_due_date: string | null;
  closed_through: string | null;
  booked_on: string;
  version: Generated<number>;
  created_at: Generated<Date>;
  updated_at: Generated<Date>;
  created_by: string | null;
}

export interface LoanTransactionsTable {
  id: string;
  loan_id: string;
  seq: number;
  type: string;
  value_date: string;
  amount: bigint;
  currency: string;
  details: Json;
  effect: Json;
  reversed_at: Date | null;
  reversal_reason: string | null;
  journal_entry_id: string | null;
  idempotency_key: string | null;
  created_at: Generated<Date>;
  created_by: string | null;
}

export interface LoanCommandKeysTable {
  loan_id: string;
  idempotency_key: string;
  request_hash: string;
  transaction_id: string | null;
  created_at: Generated<Date>;
}

export interface LoanCheckpointsTable {
  loan_id: string;
  seq: number;
  value_date: string;
  state: Json;
}

export interface BusinessDateTable {
  id: Generated<boolean>;
  today: string;
  updated_at: Generated<Date>;
}

export interface EodRunsTable {
  id: string;
  business_date: string;
  status: 'running' | 'completed' | 'failed';
  loans_total: Generated<number>;
  loans_processed: Generated<number>;
  chunks: Generated<number>;
  accrued: JSONColumnType<Record<string, string>, string, string>;
  late_fees: Generated<number>;
  charge_offs: Generated<number>;
  newly_delinquent: Generated<number>;
  reconciliation: JSONColumnType<object, string | null, string | null> | null;
  error: string | null;
  started_at: Generated<Date>;
  finished_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
  started_by: string | null;
}

export interface ServicingTables {
  loan_products: LoanProductsTable;
  loans: LoansTable;
  loan_transactions: LoanTransactionsTable;
  loan_command_keys: LoanCommandKeysTable;
  loan_checkpoints: LoanCheckpointsTable;
  business_date: BusinessDateTable;
  eod_runs: EodRunsTable;
}
