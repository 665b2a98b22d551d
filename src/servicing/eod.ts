/**
 * End of day: closes a business date for every active loan and advances the date.
 *
 * Set-based and chunked: each chunk is one transaction that locks a slice of the book
 * (`FOR UPDATE SKIP LOCKED`, in id order), folds the day into each loan (interest
 * recognized, credit applied, late fees, charge-off by policy: loan-state.ts
 * `endOfDay`), posts the chunk's interest as one journal entry and each loan's own
 * end-of-day transactions as entries of that loan, and marks the loans closed for the
 * date, all with one UPDATE. Idempotent per (loan, date): a loan closed for the date
 * is never picked again, so a crashed run resumes where it stopped. A payment never
 * waits for more than one chunk, and the book as a whole is never locked.
 *
 * When no loan is left open, the subledger (the loans' posted vectors) is reconciled
 * with the general ledger, and the business date moves to the next day.
 */
import { randomUUID } from 'node:crypto';
import type { Kysely, Transaction } from 'kysely';
import { addDays, compareDates, formatDate, formatMoney, parseDate } from '../engine/index.js';
import type { LedgerDb } from '../ledger/repository.js';
import type { LedgerService } from '../ledger/service.js';
import { appendAudit } from '../platform/audit.js';
import { AppError, coerceError } from '../platform/errors.js';
import type { Logger } from '../platform/logger.js';
import { appendOutbox, type OutboxEvent } from '../platform/outbox.js';
import { balancesOf, endOfDay, glOf } from './loan-state.js';
import { glFromJson, glToJson, stateFromJson, stateJsonText } from './loan-state-json.js';
import { accumulateDifference, differenceLines, linesOfSum } from './posting.js';
import { loanTermsFromJson } from './products.js';
import * as repo from './repository.js';
import type { EodLoanUpdate, EodRunRow, ServicingDb } from './repository.js';
import type { ServicingDatabase } from './service.js';

export interface EodDeps {
  readonly db: Kysely<ServicingDatabase>;
  readonly ledger: LedgerService;
  readonly clock: () => Date;
  readonly logger: Logger;
  /** Loans per chunk transaction (default 500). */
  readonly chunkSize?: number;
  /**
   * Chunks processed at once, each over its own slice of the id space (default 2): one
   * lane's SQL overlaps another's computation.
   */
  readonly lanes?: number;
  readonly onChunk?: (loans: number, seconds: number) => void;
  /** Called once per processing of a run, when it completes or fails (metrics). */
  readonly onRun?: (outcome: 'completed' | 'failed', seconds: number) => void;
}

export interface ReconciliationBreak {
  readonly currency: string;
  readonly account: string;
  readonly gl: string;
  readonly subledger: string;
}

export interface Reconciliation {
  readonly balanced: boolean;
  /** Accounts where the loans' posted balances differ from the general ledger. */
  readonly breaks: readonly ReconciliationBreak[];
  /** Per currency, the general ledger's total (zero when it balances). */
  readonly glTotals: Readonly<Record<string, string>>;
}

export interface EodRun {
  readonly id: string;
  readonly businessDate: string;
  readonly status: 'running' | 'completed' | 'failed';
  readonly loansTotal: number;
  readonly loansProcessed: number;
  readonly chunks: number;
  /** Interest recognized per currency, minor units. */
  readonly accrued: Readonly<Record<string, bigint>>;
  readonly lateFees: number;
  readonly chargeOffs: number;
  readonly newlyDelinquent: number;
  readonly reconciliation: Reconciliation | null;
  readonly error: string | null;
  readonly startedAt: Date;
  readonly finishedAt: Date | null;
}

function runView(row: EodRunRow): EodRun {
  const accrued = (typeof row.accrued === 'string' ? JSON.parse(row.accrued) : row.accrued) as Record<string, string>;
  const reconciliation = (typeof row.reconciliation === 'string' ? JSON.parse(row.reconciliation) : row.reconciliation) as Reconciliation | null;
  return {
    id: row.id,
    businessDate: row.business_date,
    status: row.status,
    loansTotal: row.loans_total,
    loansProcessed: row.loans_processed,
    chunks: row.chunks,
    accrued: Object.fromEntries(Object.entries(accrued).map(([k, v]) => [k, BigInt(v)])),
    lateFees: row.late_fees,
    chargeOffs: row.charge_offs,
    newlyDelinquent: row.newly_delinquent,
    reconciliation,
    error: row.error,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
  };
}

const nextDay = (date: string) => formatDate(addDays(parseDate(date), 1));

/** `n` slices of the uuid space as (after, through] bounds, null = open end; together they cover every id once. */
export function laneBounds(n: number): [string | null, string | null][] {
  const last = (i: number) => `${(Math.floor((i * 0x1_0000_0000) / n) - 1).toString(16).padStart(8, '0')}-ffff-ffff-ffff-ffffffffffff`;
  return Array.from({ length: n }, (_, i): [string | null, string | null] => [i === 0 ? null : last(i), i === n - 1 ? null : last(i + 1)]);
}

export type EodService = ReturnType<typeof createEodService>;

export function createEodService(deps: EodDeps) {
  const { db, ledger, clock, logger } = deps;
  const chunkSize = deps.chunkSize ?? 500;
  const lanes = laneBounds(deps.lanes ?? 2);
  const s = (executor: Kysely<ServicingDatabase>) => executor as unknown as Kysely<ServicingDb>;
  const sdb = s(db);
  const ledgerTx = (trx: Transaction<ServicingDatabase>) => trx as unknown as Transaction<LedgerDb>;

  async function today(): Promise<string> {
    return (await repo.businessDate(sdb)) ?? repo.initBusinessDate(sdb, clock().toISOString().slice(0, 10));
  }

  /** Closes up to chunkSize loans after `afterId`; returns the last id, or null when none was left. */
  async function processChunk(run: { id: string; businessDate: string }, afterId: string | null, throughId: string | null): Promise<{ lastId: string | null; loans: number }> {
    const date = run.businessDate;
    const started = process.hrtime.bigint();
    const result = await db.transaction().execute(async (trx) => {
      const rows = await repo.lockEodChunk(s(trx), date, afterId, throughId, chunkSize);
      if (rows.length === 0) return { lastId: null, loans: 0 };
      const accrual = new Map<string, bigint>();
      const updates: EodLoanUpdate[] = [];
      const transactions: Parameters<typeof repo.insertTransactions>[1] = [];
      const events: OutboxEvent[] = [];
      let lateFees = 0;
      let chargeOffs = 0;
      let delinquent = 0;
      for (const row of rows) {
        const terms = loanTermsFromJson(row.terms);
        const before = stateFromJson(row.state);
        const closed = endOfDay(before, terms, date, row.last_seq + 1);
        const advancedGl = glOf(closed.advanced, terms);
        accumulateDifference(accrual, glFromJson(row.gl), advancedGl, row.currency);
        const finalGl = closed.events.length === 0 ? advancedGl : glOf(closed.state, terms);
        let entryId: string | null = null;
        if (closed.events.length > 0) {
          const lines = differenceLines(advancedGl, finalGl, row.currency);
          const description = closed.events.map((e) => e.effect.explanation.join(' ')).join(' ');
          if (lines.length > 0) entryId = (await ledger.post({ entryDate: date, description: description.slice(0, 500), loanId: row.id, sourceType: 'servicing.eod', sourceId: run.id, lines }, ledgerTx(trx))).id;
        }
        for (const { event, effect } of closed.events) {
          const id = randomUUID();
          transactions.push({
            id,
            loan_id: row.id,
            seq: event.seq,
            type: event.type,
            value_date: date,
            amount: effect.amount,
            currency: row.currency,
            details: JSON.stringify(event.type === 'late_fee' ? { installment: event.installment } : { policy: true, reason: `end of day ${date}: days past due reached the product's charge-off threshold` }),
            effect: JSON.stringify({ applied: true, amount: formatMoney(effect.amount, row.currency), explanation: effect.explanation }),
            journal_entry_id: entryId,
            idempotency_key: null,
            created_by: null,
          });
          if (event.type === 'late_fee') {
            lateFees++;
            events.push({ topic: 'fee.charged', aggregateType: 'loan', aggregateId: row.id, payload: { loan_id: row.id, transaction_id: id, type: 'late_fee', amount: formatMoney(effect.amount, row.currency), currency: row.currency, value_date: date } });
          } else {
            chargeOffs++;
            events.push({ topic: 'loan.charged_off', aggregateType: 'loan', aggregateId: row.id, payload: { loan_id: row.id, transaction_id: id, amount: formatMoney(effect.amount, row.currency), currency: row.currency, date, policy: true } });
          }
        }
        const balances = balancesOf(closed.state, terms, date);
        if (balances.bucket !== row.delinquency_bucket && balances.bucket !== 'current') {
          delinquent++;
          events.push({ topic: 'loan.delinquent', aggregateType: 'loan', aggregateId: row.id, payload: { loan_id: row.id, date, days_past_due: balances.daysPastDue, bucket: balances.bucket, previous_bucket: row.delinquency_bucket } });
        }
        updates.push({
          id: row.id,
          status: closed.state.status,
          state: stateJsonText(closed.state),
          gl: JSON.stringify(glToJson(finalGl)),
          last_seq: row.last_seq + closed.events.length,
          as_of: closed.state.asOf,
          principal_outstanding: balances.principalOutstanding,
          days_past_due: balances.daysPastDue,
          delinquency_bucket: balances.bucket,
          next_due_date: balances.nextDue?.dueDate ?? null,
        });
      }
      const lines = linesOfSum(accrual);
      const accrued: Record<string, string> = {};
      for (const l of lines) if (l.account === 'interest_income') accrued[l.currency] = String(l.side === 'credit' ? l.amount : -l.amount);
      let accrualEntry: string | null = null;
      if (lines.length > 0) {
        accrualEntry = (await ledger.post({ entryDate: date, description: `End of day ${date}: interest recognized on ${rows.length} loans`, sourceType: 'servicing.eod_accrual', sourceId: run.id, lines }, ledgerTx(trx))).id;
      }
      await repo.updateLoansClosed(s(trx), date, updates);
      await repo.insertTransactions(s(trx), transactions);
      if (events.length > 0) await appendOutbox<ServicingDatabase>(trx, events);
      await appendAudit<ServicingDatabase>(trx, { action: 'eod.chunk', subjectType: 'eod_run', subjectId: run.id, details: { business_date: date, loans: rows.length, first_loan: rows[0]?.id, last_loan: rows.at(-1)?.id, accrued, accrual_entry: accrualEntry, late_fees: lateFees, charge_offs: chargeOffs } }, clock());
      await repo.addRunProgress(s(trx), run.id, { loans: rows.length, lateFees, chargeOffs, delinquent, accrued });
      return { lastId: rows.at(-1)?.id ?? null, loans: rows.length };
    });
    deps.onChunk?.(result.loans, Number(process.hrtime.bigint() - started) / 1e9);
    return result;
  }

  async function reconcile(): Promise<Reconciliation> {
    const sums = await repo.reconciliationSums(sdb);
    const key = (r: { currency: string; account: string }) => `${r.currency}:${r.account}`;
    const gl = new Map(sums.gl.map((r) => [key(r), BigInt(r.total)]));
    const sub = new Map(sums.subledger.map((r) => [key(r), BigInt(r.total)]));
    const breaks: ReconciliationBreak[] = [];
    const glTotals = new Map<string, bigint>();
    for (const k of new Set([...gl.keys(), ...sub.keys()])) {
      const [currency, account] = k.split(':') as [string, string];
      const g = gl.get(k) ?? 0n;
      const l = sub.get(k) ?? 0n;
      glTotals.set(currency, (glTotals.get(currency) ?? 0n) + g);
      if (g !== l) breaks.push({ currency, account, gl: g.toString(), subledger: l.toString() });
    }
    const totals = Object.fromEntries([...glTotals].map(([c, v]) => [c, v.toString()]));
    return { balanced: breaks.length === 0 && [...glTotals.values()].every((v) => v === 0n), breaks, glTotals: totals };
  }

  /** Runs chunks until no loan is left open for the run's date, then reconciles and moves the date. */
  async function process_(runId: string): Promise<EodRun> {
    const row = await repo.findRun(sdb, runId);
    if (!row) throw new AppError('eod_run_not_found');
    const run = { id: row.id, businessDate: row.business_date };
    const started = process.hrtime.bigint();
    const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;
    try {
      for (;;) {
        // allSettled: a failing lane must not leave another running after the run is marked failed.
        const settled = await Promise.allSettled(
          lanes.map(async ([from, to]) => {
            let afterId = from;
            let loans = 0;
            for (;;) {
              const chunk = await processChunk(run, afterId, to);
              if (chunk.lastId === null) return loans;
              afterId = chunk.lastId;
              loans += chunk.loans;
            }
          }),
        );
        const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
        if (failed) throw failed.reason;
        const processed = settled.reduce((sum, r) => sum + (r.status === 'fulfilled' ? r.value : 0), 0);
        const remaining = await repo.countEodRemaining(sdb, run.businessDate);
        if (remaining === 0) break;
        // Loans locked by a payment were skipped; the next pass picks them up.
        if (processed === 0) await new Promise((resolve) => setTimeout(resolve, 20));
      }
      const reconciliation = await reconcile();
      if (!reconciliation.balanced) logger.error({ run_id: run.id, breaks: reconciliation.breaks }, 'end of day: subledger and general ledger do not agree');
      await db.transaction().execute(async (trx) => {
        await repo.finishRun(s(trx), run.id, { status: 'completed', reconciliation: JSON.stringify(reconciliation) });
        const current = await repo.businessDate(s(trx));
        const next = nextDay(run.businessDate);
        if (current === undefined || compareDates(parseDate(current), parseDate(next)) < 0) await repo.setBusinessDate(s(trx), next);
        await appendAudit<ServicingDatabase>(trx, { action: 'eod.completed', subjectType: 'eod_run', subjectId: run.id, details: { business_date: run.businessDate, next_business_date: next, balanced: reconciliation.balanced } }, clock());
      });
      try {
        await repo.ensurePartitions(sdb, nextDay(run.businessDate), 3);
      } catch (error) {
        logger.warn({ err: coerceError(error) }, 'end of day: could not create the next loan transaction partitions; rows go to the default partition');
      }
    } catch (error) {
      const e = coerceError(error);
      logger.error({ err: e, run_id: run.id }, 'end of day failed; resume it with the same date');
      deps.onRun?.('failed', seconds());
      await repo.finishRun(sdb, run.id, { status: 'failed', error: e.message.slice(0, 500) });
      throw error;
    }
    deps.onRun?.('completed', seconds());
    return runView((await repo.findRun(sdb, runId)) as EodRunRow);
  }

  /** Claims the run of `date` (default: the business date), or resumes it. Does not process. */
  async function start(input: { date?: string | undefined; actorId: string | null }): Promise<EodRun> {
    const current = await today();
    const date = input.date ?? current;
    const existing = await db.selectFrom('eod_runs').select(['id', 'status', 'business_date']).where('business_date', '=', date).executeTakeFirst();
    if (existing?.status === 'completed') return runView((await repo.findRun(sdb, existing.id)) as EodRunRow);
    if (compareDates(parseDate(date), parseDate(current)) < 0) {
      throw new AppError('business_date_order', { detail: `The business date is ${current}; ${date} is already closed or was skipped.`, errors: [{ pointer: '#/date', location: 'body', detail: `on or after ${current}` }] });
    }
    const unfinished = await db.selectFrom('eod_runs').select(['id', 'business_date']).where('status', '!=', 'completed').where('business_date', '<', date).executeTakeFirst();
    if (unfinished) throw new AppError('eod_run_in_progress', { detail: `The run of ${unfinished.business_date} (${unfinished.id}) has not completed; resume it first.`, extensions: { run_id: unfinished.id } });
    const remaining = await repo.countEodRemaining(sdb, date);
    const row = await repo.claimRun(sdb, { id: randomUUID(), business_date: date, loans_total: remaining, started_by: input.actorId });
    if (row.status === 'failed') await repo.restartRun(sdb, row.id, remaining);
    await appendAudit<ServicingDatabase>(db, { action: 'eod.started', actorId: input.actorId, subjectType: 'eod_run', subjectId: row.id, details: { business_date: date, loans: remaining } }, clock());
    return runView((await repo.findRun(sdb, row.id)) as EodRunRow);
  }

  return {
    start,
    process: process_,
    /** Start (or resume) and process to the end. */
    async run(input: { date?: string | undefined; actorId: string | null }): Promise<EodRun> {
      const run = await start(input);
      return run.status === 'completed' ? run : process_(run.id);
    },
    async get(id: string): Promise<EodRun> {
      const row = await repo.findRun(sdb, id);
      if (!row) throw new AppError('eod_run_not_found');
      return runView(row);
    },
    async list(limit: number): Promise<EodRun[]> {
      return (await repo.listRuns(sdb, limit)).map(runView);
    },
    reconcile,
    businessDate: today,
  };
}
