/** Forecasting I/O: Kysely queries only. Every function takes the executor. */
import { sql, type Kysely } from 'kysely';
import type { ForecastingTables, ForecastsTable } from './schema.js';

export type ForecastingDb = ForecastingTables;
type Db = Kysely<ForecastingDb>;

const SCENARIO_COLUMNS = ['id', 'name', 'description', 'tags', 'assumptions', 'version', 'created_by', 'created_at', 'updated_at'] as const;

export function insertScenario(db: Db, row: { id: string; name: string; description: string; tags: string[]; assumptions: string; created_by: string | null }) {
  return db.insertInto('forecast_scenarios').values(row).returning(SCENARIO_COLUMNS).executeTakeFirstOrThrow();
}

export function findScenario(db: Db, id: string) {
  return db.selectFrom('forecast_scenarios').select(SCENARIO_COLUMNS).where('id', '=', id).executeTakeFirst();
}

export function listScenarios(db: Db, filter: { tag?: string | undefined; limit: number; afterName?: string | undefined }) {
  let q = db.selectFrom('forecast_scenarios').select(SCENARIO_COLUMNS);
  if (filter.tag !== undefined) q = q.where(sql<boolean>`tags @> array[${filter.tag}]::text[]`);
  if (filter.afterName !== undefined) q = q.where(sql<boolean>`lower(name) > lower(${filter.afterName})`);
  return q.orderBy(sql`lower(name)`).limit(filter.limit).execute();
}

/** Replaces a scenario when its version is `ifVersion` (or unconditionally without one); undefined when nothing matched. */
export function updateScenario(db: Db, id: string, set: { name: string; description: string; tags: string[]; assumptions: string }, ifVersion: number | undefined) {
  let q = db
    .updateTable('forecast_scenarios')
    .set({ ...set, version: sql<number>`version + 1`, updated_at: sql<Date>`now()` })
    .where('id', '=', id);
  if (ifVersion !== undefined) q = q.where('version', '=', ifVersion);
  return q.returning(SCENARIO_COLUMNS).executeTakeFirst();
}

export async function deleteScenario(db: Db, id: string): Promise<boolean> {
  const r = await db.deleteFrom('forecast_scenarios').where('id', '=', id).executeTakeFirst();
  return r.numDeletedRows > 0n;
}

export const FORECAST_COLUMNS = ['id', 'kind', 'status', 'created_by', 'created_at', 'finished_at', 'inputs_hash', 'inputs', 'scenario_id', 'job_id', 'loans', 'months', 'summary', 'error'] as const;

export async function insertForecast(
  db: Db,
  row: { id: string; kind: ForecastsTable['kind']; status: ForecastsTable['status']; created_by: string | null; inputs_hash: string; inputs: string; scenario_id: string | null; job_id: string | null; loans: number; months: number | null; summary: string | null; result: string | null; finished_at: Date | null },
): Promise<void> {
  await db.insertInto('forecasts').values({ ...row, error: null }).execute();
}

export async function finishForecast(db: Db, id: string, set: { status: 'running' | 'succeeded' | 'failed'; months?: number | null; summary?: string | null; result?: string | null; error?: string | null; finished_at?: Date | null }): Promise<void> {
  await db.updateTable('forecasts').set(set).where('id', '=', id).execute();
}

export async function setForecastJob(db: Db, id: string, jobId: string): Promise<void> {
  await db.updateTable('forecasts').set({ job_id: jobId }).where('id', '=', id).execute();
}

export function findForecast(db: Db, id: string, createdBy?: string, withResult = false) {
  let q = db.selectFrom('forecasts').select([...FORECAST_COLUMNS, ...(withResult ? (['result'] as const) : [])]).where('id', '=', id);
  if (createdBy !== undefined) q = q.where('created_by', '=', createdBy);
  return q.executeTakeFirst();
}

export function listForecasts(db: Db, filter: { createdBy?: string | undefined; kind?: string | undefined; limit: number; after?: { created_at: Date; id: string } | undefined }) {
  let q = db.selectFrom('forecasts').select(FORECAST_COLUMNS);
  if (filter.createdBy !== undefined) q = q.where('created_by', '=', filter.createdBy);
  if (filter.kind !== undefined) q = q.where('kind', '=', filter.kind as ForecastsTable['kind']);
  const after = filter.after;
  if (after) q = q.where((eb) => eb.or([eb('created_at', '<', after.created_at), eb.and([eb('created_at', '=', after.created_at), eb('id', '<', after.id)])]));
  return q.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(filter.limit).execute();
}
