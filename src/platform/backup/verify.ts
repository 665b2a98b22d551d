/**
 * What a backup is checked by: named figures (row counts, totals, hashes) computed from
 * a database by a function the composition root supplies, so this folder knows no
 * domain. The figures of the source are sealed into the manifest when the backup is
 * made; `backup verify` computes them again on a restored copy and compares.
 */
import { sql, type Kysely } from 'kysely';

export interface Figure {
  readonly name: string;
  readonly value: string;
  /** The value any sound database has (an intact audit chain): the restored copy must show it. */
  readonly expect?: string;
}

/** Computes the figures of a database, inside one consistent snapshot. */
export type Inspect = (db: Kysely<unknown>) => Promise<Figure[]>;

/** `rows.<table>` for every table of the `public` schema (a partitioned table counts its partitions' rows), counted exactly. */
export async function tableRowCounts(db: Kysely<unknown>): Promise<Figure[]> {
  const tables = await sql<{ name: string }>`
    select c.relname as name from pg_catalog.pg_class c join pg_catalog.pg_namespace s on s.oid = c.relnamespace
    where s.nspname = 'public' and c.relkind in ('r', 'p') and not c.relispartition order by c.relname
  `.execute(db);
  const figures: Figure[] = [];
  for (const { name } of tables.rows) {
    const r = await sql<{ n: bigint }>`select count(*) as n from ${sql.table(name)}`.execute(db);
    figures.push({ name: `rows.${name}`, value: String(r.rows[0]?.n ?? 0n) });
  }
  return figures;
}

export type RowStatus = 'ok' | 'MISMATCH' | 'live differs';

export interface VerifyRow {
  readonly name: string;
  readonly manifest: string | undefined;
  readonly restored: string | undefined;
  readonly live: string | undefined;
  readonly status: RowStatus;
}

/**
 * The restored copy must equal the manifest (the source at the moment of the backup) and
 * show every expected value. The live source has usually moved on since: a difference
 * from it is reported, and fails only when `strictLive` asks for it (a quiesced source).
 */
export function compareFigures(
  manifest: readonly Figure[] | undefined,
  restored: readonly Figure[],
  live: readonly Figure[] | undefined,
  strictLive: boolean,
): VerifyRow[] {
  const m = new Map(manifest?.map((f) => [f.name, f.value]));
  const r = new Map(restored.map((f) => [f.name, f]));
  const l = new Map(live?.map((f) => [f.name, f.value]));
  const names = [...new Set([...(manifest ?? []).map((f) => f.name), ...restored.map((f) => f.name), ...(live ?? []).map((f) => f.name)])];
  return names.map((name) => {
    const rf = r.get(name);
    const mv = m.get(name);
    const lv = l.get(name);
    const rv = rf?.value;
    let status: RowStatus = 'ok';
    if (rf?.expect !== undefined && rv !== rf.expect) status = 'MISMATCH';
    else if (manifest !== undefined && mv !== rv) status = 'MISMATCH';
    else if (live !== undefined && lv !== rv) status = strictLive ? 'MISMATCH' : 'live differs';
    return { name, manifest: mv, restored: rv, live: lv, status };
  });
}

/** A plain-text table; long values (hashes) are cut to 16 characters for display only. */
export function renderRows(rows: readonly VerifyRow[], columns: { manifest: boolean; live: boolean }): string {
  const cut = (v: string | undefined) => (v === undefined ? '-' : v.length > 19 ? `${v.slice(0, 16)}...` : v);
  const header = ['figure', ...(columns.manifest ? ['manifest'] : []), 'restored', ...(columns.live ? ['live'] : []), 'status'];
  const body = rows.map((row) => [
    row.name,
    ...(columns.manifest ? [cut(row.manifest)] : []),
    cut(row.restored),
    ...(columns.live ? [cut(row.live)] : []),
    row.status,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => (b[i] as string).length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] as number))).join('  ');
  return [line(header), ...body.map(line)].join('\n') + '\n';
}
