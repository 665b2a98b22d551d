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
  'last_seq', 'as_of', 'days_past_due', 'delinquency_bucket', 'next_due_date', 'closed_through', 'booked_on', 'version', 'created_at', 'updated_at',
] as const;

export type LoanRow = Awaited<ReturnType<typeof findLoan>> & {};

export function insertLoan(
  db: ServicingExecutor,
  row: { id: string; borrower_id: string; product_id: string; product_version: number; status: string; currency: string; principal: bigint; terms: string; state: string; booked_on: string; created_by: string | null },
) {
  return db.insertInto('loans').values({ ...row, gl: '{}' }).returning(LOAN_COLUMNS).executeTakeFirstOrThrow();
}

export function findLoan(db: ServicingExecutor, id: string, borrowerId?: string) {
  let q = db.selectFrom('loans').select(LOAN_COLUMNS).where('id', '=', id);
  if (borrowerId !== undefined) q = q.where('borrower_id', '=', borrowerId);
  return q.executeTakeFirst();
}

/** The loan row under a row lock held to the end of the transaction: commands on one loan serialize here. */
export async function lockLoan(db: ServicingExecutor, id: string, borrowerId?: string): Promise<LoanRow | undefined> {
  // The lock is taken in the CTE; the outer query then lifts the lock timeout set by beginCommand
  // (later waits, such as the audit chain's, must not give up), saving a round trip.
  const row = await db
    .with('locked', (qb) => {
      let q = qb.selectFrom('loans').select(LOAN_COLUMNS).where('id', '=', id);
      if (borrowerId !== undefined) q = q.where('borrower_id', '=', borrowerId);
      return q.forUpdate();
    })
    .selectFrom('locked')
    .selectAll()
    .select(sql<string>`set_config('lock_timeout', '0', true)`.as('lock_wait_reset'))
    .executeTakeFirst();
  if (!row) return undefined;
  const { lock_wait_reset: _reset, ...loan } = row;
  return loan;
}

/** Writes the loan if it is still at `version`; returns its new updated_at, or null when another writer got there first. */
export async function updateLoan(
  db: ServicingExecutor,
  id: string,
  version: number,
  set: { status: string; state: string; gl: string; last_seq: number; as_of: string | null; principal_outstanding: bigint; days_past_due: number; delinquency_bucket: string; next_due_date: string | null; closed_through?: string | null },
): Promise<Date | null> {
  const result = await db
    .updateTable('loans')
    .set({ ...set, version: sql<number>`version + 1`, updated_at: sql<Date>`now()` })
    .where('id', '=', id)
    .where('version', '=', version)
    .returning('updated_at')
    .executeTakeFirst();
  return result?.updated_at ?? null;
}

/**
 * Starts a command: lock waits in this transaction give up after `ms` (loan_busy rather
 * than a connection held behind a busy loan), and the business date, in one round trip.
 */
export async function beginCommand(db: ServicingExecutor, ms: number): Promise<string | undefined> {
  const r = await sql<{ today: string | null }>`select set_config('lock_timeout', ${`${ms}ms`}, true) as timeout, (select today from business_date) as today`.execute(db);
  return r.rows[0]?.today ?? undefined;
}


/** The journal entries a loan transaction posted, in posting order (read for an idempotent replay). */
export async function entriesOfTransaction(db: ServicingExecutor, loanId: string, transactionId: string): Promise<{ id: string; source_type: string }[]> {
  const result = await sql<{ id: string; source_type: string }>`
    select id, source_type from journal_entries where loan_id = ${loanId} and source_id = ${transactionId} order by seq`.execute(db);
  return result.rows;
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
): Promise<Date> {
  const inserted = await db.insertInto('loan_transactions').values(row).returning('created_at').executeTakeFirstOrThrow();
  return inserted.created_at;
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

/** The value date of the latest further tranche (a disbursement after the first still in force), if any. */
export async function latestTrancheDate(db: ServicingExecutor, loanId: string): Promise<string | null> {
  const rows = await db
    .selectFrom('loan_transactions')
    .select(['value_date', 'seq'])
    .where('loan_id', '=', loanId)
    .where('type', '=', 'disbursement')
    .where('reversed_at', 'is', null)
    .orderBy('value_date')
    .orderBy('seq')
    .execute();
  return rows.length > 1 ? (rows.at(-1)?.value_date ?? null) : null;
}

export async function markReversed(db: ServicingExecutor, loanId: string, id: string, reason: string): Promise<void> {
  await db.updateTable('loan_transactions').set({ reversed_at: sql<Date>`now()`, reversal_reason: reason }).where('loan_id', '=', loanId).where('id', '=', id).execute();
}

/** Claims (loan, key) for the transaction about to be posted; returns the existing claim when the key was used before. */
export async function claimCommandKey(db: ServicingExecutor, row: { loan_id: string; idempotency_key: string; request_hash: string; transaction_id: string }) {
  const inserted = await db.insertInto('loan_command_keys').values(row).onConflict((oc) => oc.columns(['loan_id', 'idempotency_key']).doNothing()).returning('loan_id').executeTakeFirst();
  if (inserted) return undefined;
  return db.selectFrom('loan_command_keys').select(['request_hash', 'transaction_id']).where('loan_id', '=', row.loan_id).where('idempotency_key', '=', row.idempotency_key).executeTakeFirstOrThrow();
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

export async function insertCheckpoints(db: ServicingExecutor, rows: readonly { loan_id: string; seq: number; value_date: string; state: string }[]): Promise<void> {
  if (rows.length === 0) return;
  await db.insertInto('loan_checkpoints').values([...rows]).onConflict((oc) => oc.doNothing()).execute();
}

export async function deleteCheckpointsFrom(db: ServicingExecutor, loanId: string, date: string): Promise<void> {
  await db.deleteFrom('loan_checkpoints').where('loan_id', '=', loanId).where('value_date', '>=', date).execute();
}

// ---------------------------------------------------------------------------
// End of day
// ---------------------------------------------------------------------------

/** The next active loans (ids after `afterId`, up to `throughId`) not yet closed for `date`, locked; rows another transaction holds are skipped. */
export function lockEodChunk(db: ServicingExecutor, date: string, afterId: string | null, throughId: string | null, limit: number) {
  let q = db
    .selectFrom('loans')
    .select(['id', 'currency', 'terms', 'state', 'gl', 'last_seq', 'delinquency_bucket'])
    .where('status', '=', 'active')
    .where((eb) => eb.or([eb('closed_through', 'is', null), eb('closed_through', '<', date)]));
  if (afterId !== null) q = q.where('id', '>', afterId);
  if (throughId !== null) q = q.where('id', '<=', throughId);
  return q.orderBy('id').limit(limit).forUpdate().skipLocked().execute();
}

export async function countEodRemaining(db: ServicingExecutor, date: string): Promise<number> {
  const row = await db
    .selectFrom('loans')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .where('status', '=', 'active')
    .where((eb) => eb.or([eb('closed_through', 'is', null), eb('closed_through', '<', date)]))
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

export interface EodLoanUpdate {
  id: string;
  status: string;
  state: string;
  gl: string;
  last_seq: number;
  as_of: string | null;
  principal_outstanding: bigint;
  days_past_due: number;
  delinquency_bucket: string;
  next_due_date: string | null;
}

/**
 * One statement for a whole chunk: the loans' new state and closed_through = date. The rows
 * travel as one JSON document built by concatenation, so the states (already JSON text)
 * are not escaped again.
 */
export async function updateLoansClosed(db: ServicingExecutor, date: string, rows: readonly EodLoanUpdate[]): Promise<void> {
  if (rows.length === 0) return;
  const q = (v: string | null) => (v === null ? 'null' : JSON.stringify(v));
  const doc = `[${rows
    .map(
      (r) =>
        `{"id":${q(r.id)},"status":${q(r.status)},"state":${r.state},"gl":${r.gl},"last_seq":${r.last_seq},"as_of":${q(r.as_of)},` +
        `"principal_outstanding":"${r.principal_outstanding}","days_past_due":${r.days_past_due},"delinquency_bucket":${q(r.delinquency_bucket)},"next_due_date":${q(r.next_due_date)}}`,
    )
    .join(',')}]`;
  await sql`
    update loans l set
      status = v.status, state = v.state, gl = v.gl, last_seq = v.last_seq, as_of = v.as_of,
      principal_outstanding = v.principal_outstanding, days_past_due = v.days_past_due,
      delinquency_bucket = v.delinquency_bucket, next_due_date = v.next_due_date,
      closed_through = ${date}::date, version = l.version + 1, updated_at = now()
    from jsonb_to_recordset(${doc}::jsonb)
      as v(id uuid, status text, state jsonb, gl jsonb, last_seq int, as_of date, principal_outstanding bigint, days_past_due int, delinquency_bucket text, next_due_date date)
    where l.id = v.id`.execute(db);
}

export async function insertTransactions(db: ServicingExecutor, rows: Parameters<typeof insertTransaction>[1][]): Promise<void> {
  if (rows.length === 0) return;
  await db.insertInto('loan_transactions').values(rows).execute();
}

const RUN_COLUMNS = ['id', 'business_date', 'status', 'loans_total', 'loans_processed', 'chunks', 'accrued', 'late_fees', 'charge_offs', 'newly_delinquent', 'reconciliation', 'error', 'started_at', 'finished_at', 'started_by'] as const;
export type EodRunRow = Awaited<ReturnType<typeof findRun>> & {};

/** Creates the run of a date, or returns the existing one (a run per date). */
export async function claimRun(db: ServicingExecutor, row: { id: string; business_date: string; loans_total: number; started_by: string | null }) {
  await db.insertInto('eod_runs').values({ ...row, status: 'running', accrued: '{}' }).onConflict((oc) => oc.column('business_date').doNothing()).execute();
  return db.selectFrom('eod_runs').select(RUN_COLUMNS).where('business_date', '=', row.business_date).executeTakeFirstOrThrow();
}

export function findRun(db: ServicingExecutor, id: string) {
  return db.selectFrom('eod_runs').select(RUN_COLUMNS).where('id', '=', id).executeTakeFirst();
}

export function listRuns(db: ServicingExecutor, limit: number) {
  return db.selectFrom('eod_runs').select(RUN_COLUMNS).orderBy('business_date', 'desc').limit(limit).execute();
}

export async function addRunProgress(db: ServicingExecutor, id: string, p: { loans: number; lateFees: number; chargeOffs: number; delinquent: number; accrued: Record<string, string> }): Promise<void> {
  await sql`
    update eod_runs set
      loans_processed = loans_processed + ${p.loans}, chunks = chunks + 1,
      late_fees = late_fees + ${p.lateFees}, charge_offs = charge_offs + ${p.chargeOffs}, newly_delinquent = newly_delinquent + ${p.delinquent},
      accrued = (select coalesce(jsonb_object_agg(k, total::text), '{}'::jsonb) from (
                   select k, sum(v::bigint) as total from (
                     select key as k, value as v from jsonb_each_text(accrued)
                     union all select key, value from jsonb_each_text(${JSON.stringify(p.accrued)}::jsonb)
                   ) parts group by k) sums)
    where id = ${id}`.execute(db);
}

export async function finishRun(db: ServicingExecutor, id: string, set: { status: 'completed' | 'failed'; reconciliation?: string | null; error?: string | null }): Promise<void> {
  await db.updateTable('eod_runs').set({ ...set, finished_at: sql<Date>`now()` }).where('id', '=', id).execute();
}

export async function restartRun(db: ServicingExecutor, id: string, loansTotal: number): Promise<void> {
  await db.updateTable('eod_runs').set({ status: 'running', error: null, finished_at: null, loans_total: sql<number>`loans_processed + ${loansTotal}` }).where('id', '=', id).execute();
}

/** Per account and currency: the GL over servicing entries and the loans' posted vectors. */
export async function reconciliationSums(db: ServicingExecutor) {
  const gl = await sql<{ currency: string; account: string; total: string }>`
    select l.currency, l.account_code as account, sum(l.amount)::text as total
    from journal_lines l join journal_entries e on e.id = l.entry_id
    where e.source_type like 'servicing.%' group by l.currency, l.account_code`.execute(db);
  const sub = await sql<{ currency: string; account: string; total: string }>`
    select currency, key as account, sum(value::bigint)::text as total from loans, jsonb_each_text(gl) group by currency, key`.execute(db);
  return { gl: gl.rows, subledger: sub.rows };
}

export async function ensurePartitions(db: ServicingExecutor, firstMonth: string, months: number): Promise<number> {
  const r = await sql<{ n: number }>`select loan_transactions_ensure_partitions(${firstMonth}::date, ${months}) as n`.execute(db);
  return r.rows[0]?.n ?? 0;
}

// ---------------------------------------------------------------------------
// The book, as forecasting reads it
// ---------------------------------------------------------------------------

/**
 * Active monthly loans with principal outstanding: the amount (minor units), currency,
 * gross rate, term and first disbursement date, for a projection of the live book. Read
 * in one set-based query, in batches by id.
 */
export function activeMonthlyLoans(db: ServicingExecutor, after: string | undefined, limit: number) {
  let q = db
    .selectFrom('loans')
    .select([
      'id',
      'currency',
      'principal_outstanding',
      sql<string>`terms->>'annualRate'`.as('annual_rate'),
      sql<number>`(terms->>'term')::int`.as('term'),
      sql<string | null>`state->>'firstDisbursementDate'`.as('first_disbursement_date'),
    ])
    .where('status', '=', 'active')
    .where('principal_outstanding', '>', 0n)
    .where(sql<boolean>`terms->>'frequency' = 'monthly'`);
  if (after !== undefined) q = q.where('id', '>', after);
  return q.orderBy('id').limit(limit).execute();
}
