/**
 * The audit log: append-only (a trigger refuses UPDATE, DELETE and TRUNCATE) and
 * SHA-256 hash-chained: each row's hash covers its own fields and the previous row's
 * hash, so an edit or a deletion by someone who can bypass the trigger is still found
 * by `verifyAuditChain`. Appends take a transaction-scoped advisory lock, so ids are
 * gap-free and the chain is linear; the row commits with the change it records.
 */
import { sql, type Kysely } from 'kysely';
import { canonicalJson } from './canonical-json.js';
import { sha256Hex } from './crypto.js';
import { platformView, type PlatformTables } from './schema.js';

export const GENESIS_HASH = '0'.repeat(64);
/** Arbitrary constant naming the audit chain's advisory lock. */
const AUDIT_LOCK_KEY = 0x4c42_4155; // 'LBAU'

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

/** Appends one event. Pass the transaction that makes the change, so both commit together. */
export async function appendAudit<DB extends PlatformTables>(executor: Kysely<DB>, event: AuditEvent, now: Date): Promise<bigint> {
  const db = platformView(executor);
  if (!db.isTransaction) return db.transaction().execute((trx) => appendAudit(trx, event, now));
  await sql`select pg_advisory_xact_lock(${AUDIT_LOCK_KEY})`.execute(db);
  const last = await db.selectFrom('audit_log').select(['id', 'hash']).orderBy('id', 'desc').limit(1).executeTakeFirst();
  const row: ChainFields = {
    id: (last?.id ?? 0n) + 1n,
    // Millisecond precision, so the value read back hashes the same.
    occurred_at: new Date(Math.floor(now.getTime())),
    actor_id: canonicalUuid(event.actorId ?? null),
    action: event.action,
    subject_type: event.subjectType ?? null,
    subject_id: event.subjectId ?? null,
    ip: event.ip ?? null,
    request_id: event.requestId ?? null,
    details: event.details ?? {},
  };
  // Details are stored as the canonical JSON that is hashed (bigint as a decimal string,
  // Date as ISO), so what reads back hashes the same; JSON.stringify throws on a bigint.
  const prevHash = last?.hash ?? GENESIS_HASH;
  await sql`
    insert into audit_log (id, occurred_at, actor_id, action, subject_type, subject_id, ip, request_id, details, prev_hash, hash)
    values (${row.id}, ${row.occurred_at}, ${row.actor_id}, ${row.action}, ${row.subject_type}, ${row.subject_id},
            ${row.ip}, ${row.request_id}, ${canonicalJson(row.details)}::jsonb, ${prevHash}, ${auditRowHash(prevHash, row)})
  `.execute(db);
  return row.id;
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
