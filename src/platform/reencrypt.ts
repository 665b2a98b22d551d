/**
 * Re-encryption after an ENCRYPTION_KEY rotation: every encrypted column of a table is
 * decrypted (with whichever configured key encrypted it) and encrypted again with the
 * current key, and the blind indexes derived from the values are recomputed with it.
 *
 * Domain-free: each module describes its encrypted columns (an `EncryptedTable`); this
 * walks the table in id order, one batch per transaction with the rows locked, so it can
 * run beside the live service, be stopped at any point and run again (rows already under
 * the current key are skipped). Once a run reports nothing left under a previous key,
 * the previous keys can be dropped from ENCRYPTION_KEY_PREVIOUS.
 */
import { sql, type Kysely } from 'kysely';
import type { FieldCipher } from './crypto.js';

export interface EncryptedColumn {
  /** The column that stores the ciphertext. */
  readonly column: string;
  /** The column name bound into the ciphertext's AAD (FieldContext.column), when it differs. */
  readonly context?: string;
}

export interface EncryptedTable {
  readonly table: string;
  /** Primary key column (text or uuid); rows are visited in its order. */
  readonly id: string;
  readonly columns: readonly EncryptedColumn[];
  /** Blind-index columns recomputed from the plaintexts (keyed by `column`), with the current key. */
  readonly indexes?: (plain: Readonly<Record<string, string | null>>, cipher: FieldCipher) => Record<string, string>;
}

export interface ReencryptResult {
  readonly table: string;
  readonly rows: number;
  readonly reencrypted: number;
}

export async function reencryptTable(
  db: Kysely<unknown>,
  cipher: FieldCipher,
  spec: EncryptedTable,
  options: { batchSize?: number; onBatch?: (done: ReencryptResult) => void } = {},
): Promise<ReencryptResult> {
  const batchSize = options.batchSize ?? 500;
  const columns = spec.columns.map((c) => c.column);
  let after: string | null = null;
  let rows = 0;
  let reencrypted = 0;
  for (;;) {
    const batch: { last: string | null; seen: number; changed: number } = await db.transaction().execute(async (trx) => {
      const selected = await sql<Record<string, string | null>>`
        select ${sql.ref(spec.id)}::text as id, ${sql.join(columns.map((c) => sql.ref(c)))}
        from ${sql.table(spec.table)}
        where ${after === null ? sql`true` : sql`${sql.ref(spec.id)}::text > ${after}`}
        order by ${sql.ref(spec.id)}::text
        limit ${batchSize}
        for update`.execute(trx);
      let changed = 0;
      for (const row of selected.rows) {
        const id = row.id as string;
        const stale = columns.some((c) => row[c] !== null && !cipher.isCurrent(row[c] as string));
        if (!stale) continue;
        const plain: Record<string, string | null> = {};
        const updates: Record<string, string | null> = {};
        for (const c of spec.columns) {
          const stored = row[c.column] ?? null;
          const ctx = { table: spec.table, column: c.context ?? c.column, rowId: id };
          const value = stored === null ? null : cipher.decrypt(stored, ctx);
          plain[c.column] = value;
          updates[c.column] = value === null ? null : cipher.encrypt(value, ctx);
        }
        Object.assign(updates, spec.indexes?.(plain, cipher) ?? {});
        const sets = Object.entries(updates).map(([col, v]) => sql`${sql.ref(col)} = ${v}`);
        await sql`update ${sql.table(spec.table)} set ${sql.join(sets)} where ${sql.ref(spec.id)}::text = ${id}`.execute(trx);
        changed += 1;
      }
      const last = selected.rows.at(-1)?.id ?? null;
      return { last, seen: selected.rows.length, changed };
    });
    rows += batch.seen;
    reencrypted += batch.changed;
    options.onBatch?.({ table: spec.table, rows, reencrypted });
    if (batch.seen < batchSize || batch.last === null) break;
    after = batch.last;
  }
  return { table: spec.table, rows, reencrypted };
}
