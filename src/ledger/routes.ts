/** Ledger HTTP routes (read-only): chart of accounts, trial balance, journal entries. */
import { z } from 'zod';
import type { App } from '../platform/http.js';
import { formatMoney, isCurrency } from '../engine/index.js';
import type { JournalEntry } from './model.js';
import type { LedgerService } from './service.js';

const READERS = ['admin', 'servicer', 'auditor', 'analyst'] as const;
const tags = ['ledger'];

/** Minor units as a decimal string in the currency's places (integers for a code the engine does not know). */
function amount(minor: bigint, currency: string): string {
  return isCurrency(currency) ? formatMoney(minor, currency) : minor.toString();
}

const lineSchema = z.object({
  line_no: z.number().int(),
  account: z.string(),
  currency: z.string(),
  side: z.enum(['debit', 'credit']),
  amount: z.string(),
});
const entrySchema = z
  .object({
    id: z.uuid(),
    entry_date: z.string(),
    posted_at: z.string(),
    description: z.string(),
    loan_id: z.string().nullable(),
    source_type: z.string(),
    source_id: z.string().nullable(),
    reverses_entry_id: z.string().nullable(),
    lines: z.array(lineSchema),
  })
  .meta({ id: 'JournalEntry' });

function entryView(e: JournalEntry): z.infer<typeof entrySchema> {
  return {
    id: e.id,
    entry_date: e.entryDate,
    posted_at: e.postedAt.toISOString(),
    description: e.description,
    loan_id: e.loanId,
    source_type: e.sourceType,
    source_id: e.sourceId,
    reverses_entry_id: e.reversesEntryId,
    lines: e.lines.map((l) => ({ line_no: l.lineNo, account: l.account, currency: l.currency, side: l.side, amount: amount(l.amount, l.currency) })),
  };
}

export function registerLedgerRoutes(app: App, ledger: LedgerService): void {
  app.get(
    '/v1/ledger/accounts',
    {
      config: { auth: READERS },
      schema: {
        tags,
        summary: 'The chart of accounts',
        response: {
          200: z.object({
            data: z.array(z.object({ code: z.string(), number: z.string(), name: z.string(), type: z.string(), normal_balance: z.enum(['debit', 'credit']) })),
          }),
        },
      },
    },
    async () => ({
      data: (await ledger.accounts()).map((a) => ({ code: a.code, number: a.number, name: a.name, type: a.type, normal_balance: a.normalBalance })),
    }),
  );

  app.get(
    '/v1/ledger/trial-balance',
    {
      config: { auth: READERS },
      schema: {
        tags,
        summary: 'Debits and credits per account and currency, for entries dated on or before as_of',
        description: 'Every currency nets to zero (total debits = total credits): the database refuses an unbalanced entry.',
        querystring: z.strictObject({ as_of: z.iso.date().optional().describe('YYYY-MM-DD; default: everything posted') }),
        response: {
          200: z
            .object({
              as_of: z.string().nullable(),
              accounts: z.array(
                z.object({ account: z.string(), number: z.string(), name: z.string(), type: z.string(), currency: z.string(), debits: z.string(), credits: z.string(), balance: z.string().describe('debits − credits') }),
              ),
              totals: z.array(z.object({ currency: z.string(), debits: z.string(), credits: z.string(), balanced: z.boolean() })),
            })
            .meta({ id: 'TrialBalance' }),
        },
      },
    },
    async (request) => {
      const tb = await ledger.trialBalance(request.query.as_of);
      return {
        as_of: tb.asOf,
        accounts: tb.rows.map((r) => ({
          account: r.account.code,
          number: r.account.number,
          name: r.account.name,
          type: r.account.type,
          currency: r.currency,
          debits: amount(r.debits, r.currency),
          credits: amount(r.credits, r.currency),
          balance: amount(r.debits - r.credits, r.currency),
        })),
        totals: tb.totals.map((t) => ({ currency: t.currency, debits: amount(t.debits, t.currency), credits: amount(t.credits, t.currency), balanced: t.debits === t.credits })),
      };
    },
  );

  app.get(
    '/v1/ledger/entries',
    {
      config: { auth: READERS },
      schema: {
        tags,
        summary: 'Journal entries in posting order, optionally for one loan',
        querystring: z.strictObject({
          loan_id: z.uuid().optional(),
          limit: z.coerce.number().int().min(1).max(100).default(20),
          starting_after: z.uuid().optional(),
        }),
        response: { 200: z.object({ data: z.array(entrySchema), has_more: z.boolean() }) },
      },
    },
    async (request) => {
      const q = request.query;
      const page = await ledger.entries({ loanId: q.loan_id, limit: q.limit, startingAfter: q.starting_after });
      return { data: page.data.map(entryView), has_more: page.hasMore };
    },
  );
}
