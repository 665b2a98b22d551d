/**
 * Servicing under real concurrency. Commands on one loan serialize on the loan row
 * (SELECT … FOR UPDATE) and are idempotent per (user, key) at the HTTP layer and per
 * (loan, key) in the service. Here truly parallel requests (app.inject() over the pg
 * pool) hit one loan at a time, and the books are read back afterwards:
 *  - 100 identical disbursements, under one key or under 100 keys, disburse once;
 *  - 50 concurrent payments on one loan end exactly where 50 sequential ones do, on
 *    every loan tried, while a read-modify-write without the row lock, under the same
 *    load, demonstrably loses payments (so the test can see a lost update);
 *  - 200 payments with 5 % of the keys re-sent lose none and apply none twice.
 * PostgreSQL only: PGlite has a single session, so nothing there can overlap.
 */
import { randomUUID } from 'node:crypto';
import type { LightMyRequestResponse } from 'fastify';
import { sql, type Kysely } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatMoney, parseMoney } from '../../src/engine/index.js';
import { applyEvent, balancesOf, glOf, newLoanState, replay, type LoanEvent, type LoanState } from '../../src/servicing/loan-state.js';
import { glToJson, stateFromJson, stateToJson } from '../../src/servicing/loan-state-json.js';
import type { LoanTerms } from '../../src/servicing/model.js';
import { loanTermsFromJson } from '../../src/servicing/products.js';
import type { ServicingDb } from '../../src/servicing/repository.js';
import { bearer, createTestApp, type TestApp } from '../support/app.js';
import { isPostgres } from '../support/db.js';
import { bookLoan, createProduct, expectBooksBalanced, post, servicingDb, setBusinessDate } from '../support/servicing.js';

const DISBURSED_ON = '2026-01-15';
/** Installment 1 of a loan disbursed on DISBURSED_ON falls due here. */
const FIRST_DUE = '2026-02-15';
const PRINCIPAL = '12000.00';
const LOAN = { principal: PRINCIPAL, annual_rate: '0.12', term: 12 } as const;
const usd = (text: string) => parseMoney(text, 'USD');

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

interface Problem {
  code: string;
  status: number;
  state?: string;
  operation?: string;
}
interface CommandBody {
  transaction: { id: string; seq: number; type: string; amount: string };
  loan: { status: string; balances: { principal_outstanding: string; credit_balance: string } };
}
interface LoanBody {
  status: string;
  balances: { principal_outstanding: string; credit_balance: string };
}

const problem = (res: LightMyRequestResponse) => {
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
  return res.json<Problem>();
};
const isReplay = (res: LightMyRequestResponse) => res.headers['idempotent-replayed'] === 'true';
const isFresh = (res: LightMyRequestResponse) => res.statusCode === 201 && res.headers['idempotent-replayed'] === undefined;

/** Runs the jobs with at most `limit` running at once; results in job order. */
async function inParallel<T>(jobs: readonly (() => Promise<T>)[], limit: number): Promise<T[]> {
  const results: T[] = new Array<T>(jobs.length);
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const i = next++;
      results[i] = await (jobs[i] as () => Promise<T>)();
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, jobs.length) }, worker));
  return results;
}

describe.runIf(isPostgres)('servicing under real concurrency (postgres)', () => {
  let t: TestApp;
  let db: Kysely<ServicingDb>;
  let admin: string;
  let productId: string;

  beforeAll(async () => {
    t = await createTestApp();
    db = servicingDb(t);
    admin = await t.adminToken();
    await setBusinessDate(t, DISBURSED_ON);
    productId = (await createProduct(t, admin)).id;
  });
  afterAll(async () => t?.close());

  /** A loan booked (pending disbursement) for a new borrower. */
  async function book(): Promise<{ id: string; borrowerToken: string }> {
    const borrower = await t.userWithRole('borrower');
    const loan = await bookLoan(t, admin, { product_id: productId, borrower_id: borrower.id, ...LOAN });
    return { id: loan.id, borrowerToken: borrower.token };
  }

  /** Loans disbursed on DISBURSED_ON; the business date is left at FIRST_DUE. */
  async function disbursedLoans(n: number): Promise<{ id: string; borrowerToken: string }[]> {
    await setBusinessDate(t, DISBURSED_ON);
    const loans = [];
    for (let i = 0; i < n; i++) {
      const loan = await book();
      const res = await post(t, admin, `/v1/loans/${loan.id}/disbursements`, {});
      expect(res.statusCode, res.body).toBe(201);
      loans.push(loan);
    }
    await setBusinessDate(t, FIRST_DUE);
    return loans;
  }

  async function loanRow(id: string) {
    return db.selectFrom('loans').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
  }

  /** The loan's state as the pure fold of the transactions it has recorded (reversals aside). */
  async function foldOfTransactions(id: string, terms: LoanTerms): Promise<LoanState> {
    const rows = await db.selectFrom('loan_transactions').select(['seq', 'type', 'value_date', 'amount', 'details']).where('loan_id', '=', id).execute();
    const events = rows.map((r): LoanEvent => {
      const details = r.details as { overpayment?: 'credit_balance' | 'prepay_shorten_term' | 'prepay_reduce_installment' };
      if (r.type === 'disbursement') return { type: 'disbursement', seq: r.seq, date: r.value_date, amount: r.amount };
      if (r.type === 'repayment') return { type: 'repayment', seq: r.seq, date: r.value_date, amount: r.amount, overpayment: details.overpayment };
      throw new Error(`unexpected ${r.type} transaction`);
    });
    return replay(newLoanState(), terms, events).state;
  }

  /** Runs `work` while a separate session counts the sessions of this database waiting for a row lock. */
  async function withRowLockWaits<T>(work: () => Promise<T>): Promise<{ result: T; maxWaiting: number }> {
    const client = new pg.Client({ connectionString: t.db.url });
    await client.connect();
    let maxWaiting = 0;
    let done = false;
    const sampler = (async () => {
      while (!done) {
        const r = await client.query<{ n: number }>(
          `select count(*)::int as n from pg_locks l join pg_stat_activity a on a.pid = l.pid
           where not l.granted and l.locktype in ('transactionid', 'tuple') and a.datname = current_database()`,
        );
        maxWaiting = Math.max(maxWaiting, r.rows[0]?.n ?? 0);
        await sleep(2);
      }
    })();
    try {
      return { result: await work(), maxWaiting };
    } finally {
      done = true;
      await sampler;
      await client.end();
    }
  }

  /** One disbursement transaction, one disbursement entry, cash credited once: the loan was disbursed exactly once. */
  async function expectDisbursedOnce(loanId: string, transactionId: string): Promise<void> {
    const txs = await db.selectFrom('loan_transactions').select(['id', 'seq', 'type', 'amount']).where('loan_id', '=', loanId).execute();
    expect(txs).toEqual([{ id: transactionId, seq: 1, type: 'disbursement', amount: usd(PRINCIPAL) }]);
    const entries = await sql<{ source_type: string; source_id: string }>`
      select source_type, source_id from journal_entries where loan_id = ${loanId}`.execute(db);
    expect(entries.rows).toEqual([{ source_type: 'servicing.disbursement', source_id: transactionId }]);
    const cash = await sql<{ amount: bigint }>`
      select l.amount from journal_lines l join journal_entries e on e.id = l.entry_id
      where e.loan_id = ${loanId} and l.account_code = 'cash_clearing'`.execute(db);
    expect(cash.rows).toEqual([{ amount: -usd(PRINCIPAL) }]);
    const row = await loanRow(loanId);
    expect(row.status).toBe('active');
    expect(row.last_seq).toBe(1);
    expect(stateFromJson(row.state).disbursed).toBe(usd(PRINCIPAL));
    const keys = await db.selectFrom('loan_command_keys').select('transaction_id').where('loan_id', '=', loanId).execute();
    expect(keys).toEqual([{ transaction_id: transactionId }]);
    const events = await sql<{ topic: string }>`select topic from outbox_events where aggregate_id = ${loanId} and topic = 'loan.disbursed'`.execute(db);
    expect(events.rows).toHaveLength(1);
    const audits = await sql<{ action: string }>`select action from audit_log where subject_id = ${loanId} and action = 'loan.disbursement'`.execute(db);
    expect(audits.rows).toHaveLength(1);
  }

  describe('100 concurrent identical disbursement requests give exactly one disbursement', () => {
    it('under one Idempotency-Key: one runs; the others are told it is in use (409) or get its response replayed', async () => {
      await setBusinessDate(t, DISBURSED_ON);
      const loan = await book();
      const key = randomUUID();
      const url = `/v1/loans/${loan.id}/disbursements`;
      const results = await Promise.all(Array.from({ length: 100 }, () => post(t, admin, url, {}, key)));

      const fresh = results.filter(isFresh);
      expect(fresh).toHaveLength(1);
      const original = fresh[0] as LightMyRequestResponse;
      const transactionId = original.json<CommandBody>().transaction.id;
      const replays = results.filter((r) => r.statusCode === 201 && isReplay(r));
      const inUse = results.filter((r) => r.statusCode === 409);
      expect(fresh.length + replays.length + inUse.length).toBe(100);
      for (const r of inUse) {
        expect(problem(r).code).toBe('idempotency_key_in_use');
        expect(Number(r.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      }
      for (const r of replays) expect(r.body).toBe(original.body);

      // Once the first has finished, the key answers with its response.
      const again = await post(t, admin, url, {}, key);
      expect(again.statusCode).toBe(201);
      expect(isReplay(again)).toBe(true);
      expect(again.json<CommandBody>().transaction.id).toBe(transactionId);
      await expectDisbursedOnce(loan.id, transactionId);
      await expectBooksBalanced(db);
    });

    it('under 100 different keys: one runs; the 99 others meet the disbursed loan (409 invalid_loan_state, state active)', async () => {
      await setBusinessDate(t, DISBURSED_ON);
      const loan = await book();
      const url = `/v1/loans/${loan.id}/disbursements`;
      const { result: results, maxWaiting } = await withRowLockWaits(() => Promise.all(Array.from({ length: 100 }, () => post(t, admin, url, {}))));

      // The requests really queued on the loan row.
      expect(maxWaiting).toBeGreaterThan(0);
      const created = results.filter((r) => r.statusCode === 201);
      expect(created).toHaveLength(1);
      expect(isFresh(created[0] as LightMyRequestResponse)).toBe(true);
      const refused = results.filter((r) => r.statusCode !== 201);
      expect(refused).toHaveLength(99);
      for (const r of refused) {
        expect(r.statusCode).toBe(409);
        expect(problem(r)).toMatchObject({ code: 'invalid_loan_state', state: 'active', operation: 'disbursement' });
      }
      await expectDisbursedOnce(loan.id, (created[0] as LightMyRequestResponse).json<CommandBody>().transaction.id);
      await expectBooksBalanced(db);
    });
  });

  describe('50 concurrent payments on one loan give the right final balance every time', () => {
    const N = 50;
    const AMOUNT = '100.00';

    it('control: a read-modify-write of the loan state without the row lock, under the same load, loses payments', async () => {
      const [loan] = await disbursedLoans(1);
      const id = (loan as { id: string }).id;
      const amount = usd(AMOUNT);

      // Deliberately naive: a plain SELECT, the pure fold, a short pause, an UPDATE in its own transaction.
      const naivePayment = async (seq: number) => {
        const { rows } = await sql<{ state: unknown; terms: unknown }>`select state, terms from loans where id = ${id}`.execute(db);
        const row = rows[0] as { state: unknown; terms: unknown };
        const step = applyEvent(stateFromJson(row.state), loanTermsFromJson(row.terms), { type: 'repayment', seq, date: FIRST_DUE, amount });
        await sleep(5);
        await db.transaction().execute((trx) => sql`update loans set state = ${JSON.stringify(stateToJson(step.state))}::jsonb where id = ${id}`.execute(trx));
      };
      await Promise.all(Array.from({ length: N }, (_, i) => naivePayment(i + 2)));

      const state = stateFromJson((await loanRow(id)).state);
      const applied = state.paid.principal + state.paid.interest + state.paid.fee + state.paid.penalty + state.credit;
      expect(applied).toBe(state.received);
      expect(state.received % amount).toBe(0n);
      const survived = Number(state.received / amount);
      console.info(`naive read-modify-write: ${survived} of ${N} payments survived, ${N - survived} lost`);
      expect(survived).toBeGreaterThanOrEqual(1);
      expect(survived).toBeLessThan(N);
      // The naive writer never touched loans.gl or the journal, so the books still reconcile.
    });

    it(`${N} concurrent payments of ${AMOUNT} end where ${N} sequential ones do, on three loans in a row`, async () => {
      const loans = await disbursedLoans(4);
      const [sequential, ...concurrent] = loans as [{ id: string; borrowerToken: string }, ...{ id: string; borrowerToken: string }[]];
      const terms = loanTermsFromJson((await loanRow(sequential.id)).terms);

      // The expectation from the pure model: the disbursement, then N payments one after another.
      const events: LoanEvent[] = [
        { type: 'disbursement', seq: 1, date: DISBURSED_ON, amount: usd(PRINCIPAL) },
        ...Array.from({ length: N }, (_, i): LoanEvent => ({ type: 'repayment', seq: i + 2, date: FIRST_DUE, amount: usd(AMOUNT) })),
      ];
      const expected = replay(newLoanState(), terms, events).state;
      const expectedBalances = balancesOf(expected, terms, FIRST_DUE);
      // By hand: installment 1 (120.00 interest + 946.19 principal) is paid, the rest is a credit.
      expect(expectedBalances.principalOutstanding).toBe(usd('11053.81'));
      expect(expectedBalances.credit).toBe(usd('3933.81'));

      const expectMatchesModel = async (id: string) => {
        const row = await loanRow(id);
        expect(stateFromJson(row.state)).toEqual(expected);
        expect(row.gl).toEqual(glToJson(glOf(expected, terms)));
        expect(row.principal_outstanding).toBe(expectedBalances.principalOutstanding);
        expect(row.last_seq).toBe(N + 1);
        const view = (await t.app.inject({ method: 'GET', url: `/v1/loans/${id}`, headers: bearer(admin) })).json<LoanBody>();
        expect(view.status).toBe('active');
        expect(view.balances.principal_outstanding).toBe(formatMoney(expectedBalances.principalOutstanding, 'USD'));
        expect(view.balances.credit_balance).toBe(formatMoney(expectedBalances.credit, 'USD'));

        const txs = await db.selectFrom('loan_transactions').select(['seq', 'type', 'amount', 'effect']).where('loan_id', '=', id).orderBy('seq').execute();
        expect(txs.map((x) => x.seq)).toEqual(Array.from({ length: N + 1 }, (_, i) => i + 1));
        const repayments = txs.filter((x) => x.type === 'repayment');
        expect(repayments).toHaveLength(N);
        for (const x of repayments) {
          expect(x.amount).toBe(usd(AMOUNT));
          // Every cent of a payment is accounted for: applied per component, or kept as a credit.
          const effect = x.effect as { totals: Record<string, string>; credit_balance: string };
          const allocated = Object.values(effect.totals).reduce((sum, v) => sum + usd(v), usd(effect.credit_balance));
          expect(allocated).toBe(x.amount);
        }
        const cash = await sql<{ n: bigint; total: bigint }>`
          select count(*) as n, sum(l.amount)::bigint as total from journal_lines l join journal_entries e on e.id = l.entry_id
          where e.loan_id = ${id} and l.account_code = 'cash_clearing' and l.amount > 0`.execute(db);
        expect(cash.rows[0]).toEqual({ n: BigInt(N), total: BigInt(N) * usd(AMOUNT) });
      };

      // The same payments one at a time through the endpoint land on the model's answer.
      for (let i = 0; i < N; i++) {
        const res = await post(t, sequential.borrowerToken, `/v1/loans/${sequential.id}/payments`, { amount: AMOUNT });
        expect(res.statusCode, res.body).toBe(201);
      }
      await expectMatchesModel(sequential.id);

      for (const loan of concurrent) {
        const url = `/v1/loans/${loan.id}/payments`;
        const { result, maxWaiting } = await withRowLockWaits(() => Promise.all(Array.from({ length: N }, () => post(t, loan.borrowerToken, url, { amount: AMOUNT }))));
        expect(maxWaiting).toBeGreaterThan(0);
        expect(result.map((r) => r.statusCode)).toEqual(Array.from({ length: N }, () => 201));
        // Each response saw its own payment on top of every earlier one: seqs 2..N+1, once each.
        expect(result.map((r) => r.json<CommandBody>().transaction.seq).sort((a, b) => a - b)).toEqual(Array.from({ length: N }, (_, i) => i + 2));
        await expectMatchesModel(loan.id);
      }
      await expectBooksBalanced(db);
    });
  });

  describe('5 % duplicated idempotency keys under load give 0 lost and 0 double-applied payments', () => {
    const LOANS = 4;
    const PAYMENTS = 200;
    const WORKERS = 24;

    interface Attempt {
      readonly status: number;
      readonly replayed: boolean;
      readonly code: string | undefined;
      readonly body: string;
    }
    interface Payment {
      readonly loan: { id: string; borrowerToken: string };
      readonly key: string;
      readonly body: Record<string, string>;
      readonly resend: 'none' | 'concurrently' | 'afterwards';
    }

    it(`${PAYMENTS} payments over ${LOANS} loans, ${WORKERS} clients at once, 5 % of them re-sent: each key posts exactly once`, async () => {
      const loans = await disbursedLoans(LOANS);
      // Every 20 payments one is re-sent with the same key and body: alternately at the same
      // moment as the original, and once the original has answered.
      const resent = new Map(Array.from({ length: PAYMENTS / 20 }, (_, b) => [b * 20 + (b % 4) * 5 + 1, b % 2 === 0 ? 'concurrently' : 'afterwards'] as const));
      const payments: Payment[] = Array.from({ length: PAYMENTS }, (_, i) => ({
        loan: loans[i % LOANS] as Payment['loan'],
        key: randomUUID(),
        // Amounts differ, and some prepay, so the allocation depends on the order the loan applies them in.
        body: { amount: `${20 + (i % 9)}.${String((i * 37) % 100).padStart(2, '0')}`, ...(i % 7 === 0 ? { overpayment: 'prepay_shorten_term' } : {}) },
        resend: resent.get(i) ?? 'none',
      }));
      expect(payments.filter((p) => p.resend !== 'none')).toHaveLength(PAYMENTS / 20);
      expect(new Set(payments.filter((p) => p.resend !== 'none').map((p) => p.loan.id)).size).toBe(LOANS);

      let inFlight = 0;
      let maxInFlight = 0;
      /** A client that, told the key is in use, waits a moment and asks again until it gets the stored answer. */
      const client = async (p: Payment): Promise<Attempt[]> => {
        const attempts: Attempt[] = [];
        for (let n = 0; n < 300; n++) {
          inFlight++;
          maxInFlight = Math.max(maxInFlight, inFlight);
          const res = await post(t, p.loan.borrowerToken, `/v1/loans/${p.loan.id}/payments`, p.body, p.key);
          inFlight--;
          const code = res.statusCode >= 400 ? res.json<Problem>().code : undefined;
          attempts.push({ status: res.statusCode, replayed: isReplay(res), code, body: res.body });
          if (code !== 'idempotency_key_in_use') return attempts;
          await sleep(10);
        }
        throw new Error(`key ${p.key} still in use after 300 attempts`);
      };
      const jobs = payments.map((p) => async (): Promise<Attempt[][]> => {
        if (p.resend === 'concurrently') return Promise.all([client(p), client(p)]);
        const first = await client(p);
        return p.resend === 'afterwards' ? [first, await client(p)] : [first];
      });
      const outcomes = await inParallel(jobs, WORKERS);
      expect(maxInFlight).toBeGreaterThanOrEqual(16);
      expect(maxInFlight).toBeLessThanOrEqual(32);

      let inUse = 0;
      let replayed = 0;
      const transactionOf = new Map<string, string>();
      payments.forEach((p, i) => {
        const clients = outcomes[i] as Attempt[][];
        const attempts = clients.flat();
        // Exactly one attempt per key ran; every client ended with that attempt's answer.
        const fresh = attempts.filter((a) => a.status === 201 && !a.replayed);
        expect(fresh, `payment ${i}`).toHaveLength(1);
        const original = fresh[0] as Attempt;
        for (const c of clients) expect((c.at(-1) as Attempt).body).toBe(original.body);
        for (const a of attempts) {
          if (a === original) continue;
          if (a.status === 409) {
            expect(a.code).toBe('idempotency_key_in_use');
            inUse++;
          } else {
            expect(a).toMatchObject({ status: 201, replayed: true });
            replayed++;
          }
        }
        if (p.resend === 'none') expect(clients).toEqual([[original]]);
        // A re-send after the answer is a replay at once.
        if (p.resend === 'afterwards') expect(clients[1]).toEqual([{ status: 201, replayed: true, code: undefined, body: original.body }]);
        transactionOf.set(p.key, (JSON.parse(original.body) as CommandBody).transaction.id);
      });
      // Every re-sent key was answered to its second client (a replay), after any number of 409s.
      expect(replayed).toBe(PAYMENTS / 20);
      console.info(`duplicates: ${PAYMENTS / 20} re-sent, ${replayed} replayed, ${inUse} answered 409 in_use before that; max ${maxInFlight} requests in flight`);

      const ids = loans.map((l) => l.id);
      const posted = await db
        .selectFrom('loan_transactions')
        .select(['id', 'loan_id', 'idempotency_key', 'amount', 'effect'])
        .where('loan_id', 'in', ids)
        .where('type', '=', 'repayment')
        .execute();
      // 0 lost: every key sent posted one transaction, the one its client was answered with.
      expect(posted).toHaveLength(PAYMENTS);
      expect(new Map(posted.map((r) => [r.idempotency_key as string, r.id]))).toEqual(transactionOf);
      for (const r of posted) {
        const p = payments.find((x) => x.key === r.idempotency_key) as Payment;
        expect(r.loan_id).toBe(p.loan.id);
        expect(r.amount).toBe(usd(p.body.amount as string));
        const effect = r.effect as { totals: Record<string, string>; credit_balance: string };
        expect(Object.values(effect.totals).reduce((sum, v) => sum + usd(v), usd(effect.credit_balance))).toBe(r.amount);
      }
      // 0 double-applied: no key posted twice on any loan, in the transactions or in the journal.
      const twice = await sql<{ key: string }>`
        select idempotency_key as key from loan_transactions where loan_id in (${sql.join(ids)})
        group by loan_id, idempotency_key having count(*) > 1`.execute(db);
      expect(twice.rows).toEqual([]);
      const cash = await sql<{ id: string; amount: bigint; lines: bigint; cash: bigint | null }>`
        select t.id, t.amount, count(l.entry_id) as lines, sum(l.amount)::bigint as cash
        from loan_transactions t
        left join journal_entries e on e.source_id = t.id::text and e.source_type = 'servicing.repayment'
        left join journal_lines l on l.entry_id = e.id and l.account_code = 'cash_clearing'
        where t.loan_id in (${sql.join(ids)}) and t.type = 'repayment'
        group by t.id, t.amount`.execute(db);
      expect(cash.rows).toHaveLength(PAYMENTS);
      for (const r of cash.rows) expect({ lines: r.lines, cash: r.cash }).toEqual({ lines: 1n, cash: r.amount });
      const keys = await db.selectFrom('loan_command_keys').select(['idempotency_key', 'transaction_id']).where('loan_id', 'in', ids).execute();
      expect(keys.filter((k) => transactionOf.has(k.idempotency_key))).toHaveLength(PAYMENTS);
      for (const k of keys) if (transactionOf.has(k.idempotency_key)) expect(k.transaction_id).toBe(transactionOf.get(k.idempotency_key));

      for (const loan of loans) {
        const mine = payments.filter((p) => p.loan === loan);
        const row = await loanRow(loan.id);
        const terms = loanTermsFromJson(row.terms);
        const state = stateFromJson(row.state);
        // The stored state is the fold of exactly the transactions recorded: no payment was
        // applied to a stale state, none was folded in twice.
        const fold = await foldOfTransactions(loan.id, terms);
        expect(state).toEqual(fold);
        expect(row.gl).toEqual(glToJson(glOf(fold, terms)));
        expect(row.last_seq).toBe(mine.length + 1);
        expect(state.received).toBe(mine.reduce((sum, p) => sum + usd(p.body.amount as string), 0n));
        const events = await sql<{ n: bigint }>`select count(*) as n from outbox_events where aggregate_id = ${loan.id} and topic = 'payment.posted'`.execute(db);
        expect(events.rows[0]?.n).toBe(BigInt(mine.length));
        const audits = await sql<{ n: bigint }>`select count(*) as n from audit_log where subject_id = ${loan.id} and action = 'loan.repayment'`.execute(db);
        expect(audits.rows[0]?.n).toBe(BigInt(mine.length));
      }
      await expectBooksBalanced(db);
    });

    it('a response lost after the commit (a crash, a purge) still cannot post twice: 20 re-sends at once get the first payment back', async () => {
      const [loan] = await disbursedLoans(1);
      const { id, borrowerToken } = loan as { id: string; borrowerToken: string };
      const url = `/v1/loans/${id}/payments`;
      const key = randomUUID();
      const body = { amount: '250.00' };
      const first = await post(t, borrowerToken, url, body, key);
      expect(first.statusCode, first.body).toBe(201);
      const { transaction, journal_entry_ids: firstEntries } = first.json<CommandBody & { journal_entry_ids: string[] }>();
      const transactionId = transaction.id;
      // As if the process died between the commit and storing the response: the HTTP layer forgets the key.
      const forgotten = await sql`delete from idempotency_keys where key = ${key}`.execute(db);
      expect(forgotten.numAffectedRows).toBe(1n);

      const results = await Promise.all(Array.from({ length: 20 }, () => post(t, borrowerToken, url, body, key)));
      // One re-send gets past the HTTP layer again; the service's (loan, key) record answers it with the first
      // payment, marked as a replay like the platform's own; the others get that stored answer or wait (409).
      const answered = results.filter((r) => r.statusCode === 201);
      expect(answered.length).toBeGreaterThanOrEqual(1);
      for (const r of answered) {
        expect(isReplay(r)).toBe(true);
        const answer = r.json<CommandBody & { journal_entry_ids: string[] }>();
        expect(answer.transaction.id).toBe(transactionId);
        expect(answer.journal_entry_ids).toEqual(firstEntries);
      }
      for (const r of results) if (r.statusCode !== 201) expect([r.statusCode, problem(r).code]).toEqual([409, 'idempotency_key_in_use']);
      const posted = await db.selectFrom('loan_transactions').select(['id', 'idempotency_key']).where('loan_id', '=', id).where('type', '=', 'repayment').execute();
      expect(posted).toEqual([{ id: transactionId, idempotency_key: key }]);
      const cash = await sql<{ amount: bigint }>`
        select l.amount from journal_lines l join journal_entries e on e.id = l.entry_id
        where e.loan_id = ${id} and l.account_code = 'cash_clearing' and l.amount > 0`.execute(db);
      expect(cash.rows).toEqual([{ amount: usd('250.00') }]);
      expect((await loanRow(id)).last_seq).toBe(2);
      await expectBooksBalanced(db);
    });
  });

  it('a command that cannot get the loan within the lock wait answers 503 loan_busy with Retry-After, writes nothing, and the same key works once the loan is free', async () => {
    const [loan] = await disbursedLoans(1);
    const { id, borrowerToken } = loan as { id: string; borrowerToken: string };
    const key = randomUUID();
    const holder = new pg.Client({ connectionString: t.db.url });
    await holder.connect();
    try {
      await holder.query('begin');
      await holder.query('select id from loans where id = $1 for update', [id]);
      const before = await loanRow(id);
      const busy = await Promise.race([
        post(t, borrowerToken, `/v1/loans/${id}/payments`, { amount: '10.00' }, key),
        sleep(15_000).then(() => null),
      ]);
      expect(busy?.statusCode).toBe(503);
      expect(busy && problem(busy).code).toBe('loan_busy');
      expect(busy?.headers['retry-after']).toBe('1');
      await holder.query('rollback');
      const after = await loanRow(id);
      expect(after.version).toBe(before.version);
      expect(after.last_seq).toBe(1);
      const retried = await post(t, borrowerToken, `/v1/loans/${id}/payments`, { amount: '10.00' }, key);
      expect(retried.statusCode).toBe(201);
      expect((await loanRow(id)).last_seq).toBe(2);
    } finally {
      await holder.end();
    }
  });
});
