/** Kysely table types for migrations/0003_ledger.sql. */
import type { ColumnType, Generated } from 'kysely';
import type { AccountType } from './model.js';

export interface LedgerAccountsTable {
  code: string;
  number: string;
  name: string;
  type: AccountType;
  normal_balance: 'debit' | 'credit';
  created_at: Generated<Date>;
}

export interface JournalEntriesTable {
  id: string;
  /** Posting order, assigned by the database. */
  seq: ColumnType<bigint, never, never>;
  entry_date: string;
  posted_at: ColumnType<Date, Date | undefined, never>;
  description: string;
  loan_id: string | null;
  source_type: string;
  source_id: string | null;
  reverses_entry_id: string | null;
  created_by: string | null;
}

export interface JournalLinesTable {
  entry_id: string;
  line_no: number;
  account_code: string;
  currency: string;
  /** Debits positive, credits negative. */
  amount: bigint;
}

export interface LedgerTables {
  ledger_accounts: LedgerAccountsTable;
  journal_entries: JournalEntriesTable;
  journal_lines: JournalLinesTable;
}
