import { randomUUID } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isAppError } from '../../src/platform/errors.js';
import type { LedgerDb } from '../../src/ledger/repository.js';
import type { JournalEntryInput } from '../../src/ledger/model.js';
import { dbTarget } from '../support/db.js';
import { bearer, createTestApp, problemOf, type TestApp } from '../support/app.js';

let t: TestApp;
let db: Kysely<LedgerDb>;
let admin: string;

beforeAll(async () => {
  t = await createTestApp();
  db = t.db.database.db as unknown as Kysely<LedgerDb>;
  admin = await t.adminToken();
});
afterAll(async () => t.close());

const loanA = randomUUID();

function disbursement(amount: bigint, loanId = loanA, entryDate = '2026-03-01'): JournalEntryInput {
  return {
    entryDate,
    description: 'disbursement',
    loanId,
    sourceType: 'loan.disbursement',
    lines: [
      { account: 'loans_receivable_principal', currency: 'USD', side: 'debit', amount },
      { account: 'cash_clearing', currency: 'USD', side: 'credit', amount },
    ],
  };
}

async function rejection(work: () => Promise<unknown>): Promise<unknown> {
  try {
    await work();
  } catch (error) {
    return error;
  }
  throw new Error('expected the work to be refused');
}

async function lineCount(): Promise<number> {
  const row = await db.selectFrom('journal_lines').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow();
  return Number(row.n);
}

interface TrialBalanceBody {
  accounts: { account: string; currency: string; debits: string; credits: string; balance: string }[];
  totals: { currency: string; debits: string; credits: string; balanced: boolean }[];
}

describe(`ledger (${dbTarget})`, () => {
  it('the chart of accounts is there, for staff who read the books; a borrower is refused', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/v1/ledger/accounts', headers: bearer(admin) });
    expect(res.statusCode).toBe(200);
    const codes = res.json<{ data: { code: string; normal_balance: string }[] }>().data.map((a) => a.code);
    expect(codes).toEqual([
      'cash_clearing',
      'loans_receivable_principal',
      'interest_receivable',
      'fees_receivable',
      'borrower_credit_balances',
      'suspense',
      'interest_income',
      'fee_income',
      'recoveries',
      'charge_off_losses',
    ]);
    const borrower = (await t.userWithRole('borrower')).token;
    expect((await t.app.inject({ method: 'GET', url: '/v1/ledger/accounts', headers: bearer(borrower) })).statusCode).toBe(403);
  });

  it('a balanced entry posts; the trial balance nets to zero per currency and shows it by account', async () => {
    await t.ledger.post(disbursement(1_000_000n));
    await t.ledger.post({
      entryDate: '2026-04-01',
      description: 'payment',
      loanId: loanA,
      sourceType: 'payment',
      lines: [
        { account: 'cash_clearing', currency: 'USD', side: 'debit', amount: 120_000n },
        { account: 'interest_income', currency: 'USD', side: 'credit', amount: 20_000n },
        { account: 'loans_receivable_principal', currency: 'USD', side: 'credit', amount: 100_000n },
      ],
    });
    const res = await t.app.inject({ method: 'GET', url: '/v1/ledger/trial-balance', headers: bearer(admin) });
    expect(res.statusCode).toBe(200);
    const body = res.json<TrialBalanceBody>();
    expect(body.totals).toEqual([{ currency: 'USD', debits: '11200.00', credits: '11200.00', balanced: true }]);
    expect(body.accounts.find((a) => a.account === 'loans_receivable_principal')).toMatchObject({ debits: '10000.00', credits: '1000.00', balance: '9000.00' });
    // as of a date before the payment, only the disbursement counts
    const before = await t.app.inject({ method: 'GET', url: '/v1/ledger/trial-balance?as_of=2026-03-15', headers: bearer(admin) });
    expect(before.json<TrialBalanceBody>().totals).toEqual([{ currency: 'USD', debits: '10000.00', credits: '10000.00', balanced: true }]);
  });

  it('the service refuses an unbalanced or one-line entry before writing anything', async () => {
    const before = await lineCount();
    const cases: JournalEntryInput[] = [
      { ...disbursement(100n), lines: [{ account: 'cash_clearing', currency: 'USD', side: 'debit', amount: 100n }] },
      { ...disbursement(100n), lines: [{ account: 'cash_clearing', currency: 'USD', side: 'debit', amount: 100n }, { account: 'suspense', currency: 'USD', side: 'credit', amount: 99n }] },
      // balanced in number, not per currency
      { ...disbursement(100n), lines: [{ account: 'cash_clearing', currency: 'USD', side: 'debit', amount: 100n }, { account: 'suspense', currency: 'EUR', side: 'credit', amount: 100n }] },
      { ...disbursement(100n), lines: [{ account: 'cash_clearing', currency: 'USD', side: 'debit', amount: 0n }, { account: 'suspense', currency: 'USD', side: 'credit', amount: 0n }] },
    ];
    for (const input of cases) {
      const error = await rejection(() => t.ledger.post(input));
      expect(isAppError(error) && error.code).toBe('unbalanced_entry');
    }
    expect(await lineCount()).toBe(before);
  });

  it('the database itself refuses, at commit, an entry written around the service', async () => {
    const before = await lineCount();
    const writeRaw = (lines: { account: string; currency: string; amount: bigint }[]) =>
      db.transaction().execute(async (trx) => {
        const id = randomUUID();
        await trx.insertInto('journal_entries').values({ id, entry_date: '2026-05-01', description: 'raw', loan_id: null, source_type: 'manual', source_id: null, reverses_entry_id: null, created_by: null }).execute();
        if (lines.length > 0) {
          await trx.insertInto('journal_lines').values(lines.map((l, i) => ({ entry_id: id, line_no: i + 1, account_code: l.account, currency: l.currency, amount: l.amount }))).execute();
        }
      });
    for (const lines of [
      [],
      [{ account: 'cash_clearing', currency: 'USD', amount: 500n }],
      [{ account: 'cash_clearing', currency: 'USD', amount: 500n }, { account: 'suspense', currency: 'USD', amount: -499n }],
      [{ account: 'cash_clearing', currency: 'USD', amount: 500n }, { account: 'suspense', currency: 'EUR', amount: -500n }],
    ]) {
      const error = await rejection(() => writeRaw(lines));
      expect(String(error)).toMatch(/at least two|does not balance/);
    }
    expect(await lineCount()).toBe(before);
    // the same path with balanced lines commits
    await writeRaw([{ account: 'cash_clearing', currency: 'USD', amount: 500n }, { account: 'suspense', currency: 'USD', amount: -500n }]);
    expect(await lineCount()).toBe(before + 2);
  });

  it('posted entries cannot be changed or deleted: corrections are reversing entries', async () => {
    const entry = await t.ledger.post(disbursement(5_000n, randomUUID()));
    for (const statement of [
      sql`update journal_lines set amount = 1 where entry_id = ${entry.id}`,
      sql`delete from journal_lines where entry_id = ${entry.id}`,
      sql`update journal_entries set description = 'edited' where id = ${entry.id}`,
      sql`delete from journal_entries where id = ${entry.id}`,
      sql`truncate journal_lines`,
    ]) {
      const error = await rejection(() => db.transaction().execute((trx) => statement.execute(trx)));
      expect(String(error)).toMatch(/append-only/);
    }
    const reversal = await t.ledger.reverse(entry.id, { entryDate: '2026-03-02', description: 'posted in error' });
    expect(reversal.reversesEntryId).toBe(entry.id);
    expect(reversal.lines.map((l) => [l.account, l.side, l.amount])).toEqual([
      ['loans_receivable_principal', 'credit', 5_000n],
      ['cash_clearing', 'debit', 5_000n],
    ]);
    const again = await rejection(() => t.ledger.reverse(entry.id, { entryDate: '2026-03-02', description: 'twice' }));
    expect(isAppError(again) && again.code).toBe('entry_already_reversed');
    const missing = await rejection(() => t.ledger.reverse(randomUUID(), { entryDate: '2026-03-02', description: 'x' }));
    expect(isAppError(missing) && missing.code).toBe('entry_not_found');
  });

  it('an entry posted in the caller’s transaction rolls back with it', async () => {
    const before = await lineCount();
    const error = await rejection(() =>
      db.transaction().execute(async (trx) => {
        await t.ledger.post(disbursement(7_000n, randomUUID()), trx);
        throw new Error('the servicing step after it failed');
      }),
    );
    expect(String(error)).toMatch(/servicing step/);
    expect(await lineCount()).toBe(before);
  });

  it('entries are listed per loan in posting order, with cursor pagination', async () => {
    const loan = randomUUID();
    const posted = [];
    for (const amount of [100n, 200n, 300n]) posted.push(await t.ledger.post(disbursement(amount, loan)));
    const first = await t.app.inject({ method: 'GET', url: `/v1/ledger/entries?loan_id=${loan}&limit=2`, headers: bearer(admin) });
    expect(first.statusCode).toBe(200);
    const page1 = first.json<{ data: { id: string; lines: { amount: string }[] }[]; has_more: boolean }>();
    expect(page1.has_more).toBe(true);
    expect(page1.data.map((e) => e.lines[0]?.amount)).toEqual(['1.00', '2.00']);
    const second = await t.app.inject({ method: 'GET', url: `/v1/ledger/entries?loan_id=${loan}&limit=2&starting_after=${page1.data[1]?.id}`, headers: bearer(admin) });
    const page2 = second.json<{ data: { id: string }[]; has_more: boolean }>();
    expect(page2).toMatchObject({ has_more: false });
    expect(page2.data.map((e) => e.id)).toEqual([posted[2]?.id]);
    const bad = await t.app.inject({ method: 'GET', url: '/v1/ledger/entries?loan_id=not-a-uuid', headers: bearer(admin) });
    expect(bad.statusCode).toBe(400);
    expect(problemOf(bad).code).toBe('validation_failed');
  });

  it('the trial balance still nets to zero after everything above', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/v1/ledger/trial-balance', headers: bearer(admin) });
    for (const total of res.json<TrialBalanceBody>().totals) {
      expect(total.debits).toBe(total.credits);
      expect(total.balanced).toBe(true);
    }
  });
});
