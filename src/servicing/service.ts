/**
 * Servicing commands and queries. Every command runs in one database transaction that
 * holds the loan's row lock: it folds the transaction into the loan state (loan-state.ts),
 * posts the change of the loan's ledger vector as journal entries, records the
 * transaction, the outbox events and the audit row, and commits them together.
 *
 * A transaction dated before the date the loan has reached (a backdated payment, a
 * reversal) replays from the latest checkpoint before that date, not from the start,
 * and posts the difference between the replayed and the posted vector as one new
 * entry: nothing already posted is edited.
 */
import { randomUUID } from 'node:crypto';
import type { Kysely, Transaction } from 'kysely';
import { compareDates, formatMoney, isEngineError, parseDate, parseMoney, type OverpaymentMode } from '../engine/index.js';
import type { AccountCode } from '../ledger/model.js';
import type { LedgerDb } from '../ledger/repository.js';
import type { LedgerService } from '../ledger/service.js';
import { appendAudit } from '../platform/audit.js';
import { canonicalJson } from '../platform/canonical-json.js';
import { sha256Hex } from '../platform/crypto.js';
import { AppError } from '../platform/errors.js';
import type { Logger } from '../platform/logger.js';
import { appendOutbox, type OutboxEvent } from '../platform/outbox.js';
import { inTransactionWithRetry } from '../platform/retry.js';
import type { PlatformTables } from '../platform/schema.js';
import {
  advance,
  applyEvent,
  capitalizesInterest,
  eventFromTransaction,
  balancesOf,
  glOf,
  newLoanState,
  payoffQuote,
  replay,
  type EventEffect,
  type LoanBalances,
  type LoanEvent,
  type LoanState,
  type PayoffQuote,
} from './loan-state.js';
import {
  glFromJson,
  glToJson,
  stateFromJson,
  stateJsonText,
} from './loan-state-json.js';
import type { LoanStatus, LoanTerms, TransactionType } from './model.js';
import { createProductService, productOf } from './product-service.js';
import { checkLoanAgainstProduct, loanTermsFromJson, termsToJson } from './products.js';
import { differenceLines } from './posting.js';
import * as repo from './repository.js';
import type { LoanRow, ServicingDb, TransactionRow } from './repository.js';

export type ServicingDatabase = ServicingDb & LedgerDb & PlatformTables;

export interface ServicingMetricsPort {
  /** A command's transaction was retried (serialization failure or deadlock). */
  retried(reason: string): void;
  command(type: string, outcome: 'ok' | 'refused' | 'error', seconds: number): void;
}

export interface ServicingDeps {
  readonly db: Kysely<ServicingDatabase>;
  readonly ledger: LedgerService;
  readonly clock: () => Date;
  readonly logger: Logger;
  readonly metrics?: ServicingMetricsPort;
  /** Write a replay checkpoint after every this many transactions (default 25). */
  readonly checkpointEvery?: number;
  /** How long a command waits for a loan another command is changing before answering loan_busy (default 5000). */
  readonly lockWaitMs?: number;
}

/** Who is asking: borrowers see and move only their own loans. */
export interface Viewer {
  readonly userId: string;
  readonly role: string;
}

export interface CommandContext {
  readonly viewer: Viewer;
  readonly ip: string | null;
  readonly requestId: string | null;
  readonly idempotencyKey?: string | undefined;
}

export interface CreateLoanInput {
  readonly productId: string;
  readonly productVersion?: number | undefined;
  readonly borrowerId: string;
  readonly principal: string;
  readonly annualRate: string;
  readonly term: number;
  readonly firstPaymentDate?: string | undefined;
}

export interface LoanDetails {
  readonly id: string;
  readonly borrowerId: string;
  readonly productId: string;
  readonly productVersion: number;
  readonly status: LoanStatus;
  readonly terms: LoanTerms;
  readonly state: LoanState;
  readonly businessDate: string;
  readonly balances: LoanBalances;
  readonly createdAt: Date;
  readonly updatedAt: Date;
}

export interface TransactionView {
  readonly id: string;
  readonly loanId: string;
  readonly seq: number;
  readonly type: TransactionType;
  readonly valueDate: string;
  readonly amount: bigint;
  readonly currency: string;
  readonly details: Record<string, unknown>;
  readonly effect: Record<string, unknown>;
  readonly reversedAt: Date | null;
  readonly reversalReason: string | null;
  readonly createdAt: Date;
}

export interface CommandResult {
  readonly transaction: TransactionView;
  readonly loan: LoanDetails;
  /** Journal entries this command posted (none when nothing changed in the ledger). */
  readonly journalEntryIds: readonly string[];
  /** True when the transaction was dated before the loan's date and the loan was replayed. */
  readonly backdated: boolean;
  /** True when the same idempotency key had already done this; nothing new was posted. */
  readonly replayed: boolean;
}

const STAFF_VIEW = new Set(['admin', 'servicer', 'auditor', 'analyst', 'underwriter']);
const day = (d: string) => parseDate(d);
const before = (a: string, b: string) => compareDates(day(a), day(b)) < 0;

/** A decimal amount in the loan's currency; a bad one is a validation problem naming the field. */
function parseAmount(text: string, currency: string, field = 'amount'): bigint {
  let minor: bigint;
  try {
    minor = parseMoney(text, currency, field);
  } catch (error) {
    if (!isEngineError(error)) throw error;
    throw new AppError('validation_failed', { detail: error.message, errors: [{ pointer: `#/${field}`, location: 'body', detail: error.message }] });
  }
  if (minor <= 0n) throw new AppError('validation_failed', { detail: `${field} must be positive`, errors: [{ pointer: `#/${field}`, location: 'body', detail: 'must be positive' }] });
  return minor;
}

/** A lock wait that timed out (SQLSTATE 55P03) becomes loan_busy; anything else passes through. */
function busyOr(error: unknown): unknown {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === '55P03'
    ? new AppError('loan_busy', { headers: { 'retry-after': '1' }, cause: error })
    : error;
}

function todayFrom(clock: () => Date): string {
  return clock().toISOString().slice(0, 10);
}

function stateError(status: string, operation: string): AppError {
  return new AppError('invalid_loan_state', {
    detail: `A loan in state ${status} does not allow ${operation.replace(/_/g, ' ')}.`,
    extensions: { state: status, operation },
  });
}

/** Serializes effects for jsonb: bigint as decimal strings. */
function effectJson(effect: EventEffect, currency: string): Record<string, unknown> {
  const money = (v: bigint) => formatMoney(v, currency);
  return {
    applied: effect.applied,
    amount: money(effect.amount),
    ...(effect.totals ? { totals: Object.fromEntries(Object.entries(effect.totals).map(([k, v]) => [k, money(v)])) } : {}),
    ...(effect.lines
      ? { lines: effect.lines.map((l) => ({ installment: l.installment, due_date: l.dueDate, status: l.status, component: l.component, amount: money(l.amount) })) }
      : {}),
    ...(effect.creditBalance !== undefined ? { credit_balance: money(effect.creditBalance) } : {}),
    ...(effect.creditApplied !== undefined && effect.creditApplied > 0n ? { credit_applied: money(effect.creditApplied) } : {}),
    ...(effect.prepayment !== undefined ? { prepayment: effect.prepayment === null ? null : { mode: effect.prepayment.mode, amount: money(effect.prepayment.amount) } } : {}),
    ...(effect.payoff !== undefined ? { payoff: effect.payoff } : {}),
    explanation: effect.explanation,
  };
}

function transactionView(row: TransactionRow): TransactionView {
  const parse = (v: unknown) => (typeof v === 'string' ? JSON.parse(v) : v) as Record<string, unknown>;
  return {
    id: row.id,
    loanId: row.loan_id,
    seq: row.seq,
    type: row.type as TransactionType,
    valueDate: row.value_date,
    amount: row.amount,
    currency: row.currency,
    details: parse(row.details),
    effect: parse(row.effect),
    reversedAt: row.reversed_at,
    reversalReason: row.reversal_reason,
    createdAt: row.created_at,
  };
}

export type ServicingService = ReturnType<typeof createServicingService>;

export function createServicingService(deps: ServicingDeps) {
  const { db, ledger, clock } = deps;
  const checkpointEvery = deps.checkpointEvery ?? 25;
  const lockWaitMs = deps.lockWaitMs ?? 5_000;
  const ledgerTx = (trx: Transaction<ServicingDatabase>) => trx as unknown as Transaction<LedgerDb>;
  // Kysely types are invariant in the table map: each part sees its own tables.
  const s = (executor: Kysely<ServicingDatabase>) => executor as unknown as Kysely<ServicingDb>;
  const sdb = s(db);

  async function businessDate(executor: Kysely<ServicingDatabase> = db): Promise<string> {
    return (await repo.businessDate(s(executor))) ?? repo.initBusinessDate(s(executor), todayFrom(clock));
  }

  const borrowerScope = (viewer: Viewer): string | undefined => (STAFF_VIEW.has(viewer.role) ? undefined : viewer.userId);

  function details(row: LoanRow, today: string, known?: { terms: LoanTerms; state: LoanState; updatedAt: Date }): LoanDetails {
    const terms = known?.terms ?? loanTermsFromJson(row.terms);
    const state = known?.state ?? stateFromJson(row.state);
    return {
      id: row.id,
      borrowerId: row.borrower_id,
      productId: row.product_id,
      productVersion: row.product_version,
      status: known === undefined ? (row.status as LoanStatus) : state.status,
      terms,
      state,
      businessDate: today,
      balances: balancesOf(state, terms, today),
      createdAt: row.created_at,
      updatedAt: known?.updatedAt ?? row.updated_at,
    };
  }

  async function loadVisible(executor: Kysely<ServicingDatabase>, id: string, viewer: Viewer, lock: boolean): Promise<LoanRow> {
    const scope = borrowerScope(viewer);
    const row = lock ? await repo.lockLoan(s(executor), id, scope) : await repo.findLoan(s(executor), id, scope);
    if (!row) throw new AppError('loan_not_found');
    return row;
  }

  /** Posts target − posted as one journal entry (none when equal); returns the entry id. */
  async function postDifference(
    trx: Transaction<ServicingDatabase>,
    loanId: string,
    currency: string,
    posted: Record<AccountCode, bigint>,
    target: Record<AccountCode, bigint>,
    meta: { entryDate: string; description: string; sourceType: string; sourceId: string; createdBy: string | null },
  ): Promise<string | null> {
    const [id] = await postDifferences(trx, loanId, currency, [{ posted, target, meta }]);
    return id ?? null;
  }

  /** Several differences as entries in one go (two statements); empty ones are skipped. Returns the ids posted. */
  async function postDifferences(
    trx: Transaction<ServicingDatabase>,
    loanId: string,
    currency: string,
    steps: readonly { posted: Record<AccountCode, bigint>; target: Record<AccountCode, bigint>; meta: { entryDate: string; description: string; sourceType: string; sourceId: string; createdBy: string | null } }[],
  ): Promise<string[]> {
    const inputs = steps
      .map(({ posted, target, meta }) => ({ ...meta, loanId, createdBy: meta.createdBy ?? undefined, lines: differenceLines(posted, target, currency) }))
      .filter((input) => input.lines.length > 0);
    return (await ledger.postMany(inputs, ledgerTx(trx))).map((e) => e.id);
  }

  /**
   * A replay that starts before a further tranche would re-apply the tranche to a loan the
   * replay may have closed or shortened meanwhile; such a change is refused rather than
   * guessed at (reverse the tranche's effects by hand, or date the change after it).
   */
  async function refuseReplayPastTranche(trx: Transaction<ServicingDatabase>, loanId: string, date: string): Promise<void> {
    const tranche = await repo.latestTrancheDate(s(trx), loanId);
    if (tranche !== null && before(date, tranche)) {
      throw new AppError('value_date_too_early', { detail: `The loan had a further tranche on ${tranche}; a backdated change cannot reach back before it.`, errors: [{ pointer: '#/date', location: 'body', detail: `on or after ${tranche}` }] });
    }
  }

  interface Applied {
    readonly state: LoanState;
    readonly effect: EventEffect;
    readonly entries: string[];
    readonly backdated: boolean;
  }

  /** Replays the loan from the latest checkpoint before `from`, with `extra` added; returns the new state and effects. */
  async function replayFrom(trx: Transaction<ServicingDatabase>, row: LoanRow, terms: LoanTerms, current: LoanState, from: string, extra: readonly LoanEvent[]) {
    const checkpoint = await repo.checkpointBefore(s(trx), row.id, from);
    const base = checkpoint ? stateFromJson(checkpoint.state) : newLoanState();
    const rows = await repo.activeTransactionsAfter(s(trx), row.id, checkpoint ? { value_date: checkpoint.value_date, seq: checkpoint.seq } : null);
    const result = replay(base, terms, [...rows.map(eventFromTransaction), ...extra], current.asOf, checkpointEvery);
    await repo.deleteCheckpointsFrom(s(trx), row.id, from);
    // New checkpoints along the replayed stretch, so the next backdated change replays as little.
    await repo.insertCheckpoints(s(trx), result.checkpoints.map((c) => ({ loan_id: row.id, seq: c.seq, value_date: c.date, state: stateJsonText(c.state) })));
    return { ...result, replayedTransactions: rows.length + extra.length };
  }

  async function applyNew(trx: Transaction<ServicingDatabase>, row: LoanRow, terms: LoanTerms, event: LoanEvent, meta: { transactionId: string; actor: string | null; description: string }): Promise<Applied> {
    const state = stateFromJson(row.state);
    const posted = glFromJson(row.gl);
    const entryMeta = (sourceType: string, description: string) => ({ entryDate: event.date, description, sourceType, sourceId: meta.transactionId, createdBy: meta.actor });
    if (state.asOf === null || !before(event.date, state.asOf)) {
      const advanced = advance(state, terms, event.date);
      const accrualGl = glOf(advanced, terms);
      const step = applyEvent(advanced, terms, event);
      // Two entries, so the ledger shows the interest recognized apart from what the transaction did.
      const entries = await postDifferences(trx, row.id, row.currency, [
        { posted, target: accrualGl, meta: entryMeta('servicing.accrual', `Interest recognized to ${event.date}`) },
        { posted: accrualGl, target: glOf(step.state, terms), meta: entryMeta(`servicing.${event.type}`, meta.description) },
      ]);
      if (event.seq % checkpointEvery === 0) {
        await repo.insertCheckpoints(s(trx), [{ loan_id: row.id, seq: event.seq, value_date: event.date, state: stateJsonText(step.state) }]);
      }
      return { state: step.state, effect: step.effect, entries, backdated: false };
    }
    const replayed = await replayFrom(trx, row, terms, state, event.date, [event]);
    const effect = replayed.effects.get(event.seq) as EventEffect;
    const entry = await postDifference(trx, row.id, row.currency, posted, glOf(replayed.state, terms), entryMeta('servicing.replay', `${meta.description} (backdated to ${event.date}; ${replayed.replayedTransactions} transactions replayed)`));
    return { state: replayed.state, effect, entries: entry ? [entry] : [], backdated: true };
  }

  async function saveLoan(trx: Transaction<ServicingDatabase>, row: LoanRow, terms: LoanTerms, state: LoanState, lastSeq: number, today: string): Promise<Date> {
    const balances = balancesOf(state, terms, today);
    // The row lock makes this always true; the version check makes a lost update impossible even if a caller forgot the lock.
    const written = await repo.updateLoan(s(trx), row.id, row.version, {
      status: state.status,
      state: stateJsonText(state),
      gl: JSON.stringify(glToJson(glOf(state, terms))),
      last_seq: lastSeq,
      as_of: state.asOf,
      principal_outstanding: balances.principalOutstanding,
      days_past_due: balances.daysPastDue,
      delinquency_bucket: balances.bucket,
      next_due_date: balances.nextDue?.dueDate ?? null,
    });
    if (written === null) throw new Error(`loan ${row.id} changed under its row lock (version ${row.version})`);
    return written;
  }

  function statusEvents(loanId: string, from: LoanStatus, to: LoanStatus, date: string, extra: Record<string, unknown>): OutboxEvent[] {
    if (from === to) return [];
    const topic = to === 'paid_off' || to === 'overpaid' ? 'loan.paid_off' : to === 'charged_off' ? 'loan.charged_off' : to === 'written_off' ? 'loan.written_off' : to === 'active' && from !== 'pending_disbursement' ? 'loan.reopened' : null;
    return topic === null ? [] : [{ topic, aggregateType: 'loan', aggregateId: loanId, payload: { loan_id: loanId, from, to, date, ...extra } }];
  }

  const TOPIC: Partial<Record<TransactionType, string>> = {
    disbursement: 'loan.disbursed',
    repayment: 'payment.posted',
    recovery: 'recovery.posted',
    fee: 'fee.charged',
    late_fee: 'fee.charged',
  };

  interface NewTransaction {
    readonly type: TransactionType;
    readonly date: string;
    readonly amount: bigint;
    readonly details: Record<string, unknown>;
    readonly description: string;
    readonly toEvent: (seq: number) => LoanEvent;
  }

  /**
   * The one path every money command takes: lock, check the idempotency key, apply (or
   * replay), post, record, publish, audit: one transaction.
   */
  async function command(
    loanId: string,
    ctx: CommandContext,
    operation: string,
    request: unknown,
    decide: (row: LoanRow, terms: LoanTerms, state: LoanState, today: string) => NewTransaction,
  ): Promise<CommandResult> {
    const started = process.hrtime.bigint();
    const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;
    try {
      const result = await inTransactionWithRetry(
        db,
        async (trx) => {
          const today = (await repo.beginCommand(s(trx), lockWaitMs)) ?? (await businessDate(trx));
          const row = await loadVisible(trx, loanId, ctx.viewer, true);
          // The key is recorded with the transaction it will post; both commit or neither does.
          const transactionId = randomUUID();
          if (ctx.idempotencyKey !== undefined) {
            const hash = sha256Hex(canonicalJson({ operation, request }));
            const earlier = await repo.claimCommandKey(s(trx), { loan_id: loanId, idempotency_key: ctx.idempotencyKey, request_hash: hash, transaction_id: transactionId });
            if (earlier) {
              if (earlier.request_hash !== hash) throw new AppError('idempotency_key_reused', { detail: 'This Idempotency-Key was used on this loan for a different request.' });
              const tx = earlier.transaction_id === null ? undefined : await repo.findTransaction(s(trx), loanId, earlier.transaction_id);
              if (tx) {
                const entries = await repo.entriesOfTransaction(s(trx), loanId, tx.id);
                return { transaction: transactionView(tx), loan: details(row, today), journalEntryIds: entries.map((e) => e.id), backdated: entries.some((e) => e.source_type === 'servicing.replay'), replayed: true };
              }
            }
          }
          const terms = loanTermsFromJson(row.terms);
          const state = stateFromJson(row.state);
          const next = decide(row, terms, state, today);
          if (before(today, next.date)) {
            throw new AppError('future_value_date', { detail: `The value date ${next.date} is after the business date ${today}.`, errors: [{ pointer: '#/date', location: 'body', detail: 'after the business date' }] });
          }
          if (next.type !== 'disbursement' && state.firstDisbursementDate !== null && before(next.date, state.firstDisbursementDate)) {
            throw new AppError('value_date_too_early', { detail: `The value date ${next.date} is before the disbursement on ${state.firstDisbursementDate}.`, errors: [{ pointer: '#/date', location: 'body', detail: 'before the disbursement' }] });
          }
          if (state.asOf !== null && before(next.date, state.asOf)) await refuseReplayPastTranche(trx, loanId, next.date);
          const seq = row.last_seq + 1;
          const actor = ctx.viewer.userId;
          const applied = await applyNew(trx, row, terms, next.toEvent(seq), { transactionId, actor, description: next.description });
          const effect = effectJson(applied.effect, row.currency);
          const txRow = {
            id: transactionId,
            loan_id: loanId,
            seq,
            type: next.type,
            value_date: next.date,
            amount: next.amount,
            currency: row.currency,
            details: JSON.stringify(next.details),
            effect: JSON.stringify(effect),
            journal_entry_id: applied.entries.at(-1) ?? null,
            idempotency_key: ctx.idempotencyKey ?? null,
            created_by: actor,
          };
          const createdAt = await repo.insertTransaction(s(trx), txRow);
          const updatedAt = await saveLoan(trx, row, terms, applied.state, seq, today);
          const money = formatMoney(next.amount, row.currency);
          const payload = { loan_id: loanId, transaction_id: transactionId, type: next.type, amount: money, currency: row.currency, value_date: next.date, backdated: applied.backdated };
          const topic = TOPIC[next.type];
          await appendOutbox<ServicingDatabase>(trx, [
            ...(topic === undefined || !applied.effect.applied ? [] : [{ topic, aggregateType: 'loan', aggregateId: loanId, payload }]),
            ...statusEvents(loanId, state.status, applied.state.status, next.date, { transaction_id: transactionId }),
          ]);
          // Last before commit: the audit chain's lock is held from here to the commit, and every money movement takes it.
          await appendAudit<ServicingDatabase>(trx, { action: `loan.${next.type}`, actorId: actor, subjectType: 'loan', subjectId: loanId, ip: ctx.ip, requestId: ctx.requestId, details: { ...payload, journal_entry_ids: applied.entries } }, clock());
          const transaction: TransactionView = {
            id: transactionId,
            loanId,
            seq,
            type: next.type,
            valueDate: next.date,
            amount: next.amount,
            currency: row.currency,
            details: next.details,
            effect,
            reversedAt: null,
            reversalReason: null,
            createdAt,
          };
          return { transaction, loan: details(row, today, { terms, state: applied.state, updatedAt }), journalEntryIds: applied.entries, backdated: applied.backdated, replayed: false };
        },
        { onRetry: (reason) => deps.metrics?.retried(reason) },
      );
      deps.metrics?.command(operation, 'ok', seconds());
      return result;
    } catch (caught) {
      const error = busyOr(caught);
      deps.metrics?.command(operation, error instanceof AppError ? 'refused' : 'error', seconds());
      throw error;
    }
  }

  const requireStatus = (state: LoanState, operation: string, ...allowed: LoanStatus[]) => {
    if (!allowed.includes(state.status)) throw stateError(state.status, operation);
  };

  // The catalogue is its own small service; this one adds the loans.
  const products = createProductService({ db });

  return {
    ...products,
    businessDate: () => businessDate(),

    // -- loans --------------------------------------------------------------

    async createLoan(input: CreateLoanInput, ctx: CommandContext): Promise<LoanDetails> {
      return db.transaction().execute((trx) => this.createLoanIn(trx, input, ctx));
    },

    /** Books a loan inside the caller's transaction (origination books an accepted offer with its own records). */
    async createLoanIn(trx: Transaction<ServicingDatabase>, input: CreateLoanInput, ctx: CommandContext): Promise<LoanDetails> {
      if (borrowerScope(ctx.viewer) !== undefined && input.borrowerId !== ctx.viewer.userId) {
        throw new AppError('forbidden', { detail: 'A borrower books loans for themself only.' });
      }
      const productRow = await repo.findProduct(s(trx), input.productId, input.productVersion);
      if (!productRow) throw new AppError('product_not_found', { errors: [{ pointer: '#/product_id', location: 'body', detail: 'no such product (version)' }] });
      const product = productOf(productRow);
      const principal = parseAmount(input.principal, product.terms.currency, 'principal');
      checkLoanAgainstProduct(product.terms, { principal, term: input.term, annualRate: input.annualRate });
      const terms: LoanTerms = { ...product.terms, principal, annualRate: input.annualRate, term: input.term, firstPaymentDate: input.firstPaymentDate ?? null };
      const today = await businessDate(trx);
      const id = randomUUID();
      const row = await repo.insertLoan(s(trx), {
        id,
        borrower_id: input.borrowerId,
        product_id: product.id,
        product_version: product.version,
        status: 'pending_disbursement',
        currency: product.terms.currency,
        principal,
        terms: termsToJson(terms),
        state: stateJsonText(newLoanState()),
        booked_on: today,
        created_by: ctx.viewer.userId,
      });
      await appendAudit<ServicingDatabase>(trx, { action: 'loan.booked', actorId: ctx.viewer.userId, subjectType: 'loan', subjectId: id, ip: ctx.ip, requestId: ctx.requestId, details: { product_id: product.id, product_version: product.version, principal: formatMoney(principal, terms.currency), currency: terms.currency } }, clock());
      await appendOutbox<ServicingDatabase>(trx, { topic: 'loan.booked', aggregateType: 'loan', aggregateId: id, payload: { loan_id: id, borrower_id: input.borrowerId, product_id: product.id, product_version: product.version } });
      return details(row, today);
    },

    /**
     * The live book for a projection (forecasting): every active monthly loan's outstanding
     * principal in major units of its currency, gross rate, and elapsed and remaining
     * installments as of the business date (whole months since the first disbursement).
     */
    async bookTape(): Promise<{ currency: string; balance: number; annualRate: number; remainingTerm: number; age: number }[]> {
      const today = parseDate(await businessDate());
      const out: { currency: string; balance: number; annualRate: number; remainingTerm: number; age: number }[] = [];
      let after: string | undefined;
      for (;;) {
        const rows = await repo.activeMonthlyLoans(sdb, after, 5000);
        for (const r of rows) {
          const start = r.first_disbursement_date === null ? today : parseDate(r.first_disbursement_date);
          const months = Math.max(0, (today.year - start.year) * 12 + (today.month - start.month) - (today.day < start.day ? 1 : 0));
          const age = Math.min(months, r.term - 1);
          out.push({ currency: r.currency, balance: Number(formatMoney(BigInt(r.principal_outstanding), r.currency)), annualRate: Number(r.annual_rate), remainingTerm: r.term - age, age });
        }
        if (rows.length < 5000) return out;
        after = rows[rows.length - 1]?.id;
      }
    },

    /** A product's currency (origination prices an application in it); product_not_found when there is none. */
    async productCurrency(productId: string): Promise<string> {
      const row = await repo.findProduct(sdb, productId);
      if (!row) throw new AppError('product_not_found', { errors: [{ pointer: '#/product_id', location: 'body', detail: 'no such product' }] });
      return row.currency;
    },

    async loan(id: string, viewer: Viewer): Promise<LoanDetails> {
      const [row, today] = await Promise.all([loadVisible(db, id, viewer, false), businessDate()]);
      return details(row, today);
    },

    async loans(viewer: Viewer, filter: { status?: LoanStatus | undefined; borrowerId?: string | undefined; limit: number; startingAfter?: string | undefined }): Promise<{ data: LoanDetails[]; hasMore: boolean }> {
      const scope = borrowerScope(viewer);
      let after: { created_at: Date; id: string } | undefined;
      if (filter.startingAfter !== undefined) {
        const row = await repo.findLoan(sdb, filter.startingAfter, scope);
        if (!row) throw new AppError('loan_not_found', { detail: 'starting_after names no loan' });
        after = { created_at: row.created_at, id: row.id };
      }
      const today = await businessDate();
      const rows = await repo.listLoans(sdb, { borrowerId: scope ?? filter.borrowerId, status: filter.status, limit: filter.limit + 1, after });
      return { data: rows.slice(0, filter.limit).map((r) => details(r, today)), hasMore: rows.length > filter.limit };
    },

    async transactions(id: string, viewer: Viewer, page: { limit: number; startingAfter?: string | undefined }): Promise<{ data: TransactionView[]; hasMore: boolean }> {
      await loadVisible(db, id, viewer, false);
      let afterSeq: number | undefined;
      if (page.startingAfter !== undefined) {
        const tx = await repo.findTransaction(sdb, id, page.startingAfter);
        if (!tx) throw new AppError('transaction_not_found', { detail: 'starting_after names no transaction of this loan' });
        afterSeq = tx.seq;
      }
      const rows = await repo.listTransactions(sdb, id, { limit: page.limit + 1, afterSeq });
      return { data: rows.slice(0, page.limit).map(transactionView), hasMore: rows.length > page.limit };
    },

    async payoffQuote(id: string, viewer: Viewer, asOf?: string): Promise<PayoffQuote & { currency: string }> {
      const [row, today] = await Promise.all([loadVisible(db, id, viewer, false), businessDate()]);
      const date = asOf ?? today;
      const state = stateFromJson(row.state);
      if (state.status !== 'active') throw stateError(state.status, 'payoff_quote');
      if (state.asOf !== null && before(date, state.asOf)) {
        throw new AppError('validation_failed', { detail: `as_of must be on or after ${state.asOf}, the date the loan has reached.`, errors: [{ pointer: '#/as_of', location: 'query', detail: `on or after ${state.asOf}` }] });
      }
      return { ...payoffQuote(state, loanTermsFromJson(row.terms), date), currency: row.currency };
    },

    disburse(id: string, input: { amount?: string | undefined; date?: string | undefined }, ctx: CommandContext): Promise<CommandResult> {
      return command(id, ctx, 'disbursement', { amount: input.amount, date: input.date }, (row, terms, state, today) => {
        const date = input.date ?? today;
        if (state.status === 'active') {
          if (!terms.multiTranche) throw stateError(state.status, 'disbursement');
        } else {
          requireStatus(state, 'disbursement', 'pending_disbursement');
        }
        const left = terms.principal - state.disbursed;
        const amount = input.amount === undefined ? left : parseAmount(input.amount, row.currency);
        if (amount <= 0n || amount > left) {
          throw new AppError('amount_exceeds_limit', { detail: `At most ${formatMoney(left, row.currency)} is left to disburse of the approved ${formatMoney(terms.principal, row.currency)}.`, errors: [{ pointer: '#/amount', location: 'body', detail: 'above the amount left to disburse' }] });
        }
        if (before(date, row.booked_on)) {
          throw new AppError('value_date_too_early', { detail: `A disbursement cannot be dated before the loan was booked (${row.booked_on}).`, errors: [{ pointer: '#/date', location: 'body', detail: `on or after ${row.booked_on}` }] });
        }
        if (state.firstDisbursementDate !== null && before(date, state.firstDisbursementDate)) {
          throw new AppError('value_date_too_early', { detail: 'A tranche cannot be dated before the first disbursement.' });
        }
        if (state.status === 'pending_disbursement' && capitalizesInterest(terms, amount, date)) {
          throw new AppError('schedule_capitalizes', {
            detail: `Disbursed on ${date}, the first period is so long that its interest exceeds the installment. Disburse nearer the first payment date${terms.firstPaymentDate === null ? '' : ` (${terms.firstPaymentDate})`}, or book the loan with an earlier one.`,
          });
        }
        const lastDue = state.installments.at(-1)?.dueDate;
        if (lastDue !== undefined && !before(date, lastDue)) throw new AppError('value_date_too_early', { detail: 'A tranche must be disbursed before the last installment falls due.' });
        return { type: 'disbursement', date, amount, details: {}, description: `Disbursement of ${formatMoney(amount, row.currency)}`, toEvent: (seq) => ({ type: 'disbursement', seq, date, amount }) };
      });
    },

    /** A repayment; on a charged-off loan the same call posts a recovery. */
    pay(id: string, input: { amount: string; date?: string | undefined; overpayment?: OverpaymentMode | undefined }, ctx: CommandContext): Promise<CommandResult> {
      return command(id, ctx, 'payment', { amount: input.amount, date: input.date, overpayment: input.overpayment }, (row, _terms, state, today) => {
        const date = input.date ?? today;
        const amount = parseAmount(input.amount, row.currency);
        if (state.status === 'charged_off') {
          return { type: 'recovery', date, amount, details: {}, description: `Recovery of ${formatMoney(amount, row.currency)}`, toEvent: (seq) => ({ type: 'recovery', seq, date, amount }) };
        }
        requireStatus(state, 'payment', 'active');
        return {
          type: 'repayment',
          date,
          amount,
          details: input.overpayment === undefined ? {} : { overpayment: input.overpayment },
          description: `Payment of ${formatMoney(amount, row.currency)}`,
          toEvent: (seq) => ({ type: 'repayment', seq, date, amount, overpayment: input.overpayment }),
        };
      });
    },

    charge(id: string, input: { amount: string; date?: string | undefined; description: string }, ctx: CommandContext): Promise<CommandResult> {
      return command(id, ctx, 'charge', { amount: input.amount, date: input.date, description: input.description }, (row, _terms, state, today) => {
        requireStatus(state, 'charge', 'active');
        const date = input.date ?? today;
        const amount = parseAmount(input.amount, row.currency);
        return { type: 'fee', date, amount, details: { description: input.description }, description: `Fee: ${input.description}`, toEvent: (seq) => ({ type: 'fee', seq, date, amount }) };
      });
    },

    chargeOff(id: string, input: { date?: string | undefined; reason: string; policy?: boolean }, ctx: CommandContext): Promise<CommandResult> {
      return command(id, ctx, 'charge_off', { date: input.date, reason: input.reason }, (_row, _terms, state, today) => {
        requireStatus(state, 'charge_off', 'active');
        const date = input.date ?? today;
        const policy = input.policy ?? false;
        return { type: 'charge_off', date, amount: 0n, details: { reason: input.reason, policy }, description: `Charge-off: ${input.reason}`, toEvent: (seq) => ({ type: 'charge_off', seq, date, policy }) };
      });
    },

    writeOff(id: string, input: { date?: string | undefined; reason: string }, ctx: CommandContext): Promise<CommandResult> {
      return command(id, ctx, 'write_off', { date: input.date, reason: input.reason }, (_row, _terms, state, today) => {
        requireStatus(state, 'write_off', 'active', 'charged_off');
        const date = input.date ?? today;
        return { type: 'write_off', date, amount: 0n, details: { reason: input.reason }, description: `Write-off: ${input.reason}`, toEvent: (seq) => ({ type: 'write_off', seq, date }) };
      });
    },

    /** Reverses a repayment, recovery or fee: the loan is replayed without it and the difference posted. */
    async reverse(id: string, transactionId: string, input: { reason: string }, ctx: CommandContext): Promise<CommandResult> {
      return inTransactionWithRetry(
        db,
        async (trx) => {
          const today = (await repo.beginCommand(s(trx), lockWaitMs)) ?? (await businessDate(trx));
          const row = await loadVisible(trx, id, ctx.viewer, true);
          const tx = await repo.findTransaction(s(trx), id, transactionId);
          if (!tx) throw new AppError('transaction_not_found');
          if (ctx.idempotencyKey !== undefined) {
            // The same reversal again under its own key (a retry) answers with what it did.
            const hash = sha256Hex(canonicalJson({ operation: 'reversal', transactionId, request: input }));
            const earlier = await repo.claimCommandKey(s(trx), { loan_id: id, idempotency_key: ctx.idempotencyKey, request_hash: hash, transaction_id: transactionId });
            if (earlier) {
              if (earlier.request_hash !== hash) throw new AppError('idempotency_key_reused', { detail: 'This Idempotency-Key was used on this loan for a different request.' });
              const entries = await repo.entriesOfTransaction(s(trx), id, transactionId);
              return { transaction: transactionView(tx), loan: details(row, today), journalEntryIds: entries.filter((e) => e.source_type === 'servicing.reversal').map((e) => e.id), backdated: true, replayed: true };
            }
          }
          if (tx.reversed_at !== null) throw new AppError('not_reversible', { detail: 'This transaction was already reversed.' });
          if (!['repayment', 'recovery', 'fee', 'late_fee'].includes(tx.type)) throw new AppError('not_reversible', { detail: `A ${tx.type.replace('_', ' ')} cannot be reversed.` });
          const terms = loanTermsFromJson(row.terms);
          const state = stateFromJson(row.state);
          requireStatus(state, 'reversal', 'active', 'paid_off', 'overpaid', 'charged_off');
          await refuseReplayPastTranche(trx, id, tx.value_date);
          await repo.markReversed(s(trx), id, transactionId, input.reason);
          const replayed = await replayFrom(trx, row, terms, state, tx.value_date, []);
          const entry = await postDifference(trx, id, row.currency, glFromJson(row.gl), glOf(replayed.state, terms), {
            entryDate: today,
            description: `Reversal of ${tx.type.replace('_', ' ')} ${transactionId} (${input.reason}); ${replayed.replayedTransactions} transactions replayed from ${tx.value_date}`,
            sourceType: 'servicing.reversal',
            sourceId: transactionId,
            createdBy: ctx.viewer.userId,
          });
          const updatedAt = await saveLoan(trx, row, terms, replayed.state, row.last_seq, today);
          const reversed = await repo.findTransaction(s(trx), id, transactionId);
          const payload = { loan_id: id, transaction_id: transactionId, type: tx.type, amount: formatMoney(tx.amount, row.currency), currency: row.currency, value_date: tx.value_date, reason: input.reason };
          await appendOutbox<ServicingDatabase>(trx, [
            { topic: tx.type === 'repayment' ? 'payment.reversed' : `${tx.type === 'recovery' ? 'recovery' : 'fee'}.reversed`, aggregateType: 'loan', aggregateId: id, payload },
            ...statusEvents(id, state.status, replayed.state.status, today, { transaction_id: transactionId }),
          ]);
          // Last before commit: the audit chain's lock is held from here to the commit.
          await appendAudit<ServicingDatabase>(trx, { action: 'loan.reversal', actorId: ctx.viewer.userId, subjectType: 'loan', subjectId: id, ip: ctx.ip, requestId: ctx.requestId, details: { ...payload, journal_entry_ids: entry ? [entry] : [] } }, clock());
          return { transaction: transactionView(reversed as TransactionRow), loan: details(row, today, { terms, state: replayed.state, updatedAt }), journalEntryIds: entry ? [entry] : [], backdated: true, replayed: false };
        },
        { onRetry: (reason) => deps.metrics?.retried(reason) },
      ).catch((error: unknown) => {
        throw busyOr(error);
      });
    },

    async cancel(id: string, ctx: CommandContext): Promise<LoanDetails> {
      return db.transaction().execute(async (trx) => {
        const today = await businessDate(trx);
        const row = await loadVisible(trx, id, ctx.viewer, true);
        if (row.status !== 'pending_disbursement') throw stateError(row.status, 'cancellation');
        const state: LoanState = { ...stateFromJson(row.state), status: 'cancelled' };
        await repo.updateLoan(s(trx), id, row.version, { status: 'cancelled', state: stateJsonText(state), gl: JSON.stringify(row.gl), last_seq: row.last_seq, as_of: row.as_of, principal_outstanding: 0n, days_past_due: 0, delinquency_bucket: 'current', next_due_date: null });
        await appendAudit<ServicingDatabase>(trx, { action: 'loan.cancelled', actorId: ctx.viewer.userId, subjectType: 'loan', subjectId: id, ip: ctx.ip, requestId: ctx.requestId }, clock());
        await appendOutbox<ServicingDatabase>(trx, { topic: 'loan.cancelled', aggregateType: 'loan', aggregateId: id, payload: { loan_id: id } });
        return details((await repo.findLoan(s(trx), id)) as LoanRow, today);
      });
    },
  };
}
