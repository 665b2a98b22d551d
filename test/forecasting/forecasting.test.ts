/**
 * Forecasting over HTTP: one loan (the seed's LoanData), batches, pools and loan lists
 * under the SIFMA standard formulas (the published first-month example through the API),
 * Monte Carlo, scenarios with optimistic concurrency, the forecast history, the live
 * book, roles, and validation that names the field.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, createTestApp, problemOf, type TestApp } from '../support/app.js';
import { registerJobHandlers } from '../../src/job-handlers.js';
import { assumptionsSchema } from '../../src/forecasting/model.js';
import { computeForecast } from '../../src/forecasting/service.js';
import { createJobQueue, type JobQueue } from '../../src/platform/jobs.js';
import { createTestDatabase, dbTarget, silentLogger } from '../support/db.js';
import { vectorById } from '../support/vectors.js';
import { bookLoan, createProduct, post as servicingPost, setBusinessDate } from '../support/servicing.js';

let t: TestApp;
let analyst: string;
let admin: string;
let servicer: string;
let borrower: string;

beforeAll(async () => {
  t = await createTestApp();
  admin = await t.adminToken();
  analyst = (await t.userWithRole('analyst')).token;
  servicer = (await t.userWithRole('servicer')).token;
  borrower = (await t.userWithRole('borrower')).token;
});
afterAll(async () => t.close());

const post = (url: string, payload: unknown, token = analyst, headers: Record<string, string> = {}) =>
  t.app.inject({ method: 'POST', url, headers: { ...bearer(token), ...headers }, payload: payload as Record<string, unknown> });
const get = (url: string, token = analyst) => t.app.inject({ method: 'GET', url, headers: bearer(token) });

interface Summary {
  wal_years: number;
  total_principal: number;
  total_interest: number;
  total_loss: number;
  cumulative_default_rate: number;
  yield: number | null;
  modified_duration: number | null;
  npv: number | null;
}
interface ForecastBody {
  forecast_id: string;
  basis: string;
  loans: number;
  months: number;
  periods: Record<string, number>[];
  summary: Summary;
  monte_carlo: { simulations: number; loss: { p5: number; p50: number; p95: number }; yield: { p50: number }; wal_years: { p50: number } } | null;
}

const SIFMA_POOL = { balance: 1_000_000, wac: 0.095, net_rate: 0.09, original_term: 360, remaining_term: 360, age: 0 };
const PSA150 = { prepayment: { model: 'psa', speed: 150 } };

describe(`cash flows of one loan (${dbTarget})`, () => {
  it('a level-payment loan: dated periods, the installment, principal that sums to the loan, a zero balance at the end', async () => {
    const res = await post('/v1/cashflows/calculate', { principal: 200000, interest_rate: 0.06, term_months: 360, start_date: '2026-01-31' });
    expect(res.statusCode, res.body).toBe(200);
    const body = res.json<{ basis: string; projections: { period: number; date: string; principal: number; interest: number; total_payment: number; remaining_balance: number }[]; summary_metrics: Summary & { total_payments: number } }>();
    expect(body.basis).toBe('analytics_float64');
    expect(body.projections).toHaveLength(360);
    expect(body.projections[0]).toEqual(expect.objectContaining({ period: 1, date: '2026-02-28' }));
    expect(body.projections[1]?.date).toBe('2026-03-31');
    expect(body.projections[0]?.total_payment).toBeCloseTo(1199.1, 2);
    expect(body.projections[0]?.interest).toBeCloseTo(1000, 6);
    expect(body.projections.at(-1)?.remaining_balance).toBeCloseTo(0, 4);
    expect(body.summary_metrics.total_principal).toBeCloseTo(200000, 4);
    expect(body.summary_metrics.total_payments).toBeCloseTo(body.summary_metrics.total_principal + body.summary_metrics.total_interest, 4);
  });

  it('prepayments shorten the life; the principal still sums to the loan', async () => {
    const slow = (await post('/v1/cashflows/calculate', { principal: '100000', interest_rate: '0.05', term_months: 120, start_date: '2026-01-15' })).json<{ summary_metrics: Summary }>();
    const fast = (await post('/v1/cashflows/calculate', { principal: '100000', interest_rate: '0.05', term_months: 120, start_date: '2026-01-15', prepayment_assumption: 0.2 })).json<{ summary_metrics: Summary }>();
    expect(fast.summary_metrics.wal_years).toBeLessThan(slow.summary_metrics.wal_years);
    expect(fast.summary_metrics.total_interest).toBeLessThan(slow.summary_metrics.total_interest);
    expect(fast.summary_metrics.total_principal).toBeCloseTo(100000, 4);
  });

  it('a batch equals its loans one by one', async () => {
    const loans = [
      { principal: 50000, interest_rate: 0.07, term_months: 60, start_date: '2026-01-15' },
      { principal: 120000, interest_rate: 0.045, term_months: 240, start_date: '2026-02-01', prepayment_assumption: 0.08, default_assumption: 0.01, severity: 0.4 },
    ];
    const batch = await post('/v1/cashflows/calculate-batch', { loans });
    expect(batch.statusCode, batch.body).toBe(200);
    const b = batch.json<{ results: { summary_metrics: Summary & { total_payments: number } }[]; totals: Record<string, number> }>();
    let principal = 0;
    for (const [i, loan] of loans.entries()) {
      const one = (await post('/v1/cashflows/calculate', loan)).json<{ summary_metrics: Summary & { total_payments: number } }>();
      expect(b.results[i]?.summary_metrics).toEqual(one.summary_metrics);
      principal += one.summary_metrics.total_principal;
    }
    expect(b.totals.total_principal).toBeCloseTo(principal, 6);
    expect(b.results[1]?.summary_metrics.total_loss).toBeGreaterThan(0);
  });

  it('names the field at fault, in a batch by its index', async () => {
    const bad = await post('/v1/cashflows/calculate', { principal: -1, interest_rate: 0.05, term_months: 12, start_date: '2026-01-15' });
    expect(bad.statusCode).toBe(400);
    expect(problemOf(bad).errors).toEqual(expect.arrayContaining([expect.objectContaining({ pointer: '#/principal' })]));
    const badDate = await post('/v1/cashflows/calculate', { principal: 1, interest_rate: 0.05, term_months: 12, start_date: '2026-02-30' });
    expect(badDate.statusCode).toBe(400);
    const batch = await post('/v1/cashflows/calculate-batch', { loans: [{ principal: 1000, interest_rate: 0.05, term_months: 12, start_date: '2026-01-15' }, { principal: 1000, interest_rate: 2, term_months: 12, start_date: '2026-01-15' }] });
    expect(batch.statusCode).toBe(400);
    expect(problemOf(batch).errors).toEqual(expect.arrayContaining([expect.objectContaining({ pointer: '#/loans/1/interest_rate' })]));
  });
});

describe(`pool and loan-list forecasts (${dbTarget})`, () => {
  it('reproduces the SIFMA Standard Formulas first-month example through the API', async () => {
    const v = vectorById('sifma-sf4-first-month-cash-flow') as unknown as { expected: Record<string, number>; tolerance: { abs: number } };
    const res = await post('/v1/cashflows/forecast', { pool: SIFMA_POOL, assumptions: PSA150 });
    expect(res.statusCode, res.body).toBe(200);
    const f = res.json<ForecastBody>();
    expect(f.basis).toBe('analytics_float64');
    const first = f.periods[0] as Record<string, number>;
    const perPar = (x: number | undefined) => (x as number) / SIFMA_POOL.balance;
    const tol = v.tolerance.abs;
    expect(Math.abs(perPar(first.expected_amortization) - (v.expected.scheduled_amortization as number))).toBeLessThan(tol);
    expect(Math.abs(perPar(first.expected_interest) - (v.expected.pt_interest as number))).toBeLessThan(tol);
    expect(Math.abs(perPar(first.total_principal) - (v.expected.pt_principal as number))).toBeLessThan(tol);
    expect(Math.abs(perPar(first.cash_flow) - (v.expected.pt_cash_flow as number))).toBeLessThan(tol);
  });

  it('every month, principal paid + losses + the balance left = the balance at the start', async () => {
    const res = await post('/v1/cashflows/forecast', {
      loans: [
        { balance: 250000, annual_rate: 0.065, remaining_term: 300, age: 60 },
        { balance: 90000, annual_rate: '0.08', net_rate: '0.075', remaining_term: 120, age: 12 },
        { balance: 40000, annual_rate: 0.11, remaining_term: 48, age: 0 },
      ],
      assumptions: { prepayment: { model: 'cpr', rate: 0.1 }, default: { model: 'sda', speed: 200 }, severity: 0.35, months_to_liquidation: 12, servicer_advances: false },
      discount_rate: 0.07,
      price: 99.5,
    });
    expect(res.statusCode, res.body).toBe(200);
    const f = res.json<ForecastBody>();
    expect(f.loans).toBe(3);
    for (const p of f.periods) {
      const paid = (p.actual_amortization as number) + (p.voluntary_prepayments as number) + (p.principal_recovery as number) + (p.principal_loss as number);
      const left = (p.performing_balance as number) + (p.foreclosure_balance as number);
      expect(paid + left).toBeCloseTo(p.beginning_balance as number, 5);
    }
    expect(f.summary.total_loss).toBeGreaterThan(0);
    expect(f.summary.yield).not.toBeNull();
    expect(f.summary.modified_duration).toBeGreaterThan(0);
    expect(f.summary.npv).not.toBeNull();
  });

  it('price at a yield and yield at a price are inverse; both at once is refused', async () => {
    const base = { pool: SIFMA_POOL, assumptions: PSA150 };
    const atPrice = (await post('/v1/cashflows/forecast', { ...base, price: 98.5 })).json<ForecastBody>();
    expect(atPrice.summary.yield).not.toBeNull();
    const atYield = await post('/v1/cashflows/forecast', { ...base, yield: atPrice.summary.yield });
    expect(atYield.statusCode, atYield.body).toBe(200);
    expect((atYield.json<ForecastBody>().summary as Summary & { price: number }).price).toBeCloseTo(98.5, 8);
    const both = await post('/v1/cashflows/forecast', { ...base, price: 98.5, yield: 0.05 });
    expect(both.statusCode).toBe(400);
    expect(problemOf(both).errors).toEqual(expect.arrayContaining([expect.objectContaining({ pointer: '#/yield' })]));
  });

  it('Monte Carlo: the same seed gives the same percentiles; p5 ≤ p50 ≤ p95', async () => {
    const body = { pool: SIFMA_POOL, assumptions: { ...PSA150, default: { model: 'cdr', rate: 0.02 }, severity: 0.4, months_to_liquidation: 6 }, price: 100, monte_carlo: { simulations: 50, seed: 42 } };
    const a = (await post('/v1/cashflows/forecast', body)).json<ForecastBody>();
    const b = (await post('/v1/cashflows/forecast', body)).json<ForecastBody>();
    const c = (await post('/v1/cashflows/forecast', { ...body, monte_carlo: { simulations: 50, seed: 43 } })).json<ForecastBody>();
    expect(a.monte_carlo).toEqual(b.monte_carlo);
    expect(c.monte_carlo?.loss).not.toEqual(a.monte_carlo?.loss);
    const loss = a.monte_carlo?.loss;
    expect(loss?.p5).toBeLessThanOrEqual(loss?.p50 as number);
    expect(loss?.p50).toBeLessThanOrEqual(loss?.p95 as number);
  });

  it('refuses a body with both pool and loans, an unknown model, and a rate outside 0–1, naming the field', async () => {
    const both = await post('/v1/cashflows/forecast', { pool: SIFMA_POOL, loans: [{ balance: 1, annual_rate: 0.05, remaining_term: 12 }], assumptions: PSA150 });
    expect(both.statusCode).toBe(400);
    expect(problemOf(both).errors).toEqual(expect.arrayContaining([expect.objectContaining({ pointer: '#/pool' })]));
    const model = await post('/v1/cashflows/forecast', { pool: SIFMA_POOL, assumptions: { prepayment: { model: 'abs', rate: 0.1 } } });
    expect(model.statusCode).toBe(400);
    const rate = await post('/v1/cashflows/forecast', { pool: SIFMA_POOL, assumptions: { prepayment: { model: 'cpr', rate: 1.5 } } });
    expect(rate.statusCode).toBe(400);
    expect(problemOf(rate).errors).toEqual(expect.arrayContaining([expect.objectContaining({ pointer: '#/assumptions/prepayment/rate' })]));
    const none = await post('/v1/cashflows/forecast', { pool: SIFMA_POOL });
    expect(problemOf(none).code).toBe('assumptions_required');
  });

  it('is for analysts and admins only', async () => {
    for (const token of [servicer, borrower]) expect((await post('/v1/cashflows/forecast', { pool: SIFMA_POOL, assumptions: PSA150 }, token)).statusCode).toBe(403);
    expect((await post('/v1/cashflows/forecast', { pool: SIFMA_POOL, assumptions: PSA150 }, admin)).statusCode).toBe(200);
  });
});

describe(`scenarios and history (${dbTarget})`, () => {
  it('saves, lists by tag, replaces with If-Match, refuses a stale version and a taken name, deletes', async () => {
    const name = `Stress ${randomUUID().slice(0, 6)}`;
    const created = await post('/v1/scenarios', { name, description: 'recession', tags: ['stress', 'q3'], assumptions: { prepayment: { model: 'psa', speed: 75 }, default: { model: 'sda', speed: 300 }, severity: 0.45, months_to_liquidation: 18 } });
    expect(created.statusCode, created.body).toBe(201);
    const s = created.json<{ id: string; version: number; assumptions: Record<string, unknown> }>();
    expect(created.headers.etag).toBe('"1"');
    expect(s.assumptions).toEqual(expect.objectContaining({ severity: 0.45, servicer_advances: true }));
    expect((await get('/v1/scenarios?tag=stress&limit=100')).json<{ data: { id: string }[] }>().data.map((x) => x.id)).toContain(s.id);
    expect((await get('/v1/scenarios?tag=nope')).json<{ data: unknown[] }>().data).toEqual([]);
    const dup = await post('/v1/scenarios', { name: name.toUpperCase(), assumptions: PSA150 });
    expect(dup.statusCode).toBe(409);
    const put = (version: string) =>
      t.app.inject({ method: 'PUT', url: `/v1/scenarios/${s.id}`, headers: { ...bearer(analyst), 'if-match': version }, payload: { name, tags: ['stress'], assumptions: { prepayment: { model: 'psa', speed: 50 } } } });
    const ok = await put('"1"');
    expect(ok.statusCode, ok.body).toBe(200);
    expect(ok.json<{ version: number }>().version).toBe(2);
    expect((await put('"1"')).statusCode).toBe(412);
    // A forecast may name the scenario instead of giving assumptions.
    const byScenario = await post('/v1/cashflows/forecast', { pool: SIFMA_POOL, scenario_id: s.id });
    expect(byScenario.statusCode, byScenario.body).toBe(200);
    const direct = await post('/v1/cashflows/forecast', { pool: SIFMA_POOL, assumptions: { prepayment: { model: 'psa', speed: 50 } } });
    expect(byScenario.json<ForecastBody>().summary).toEqual(direct.json<ForecastBody>().summary);
    expect((await t.app.inject({ method: 'DELETE', url: `/v1/scenarios/${s.id}`, headers: bearer(analyst) })).statusCode).toBe(204);
    expect((await get(`/v1/scenarios/${s.id}`)).statusCode).toBe(404);
  });

  it('keeps the history: who, when, the inputs hash (equal for equal inputs) and the summary', async () => {
    const body = { pool: { ...SIFMA_POOL, balance: 777_000 }, assumptions: PSA150 };
    const a = (await post('/v1/cashflows/forecast', body)).json<ForecastBody>();
    const b = (await post('/v1/cashflows/forecast', body)).json<ForecastBody>();
    const ra = (await get(`/v1/forecasts/${a.forecast_id}`)).json<{ inputs_hash: string; created_by: string; status: string; summary: { total_principal: number } }>();
    const rb = (await get(`/v1/forecasts/${b.forecast_id}`)).json<{ inputs_hash: string }>();
    expect(ra.inputs_hash).toBe(rb.inputs_hash);
    expect(ra.status).toBe('succeeded');
    expect(ra.summary.total_principal).toBeCloseTo(a.summary.total_principal, 6);
    const list = (await get('/v1/forecasts?kind=forecast&limit=5')).json<{ data: { id: string }[] }>().data.map((f) => f.id);
    expect(list.slice(0, 2)).toEqual([b.forecast_id, a.forecast_id]);
    expect((await get(`/v1/forecasts/${randomUUID()}`)).statusCode).toBe(404);
  });
});

describe(`the live book (${dbTarget})`, () => {
  it('projects the active loans from servicing balances', async () => {
    await setBusinessDate(t, '2026-01-15');
    const product = await createProduct(t, admin);
    const borrowerId = (await t.userWithRole('borrower')).id;
    for (const principal of ['12000.00', '30000.00']) {
      const loan = await bookLoan(t, admin, { product_id: product.id, borrower_id: borrowerId, principal, annual_rate: '0.1', term: 24 });
      expect((await servicingPost(t, admin, `/v1/loans/${loan.id}/disbursements`, {})).statusCode).toBe(201);
    }
    const res = await post('/v1/forecasts/book', { assumptions: { prepayment: { model: 'cpr', rate: 0.05 } } });
    expect(res.statusCode, res.body).toBe(200);
    const f = res.json<ForecastBody>();
    expect(f.loans).toBeGreaterThanOrEqual(2);
    expect(f.months).toBe(24);
    expect(f.summary.total_principal).toBeCloseTo(f.periods[0]?.beginning_balance as number, 4);
    expect(f.periods[0]?.beginning_balance).toBeGreaterThanOrEqual(42000);
    const none = await post('/v1/forecasts/book', { currency: 'EUR', assumptions: PSA150 });
    expect(problemOf(none).code).toBe('empty_book');
  });
});

describe(`large forecasts run as jobs (${dbTarget})`, () => {
  let tj: TestApp;
  let tdb: Awaited<ReturnType<typeof createTestDatabase>>;
  let queue: JobQueue;
  let token: string;
  beforeAll(async () => {
    tdb = await createTestDatabase();
    queue = createJobQueue({ database: tdb.database, logger: silentLogger, concurrency: 1, pollIntervalMs: 20, progressIntervalMs: 50 });
    tj = await createTestApp({ db: tdb, jobs: queue });
    registerJobHandlers(queue, { app: tj, config: tj.config, logger: silentLogger });
    await queue.start();
    token = (await tj.userWithRole('analyst')).token;
  });
  afterAll(async () => {
    await queue.stop({ graceMs: 5_000 });
    await tj.close();
    await tdb.destroy();
  });

  it('answers 202 with a job above the inline size; the job stores the same result the inline path gives', async () => {
    // 6,000 loans × 360 months = 2,160,000 loan-months: above the inline 2,000,000.
    const loans = Array.from({ length: 6000 }, (_, i) => ({ balance: 100_000 + (i % 97) * 1000, annual_rate: 0.04 + (i % 13) / 1000, remaining_term: 360 - (i % 120), age: i % 120 }));
    const body = { loans, assumptions: { prepayment: { model: 'psa', speed: 150 }, default: { model: 'sda', speed: 100 }, severity: 0.35, months_to_liquidation: 12 } };
    const res = await tj.app.inject({ method: 'POST', url: '/v1/cashflows/forecast', headers: bearer(token), payload: body });
    expect(res.statusCode, res.body).toBe(202);
    const queued = res.json<{ forecast_id: string; job_id: string; status: string; job_url: string }>();
    expect(res.headers.location).toBe(`/v1/forecasts/${queued.forecast_id}`);
    let job: { state: string; progress: number } | undefined;
    for (let i = 0; i < 1500; i++) {
      job = (await tj.app.inject({ method: 'GET', url: queued.job_url, headers: bearer(token) })).json();
      if (job?.state === 'succeeded' || job?.state === 'failed') break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(job?.state).toBe('succeeded');
    expect(job?.progress).toBe(1);
    const stored = (await tj.app.inject({ method: 'GET', url: `/v1/forecasts/${queued.forecast_id}`, headers: bearer(token) })).json<{ status: string; result: { periods: Record<string, number>[] }; summary: Record<string, unknown>; loans: number }>();
    expect(stored.status).toBe('succeeded');
    expect(stored.loans).toBe(6000);
    const inline = computeForecast({ loans: loans.map((l) => ({ ...l })), assumptions: assumptionsSchema.parse(body.assumptions) });
    expect(stored.result.periods).toHaveLength(inline.months);
    // The job ran on the calculation threads: slices added in another order than one loop's,
    // so equal to the single-threaded result up to floating-point rounding.
    const close = (a: number | undefined, b: number | undefined) => expect(Math.abs((a as number) - (b as number))).toBeLessThanOrEqual(1e-11 * Math.max(1, Math.abs(b as number)));
    for (const m of [0, 100, inline.months - 1]) {
      for (const [column, value] of Object.entries(inline.periods[m] as Record<string, number>)) close(stored.result.periods[m]?.[column], value);
    }
    const summary = stored.summary as Record<string, number>;
    for (const key of ['total_principal', 'total_interest', 'total_loss', 'wal_years'] as const) close(summary[key], inline.summary[key]);
  });
});
