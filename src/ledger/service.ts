/**
 * The ledger's rules: an entry is checked here (at least two lines, positive
 * amounts, balanced in every currency) before it is written, and the database
 * checks it again at commit, so a bug above cannot post an unbalanced entry.
 * `post` and `reverse` take the caller's transaction, so a servicing
 * transaction and its journal entry commit or roll back together.
 */
import { randomUUID } from 'node:crypto';
import type { Transaction } from 'kysely';
import { AppError } from '../platform/errors.js';
import {
  ACCOUNT_CODES,
  type Account,
  type JournalEntry,
  type JournalEntryInput,
  type JournalLine,
  type TrialBalance,
} from './model.js';
import * as repo from './repository.js';
import type { EntryRow, LedgerDb, LedgerExecutor, LineRow } from './repository.js';

export interface LedgerDeps {
  readonly db: LedgerExecutor;
  readonly clock?: () => Date;
}

export interface LedgerService {
  /** Posts an entry in `tx` (or in its own transaction). */
  post(input: JournalEntryInput, tx?: Transaction<LedgerDb>): Promise<JournalEntry>;
  /** Posts several entries, in this order, with two statements. */
  postMany(inputs: readonly JournalEntryInput[], tx?: Transaction<LedgerDb>): Promise<JournalEntry[]>;
  /** Posts the mirror image of an entry: every line on the other side. */
  reverse(entryId: string, input: { entryDate: string; description: string; createdBy?: string }, tx?: Transaction<LedgerDb>): Promise<JournalEntry>;
  accounts(): Promise<Account[]>;
  trialBalance(asOf?: string): Promise<TrialBalance>;
  entries(filter: { loanId?: string; limit: number; startingAfter?: string }): Promise<{ data: JournalEntry[]; hasMore: boolean }>;
}

type NewEntry = Omit<EntryRow, 'seq'>;

const KNOWN_ACCOUNTS: ReadonlySet<string> = new Set(ACCOUNT_CODES);

function unbalanced(detail: string): AppError {
  return new AppError('unbalanced_entry', { detail });
}

/** Signed line amounts (debit +, credit −) after checking the entry. */
function checkedLines(input: JournalEntryInput): Omit<LineRow, 'entry_id'>[] {
  if (input.lines.length < 2) throw unbalanced(`an entry needs at least two lines; this one has ${input.lines.length}`);
  const totals = new Map<string, bigint>();
  const lines = input.lines.map((line, index) => {
    if (!KNOWN_ACCOUNTS.has(line.account)) throw unbalanced(`line ${index + 1}: unknown account "${line.account}"`);
    if (line.amount <= 0n) throw unbalanced(`line ${index + 1}: amounts are positive; the side says debit or credit`);
    const signed = line.side === 'debit' ? line.amount : -line.amount;
    totals.set(line.currency, (totals.get(line.currency) ?? 0n) + signed);
    return { line_no: index + 1, account_code: line.account, currency: line.currency, amount: signed };
  });
  for (const [currency, total] of totals) {
    if (total !== 0n) throw unbalanced(`debits and credits differ by ${total} minor units in ${currency}`);
  }
  return lines;
}

function toEntry(row: Omit<EntryRow, 'seq'>, lines: readonly LineRow[]): JournalEntry {
  return {
    id: row.id,
    entryDate: row.entry_date,
    postedAt: row.posted_at,
    description: row.description,
    loanId: row.loan_id,
    sourceType: row.source_type,
    sourceId: row.source_id,
    reversesEntryId: row.reverses_entry_id,
    lines: lines.map(
      (l): JournalLine => ({ lineNo: l.line_no, account: l.account_code, currency: l.currency, side: l.amount > 0n ? 'debit' : 'credit', amount: l.amount > 0n ? l.amount : -l.amount }),
    ),
  };
}

export function createLedgerService(deps: LedgerDeps): LedgerService {
  const { db } = deps;
  const clock = deps.clock ?? (() => new Date());

  async function accounts(): Promise<Account[]> {
    const rows = await repo.listAccounts(db);
    return rows.map((r) => ({ code: r.code, number: r.number, name: r.name, type: r.type, normalBalance: r.normal_balance }));
  }

  async function inTransaction<T>(tx: Transaction<LedgerDb> | undefined, work: (trx: Transaction<LedgerDb>) => Promise<T>): Promise<T> {
    return tx ? work(tx) : db.transaction().execute(work);
  }

  async function write(trx: Transaction<LedgerDb>, entries: readonly { row: NewEntry; createdBy: string | undefined; lines: Omit<LineRow, 'entry_id'>[] }[]): Promise<JournalEntry[]> {
    const withEntry = entries.map((e) => e.lines.map((l) => ({ ...l, entry_id: e.row.id })));
    await repo.insertEntries(trx, entries.map((e) => ({ ...e.row, created_by: e.createdBy ?? null })), withEntry.flat());
    return entries.map((e, i) => toEntry(e.row, withEntry[i] ?? []));
  }

  function prepare(input: JournalEntryInput) {
    const lines = checkedLines(input);
    const row: NewEntry = {
      id: randomUUID(),
      entry_date: input.entryDate,
      posted_at: clock(),
      description: input.description,
      loan_id: input.loanId ?? null,
      source_type: input.sourceType,
      source_id: input.sourceId ?? null,
      reverses_entry_id: null,
    };
    return { row, createdBy: input.createdBy, lines };
  }

  return {
    async post(input, tx) {
      const entry = prepare(input);
      return inTransaction(tx, async (trx) => (await write(trx, [entry]))[0] as JournalEntry);
    },

    async postMany(inputs, tx) {
      const entries = inputs.map(prepare);
      if (entries.length === 0) return [];
      return inTransaction(tx, (trx) => write(trx, entries));
    },

    async reverse(entryId, input, tx) {
      return inTransaction(tx, async (trx) => {
        const original = await repo.findEntry(trx, entryId);
        if (!original) throw new AppError('entry_not_found');
        if (await repo.findReversalOf(trx, entryId)) throw new AppError('entry_already_reversed');
        const lines = (await repo.linesOf(trx, [entryId])).map((l) => ({ line_no: l.line_no, account_code: l.account_code, currency: l.currency, amount: -l.amount }));
        const row: NewEntry = {
          id: randomUUID(),
          entry_date: input.entryDate,
          posted_at: clock(),
          description: input.description,
          loan_id: original.loan_id,
          source_type: 'reversal',
          source_id: original.id,
          reverses_entry_id: original.id,
        };
        return (await write(trx, [{ row, createdBy: input.createdBy, lines }]))[0] as JournalEntry;
      });
    },

    accounts,

    async trialBalance(asOf) {
      const [chart, sums] = await Promise.all([accounts(), repo.sumsByAccount(db, asOf ?? null)]);
      const byCode = new Map(chart.map((a) => [a.code, a]));
      const rows = sums
        .map((s) => ({ account: byCode.get(s.account_code) as Account, currency: s.currency, debits: s.debits, credits: s.credits }))
        .sort((a, b) => a.account.number.localeCompare(b.account.number) || a.currency.localeCompare(b.currency));
      const totals = new Map<string, { currency: string; debits: bigint; credits: bigint }>();
      for (const r of rows) {
        const t = totals.get(r.currency) ?? { currency: r.currency, debits: 0n, credits: 0n };
        totals.set(r.currency, { currency: r.currency, debits: t.debits + r.debits, credits: t.credits + r.credits });
      }
      return { asOf: asOf ?? null, rows, totals: [...totals.values()].sort((a, b) => a.currency.localeCompare(b.currency)) };
    },

    async entries(filter) {
      const after = filter.startingAfter === undefined ? undefined : await repo.findEntry(db, filter.startingAfter);
      if (filter.startingAfter !== undefined && !after) throw new AppError('entry_not_found', { detail: 'starting_after names no journal entry' });
      const rows = await repo.listEntries(db, { loanId: filter.loanId, limit: filter.limit + 1, after });
      const page = rows.slice(0, filter.limit);
      const lines = await repo.linesOf(db, page.map((r) => r.id));
      const byEntry = new Map<string, LineRow[]>();
      for (const l of lines) byEntry.set(l.entry_id, [...(byEntry.get(l.entry_id) ?? []), l]);
      return { data: page.map((r) => toEntry(r, byEntry.get(r.id) ?? [])), hasMore: rows.length > filter.limit };
    },
  };
}
