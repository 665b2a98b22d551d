/** Servicing test helpers: a product, a booked loan, the business date, and the book-wide invariants. */
import { randomUUID } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import { expect } from 'vitest';
import * as repo from '../../src/servicing/repository.js';
import type { ServicingDb } from '../../src/servicing/repository.js';
import { bearer, type TestApp } from './app.js';
import { PRODUCT } from './products.js';

export { PRODUCT };

export function servicingDb(t: TestApp): Kysely<ServicingDb> {
  return t.db.database.db as unknown as Kysely<ServicingDb>;
}

export async function setBusinessDate(t: TestApp, date: string): Promise<void> {
  const db = servicingDb(t);
  await repo.initBusinessDate(db, date);
  await repo.setBusinessDate(db, date);
}

export async function createProduct(t: TestApp, token: string, overrides: Record<string, unknown> = {}): Promise<{ id: string; version: number }> {
  const res = await t.app.inject({ method: 'POST', url: '/v1/products', headers: bearer(token), payload: { code: `p-${randomUUID().slice(0, 8)}`, ...PRODUCT, ...overrides } });
  if (res.statusCode !== 201) throw new Error(`product: ${res.statusCode} ${res.body}`);
  return res.json();
}

export async function bookLoan(t: TestApp, token: string, body: Record<string, unknown>): Promise<{ id: string }> {
  const res = await t.app.inject({ method: 'POST', url: '/v1/loans', headers: { ...bearer(token), 'idempotency-key': randomUUID() }, payload: body });
  if (res.statusCode !== 201) throw new Error(`loan: ${res.statusCode} ${res.body}`);
  return res.json();
}

export async function post(t: TestApp, token: string, url: string, payload: Record<string, unknown>, key: string = randomUUID()) {
  return t.app.inject({ method: 'POST', url, headers: { ...bearer(token), 'idempotency-key': key }, payload });
}

/** GL balance per account (debit − credit, minor units) over servicing entries, and the loans' posted vectors summed. */
export async function reconcile(db: Kysely<ServicingDb>): Promise<{ gl: Record<string, bigint>; subledger: Record<string, bigint> }> {
  const gl = await sql<{ account_code: string; total: bigint }>`
    select l.account_code, sum(l.amount)::bigint as total from journal_lines l join journal_entries e on e.id = l.entry_id
    where e.source_type like 'servicing.%' group by l.account_code`.execute(db);
  const sub = await sql<{ account: string; total: bigint }>`
    select key as account, sum(value::bigint)::bigint as total from loans, jsonb_each_text(gl) group by key`.execute(db);
  const clean = (rows: { k: string; v: bigint }[]) => Object.fromEntries(rows.filter((r) => r.v !== 0n).map((r) => [r.k, r.v]));
  return { gl: clean(gl.rows.map((r) => ({ k: r.account_code, v: r.total }))), subledger: clean(sub.rows.map((r) => ({ k: r.account, v: r.total }))) };
}

export async function expectBooksBalanced(db: Kysely<ServicingDb>): Promise<void> {
  const { gl, subledger } = await reconcile(db);
  expect(subledger).toEqual(gl);
  let total = 0n;
  for (const v of Object.values(gl)) total += v;
  expect(total).toBe(0n);
}
