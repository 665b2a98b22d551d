/** Kysely table types for the platform's own tables (migrations/0001_platform.sql, 0004_outbox.sql, 0008_jobs.sql). */
import type { ColumnType, Generated, JSONColumnType, Kysely } from 'kysely';

export interface IdempotencyKeysTable {
  scope: string;
  key: string;
  method: string;
  route: string;
  request_hash: string;
  state: 'in_flight' | 'completed';
  locked_until: Date;
  response_status: number | null;
  response_headers: JSONColumnType<Record<string, string>> | null;
  response_body: string | null;
  created_at: Generated<Date>;
  expires_at: Date;
}

export interface AuditLogTable {
  id: ColumnType<bigint, bigint, never>;
  occurred_at: ColumnType<Date, Date, never>;
  actor_id: string | null;
  action: string;
  subject_type: string | null;
  subject_id: string | null;
  ip: string | null;
  request_id: string | null;
  details: JSONColumnType<Record<string, unknown>>;
  prev_hash: string;
  hash: string;
}

export interface OutboxEventsTable {
  /** GENERATED ALWAYS AS IDENTITY: never inserted or updated. */
  id: ColumnType<bigint, never, never>;
  event_id: ColumnType<string, string, never>;
  topic: ColumnType<string, string, never>;
  aggregate_type: ColumnType<string, string, never>;
  aggregate_id: ColumnType<string, string, never>;
  /** Inserted as canonical JSON text (src/platform/canonical-json.ts). */
  payload: ColumnType<Record<string, unknown>, string, never>;
  occurred_at: ColumnType<Date, Date | undefined, never>;
  published_at: Date | null;
  attempts: Generated<number>;
  last_error: string | null;
}

export interface JobsTable {
  id: ColumnType<string, string, never>;
  kind: ColumnType<string, string, never>;
  state: ColumnType<'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled', undefined, 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled'>;
  /** numeric(5,4): read as a decimal string, written as one. */
  progress: ColumnType<string, undefined, string>;
  /** Inserted as canonical JSON text (src/platform/canonical-json.ts). */
  payload: ColumnType<Record<string, unknown>, string, never>;
  result: ColumnType<unknown, never, string | null>;
  error: ColumnType<string | null, never, string | null>;
  attempts: ColumnType<number, undefined, number>;
  max_attempts: ColumnType<number, number, never>;
  created_by: ColumnType<string | null, string | null, never>;
  created_at: ColumnType<Date, undefined, never>;
  started_at: ColumnType<Date | null, never, Date | null>;
  finished_at: ColumnType<Date | null, never, Date | null>;
  updated_at: ColumnType<Date, undefined, Date>;
}

export interface PlatformTables {
  idempotency_keys: IdempotencyKeysTable;
  audit_log: AuditLogTable;
  outbox_events: OutboxEventsTable;
  jobs: JobsTable;
}

/**
 * The platform's view of an application database. Kysely's types are invariant in the
 * table map, so a database with more tables is narrowed here, in one place.
 */
export function platformView<DB extends PlatformTables>(db: Kysely<DB>): Kysely<PlatformTables> {
  return db as unknown as Kysely<PlatformTables>;
}
