/** Kysely table types for the platform's own tables (migrations/0001_platform.sql). */
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

export interface PlatformTables {
  idempotency_keys: IdempotencyKeysTable;
  audit_log: AuditLogTable;
}

/**
 * The platform's view of an application database. Kysely's types are invariant in the
 * table map, so a database with more tables is narrowed here, in one place.
 */
export function platformView<DB extends PlatformTables>(db: Kysely<DB>): Kysely<PlatformTables> {
  return db as unknown as Kysely<PlatformTables>;
}
