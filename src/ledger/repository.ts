/** Ledger I/O: Kysely queries only, no decisions. Every function takes the executor. */
import { sql, type Kysely } from 'kysely';
import type { LedgerTables } from './schema.js';

export type LedgerDb = LedgerTables;
/** A database or a transaction (Transaction extends Kysely). */
export type LedgerExecutor = Kysely<LedgerDb>;

export interface EntryRow {
  id: string;
  /** Posting order (assigned by the database; 0n before insert). */
  seq: bigint;
  entry_date: string;
  posted_at: Date;
  description: string;
  loan_id: string | null;
  source_type: string;
  source_id: string | null;
  reverses_entry_id: string | null;
}

export interface LineRow {
  entry_id: string;
  line_no: number;
  account_code: string;
  currency: string;
  amount: bigint;
}

export function listAccounts(db: LedgerExecutor) {
  return db.selectFrom('ledger_accounts').select(['code', 'number', 'name', 'type', 'normal_balance']).orderBy('number').execute();
}

/** Entries and their lines, two statements whatever their number; posting order follows the list. */
export async function insertEntries(
  db: LedgerExecutor,
  entries: readonly (Omit<EntryRow, 'seq'> & { created_by: string | null })[],
  lines: readonly LineRow[],
): Promise<void> {
  if (entries.length === 0) return;
  await db.insertInto('journal_entries').values([...entries]).execute();
  await db.insertInto('journal_lines').values([...lines]).execute();
}

const ENTRY_COLUMNS = ['id', 'seq', 'entry_date', 'posted_at', 'description', 'loan_id', 'source_type', 'source_id', 'reverses_entry_id'] as const;

export function findEntry(db: LedgerExecutor, id: string): Promise<EntryRow | undefined> {
  return db.selectFrom('journal_entries').select(ENTRY_COLUMNS).where('id', '=', id).executeTakeFirst();
}

export function findReversalOf(db: LedgerExecutor, id: string): Promise<{ id: string } | undefined> {
  return db.selectFrom('journal_entries').select('id').where('reverses_entry_id', '=', id).executeTakeFirst();
}

export function linesOf(db: LedgerExecutor, entryIds: readonly string[]): Promise<LineRow[]> {
  if (entryIds.length === 0) return Promise.resolve([]);
  return db
    .selectFrom('journal_lines')
    .select(['entry_id', 'line_no', 'account_code', 'currency', 'amount'])
    .where('entry_id', 'in', [...entryIds])
    .orderBy('entry_id')
    .orderBy('line_no')
    .execute();
}

/** Entries in posting order, after a cursor entry, optionally for one loan. */
export async function listEntries(db: LedgerExecutor, filter: { loanId?: string | undefined; limit: number; after?: EntryRow | undefined }): Promise<EntryRow[]> {
  let query = db.selectFrom('journal_entries').select(ENTRY_COLUMNS);
  if (filter.loanId !== undefined) query = query.where('loan_id', '=', filter.loanId);
  if (filter.after !== undefined) query = query.where('seq', '>', filter.after.seq);
  return query.orderBy('seq').limit(filter.limit).execute();
}

/** Debit and credit sums per account and currency, for entries dated on or before asOf (all when null). */
export function sumsByAccount(db: LedgerExecutor, asOf: string | null) {
  let query = db
    .selectFrom('journal_lines as l')
    .innerJoin('journal_entries as e', 'e.id', 'l.entry_id')
    .select([
      'l.account_code',
      'l.currency',
      sql<bigint>`coalesce(sum(l.amount) filter (where l.amount > 0), 0)::bigint`.as('debits'),
      sql<bigint>`coalesce(-sum(l.amount) filter (where l.amount < 0), 0)::bigint`.as('credits'),
    ])
    .groupBy(['l.account_code', 'l.currency']);
  if (asOf !== null) query = query.where('e.entry_date', '<=', asOf);
  return query.execute();
}

/** Net of every journal line per currency, minor units (0 everywhere in a sound ledger). */
export async function ledgerNetByCurrency(db: Kysely<LedgerDb>): Promise<Map<string, bigint>> {
  const r = await sql<{ currency: string; net: bigint }>`select currency, sum(amount)::bigint as net from journal_lines group by currency`.execute(db);
  return new Map(r.rows.map((row) => [row.currency, row.net]));
}
