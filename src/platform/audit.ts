/**
 * The audit log: append-only (a trigger refuses UPDATE, DELETE and TRUNCATE) and
 * SHA-256 hash-chained: each row's hash covers its own fields and the previous row's
 * hash, so an edit or a deletion by someone who can bypass the trigger is still found
 * by `verifyAuditChain`. Appends take a transaction-scoped advisory lock (in the
 * database function `audit_log_append`), so ids are gap-free and the chain is linear;
 * the row commits with the change it records.
 */
import { sql, type Kysely } from 'kysely';
import { canonicalJson } from './canonical-json.js';
import { sha256Hex } from './crypto.js';
import { platformView, type PlatformTables } from './schema.js';

export const GENESIS_HASH = '0'.repeat(64);
/** The audit chain's advisory lock key, 0x4c424155 ('LBAU'): taken in migrations/0007_audit_append.sql. */

export interface AuditEvent {
  readonly action: string;
  readonly actorId?: string | null;
  readonly subjectType?: string | null;
  readonly subjectId?: string | null;
  readonly ip?: string | null;
  readonly requestId?: string | null;
  /** No personal data here: ids and codes only. */
  readonly details?: Record<string, unknown>;
}

interface ChainFields {
  id: bigint;
  occurred_at: Date;
  actor_id: string | null;
  action: string;
  subject_type: string | null;
  subject_id: string | null;
  ip: string | null;
  request_id: string | null;
  details: Record<string, unknown>;
}

export function auditRowHash(prevHash: string, row: ChainFields): string {
  return sha256Hex(
    prevHash +
      '\n' +
      canonicalJson({
        id: row.id,
        occurred_at: row.occurred_at.toISOString(),
        actor_id: row.actor_id,
        action: row.action,
        subject_type: row.subject_type,
        subject_id: row.subject_id,
        ip: row.ip,
        request_id: row.request_id,
        details: row.details,
      }),
  );
}

/** Stands for the id in the canonical JSON sent to the database, which fills it in. */
const ID_SENTINEL = '\u0000audit-id\u0000';
const ID_SENTINEL_JSON = `"id":${JSON.stringify(ID_SENTINEL)}`;

/**
 * Appends one event. Pass the transaction that makes the change, so both commit together.
 * One statement (migrations/0007_audit_append.sql): the database takes the chain lock,
 * numbers the row and hashes it with the previous row's hash, so the lock is held only
 * from this call to the commit. The hash is `auditRowHash`, which `verifyAuditChain` checks.
 */
export async function appendAudit<DB extends PlatformTables>(executor: Kysely<DB>, event: AuditEvent, now: Date): Promise<bigint> {
  const db = platformView(executor);
  if (!db.isTransaction) return db.transaction().execute((trx) => appendAudit(trx, event, now));
  // Millisecond precision, so the value read back hashes the same.
  const occurredAt = new Date(Math.floor(now.getTime()));
  const fields = {
    occurred_at: occurredAt,
    actor_id: canonicalUuid(event.actorId ?? null),
    action: event.action,
    subject_type: event.subjectType ?? null,
    subject_id: event.subjectId ?? null,
    ip: event.ip ?? null,
    request_id: event.requestId ?? null,
    details: event.details ?? {},
  };
  // The canonical JSON auditRowHash hashes, split around the id's value.
  const json = canonicalJson({ ...fields, occurred_at: occurredAt.toISOString(), id: ID_SENTINEL });
  const at = json.indexOf(ID_SENTINEL_JSON);
  if (at < 0 || json.indexOf(ID_SENTINEL_JSON, at + 1) >= 0) throw new Error('audit: the id placeholder must appear exactly once');
  const before = json.slice(0, at) + '"id":';
  const after = json.slice(at + ID_SENTINEL_JSON.length);
  // Details are stored as the canonical JSON that is hashed (bigint as a decimal string,
  // Date as ISO), so what reads back hashes the same; JSON.stringify throws on a bigint.
  const result = await sql<{ id: string | bigint }>`
    select audit_log_append(${fields.occurred_at}, ${fields.actor_id}, ${fields.action}, ${fields.subject_type}, ${fields.subject_id},
                            ${fields.ip}, ${fields.request_id}, ${canonicalJson(fields.details)}::jsonb, ${before}, ${after}) as id
  `.execute(db);
  return BigInt((result.rows[0] as { id: string | bigint }).id);
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** actor_id is a uuid column and reads back lower-case and hyphenated; hash that form. */
function canonicalUuid(id: string | null): string | null {
  if (id === null) return null;
  const lower = id.toLowerCase();
  if (!UUID.test(lower)) throw new Error(`audit actorId must be a UUID, got "${id}"`);
  return lower;
}

export interface AuditVerification {
  readonly ok: boolean;
  readonly rowsChecked: number;
  /**
   * The hash of the last verified row. The chain alone cannot reveal that its newest rows
   * were cut off, so record this value outside the database (a ticket, a log store) and
   * compare it on the next run: the recorded hash must still appear in the chain.
   */
  readonly headHash: string;
  /** The first row whose stored values do not match the chain, and why. */
  readonly firstBroken?: { readonly id: string; readonly reason: string };
}

export async function verifyAuditChain<DB extends PlatformTables>(executor: Kysely<DB>, batchSize = 1000): Promise<AuditVerification> {
  const db = platformView(executor);
  let prevHash = GENESIS_HASH;
  let expectedId = 1n;
  let checked = 0;
  for (;;) {
    const rows = await db
      .selectFrom('audit_log')
      .selectAll()
      .where('id', '>=', expectedId)
      .orderBy('id')
      .limit(batchSize)
      .execute();
    if (rows.length === 0) return { ok: true, rowsChecked: checked, headHash: prevHash };
    for (const r of rows) {
      const broken = (reason: string): AuditVerification => ({
        ok: false,
        rowsChecked: checked,
        headHash: prevHash,
        firstBroken: { id: String(r.id), reason },
      });
      if (r.id !== expectedId) {
        return {
          ok: false,
          rowsChecked: checked,
          headHash: prevHash,
          firstBroken: { id: String(expectedId), reason: `row ${expectedId} is missing` },
        };
      }
      if (r.prev_hash !== prevHash) return broken('prev_hash does not match the previous row');
      if (auditRowHash(prevHash, r) !== r.hash) return broken('hash does not match the row contents');
      prevHash = r.hash;
      expectedId++;
      checked++;
    }
  }
}
