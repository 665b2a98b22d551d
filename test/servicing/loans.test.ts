import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyAuditChain } from '../../src/platform/audit.js';
import { bearer, createTestApp, problemOf, type TestApp } from '../support/app.js';
import { dbTarget } from '../support/db.js';
import { PRODUCT, bookLoan, createProduct, expectBooksBalanced, post, servicingDb, setBusinessDate } from '../support/servicing.js';

let t: TestApp;
let admin: string;
let servicer: string;
let borrower: { id: string; token: string };
let other: { id: string; token: string };
let product: { id: string; version: number };

beforeAll(async () => {
  t = await createTestApp();
  admin = await t.adminToken();
  servicer = (await t.userWithRole('servicer')).token;
  borrower = await t.userWithRole('borrower');
  other = await t.userWithRole('borrower');
  await setBusinessDate(t, '2026-01-15');
  product = await createProduct(t, admin);
});
afterAll(async () => t.close());

interface LoanBody {
  id: string;
  status: string;
  product_version: number;
  days_past_due: number;
  balances: { principal_outstanding: string; interest_outstanding: string; fees_outstanding: string; credit_balance: string; due: { total: string } };
  next_due: { installment: number; due_date: string; amount: string } | null;
}

const get = async (url: string, token = admin) => t.app.inject({ method: 'GET', url, headers: bearer(token) });
const loanOf = async (id: string, token = admin) => (await get(`/v1/loans/${id}`, token)).json<LoanBody>();
const scheduleOf = async (id: string) => (await get(`/v1/loans/${id}/schedule`)).json<{ installments: { number: number; due_date: string; principal: string; interest: string; outstanding: string }[] }>().installments;

async function disbursedLoan(overrides: Record<string, unknown> = {}, productId = product.id, date = '2026-01-15') {
  await setBusinessDate(t, date);
  const loan = await bookLoan(t, admin, { product_id: productId, borrower_id: borrower.id, principal: '12000.00', annual_rate: '0.12', term: 12, ...overrides });
  const res = await post(t, servicer, `/v1/loans/${loan.id}/disbursements`, {});
  expect(res.statusCode).toBe(201);
  return loan.id;
}

/** What a refused request must leave alone. */
async function footprint(loanId: string) {
  const db = servicingDb(t);
  const row = await sql<{ version: number; lines: string; outbox: string; audit: string; txs: string }>`
    select (select version from loans where id = ${loanId}) as version,
           (select count(*) from journal_lines)::text as lines,
           (select count(*) from outbox_events)::text as outbox,
           (select count(*) from audit_log)::text as audit,
           (select count(*) from loan_transactions where loan_id = ${loanId})::text as txs`.execute(db);
  return row.rows[0];
}

describe(`loan products (${dbTarget})`, () => {
  it('only an admin creates products; bad terms are refused naming the field', async () => {
    const res = await t.app.inject({ method: 'POST', url: '/v1/products', headers: bearer(servicer), payload: { code: 'x', ...PRODUCT } });
    expect(res.statusCode).toBe(403);
    const bad = await t.app.inject({ method: 'POST', url: '/v1/products', headers: bearer(admin), payload: { code: 'bad-1', ...PRODUCT, min_amount: '5000.00', max_amount: '100.00' } });
    expect(bad.statusCode).toBe(400);
    expect(problemOf(bad)).toMatchObject({ code: 'validation_failed', errors: [{ pointer: '#/max_amount' }] });
    const huge = await t.app.inject({ method: 'POST', url: '/v1/products', headers: bearer(admin), payload: { code: 'bad-2', ...PRODUCT, max_amount: '9'.repeat(10_000) } });
    expect(huge.statusCode).toBe(400);
    const unknown = await t.app.inject({ method: 'POST', url: '/v1/products', headers: bearer(admin), payload: { code: 'bad-3', ...PRODUCT, colour: 'red' } });
    expect(unknown.statusCode).toBe(400);
    const cents = await t.app.inject({ method: 'POST', url: '/v1/products', headers: bearer(admin), payload: { code: 'bad-4', ...PRODUCT, min_amount: '1.001' } });
    expect(problemOf(cents)).toMatchObject({ code: 'validation_failed', errors: [{ pointer: '#/min_amount' }] });
    const list = (await get('/v1/products')).json<{ data: { code: string }[] }>();
    expect(list.data.map((p) => p.code).filter((c) => c.startsWith('bad-'))).toEqual([]);
  });

  it('is versioned: a loan keeps the version it was booked on', async () => {
    const p = await createProduct(t, admin, { code: `v-${randomUUID().slice(0, 6)}` });
    const first = await bookLoan(t, admin, { product_id: p.id, borrower_id: borrower.id, principal: '1000.00', annual_rate: '0.10', term: 6 });
    const v2 = await t.app.inject({ method: 'POST', url: `/v1/products/${p.id}/versions`, headers: bearer(admin), payload: { ...PRODUCT, name: 'Personal loan v2', max_rate: '0.20' } });
    expect(v2.statusCode).toBe(201);
    expect(v2.json()).toMatchObject({ id: p.id, version: 2, max_rate: '0.20' });
    const second = await bookLoan(t, admin, { product_id: p.id, borrower_id: borrower.id, principal: '1000.00', annual_rate: '0.10', term: 6 });
    expect((await loanOf(first.id)).product_version).toBe(1);
    expect((await loanOf(second.id)).product_version).toBe(2);
    // Version 2 no longer allows 30 %; version 1 did.
    const tooHigh = await t.app.inject({ method: 'POST', url: '/v1/loans', headers: { ...bearer(admin), 'idempotency-key': randomUUID() }, payload: { product_id: p.id, borrower_id: borrower.id, principal: '1000.00', annual_rate: '0.30', term: 6 } });
    expect(tooHigh.statusCode).toBe(422);
    expect(problemOf(tooHigh)).toMatchObject({ code: 'outside_product_limits', errors: [{ pointer: '#/annual_rate' }] });
    expect((await get(`/v1/products/${p.id}?version=1`)).json()).toMatchObject({ version: 1, max_rate: '0.36' });
    expect((await get(`/v1/products/${p.id}/versions`)).json<{ data: unknown[] }>().data).toHaveLength(2);
  });
});

describe(`loan accounts (${dbTarget})`, () => {
  it('a borrower sees and pays only their own loans; another borrower’s loan is the same 404 as a missing one', async () => {
    const id = await disbursedLoan();
    expect((await get(`/v1/loans/${id}`, borrower.token)).statusCode).toBe(200);
    const foreign = await get(`/v1/loans/${id}`, other.token);
    const missing = await get(`/v1/loans/${randomUUID()}`, other.token);
    expect(foreign.statusCode).toBe(404);
    expect(problemOf(foreign)).toEqual(problemOf(missing));
    const pay = await post(t, other.token, `/v1/loans/${id}/payments`, { amount: '10.00' });
    expect(pay.statusCode).toBe(404);
    expect((await get(`/v1/loans/${id}/transactions`, other.token)).statusCode).toBe(404);
    expect((await get('/v1/loans', other.token)).json<{ data: { id: string }[] }>().data.map((l) => l.id)).not.toContain(id);
    // Borrowers cannot disburse.
    expect((await post(t, borrower.token, `/v1/loans/${id}/disbursements`, {})).statusCode).toBe(403);
  });

  it('has an explicit state machine: an illegal transition is a 409 naming the state, and changes nothing', async () => {
    await setBusinessDate(t, '2026-01-15');
    const loan = await bookLoan(t, admin, { product_id: product.id, borrower_id: borrower.id, principal: '5000.00', annual_rate: '0.10', term: 6 });
    const before = await footprint(loan.id);
    const pay = await post(t, admin, `/v1/loans/${loan.id}/payments`, { amount: '100.00' });
    expect(pay.statusCode).toBe(409);
    expect(problemOf(pay)).toMatchObject({ code: 'invalid_loan_state', state: 'pending_disbursement', operation: 'payment' });
    expect(await footprint(loan.id)).toEqual(before);

    expect((await post(t, admin, `/v1/loans/${loan.id}/disbursements`, {})).statusCode).toBe(201);
    const again = await post(t, admin, `/v1/loans/${loan.id}/disbursements`, {});
    expect(problemOf(again)).toMatchObject({ status: 409, code: 'invalid_loan_state', state: 'active', operation: 'disbursement' });

    // Nothing is dated before the loan was booked; a first period so long that its interest exceeds the installment is refused.
    const late = await bookLoan(t, admin, { product_id: product.id, borrower_id: borrower.id, principal: '5000.00', annual_rate: '0.30', term: 36, first_payment_date: '2026-05-15' });
    expect(problemOf(await post(t, admin, `/v1/loans/${late.id}/disbursements`, { date: '2026-01-14' }))).toMatchObject({ status: 422, code: 'value_date_too_early' });
    expect(problemOf(await post(t, admin, `/v1/loans/${late.id}/disbursements`, {}))).toMatchObject({ status: 422, code: 'schedule_capitalizes' });

    const cancelled = await bookLoan(t, admin, { product_id: product.id, borrower_id: borrower.id, principal: '5000.00', annual_rate: '0.10', term: 6 });
    expect((await post(t, admin, `/v1/loans/${cancelled.id}/cancellation`, {})).json()).toMatchObject({ status: 'cancelled' });
    expect(problemOf(await post(t, admin, `/v1/loans/${cancelled.id}/disbursements`, {}))).toMatchObject({ code: 'invalid_loan_state', state: 'cancelled' });
  });

  it('refuses bad money input with a problem naming the field, and writes nothing', async () => {
    const id = await disbursedLoan();
    const before = await footprint(id);
    const cases: [Record<string, unknown>, string][] = [
      [{ amount: 'abc' }, '#/amount'],
      [{ amount: '-5.00' }, '#/amount'],
      [{ amount: '1.001' }, '#/amount'],
      [{ amount: '0' }, '#/amount'],
      [{ amount: '9'.repeat(10_000) }, '#/amount'],
      [{ amount: 'NaN' }, '#/amount'],
      [{ amount: '10.00', date: '2026-13-01' }, '#/date'],
      [{ amount: '10.00', tip: '1.00' }, '#'],
    ];
    for (const [body, pointer] of cases) {
      const res = await post(t, admin, `/v1/loans/${id}/payments`, body);
      expect(res.statusCode, JSON.stringify(body).slice(0, 60)).toBe(400);
      const problem = res.json<{ code: string; errors: { pointer: string }[] }>();
      expect(problem.code).toBe('validation_failed');
      expect(problem.errors[0]?.pointer.startsWith(pointer)).toBe(true);
      expect(res.body).not.toMatch(/at .*\.ts:\d+/);
    }
    const future = await post(t, admin, `/v1/loans/${id}/payments`, { amount: '10.00', date: '2026-02-01' });
    expect(problemOf(future)).toMatchObject({ status: 422, code: 'future_value_date' });
    const early = await post(t, admin, `/v1/loans/${id}/payments`, { amount: '10.00', date: '2025-12-31' });
    expect(problemOf(early)).toMatchObject({ status: 422, code: 'value_date_too_early' });
    const noKey = await t.app.inject({ method: 'POST', url: `/v1/loans/${id}/payments`, headers: bearer(admin), payload: { amount: '10.00' } });
    expect(problemOf(noKey)).toMatchObject({ status: 400, code: 'idempotency_key_missing' });
    expect(await footprint(id)).toEqual(before);
  });

  it('a payment explains its allocation; partial payments leave the rest due; the same Idempotency-Key never pays twice', async () => {
    const id = await disbursedLoan();
    await setBusinessDate(t, '2026-03-15'); // installments 1 and 2 due
    const key = randomUUID();
    const partial = await post(t, borrower.token, `/v1/loans/${id}/payments`, { amount: '1200.00' }, key);
    expect(partial.statusCode).toBe(201);
    const body = partial.json<{ transaction: { id: string; effect: { totals: Record<string, string>; lines: { installment: number; component: string; amount: string }[]; explanation: string[] } } }>();
    // Oldest first, interest before principal: #1 in full (120.00 + 946.19), then #2's interest (1 % of 11,053.81), then part of #2's principal.
    expect(body.transaction.effect.lines.map((l) => `${l.installment}:${l.component}:${l.amount}`)).toEqual(['1:interest:120.00', '1:principal:946.19', '2:interest:110.54', '2:principal:23.27']);
    expect(body.transaction.effect.totals).toEqual({ principal: '969.46', interest: '230.54', fee: '0.00', penalty: '0.00' });
    expect(body.transaction.effect.explanation.join(' ')).toContain('still owed');
    const replay = await post(t, borrower.token, `/v1/loans/${id}/payments`, { amount: '1200.00' }, key);
    expect(replay.statusCode).toBe(201);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.json<{ transaction: { id: string } }>().transaction.id).toBe(body.transaction.id);
    const reused = await post(t, borrower.token, `/v1/loans/${id}/payments`, { amount: '5.00' }, key);
    expect(problemOf(reused)).toMatchObject({ status: 422, code: 'idempotency_key_reused' });
    const loan = await loanOf(id);
    expect(loan.balances.due.total).toBe('932.38'); // 2 × 1,066.19 − 1,200.00
    expect(loan.days_past_due).toBe(0); // installment 2 falls due today
    const txs = (await get(`/v1/loans/${id}/transactions`)).json<{ data: { type: string }[] }>().data;
    expect(txs.map((x) => x.type)).toEqual(['disbursement', 'repayment']);
    await expectBooksBalanced(servicingDb(t));
  });

  it('overpayment becomes a credit balance that pays the next installment when it falls due', async () => {
    const id = await disbursedLoan();
    await setBusinessDate(t, '2026-02-15');
    const res = await post(t, admin, `/v1/loans/${id}/payments`, { amount: '1500.00' });
    expect(res.json()).toMatchObject({ transaction: { effect: { credit_balance: '433.81' } }, loan: { balances: { credit_balance: '433.81' } } });
    await setBusinessDate(t, '2026-03-15');
    const small = await post(t, admin, `/v1/loans/${id}/payments`, { amount: '1.00' });
    expect(small.json()).toMatchObject({ loan: { balances: { credit_balance: '0.00', due: { total: '631.38' } } } }); // 1,066.19 − 433.81 − 1.00
    await expectBooksBalanced(servicingDb(t));
  });

  it('prepayment shortens the term or lowers the installment, as asked', async () => {
    const shorten = await disbursedLoan();
    const lower = await disbursedLoan();
    await setBusinessDate(t, '2026-02-15');
    const a = await post(t, admin, `/v1/loans/${shorten}/payments`, { amount: '6066.19', overpayment: 'prepay_shorten_term' });
    expect(a.json()).toMatchObject({ transaction: { effect: { prepayment: { mode: 'shorten_term', amount: '5000.00' } } } });
    const b = await post(t, admin, `/v1/loans/${lower}/payments`, { amount: '6066.19', overpayment: 'prepay_reduce_installment' });
    expect(b.json()).toMatchObject({ transaction: { effect: { prepayment: { mode: 'reduce_installment', amount: '5000.00' } } } });
    const sa = await scheduleOf(shorten);
    const sb = await scheduleOf(lower);
    expect(sa.length).toBeLessThan(12);
    expect(sb).toHaveLength(12);
    const [la, lb] = [await loanOf(shorten), await loanOf(lower)];
    expect(la.balances.principal_outstanding).toBe('6053.81');
    expect(lb.balances.principal_outstanding).toBe('6053.81');
    expect(la.next_due?.amount).toBe('1066.19'); // same installment, fewer of them
    expect(Number(lb.next_due?.amount)).toBeLessThan(1066.19);
    await expectBooksBalanced(servicingDb(t));
  });

  it('a payoff quote pays the loan off exactly; the loan closes and says so in the outbox', async () => {
    const id = await disbursedLoan();
    await setBusinessDate(t, '2026-03-01'); // half-way through the second period
    const quote = (await get(`/v1/loans/${id}/payoff-quote`)).json<{ total: string; principal: string; interest: string }>();
    // Installment 1's interest (120.00) is past due; then 16 days (30/360, Feb 15 → Mar 1) on 11,053.81 at 12 % = 58.95.
    expect(quote).toMatchObject({ principal: '12000.00', interest: '178.95', total: '12178.95' });
    const pay = await post(t, borrower.token, `/v1/loans/${id}/payments`, { amount: quote.total });
    expect(pay.json()).toMatchObject({ transaction: { effect: { payoff: true } }, loan: { status: 'paid_off', balances: { principal_outstanding: '0.00', interest_outstanding: '0.00', credit_balance: '0.00' } } });
    const topics = await sql<{ topic: string }>`select topic from outbox_events where aggregate_id = ${id} order by id`.execute(servicingDb(t));
    expect(topics.rows.map((r) => r.topic)).toEqual(['loan.booked', 'loan.disbursed', 'payment.posted', 'loan.paid_off']);
    const more = await post(t, borrower.token, `/v1/loans/${id}/payments`, { amount: '1.00' });
    expect(problemOf(more)).toMatchObject({ status: 409, code: 'invalid_loan_state', state: 'paid_off' });
    // Paying more than the quote leaves the loan overpaid, with the difference owed to the borrower.
    const over = await disbursedLoan();
    await setBusinessDate(t, '2026-03-01');
    const q2 = (await get(`/v1/loans/${over}/payoff-quote`)).json<{ total: string }>();
    const paid = await post(t, admin, `/v1/loans/${over}/payments`, { amount: (Number(q2.total) + 50).toFixed(2) });
    expect(paid.json()).toMatchObject({ loan: { status: 'overpaid', balances: { credit_balance: '50.00' } } });
    await expectBooksBalanced(servicingDb(t));
  });

  it('a backdated payment replays from the nearest checkpoint and posts only the difference; the loan ends as if paid in order', async () => {
    const backdated = await disbursedLoan();
    const inOrder = await disbursedLoan();
    await setBusinessDate(t, '2026-04-20');
    // In order: 02-15, 03-15, 04-15. Backdated: 02-15 and 04-15 first, then 03-15 arrives late.
    for (const date of ['2026-02-15', '2026-03-15', '2026-04-15']) expect((await post(t, admin, `/v1/loans/${inOrder}/payments`, { amount: '1066.19', date })).statusCode).toBe(201);
    for (const date of ['2026-02-15', '2026-04-15']) expect((await post(t, admin, `/v1/loans/${backdated}/payments`, { amount: '1066.19', date })).statusCode).toBe(201);
    const entriesBefore = await sql<{ id: string; lines: string }>`
      select e.id, string_agg(l.account_code || ':' || l.amount, ',' order by l.line_no) as lines
      from journal_entries e join journal_lines l on l.entry_id = e.id where e.loan_id = ${backdated} group by e.id order by e.id`.execute(servicingDb(t));
    const late = await post(t, admin, `/v1/loans/${backdated}/payments`, { amount: '1066.19', date: '2026-03-15' });
    expect(late.json()).toMatchObject({ backdated: true });
    const [a, b] = [await loanOf(backdated), await loanOf(inOrder)];
    expect(a.balances).toEqual(b.balances);
    expect(await scheduleOf(backdated)).toEqual(await scheduleOf(inOrder));
    // Every entry posted before is still there, unchanged; the difference is one new entry.
    const entriesAfter = await sql<{ id: string; lines: string }>`
      select e.id, string_agg(l.account_code || ':' || l.amount, ',' order by l.line_no) as lines
      from journal_entries e join journal_lines l on l.entry_id = e.id where e.loan_id = ${backdated} group by e.id order by e.id`.execute(servicingDb(t));
    expect(entriesAfter.rows).toEqual(expect.arrayContaining(entriesBefore.rows));
    expect(entriesAfter.rows).toHaveLength(entriesBefore.rows.length + 1);
    await expectBooksBalanced(servicingDb(t));
  });

  it('a reversal replays the loan without the payment, posts the difference and says so; a second reversal is refused', async () => {
    const id = await disbursedLoan();
    await setBusinessDate(t, '2026-02-15');
    const before = await loanOf(id);
    const pay = await post(t, admin, `/v1/loans/${id}/payments`, { amount: '1066.19' });
    const txId = pay.json<{ transaction: { id: string } }>().transaction.id;
    await setBusinessDate(t, '2026-02-20');
    const rev = await post(t, servicer, `/v1/loans/${id}/transactions/${txId}/reversal`, { reason: 'returned cheque' });
    expect(rev.statusCode).toBe(201);
    expect(rev.json()).toMatchObject({ transaction: { id: txId, reversed: true, reversal_reason: 'returned cheque' }, backdated: true });
    const after = await loanOf(id);
    expect(after.balances.principal_outstanding).toBe(before.balances.principal_outstanding);
    expect(after.days_past_due).toBe(5);
    const again = await post(t, servicer, `/v1/loans/${id}/transactions/${txId}/reversal`, { reason: 'twice' });
    expect(problemOf(again)).toMatchObject({ status: 409, code: 'not_reversible' });
    const disbursement = (await get(`/v1/loans/${id}/transactions`)).json<{ data: { id: string; type: string }[] }>().data.find((x) => x.type === 'disbursement');
    expect(problemOf(await post(t, servicer, `/v1/loans/${id}/transactions/${disbursement?.id}/reversal`, { reason: 'no' }))).toMatchObject({ code: 'not_reversible' });
    const topics = await sql<{ topic: string }>`select topic from outbox_events where aggregate_id = ${id} order by id`.execute(servicingDb(t));
    expect(topics.rows.map((r) => r.topic)).toContain('payment.reversed');
    await expectBooksBalanced(servicingDb(t));
  });

  it('fees, charge-off, recovery and write-off post to the right accounts', async () => {
    const id = await disbursedLoan();
    await setBusinessDate(t, '2026-02-01');
    const fee = await post(t, servicer, `/v1/loans/${id}/charges`, { amount: '15.00', description: 'statement copy' });
    expect(fee.json()).toMatchObject({ transaction: { type: 'fee' }, loan: { balances: { fees_outstanding: '15.00' } } });
    const co = await post(t, servicer, `/v1/loans/${id}/charge-off`, { reason: 'borrower deceased' });
    expect(co.json()).toMatchObject({ loan: { status: 'charged_off', balances: { principal_outstanding: '0.00' } } });
    const rec = await post(t, admin, `/v1/loans/${id}/payments`, { amount: '300.00' });
    expect(rec.json()).toMatchObject({ transaction: { type: 'recovery' } });
    const wo = await post(t, admin, `/v1/loans/${id}/write-off`, { reason: 'estate closed' });
    expect(wo.json()).toMatchObject({ loan: { status: 'written_off' } });
    expect(problemOf(await post(t, admin, `/v1/loans/${id}/payments`, { amount: '1.00' }))).toMatchObject({ code: 'invalid_loan_state', state: 'written_off' });
    const entries = (await get(`/v1/ledger/entries?loan_id=${id}&limit=100`)).json<{ data: { source_type: string; lines: { account: string; side: string; amount: string }[] }[] }>().data;
    const byType = (type: string) => entries.find((e) => e.source_type === type)?.lines;
    expect(byType('servicing.fee')).toEqual(expect.arrayContaining([expect.objectContaining({ account: 'fees_receivable', side: 'debit', amount: '15.00' }), expect.objectContaining({ account: 'fee_income', side: 'credit', amount: '15.00' })]));
    expect(byType('servicing.charge_off')).toEqual(expect.arrayContaining([expect.objectContaining({ account: 'loans_receivable_principal', side: 'credit', amount: '12000.00' }), expect.objectContaining({ account: 'charge_off_losses', side: 'debit' })]));
    expect(byType('servicing.recovery')).toEqual(expect.arrayContaining([expect.objectContaining({ account: 'recoveries', side: 'credit', amount: '300.00' }), expect.objectContaining({ account: 'cash_clearing', side: 'debit', amount: '300.00' })]));
    await expectBooksBalanced(servicingDb(t));
  });

  it('a multi-tranche product disburses in tranches up to the approved amount', async () => {
    const p = await createProduct(t, admin, { multi_tranche: true });
    await setBusinessDate(t, '2026-01-15');
    const loan = await bookLoan(t, admin, { product_id: p.id, borrower_id: borrower.id, principal: '10000.00', annual_rate: '0.12', term: 12 });
    expect((await post(t, admin, `/v1/loans/${loan.id}/disbursements`, { amount: '6000.00' })).statusCode).toBe(201);
    await setBusinessDate(t, '2026-02-15');
    const second = await post(t, admin, `/v1/loans/${loan.id}/disbursements`, { amount: '4000.00' });
    expect(second.json()).toMatchObject({ loan: { disbursed: '10000.00' } });
    const tooMuch = await post(t, admin, `/v1/loans/${loan.id}/disbursements`, { amount: '0.01' });
    expect(problemOf(tooMuch)).toMatchObject({ status: 422, code: 'amount_exceeds_limit' });
    // A backdated change may not reach back before a further tranche (its replay would re-apply the tranche out of context).
    await setBusinessDate(t, '2026-02-20');
    expect((await post(t, admin, `/v1/loans/${loan.id}/payments`, { amount: '100.00' })).statusCode).toBe(201);
    const early = await post(t, admin, `/v1/loans/${loan.id}/payments`, { amount: '100.00', date: '2026-02-01' });
    expect(problemOf(early)).toMatchObject({ status: 422, code: 'value_date_too_early', errors: [{ pointer: '#/date' }] });
    const s = await scheduleOf(loan.id);
    const principal = s.reduce((sum, i) => sum + Math.round(Number(i.principal) * 100), 0);
    expect(principal).toBe(1_000_000);
    await expectBooksBalanced(servicingDb(t));
  });

  it('every money movement is in the audit chain, which verifies; the transactions table is partitioned by month', async () => {
    const rows = await sql<{ action: string }>`select distinct action from audit_log where action like 'loan.%'`.execute(servicingDb(t));
    expect(rows.rows.map((r) => r.action)).toEqual(expect.arrayContaining(['loan.booked', 'loan.disbursement', 'loan.repayment', 'loan.reversal', 'loan.fee', 'loan.charge_off', 'loan.recovery', 'loan.write_off']));
    expect((await verifyAuditChain(t.db.database.db)).ok).toBe(true);
    const parts = await sql<{ name: string }>`select c.relname as name from pg_inherits i join pg_class c on c.oid = i.inhrelid where i.inhparent = 'loan_transactions'::regclass`.execute(servicingDb(t));
    expect(parts.rows.map((r) => r.name)).toEqual(expect.arrayContaining(['loan_transactions_default', 'loan_transactions_2026_01', 'loan_transactions_2026_04']));
    const placed = await sql<{ part: string; n: string }>`select tableoid::regclass::text as part, count(*)::text as n from loan_transactions group by 1`.execute(servicingDb(t));
    expect(placed.rows.map((r) => r.part)).not.toContain('loan_transactions_default');
  });
});
