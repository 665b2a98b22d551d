import { sql, type Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEodService, laneBounds } from '../../src/servicing/eod.js';
import { datesToClose } from '../../src/servicing/eod-schedule.js';
import type { ServicingDatabase } from '../../src/servicing/service.js';
import { bearer, createTestApp, type TestApp } from '../support/app.js';
import { dbTarget, silentLogger } from '../support/db.js';
import { bookLoan, createProduct, expectBooksBalanced, post, servicingDb, setBusinessDate } from '../support/servicing.js';

let t: TestApp;
let admin: string;
beforeAll(async () => {
  t = await createTestApp();
  admin = await t.adminToken();
});
afterAll(async () => t.close());

async function loanOf(id: string) {
  return (await t.app.inject({ method: 'GET', url: `/v1/loans/${id}`, headers: bearer(admin) })).json<{
    status: string;
    days_past_due: number;
    delinquency_bucket: string;
    balances: { interest_outstanding: string; penalties_outstanding: string; principal_outstanding: string };
  }>();
}

async function runEod(date?: string) {
  const res = await t.app.inject({ method: 'POST', url: '/v1/eod/runs', headers: bearer(admin), payload: date === undefined ? {} : { date } });
  expect([200, 202]).toContain(res.statusCode);
  const id = res.json<{ id: string }>().id;
  for (let i = 0; i < 200; i++) {
    const run = (await t.app.inject({ method: 'GET', url: `/v1/eod/runs/${id}`, headers: bearer(admin) })).json<{ status: string; error: string | null }>();
    if (run.status !== 'running') return (await t.app.inject({ method: 'GET', url: `/v1/eod/runs/${id}`, headers: bearer(admin) })).json<Record<string, unknown>>();
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error('end of day did not finish');
}

async function interestLines(loanId: string): Promise<bigint> {
  const r = await sql<{ total: string | null }>`
    select sum(-l.amount)::text as total from journal_lines l join journal_entries e on e.id = l.entry_id
    where l.account_code = 'interest_income' and (e.loan_id = ${loanId} or e.source_type = 'servicing.eod_accrual')`.execute(servicingDb(t));
  return BigInt(r.rows[0]?.total ?? '0');
}

describe(`end of day (${dbTarget})`, () => {
  it('recognizes interest day by day, ages delinquency, charges late fees and charges off by policy; the books reconcile after every run', async () => {
    await setBusinessDate(t, '2026-03-01');
    const product = await createProduct(t, admin, {
      late_fee: { fee: { kind: 'fixed', amount: '25.00' }, grace_days: 10 },
      charge_off_days: 60,
      delinquency_buckets: [
        { name: '1-30', min_days: 1 },
        { name: '31+', min_days: 31 },
      ],
    });
    const borrower = await t.userWithRole('borrower');
    const loan = await bookLoan(t, admin, { product_id: product.id, borrower_id: borrower.id, principal: '12000.00', annual_rate: '0.12', term: 12 });
    expect((await post(t, admin, `/v1/loans/${loan.id}/disbursements`, {})).statusCode).toBe(201);

    // Closing a date recognizes interest through it: nothing on the disbursement date, 4.00 a day after (30/360, 12,000 at 12 %).
    const first = await runEod();
    expect(first).toMatchObject({ business_date: '2026-03-01', status: 'completed', loans_processed: 1, reconciliation: { balanced: true, breaks: [] } });
    const bd = (await t.app.inject({ method: 'GET', url: '/v1/business-date', headers: bearer(admin) })).json<{ business_date: string }>();
    expect(bd.business_date).toBe('2026-03-02');
    // Closing the same date again is refused as out of order, and its run is answered as completed.
    const again = await t.app.inject({ method: 'POST', url: '/v1/eod/runs', headers: bearer(admin), payload: { date: '2026-03-01' } });
    expect(again.statusCode).toBe(200);
    expect(again.json()).toMatchObject({ id: first.id, status: 'completed' });

    const second = await runEod();
    expect(second).toMatchObject({ business_date: '2026-03-02', accrued: { USD: '4.00' } });
    expect((await loanOf(loan.id)).balances.interest_outstanding).toBe('4.00');

    // Skip to the first due date and past the grace period without paying.
    await runEod('2026-04-01');
    let l = await loanOf(loan.id);
    expect(l.balances.interest_outstanding).toBe('120.00');
    // The business date is now 2026-04-02: installment 1 (due 04-01) is a day late.
    expect(l).toMatchObject({ days_past_due: 1, delinquency_bucket: '1-30' });
    await runEod('2026-04-05');
    l = await loanOf(loan.id);
    expect(l).toMatchObject({ days_past_due: 5, delinquency_bucket: '1-30' });
    expect(l.balances.penalties_outstanding).toBe('0.00');
    const late = await runEod('2026-04-11');
    expect(late).toMatchObject({ late_fees: 1 });
    expect((await loanOf(loan.id)).balances.penalties_outstanding).toBe('25.00');
    await runEod('2026-04-12');
    expect((await loanOf(loan.id)).balances.penalties_outstanding).toBe('25.00'); // once per installment

    const events = await sql<{ topic: string }>`select topic from outbox_events where aggregate_id = ${loan.id} order by id`.execute(servicingDb(t));
    expect(events.rows.map((r) => r.topic)).toEqual(expect.arrayContaining(['loan.disbursed', 'loan.delinquent', 'fee.charged']));

    // 60 days past due on 2026-05-31: charged off by policy.
    const co = await runEod('2026-05-31');
    expect(co).toMatchObject({ charge_offs: 1, reconciliation: { balanced: true } });
    l = await loanOf(loan.id);
    expect(l.status).toBe('charged_off');
    expect(l.balances.principal_outstanding).toBe('0.00');
    await expectBooksBalanced(servicingDb(t));
    // Interest recognized through the charge-off date and no further.
    const recognized = await interestLines(loan.id);
    await runEod('2026-06-15');
    expect(await interestLines(loan.id)).toBe(recognized);

    // A recovery after charge-off is income, not a repayment.
    const rec = await post(t, admin, `/v1/loans/${loan.id}/payments`, { amount: '500.00' });
    expect(rec.statusCode).toBe(201);
    expect(rec.json()).toMatchObject({ transaction: { type: 'recovery' } });
    await expectBooksBalanced(servicingDb(t));
  });

  it('a payment on a delinquent loan pays the late fee and the arrears first and cures the delinquency', async () => {
    await setBusinessDate(t, '2026-08-01');
    const product = await createProduct(t, admin, { late_fee: { fee: { kind: 'percent', rate: '0.05' }, grace_days: 5 }, charge_off_days: null });
    const borrower = await t.userWithRole('borrower');
    const loan = await bookLoan(t, admin, { product_id: product.id, borrower_id: borrower.id, principal: '12000.00', annual_rate: '0.12', term: 12 });
    expect((await post(t, admin, `/v1/loans/${loan.id}/disbursements`, {})).statusCode).toBe(201);
    await runEod('2026-09-06'); // installment 1 (due 09-01) unpaid for 5 days: 5 % of 1,066.19 = 53.31
    let l = await loanOf(loan.id);
    expect(l).toMatchObject({ days_past_due: 6, delinquency_bucket: '1-30', balances: { penalties_outstanding: '53.31' } });
    const pay = await post(t, borrower.token, `/v1/loans/${loan.id}/payments`, { amount: '1119.50' });
    expect(pay.statusCode).toBe(201);
    const lines = pay.json<{ transaction: { effect: { lines: { component: string; amount: string }[] } } }>().transaction.effect.lines;
    expect(lines.map((x) => `${x.component}:${x.amount}`)).toEqual(['penalty:53.31', 'interest:120.00', 'principal:946.19']);
    l = await loanOf(loan.id);
    expect(l).toMatchObject({ days_past_due: 0, delinquency_bucket: 'current', balances: { penalties_outstanding: '0.00' } });
    await expectBooksBalanced(servicingDb(t));
    // Out of the way of the next test, which counts the open book.
    expect((await post(t, admin, `/v1/loans/${loan.id}/write-off`, { reason: 'test cleanup' })).statusCode).toBe(201);
  });

  it('a run that fails part-way resumes where it stopped: each loan is closed once for the date', async () => {
    await setBusinessDate(t, '2027-01-09');
    const product = await createProduct(t, admin);
    const borrower = await t.userWithRole('borrower');
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const loan = await bookLoan(t, admin, { product_id: product.id, borrower_id: borrower.id, principal: '3600.00', annual_rate: '0.10', term: 6 });
      expect((await post(t, admin, `/v1/loans/${loan.id}/disbursements`, {})).statusCode).toBe(201);
      ids.push(loan.id);
    }
    await setBusinessDate(t, '2027-01-10');
    const db = servicingDb(t);
    const open = await sql<{ id: string }>`select id from loans where status = 'active' order by id`.execute(db);
    const victim = open.rows[3]?.id as string;
    const terms = await sql<{ terms: unknown }>`select terms from loans where id = ${victim}`.execute(db);
    await sql`update loans set terms = '{"broken": true}'::jsonb where id = ${victim}`.execute(db);

    const eod = createEodService({ db: t.db.database.db as unknown as Kysely<ServicingDatabase>, ledger: t.ledger, clock: () => new Date(), logger: silentLogger, chunkSize: 1, lanes: 1 });
    await expect(eod.run({ date: '2027-01-10', actorId: null })).rejects.toThrow();
    const failed = (await eod.list(1))[0];
    expect(failed).toMatchObject({ businessDate: '2027-01-10', status: 'failed', loansProcessed: 3 });
    expect(await eod.businessDate()).toBe('2027-01-10');
    // Another date cannot be closed while this one is unfinished.
    await expect(eod.start({ date: '2027-01-11', actorId: null })).rejects.toMatchObject({ code: 'eod_run_in_progress' });

    await sql`update loans set terms = ${JSON.stringify(terms.rows[0]?.terms)}::jsonb where id = ${victim}`.execute(db);
    const resumed = await eod.run({ date: '2027-01-10', actorId: null });
    expect(resumed).toMatchObject({ id: failed?.id, status: 'completed', loansProcessed: open.rows.length, reconciliation: { balanced: true } });
    const closed = await sql<{ n: string }>`select count(*)::text as n from loans where status = 'active' and closed_through = '2027-01-10'`.execute(db);
    expect(Number(closed.rows[0]?.n)).toBe(open.rows.length);
    expect(await eod.businessDate()).toBe('2027-01-11');
    // Nothing for 2027-01-10 was recognized twice: the day's interest entries sum to one day per loan (3,600 × 10 % / 360 = 1.00 each).
    const day = await sql<{ total: string }>`
      select coalesce(sum(-l.amount), 0)::text as total from journal_lines l join journal_entries e on e.id = l.entry_id
      where e.source_type = 'servicing.eod_accrual' and e.entry_date = '2027-01-10' and l.account_code = 'interest_income'`.execute(db);
    expect(BigInt(day.rows[0]?.total ?? '0')).toBe(BigInt(open.rows.length) * 100n);
    await expectBooksBalanced(db);
  });

  it('refuses an earlier date with a problem naming it', async () => {
    const res = await t.app.inject({ method: 'POST', url: '/v1/eod/runs', headers: bearer(admin), payload: { date: '2000-01-01' } });
    expect(res.statusCode).toBe(409);
    expect(res.json()).toMatchObject({ code: 'business_date_order', errors: [{ pointer: '#/date' }] });
  });
});

describe('end-of-day lanes', () => {
  it('split the id space so that every id falls in exactly one lane', () => {
    const ids = ['00000000-0000-0000-0000-000000000000', '7fffffff-ffff-ffff-ffff-ffffffffffff', '80000000-0000-0000-0000-000000000000', 'ffffffff-ffff-ffff-ffff-ffffffffffff', '55555554-ffff-ffff-ffff-ffffffffffff', '55555555-0000-0000-0000-000000000000', 'aaaaaaaa-0000-4000-8000-000000000000'];
    for (const n of [1, 2, 3, 4, 7]) {
      const lanes = laneBounds(n);
      expect(lanes).toHaveLength(n);
      for (const id of ids) {
        const owners = lanes.filter(([after, through]) => (after === null || id > after) && (through === null || id <= through));
        expect(owners, `${id} in ${n} lanes`).toHaveLength(1);
      }
    }
  });
});

describe('the daily schedule', () => {
  it('closes every date from the business date through yesterday once the time has passed, and nothing before it', () => {
    expect(datesToClose('2026-03-01', new Date('2026-03-02T00:29:59Z'), '00:30')).toEqual([]);
    expect(datesToClose('2026-03-01', new Date('2026-03-02T00:30:00Z'), '00:30')).toEqual(['2026-03-01']);
    expect(datesToClose('2026-02-27', new Date('2026-03-02T23:00:00Z'), '00:30')).toEqual(['2026-02-27', '2026-02-28', '2026-03-01']);
    expect(datesToClose('2026-03-02', new Date('2026-03-02T23:00:00Z'), '00:30')).toEqual([]);
  });
});
