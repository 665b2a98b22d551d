/**
 * Forecasting: projections of one loan, a batch, a pool or loan list, or the live book
 * (engine/projection.ts, Monte Carlo in engine/monte-carlo.ts); saved scenarios; the
 * forecast history. A request small enough runs inline; a larger one is recorded as a
 * queued forecast, handed to the job queue, and its result stored when the job ends.
 */
import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import { addMonths, formatDate, parseDate, projectLoan, projectLoans, projectPool, runMonteCarlo, type PoolInput, type PoolProjection } from '../engine/index.js';
import { withEngine } from '../calculators/errors.js';
import { canonicalJson } from '../platform/canonical-json.js';
import { sha256Hex } from '../platform/crypto.js';
import { AppError } from '../platform/errors.js';
import {
  assumptionsSchema,
  engineAssumptions,
  enginePool,
  loanArrays,
  monteCarloView,
  periodRows,
  summaryView,
  type AssumptionsBody,
  type LoanBody,
  type PeriodRow,
  type SummaryView,
} from './model.js';
import * as repo from './repository.js';
import type { ForecastingDb } from './repository.js';
import type { CalculationPool } from './threads.js';

export interface Viewer {
  readonly userId: string;
  readonly role: string;
}

/** The job queue as forecasting needs it (platform/jobs.ts, wired in app.ts). */
export interface ForecastJobsPort {
  send(kind: string, payload: Record<string, unknown>, options: { createdBy: string }): Promise<{ id: string }>;
}

/** The live book, as servicing holds it (wired in app.ts; forecasting does not import servicing). */
export interface BookTapePort {
  /** Active loans in `currency`: outstanding principal, gross rate, remaining and elapsed installments (monthly loans only). */
  loans(currency: string): Promise<LoanBody[]>;
}

export interface ForecastingDeps {
  readonly db: Kysely<ForecastingDb>;
  readonly clock: () => Date;
  /** The calculation threads (CALCULATION_THREAD_POOL_SIZE) for queued projections of loan lists. */
  readonly threads?: CalculationPool | undefined;
  readonly jobs?: ForecastJobsPort | undefined;
  readonly book?: BookTapePort | undefined;
  /** Above this many loan-months (loans × months × Monte Carlo paths) a forecast runs as a job. */
  readonly inlineLoanMonths?: number;
}

/** Loan-months answered inline (see docs/forecasting.md). */
export const INLINE_LOAN_MONTHS = 2_000_000;
export const FORECAST_JOB_KIND = 'forecast.project';

export interface ForecastRequest {
  readonly pool?: { balance: number; wac: number; net_rate?: number | undefined; original_term?: number | undefined; remaining_term: number; age?: number | undefined } | undefined;
  readonly loans?: readonly LoanBody[] | undefined;
  readonly assumptions?: AssumptionsBody | undefined;
  readonly scenarioId?: string | undefined;
  readonly horizonMonths?: number | undefined;
  readonly discountRate?: number | undefined;
  readonly price?: number | undefined;
  /** Bond-equivalent yield: the summary gives the price at it (instead of the yield at a price). */
  readonly yieldRate?: number | undefined;
  readonly monteCarlo?: { simulations: number; seed: number } | undefined;
}

export interface ForecastResult {
  readonly forecastId: string;
  readonly loans: number;
  readonly months: number;
  readonly assumptions: AssumptionsBody;
  readonly periods: PeriodRow[];
  readonly summary: SummaryView;
  readonly monteCarlo: ReturnType<typeof monteCarloView> | null;
}

export type ForecastAnswer = { readonly kind: 'done'; readonly result: ForecastResult } | { readonly kind: 'queued'; readonly forecastId: string; readonly jobId: string };

/** The seed's LoanData: one loan, prepayment as an annual CPR. */
export interface LoanData {
  readonly principal: number;
  readonly interestRate: number;
  readonly termMonths: number;
  readonly startDate: string;
  /** Annual CPR, a fraction (0.06 = 6 % CPR). */
  readonly prepaymentAssumption: number;
  /** Annual CDR, a fraction. */
  readonly defaultAssumption: number;
  readonly severity: number;
}

export interface LoanCashflows {
  readonly projections: { period: number; date: string; principal: number; interest: number; total_payment: number; remaining_balance: number }[];
  readonly summaryMetrics: SummaryView & { total_payments: number };
}

const STAFF = new Set(['admin', 'analyst']);

/** The work of a forecast, serializable (the job's payload). */
interface ForecastWork {
  readonly pool?: ForecastRequest['pool'];
  readonly loans?: readonly LoanBody[];
  readonly book?: boolean;
  readonly currency?: string;
  readonly assumptions: AssumptionsBody;
  readonly horizonMonths?: number | undefined;
  readonly discountRate?: number | undefined;
  readonly price?: number | undefined;
  readonly yieldRate?: number | undefined;
  readonly monteCarlo?: { simulations: number; seed: number } | undefined;
}

function poolInput(work: ForecastWork, bookLoans?: readonly LoanBody[]): { input: PoolInput; loans: number } {
  if (work.pool) return { input: enginePool(work.pool), loans: 1 };
  const loans = bookLoans ?? work.loans ?? [];
  return { input: loanArrays(loans), loans: loans.length };
}

function maxMonths(work: ForecastWork, bookLoans?: readonly LoanBody[]): number {
  const terms = work.pool ? [work.pool.remaining_term] : (bookLoans ?? work.loans ?? []).map((l) => l.remaining_term);
  const longest = terms.reduce((a, b) => Math.max(a, b), 0) + work.assumptions.months_to_liquidation;
  return work.horizonMonths === undefined ? longest : Math.min(longest, work.horizonMonths);
}

/** Runs a forecast: the projection, its summary, and Monte Carlo when asked. Pure over its input. */
export function computeForecast(work: ForecastWork, bookLoans?: readonly LoanBody[]): Omit<ForecastResult, 'forecastId'> {
  const { input } = poolInput(work, bookLoans);
  const assumptions = engineAssumptions(work.assumptions);
  const pricing = { price: work.price, yield: work.yieldRate, discountRate: work.discountRate };
  const projection = withEngine((): PoolProjection =>
    work.pool !== undefined
      ? projectPool(input as Parameters<typeof projectPool>[0], assumptions, { horizonMonths: work.horizonMonths, pricing })
      : projectLoans(input as Parameters<typeof projectLoans>[0], assumptions, { horizonMonths: work.horizonMonths, pricing }),
  );
  return forecastResult(work, input, projection);
}

/** Loan lists at least this long are projected on the calculation threads (when there are any). */
export const THREADED_MIN_LOANS = 2_000;

/** computeForecast, with a loan list's projection spread over the calculation threads. */
export async function computeForecastOnThreads(work: ForecastWork, bookLoans: readonly LoanBody[] | undefined, threads: CalculationPool | undefined, progress: (fraction: number) => void): Promise<Omit<ForecastResult, 'forecastId'>> {
  const { input, loans } = poolInput(work, bookLoans);
  if (threads === undefined || work.pool !== undefined || loans < THREADED_MIN_LOANS) return computeForecast(work, bookLoans);
  const pricing = { price: work.price, yield: work.yieldRate, discountRate: work.discountRate };
  let projection: PoolProjection;
  try {
    projection = await threads.projectLoans(input as Parameters<typeof projectLoans>[0], engineAssumptions(work.assumptions), { horizonMonths: work.horizonMonths, pricing }, progress);
  } catch (error) {
    throw withEngineError(error);
  }
  return forecastResult(work, input, projection);
}

function withEngineError(error: unknown): unknown {
  try {
    return withEngine(() => {
      throw error;
    });
  } catch (mapped) {
    return mapped;
  }
}

function forecastResult(work: ForecastWork, input: PoolInput, projection: PoolProjection): Omit<ForecastResult, 'forecastId'> {
  const mc = work.monteCarlo
    ? withEngine(() => runMonteCarlo(input, engineAssumptions(work.assumptions), { paths: (work.monteCarlo as { simulations: number }).simulations, seed: (work.monteCarlo as { seed: number }).seed, price: work.price, horizonMonths: work.horizonMonths }))
    : null;
  return {
    loans: projection.loans,
    months: projection.months,
    assumptions: work.assumptions,
    periods: periodRows(projection),
    summary: summaryView(projection.summary),
    monteCarlo: mc ? monteCarloView(mc) : null,
  };
}

export function createForecastingService(deps: ForecastingDeps) {
  const { db, clock } = deps;
  const inlineLimit = deps.inlineLoanMonths ?? INLINE_LOAN_MONTHS;

  function requireStaff(viewer: Viewer): void {
    if (!STAFF.has(viewer.role)) throw new AppError('forbidden');
  }

  async function resolveAssumptions(request: { assumptions?: AssumptionsBody | undefined; scenarioId?: string | undefined }): Promise<AssumptionsBody> {
    if (request.assumptions) return request.assumptions;
    if (request.scenarioId === undefined) throw new AppError('assumptions_required');
    const scenario = await repo.findScenario(db, request.scenarioId);
    if (!scenario) throw new AppError('scenario_not_found', { errors: [{ pointer: '#/scenario_id', location: 'body', detail: 'no such scenario' }] });
    return assumptionsSchema.parse(scenario.assumptions);
  }

  async function record(kind: 'calculate' | 'batch' | 'forecast' | 'book', viewer: Viewer, inputs: Record<string, unknown>, hashed: unknown, loans: number, outcome: { months: number | null; summary: unknown; result?: unknown; status: 'succeeded' | 'queued'; scenarioId?: string | undefined }): Promise<string> {
    const id = randomUUID();
    await repo.insertForecast(db, {
      id,
      kind,
      status: outcome.status,
      created_by: viewer.userId,
      inputs_hash: sha256Hex(canonicalJson(hashed)),
      inputs: canonicalJson(inputs),
      scenario_id: outcome.scenarioId ?? null,
      job_id: null,
      loans,
      months: outcome.months,
      summary: outcome.summary === null ? null : canonicalJson(outcome.summary),
      result: outcome.result === undefined ? null : canonicalJson(outcome.result),
      finished_at: outcome.status === 'succeeded' ? clock() : null,
    });
    return id;
  }

  async function runOrQueue(kind: 'forecast' | 'book', viewer: Viewer, work: ForecastWork, scenarioId: string | undefined, hashed: unknown, bookLoans?: readonly LoanBody[]): Promise<ForecastAnswer> {
    const loans = work.pool ? 1 : (bookLoans ?? work.loans ?? []).length;
    const size = loans * Math.max(1, maxMonths(work, bookLoans)) * (work.monteCarlo ? work.monteCarlo.simulations + 1 : 1);
    const inputs = { loans, pool: work.pool ?? null, assumptions: work.assumptions, horizon_months: work.horizonMonths ?? null, discount_rate: work.discountRate ?? null, price: work.price ?? null, yield: work.yieldRate ?? null, monte_carlo: work.monteCarlo ?? null, loan_months: size };
    if (size > inlineLimit && deps.jobs) {
      const forecastId = await record(kind, viewer, inputs, hashed, loans, { months: null, summary: null, status: 'queued', scenarioId });
      const job = await deps.jobs.send(FORECAST_JOB_KIND, { forecast_id: forecastId, work: { ...work, book: kind === 'book' } }, { createdBy: viewer.userId });
      await repo.setForecastJob(db, forecastId, job.id);
      return { kind: 'queued', forecastId, jobId: job.id };
    }
    const result = computeForecast(work, bookLoans);
    const forecastId = await record(kind, viewer, inputs, hashed, loans, { months: result.months, summary: { ...result.summary, monte_carlo: result.monteCarlo }, status: 'succeeded', scenarioId });
    return { kind: 'done', result: { forecastId, ...result } };
  }

  return {
    /** One loan, the seed's LoanData: dated periods and summary metrics. */
    async calculate(loan: LoanData, viewer: Viewer): Promise<LoanCashflows & { forecastId: string }> {
      requireStaff(viewer);
      const out = cashflowsOf(loan);
      const forecastId = await record('calculate', viewer, { loan: loanDataJson(loan) }, loanDataJson(loan), 1, { months: out.projections.length, summary: out.summaryMetrics, status: 'succeeded' });
      return { ...out, forecastId };
    },

    async calculateBatch(loans: readonly LoanData[], includeProjections: boolean, viewer: Viewer): Promise<{ forecastId: string; results: (LoanCashflows | Omit<LoanCashflows, 'projections'>)[]; totals: { total_principal: number; total_interest: number; total_payments: number; total_loss: number } }> {
      requireStaff(viewer);
      const results = loans.map((l, i) => {
        try {
          return cashflowsOf(l);
        } catch (error) {
          // Name the loan in the list: `#/loans/3/term_months`.
          if (error instanceof AppError && error.errors) {
            throw new AppError(error.code, { detail: error.detail, errors: error.errors.map((e) => ({ ...e, pointer: e.pointer.replace(/^#\//, `#/loans/${i}/`) })) });
          }
          throw error;
        }
      });
      const totals = results.reduce(
        (t, r) => ({
          total_principal: t.total_principal + r.summaryMetrics.total_principal,
          total_interest: t.total_interest + r.summaryMetrics.total_interest,
          total_payments: t.total_payments + r.summaryMetrics.total_payments,
          total_loss: t.total_loss + r.summaryMetrics.total_loss,
        }),
        { total_principal: 0, total_interest: 0, total_payments: 0, total_loss: 0 },
      );
      const json = loans.map(loanDataJson);
      const forecastId = await record('batch', viewer, { loans: loans.length }, json, loans.length, { months: Math.max(0, ...results.map((r) => r.projections.length)), summary: totals, status: 'succeeded' });
      return { forecastId, results: includeProjections ? results : results.map((r) => ({ summaryMetrics: r.summaryMetrics })), totals };
    },

    async forecast(request: ForecastRequest, viewer: Viewer): Promise<ForecastAnswer> {
      requireStaff(viewer);
      const assumptions = await resolveAssumptions(request);
      const work: ForecastWork = { pool: request.pool, loans: request.loans, assumptions, horizonMonths: request.horizonMonths, discountRate: request.discountRate, price: request.price, yieldRate: request.yieldRate, monteCarlo: request.monteCarlo };
      return runOrQueue('forecast', viewer, work, request.scenarioId, work, undefined);
    },

    /** The live book from servicing, under a scenario or assumptions. */
    async forecastBook(request: Omit<ForecastRequest, 'pool' | 'loans'> & { currency: string }, viewer: Viewer): Promise<ForecastAnswer> {
      requireStaff(viewer);
      const assumptions = await resolveAssumptions(request);
      if (!deps.book) throw new AppError('book_unavailable');
      const loans = await deps.book.loans(request.currency);
      if (loans.length === 0) throw new AppError('empty_book', { detail: `No active monthly loans in ${request.currency} to project.` });
      const work: ForecastWork = { assumptions, horizonMonths: request.horizonMonths, discountRate: request.discountRate, price: request.price, yieldRate: request.yieldRate, monteCarlo: request.monteCarlo, book: true, currency: request.currency };
      return runOrQueue('book', viewer, work, request.scenarioId, { ...work, tape: loans }, loans);
    },

    /** The job's work: runs a queued forecast and stores its result on the forecast. */
    async runQueued(payload: { forecast_id: string; work: ForecastWork }, progress: (fraction: number) => Promise<void>): Promise<{ forecast_id: string; summary: SummaryView }> {
      const id = payload.forecast_id;
      await repo.finishForecast(db, id, { status: 'running' });
      try {
        const bookLoans = payload.work.book && deps.book ? await deps.book.loans(payload.work.currency ?? 'USD') : undefined;
        await progress(0.05);
        const result = await computeForecastOnThreads(payload.work, bookLoans, deps.threads, (fraction) => void progress(0.05 + 0.85 * fraction));
        await progress(0.95);
        await repo.finishForecast(db, id, {
          status: 'succeeded',
          months: result.months,
          summary: canonicalJson({ ...result.summary, monte_carlo: result.monteCarlo }),
          result: canonicalJson({ periods: result.periods, monte_carlo: result.monteCarlo }),
          finished_at: clock(),
        });
        return { forecast_id: id, summary: result.summary };
      } catch (error) {
        await repo.finishForecast(db, id, { status: 'failed', error: error instanceof AppError ? error.detail : 'the projection failed', finished_at: clock() });
        throw error;
      }
    },

    // ---- history ------------------------------------------------------------------

    async forecasts(viewer: Viewer, filter: { kind?: string | undefined; limit: number; startingAfter?: string | undefined }) {
      requireStaff(viewer);
      let after: { created_at: Date; id: string } | undefined;
      if (filter.startingAfter !== undefined) {
        const f = await repo.findForecast(db, filter.startingAfter);
        if (!f) throw new AppError('forecast_not_found', { detail: 'starting_after names no forecast' });
        after = { created_at: f.created_at, id: f.id };
      }
      const rows = await repo.listForecasts(db, { kind: filter.kind, limit: filter.limit + 1, after });
      return { data: rows.slice(0, filter.limit), hasMore: rows.length > filter.limit };
    },

    async forecastById(id: string, viewer: Viewer) {
      requireStaff(viewer);
      const row = await repo.findForecast(db, id, undefined, true);
      if (!row) throw new AppError('forecast_not_found');
      return row;
    },

    // ---- scenarios ----------------------------------------------------------------

    async createScenario(input: { name: string; description: string; tags: string[]; assumptions: AssumptionsBody }, viewer: Viewer) {
      requireStaff(viewer);
      try {
        return await repo.insertScenario(db, { id: randomUUID(), name: input.name, description: input.description, tags: input.tags, assumptions: canonicalJson(input.assumptions), created_by: viewer.userId });
      } catch (error) {
        throw uniqueName(error);
      }
    },

    async scenarios(viewer: Viewer, filter: { tag?: string | undefined; limit: number; startingAfter?: string | undefined }) {
      requireStaff(viewer);
      let afterName: string | undefined;
      if (filter.startingAfter !== undefined) {
        const s = await repo.findScenario(db, filter.startingAfter);
        if (!s) throw new AppError('scenario_not_found', { detail: 'starting_after names no scenario' });
        afterName = s.name;
      }
      const rows = await repo.listScenarios(db, { tag: filter.tag, limit: filter.limit + 1, afterName });
      return { data: rows.slice(0, filter.limit), hasMore: rows.length > filter.limit };
    },

    async scenario(id: string, viewer: Viewer) {
      requireStaff(viewer);
      const row = await repo.findScenario(db, id);
      if (!row) throw new AppError('scenario_not_found');
      return row;
    },

    async replaceScenario(id: string, input: { name: string; description: string; tags: string[]; assumptions: AssumptionsBody }, ifVersion: number | undefined, viewer: Viewer) {
      requireStaff(viewer);
      let row;
      try {
        row = await repo.updateScenario(db, id, { name: input.name, description: input.description, tags: input.tags, assumptions: canonicalJson(input.assumptions) }, ifVersion);
      } catch (error) {
        throw uniqueName(error);
      }
      if (row) return row;
      if (await repo.findScenario(db, id)) throw new AppError('scenario_version_conflict');
      throw new AppError('scenario_not_found');
    },

    async deleteScenario(id: string, viewer: Viewer): Promise<void> {
      requireStaff(viewer);
      if (!(await repo.deleteScenario(db, id))) throw new AppError('scenario_not_found');
    },
  };
}

function uniqueName(error: unknown): unknown {
  if (String((error as { code?: unknown }).code) === '23505') return new AppError('scenario_name_taken', { errors: [{ pointer: '#/name', location: 'body', detail: 'another scenario has this name' }] });
  return error;
}

function loanDataJson(l: LoanData) {
  return { principal: l.principal, interest_rate: l.interestRate, term_months: l.termMonths, start_date: l.startDate, prepayment_assumption: l.prepaymentAssumption, default_assumption: l.defaultAssumption, severity: l.severity };
}

/** One loan's dated cash flows (the seed's calculate): period n falls n months after the start date. */
function cashflowsOf(loan: LoanData): LoanCashflows {
  const start = withEngine(() => parseDate(loan.startDate, 'start_date'));
  const projection = withEngine(() =>
    projectLoan(
      { balance: loan.principal, rate: loan.interestRate, remainingTerm: loan.termMonths, age: 0 },
      {
        prepayment: { model: 'cpr', rate: loan.prepaymentAssumption },
        default: loan.defaultAssumption > 0 ? { model: 'cdr', rate: loan.defaultAssumption } : null,
        severity: loan.severity,
      },
    ),
  );
  const c = projection.columns;
  const projections = [];
  let totalPayments = 0;
  for (let m = 0; m < projection.months; m++) {
    const cash = c.cashFlow[m] as number;
    totalPayments += cash;
    projections.push({
      period: m + 1,
      date: formatDate(addMonths(start, m + 1)),
      principal: c.totalPrincipal[m] as number,
      interest: c.totalInterest[m] as number,
      total_payment: cash,
      remaining_balance: (c.performingBalance[m] as number) + (c.foreclosureBalance[m] as number),
    });
  }
  return { projections, summaryMetrics: { ...summaryView(projection.summary), total_payments: totalPayments } };
}

export type ForecastingService = ReturnType<typeof createForecastingService>;
