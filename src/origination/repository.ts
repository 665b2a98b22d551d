/** Origination I/O: Kysely queries only, no decisions. Every function takes the executor. */
import { sql, type Kysely, type Selectable } from 'kysely';
import type { ApplicationsTable, OriginationTables } from './schema.js';

export type OriginationDb = OriginationTables;
export type OriginationExecutor = Kysely<OriginationDb>;

// ---- policies ------------------------------------------------------------------------

const POLICY_COLUMNS = ['id', 'name', 'version', 'description', 'content_hash', 'created_at', 'created_by'] as const;

export async function insertPolicyVersion(
  db: OriginationExecutor,
  row: { id: string; name: string; description: string; content: string; content_hash: string; created_by: string | null },
) {
  // The next version of the name, computed in the insert; (name, version) is unique, so of two
  // concurrent uploads of one name one fails (23505) and the caller retries it.
  const result = await sql<{ id: string; name: string; version: number; description: string; content_hash: string; created_at: Date; created_by: string | null }>`
    insert into policy_versions (id, name, version, description, content, content_hash, created_by)
    select ${row.id}::uuid, ${row.name}, coalesce(max(version), 0) + 1, ${row.description}, ${row.content}::jsonb, ${row.content_hash}, ${row.created_by}::uuid
      from policy_versions where name = ${row.name}
    returning id, name, version, description, content_hash, created_at, created_by`.execute(db);
  return result.rows[0] as NonNullable<(typeof result.rows)[0]>;
}

/** Inserts a given version unless the name already has it (the shipped default, installed by whichever process comes first). */
export async function insertPolicyVersionIfAbsent(
  db: OriginationExecutor,
  row: { id: string; name: string; version: number; description: string; content: string; content_hash: string },
): Promise<void> {
  await db
    .insertInto('policy_versions')
    .values({ ...row, created_by: null })
    .onConflict((oc) => oc.columns(['name', 'version']).doNothing())
    .execute();
}

export function findPolicy(db: OriginationExecutor, id: string) {
  return db.selectFrom('policy_versions').select([...POLICY_COLUMNS, 'content']).where('id', '=', id).executeTakeFirst();
}

export function findPolicyByName(db: OriginationExecutor, name: string, version: number) {
  return db.selectFrom('policy_versions').select([...POLICY_COLUMNS, 'content']).where('name', '=', name).where('version', '=', version).executeTakeFirst();
}

export function listPolicies(db: OriginationExecutor, filter: { limit: number; after?: { created_at: Date; id: string } | undefined }) {
  let q = db.selectFrom('policy_versions').select(POLICY_COLUMNS);
  const after = filter.after;
  if (after) q = q.where((eb) => eb.or([eb('created_at', '<', after.created_at), eb.and([eb('created_at', '=', after.created_at), eb('id', '<', after.id)])]));
  return q.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(filter.limit).execute();
}

export function assignments(db: OriginationExecutor) {
  return db.selectFrom('policy_assignments').select(['role', 'policy_id', 'assigned_at', 'assigned_by']).execute();
}

export async function assign(db: OriginationExecutor, role: 'champion' | 'challenger', policyId: string, by: string | null): Promise<void> {
  await db
    .insertInto('policy_assignments')
    .values({ role, policy_id: policyId, assigned_by: by })
    .onConflict((oc) => oc.column('role').doUpdateSet({ policy_id: policyId, assigned_by: by, assigned_at: sql<Date>`now()` }))
    .execute();
}

/** Sets the champion only when there is none (first start); true when this call set it. */
export async function assignChampionIfNone(db: OriginationExecutor, policyId: string): Promise<boolean> {
  const rows = await db.insertInto('policy_assignments').values({ role: 'champion', policy_id: policyId, assigned_by: null }).onConflict((oc) => oc.column('role').doNothing()).returning('role').execute();
  return rows.length > 0;
}

export async function unassign(db: OriginationExecutor, role: 'champion' | 'challenger'): Promise<boolean> {
  const result = await db.deleteFrom('policy_assignments').where('role', '=', role).executeTakeFirst();
  return result.numDeletedRows > 0n;
}

// ---- applications --------------------------------------------------------------------

export const APPLICATION_COLUMNS = [
  'id', 'borrower_id', 'submitted_by', 'channel', 'applicant_name', 'email', 'national_id', 'date_of_birth', 'applicant_index',
  'input', 'input_hash', 'product_id', 'currency', 'amount', 'status', 'outcome', 'decision_id', 'loan_id', 'created_at', 'updated_at',
] as const;

export type ApplicationRow = Selectable<ApplicationsTable>;

/** Serializes applications of one applicant (the velocity rule) until the transaction ends. */
export async function lockApplicant(db: OriginationExecutor, applicantIndex: string): Promise<void> {
  await sql`select pg_advisory_xact_lock(hashtextextended(${applicantIndex}, 7))`.execute(db);
}

/** `applicantIndexes`: the applicant's blind index under every configured key (FieldCipher.blindIndexes). */
export async function countRecentApplications(db: OriginationExecutor, applicantIndexes: readonly string[], since: Date): Promise<number> {
  const row = await db
    .selectFrom('applications')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .where('applicant_index', 'in', applicantIndexes)
    .where('created_at', '>', since)
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

/**
 * Records an application with its decisions in one statement and answers how many
 * applications the applicant made since `since` before this one. Call it under
 * `lockApplicant`: the statement starts after the lock is granted, so its count sees every
 * application committed before; the caller rolls back when the count is over the limit.
 */
export async function insertApplicationCounting(
  db: OriginationExecutor,
  row: Omit<ApplicationRow, 'input' | 'loan_id'> & { input: string },
  decisions: readonly DecisionRowInsert[],
  since: Date,
  applicantIndexes: readonly string[],
): Promise<number> {
  const result = await db
    .with('a', (q) => q.insertInto('applications').values({ ...row, loan_id: null }).returning('id'))
    .with('d', (q) => q.insertInto('application_decisions').values([...decisions]).returning('id'))
    .selectFrom('applications')
    .select((eb) => [
      eb.fn.countAll<string>().as('n'),
      eb.selectFrom('a').select((e) => e.fn.countAll<string>().as('x')).as('inserted'),
      eb.selectFrom('d').select((e) => e.fn.countAll<string>().as('x')).as('decisions'),
    ])
    .where('applicant_index', 'in', applicantIndexes)
    .where('created_at', '>', since)
    .executeTakeFirstOrThrow();
  if (Number(result.inserted) !== 1 || Number(result.decisions) !== decisions.length) throw new Error('application insert did not write every row');
  return Number(result.n);
}

export function findApplication(db: OriginationExecutor, id: string, borrowerId?: string, forUpdate = false) {
  let q = db.selectFrom('applications').select(APPLICATION_COLUMNS).where('id', '=', id);
  if (borrowerId !== undefined) q = q.where('borrower_id', '=', borrowerId);
  if (forUpdate) q = q.forUpdate();
  return q.executeTakeFirst();
}

export function listApplications(
  db: OriginationExecutor,
  filter: { borrowerId?: string | undefined; applicantIndexes?: readonly string[] | undefined; status?: string | undefined; outcome?: string | undefined; limit: number; after?: { created_at: Date; id: string } | undefined; oldestFirst?: boolean },
) {
  let q = db.selectFrom('applications').select(APPLICATION_COLUMNS);
  if (filter.borrowerId !== undefined) q = q.where('borrower_id', '=', filter.borrowerId);
  if (filter.applicantIndexes !== undefined) q = q.where('applicant_index', 'in', filter.applicantIndexes);
  if (filter.status !== undefined) q = q.where('status', '=', filter.status as ApplicationRow['status']);
  if (filter.outcome !== undefined) q = q.where('outcome', '=', filter.outcome);
  const after = filter.after;
  const cmp = filter.oldestFirst ? '>' : '<';
  if (after) q = q.where((eb) => eb.or([eb('created_at', cmp, after.created_at), eb.and([eb('created_at', '=', after.created_at), eb('id', cmp, after.id)])]));
  const dir = filter.oldestFirst ? 'asc' : 'desc';
  return q.orderBy('created_at', dir).orderBy('id', dir).limit(filter.limit).execute();
}

export async function updateApplication(db: OriginationExecutor, id: string, set: { status: ApplicationRow['status']; outcome: string; decision_id: string; loan_id?: string | null; updated_at: Date }): Promise<void> {
  await db.updateTable('applications').set(set).where('id', '=', id).execute();
}

// ---- decisions -----------------------------------------------------------------------

export interface DecisionRowInsert {
  id: string;
  application_id: string;
  kind: 'automated' | 'shadow' | 'review';
  policy_id: string | null;
  scorecard_version: string | null;
  pricing_version: string | null;
  input_hash: string;
  outcome: string;
  result: string;
  result_hash: string;
  timings: string;
  decided_at: Date;
  decided_by: string | null;
  note: string | null;
}

export async function insertDecisions(db: OriginationExecutor, rows: readonly DecisionRowInsert[]): Promise<void> {
  if (rows.length > 0) await db.insertInto('application_decisions').values([...rows]).execute();
}

const DECISION_COLUMNS = ['id', 'application_id', 'kind', 'policy_id', 'scorecard_version', 'pricing_version', 'input_hash', 'outcome', 'result', 'result_hash', 'timings', 'decided_at', 'decided_by', 'note'] as const;

export function decisionsOf(db: OriginationExecutor, applicationId: string) {
  return db.selectFrom('application_decisions').select(DECISION_COLUMNS).where('application_id', '=', applicationId).orderBy('decided_at').orderBy('id').execute();
}

export function findDecision(db: OriginationExecutor, id: string) {
  return db.selectFrom('application_decisions').select(DECISION_COLUMNS).where('id', '=', id).executeTakeFirst();
}

function shadowPairs(db: OriginationExecutor, policyId: string) {
  return db
    .selectFrom('application_decisions as s')
    .innerJoin('application_decisions as a', (j) => j.onRef('a.application_id', '=', 's.application_id').on('a.kind', '=', 'automated'))
    .where('s.kind', '=', 'shadow')
    .where('s.policy_id', '=', policyId);
}

/** How often (champion's automated outcome, challenger's shadow outcome) occurred for one challenger policy. */
export function shadowMatrix(db: OriginationExecutor, policyId: string) {
  return shadowPairs(db, policyId)
    .select(['a.outcome as champion', 's.outcome as challenger', (eb) => eb.fn.countAll<string>().as('n')])
    .groupBy(['a.outcome', 's.outcome'])
    .execute();
}

/** The latest applications where the challenger decided otherwise. */
export function shadowDifferences(db: OriginationExecutor, policyId: string, limit: number) {
  return shadowPairs(db, policyId)
    .select(['s.application_id', 'a.outcome as champion', 's.outcome as challenger', 's.decided_at'])
    .whereRef('a.outcome', '<>', 's.outcome')
    .orderBy('s.decided_at', 'desc')
    .limit(limit)
    .execute();
}

export async function insertNarrative(db: OriginationExecutor, row: { application_id: string; decision_id: string; status: 'written' | 'unavailable' | 'skipped'; provider: string | null; text: string | null; detail: string | null; created_at: Date }): Promise<void> {
  await db.insertInto('application_narratives').values(row).onConflict((oc) => oc.column('application_id').doNothing()).execute();
}

export function findNarrative(db: OriginationExecutor, applicationId: string) {
  return db.selectFrom('application_narratives').selectAll().where('application_id', '=', applicationId).executeTakeFirst();
}
