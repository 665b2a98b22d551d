/** Servicing I/O: Kysely queries only, no decisions. Every function takes the executor. */
import { sql, type Kysely } from 'kysely';
import type { ServicingTables } from './schema.js';

export type ServicingDb = ServicingTables;
export type ServicingExecutor = Kysely<ServicingDb>;

// ---------------------------------------------------------------------------
// Business date
// ---------------------------------------------------------------------------

export async function businessDate(db: ServicingExecutor): Promise<string | undefined> {
  const row = await db.selectFrom('business_date').select('today').executeTakeFirst();
  return row?.today;
}

/** Sets the business date on first use; returns the date in force. */
export async function initBusinessDate(db: ServicingExecutor, today: string): Promise<string> {
  await db.insertInto('business_date').values({ today }).onConflict((oc) => oc.column('id').doNothing()).execute();
  return (await businessDate(db)) as string;
}

export async function setBusinessDate(db: ServicingExecutor, today: string): Promise<void> {
  await db.updateTable('business_date').set({ today, updated_at: sql<Date>`now()` }).execute();
}

// ---------------------------------------------------------------------------
// Products
// ---------------------------------------------------------------------------

const PRODUCT_COLUMNS = ['id', 'version', 'code', 'name', 'currency', 'terms', 'created_at'] as const;

export function insertProduct(db: ServicingExecutor, row: { id: string; version: number; code: string; name: string; currency: string; terms: string; created_by: string | null }) {
  return db.insertInto('loan_products').values(row).returning(PRODUCT_COLUMNS).executeTakeFirstOrThrow();
}

/** The latest version (or the given one) of a product. */
export function findProduct(db: ServicingExecutor, id: string, version?: number) {
  let q = db.selectFrom('loan_products').select(PRODUCT_COLUMNS).where('id', '=', id);
  if (version !== undefined) q = q.where('version', '=', version);
  return q.orderBy('version', 'desc').limit(1).executeTakeFirst();
}

export function findProductIdByCode(db: ServicingExecutor, code: string) {
  return db.selectFrom('loan_products').select('id').where('code', '=', code).limit(1).executeTakeFirst();
}

/** Latest version of each product, ordered by code. */
export function listProducts(db: ServicingExecutor, filter: { limit: number; afterCode?: string | undefined }) {
  let q = db
    .selectFrom('loan_products as p')
    .select(PRODUCT_COLUMNS.map((c) => `p.${c}` as const))
    .where('p.version', '=', (eb) => eb.selectFrom('loan_products as v').select((v) => v.fn.max('v.version').as('m')).whereRef('v.id', '=', 'p.id'));
  if (filter.afterCode !== undefined) q = q.where('p.code', '>', filter.afterCode);
  return q.orderBy('p.code').limit(filter.limit).execute();
}

export function productVersions(db: ServicingExecutor, id: string) {
  return db.selectFrom('loan_products').select(PRODUCT_COLUMNS).where('id', '=', id).orderBy('version').execute();
}

// ---------------------------------------------------------------------------
// Loans
// ---------------------------------------------------------------------------

const LOAN_COLUMNS = [
  'id', 'borrower_id', 'product_id', 'product_version', 'status', 'currency', 'principal', 'terms', 'state', 'gl',
  'last_seq', 'as_of', 'days_past_due', 'delinquency_bucket', 'next_due_date', 'closed_through', 'version', 'created_at', 'updated_at',
] as const;

export type LoanRow = Awaited<ReturnType<typeof findLoan>> & {};

export function insertLoan(
  db: ServicingExecutor,
  row: { id: string; borrower_id: string; product_id: string; product_version: number; status: string; currency: string; principal: bigint; terms: string; state: string; created_by: string | null },
) {
  return db.insertInto('loans').values({ ...row, gl: '{}' }).returning(LOAN_COLUMNS).executeTakeFirstOrThrow();
}

export function findLoan(db: ServicingExecutor, id: string, borrowerId?: string) {
  let q = db.selectFrom('loans').select(LOAN_COLUMNS).where('id', '=', id);
  if (borrowerId !== undefined) q = q.where('borrower_id', '=', borrowerId);
  return q.executeTakeFirst();
}

/** The loan row under a row lock held to the end of the transaction: commands on one loan serialize here. */
export function lockLoan(db: ServicingExecutor, id: string, borrowerId?: string) {
  let q = db.selectFrom('loans').select(LOAN_COLUMNS).where('id', '=', id);
  if (borrowerId !== undefined) q = q.where('borrower_id', '=', borrowerId);
  return q.forUpdate().executeTakeFirst();
}

export async function updateLoan(
  db: ServicingExecutor,
  id: string,
  set: { status: string; state: string; gl: string; last_seq: number; as_of: string | null; principal_outstanding: bigint; days_past_due: number; delinquency_bucket: string; next_due_date: string | null; closed_through?: string | null },
): Promise<void> {
  await db
    .updateTable('loans')
    .set({ ...set, version: sql<number>`version + 1`, updated_at: sql<Date>`now()` })
    .where('id', '=', id)
    .execute();
}

export async function setLoanStatus(db: ServicingExecutor, id: string, status: string): Promise<void> {
  await db.updateTable('loans').set({ status, version: sql<number>`version + 1`, updated_at: sql<Date>`now()` }).where('id', '=', id).execute();
}

export function listLoans(db: ServicingExecutor, filter: { borrowerId?: string | undefined; status?: string | undefined; limit: number; after?: { created_at: Date; id: string } | undefined }) {
  let q = db.selectFrom('loans').select(LOAN_COLUMNS);
  if (filter.borrowerId !== undefined) q = q.where('borrower_id', '=', filter.borrowerId);
  if (filter.status !== undefined) q = q.where('status', '=', filter.status);
  const after = filter.after;
  if (after !== undefined) {
    q = q.where((eb) => eb.or([eb('created_at', '>', after.created_at), eb.and([eb('created_at', '=', after.created_at), eb('id', '>', after.id)])]));
  }
  return q.orderBy('created_at').orderBy('id').limit(filter.limit).execute();
}

// ---------------------------------------------------------------------------
// Transactions, command keys, checkpoints
// ---------------------------------------------------------------------------

const TX_COLUMNS = ['id', 'loan_id', 'seq', 'type', 'value_date', 'amount', 'currency', 'details', 'effect', 'reversed_at', 'reversal_reason', 'journal_entry_id', 'created_at', 'created_by'] as const;

export type TransactionRow = Awaited<ReturnType<typeof findTransaction>> & {};

export async function insertTransaction(
  db: ServicingExecutor,
  row: { id: string; loan_id: string; seq: number; type: string; value_date: string; amount: bigint; currency: string; details: string; effect: string; journal_entry_id: string | null; idempotency_key: string | null; created_by: string | null },
): Promise<void> {
  await db.insertInto('loan_transactions').values(row).execute();
}

export function findTransaction(db: ServicingExecutor, loanId: string, id: string) {
  return db.selectFrom('loan_transactions').select(TX_COLUMNS).where('loan_id', '=', loanId).where('id', '=', id).executeTakeFirst();
}

export function listTransactions(db: ServicingExecutor, loanId: string, filter: { limit: number; afterSeq?: number | undefined }) {
  let q = db.selectFrom('loan_transactions').select(TX_COLUMNS).where('loan_id', '=', loanId);
  if (filter.afterSeq !== undefined) q = q.where('seq', '>', filter.afterSeq);
  return q.orderBy('seq').limit(filter.limit).execute();
}

/** Transactions still in force after a position (value date, seq), in any order. */
export function activeTransactionsAfter(db: ServicingExecutor, loanId: string, after: { value_date: string; seq: number } | null) {
  let q = db.selectFrom('loan_transactions').select(['id', 'seq', 'type', 'value_date', 'amount', 'details']).where('loan_id', '=', loanId).where('reversed_at', 'is', null);
  if (after !== null) {
    q = q.where((eb) => eb.or([eb('value_date', '>', after.value_date), eb.and([eb('value_date', '=', after.value_date), eb('seq', '>', after.seq)])]));
  }
  return q.execute();
}

export async function markReversed(db: ServicingExecutor, loanId: string, id: string, reason: string): Promise<void> {
  await db.updateTable('loan_transactions').set({ reversed_at: sql<Date>`now()`, reversal_reason: reason }).where('loan_id', '=', loanId).where('id', '=', id).execute();
}

/** Claims (loan, key); returns the existing claim when the key was used before. */
export async function claimCommandKey(db: ServicingExecutor, row: { loan_id: string; idempotency_key: string; request_hash: string }) {
  const inserted = await db.insertInto('loan_command_keys').values(row).onConflict((oc) => oc.columns(['loan_id', 'idempotency_key']).doNothing()).returning('loan_id').executeTakeFirst();
  if (inserted) return undefined;
  return db.selectFrom('loan_command_keys').select(['request_hash', 'transaction_id']).where('loan_id', '=', row.loan_id).where('idempotency_key', '=', row.idempotency_key).executeTakeFirstOrThrow();
}

export async function completeCommandKey(db: ServicingExecutor, loanId: string, key: string, transactionId: string): Promise<void> {
  await db.updateTable('loan_command_keys').set({ transaction_id: transactionId }).where('loan_id', '=', loanId).where('idempotency_key', '=', key).execute();
}

export function checkpointBefore(db: ServicingExecutor, loanId: string, date: string) {
  return db
    .selectFrom('loan_checkpoints')
    .select(['seq', 'value_date', 'state'])
    .where('loan_id', '=', loanId)
    .where('value_date', '<', date)
    .orderBy('value_date', 'desc')
    .orderBy('seq', 'desc')
    .limit(1)
    .executeTakeFirst();
}

export async function insertCheckpoint(db: ServicingExecutor, row: { loan_id: string; seq: number; value_date: string; state: string }): Promise<void> {
  await db.insertInto('loan_checkpoints').values(row).onConflict((oc) => oc.doNothing()).execute();
}

export async function deleteCheckpointsFrom(db: ServicingExecutor, loanId: string, date: string): Promise<void> {
  await db.deleteFrom('loan_checkpoints').where('loan_id', '=', loanId).where('value_date', '>=', date).execute();
}
