/** Forecasting HTTP routes: schemas and handlers only; the projection is the engine's, the rules are in service.ts. */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { PROJECTION_BASIS } from '../engine/index.js';
import { AppError } from '../platform/errors.js';
import type { App } from '../platform/http.js';
import { assumptionsSchema, loanSchema, poolSchema } from './model.js';
import type { ForecastAnswer, ForecastingService, Viewer } from './service.js';

const ROLES = ['analyst', 'admin'] as const;
const tags = ['forecasting'];
/** The engine's label for float analytics, as a non-widening literal. */
const BASIS: typeof PROJECTION_BASIS = PROJECTION_BASIS;
const basis = z.literal(BASIS).describe('analytics on 64-bit floating point: amounts are JSON numbers, not money of record');

const num = z
  .union([z.number(), z.string().max(40).regex(/^-?\d+(\.\d+)?$/, 'must be a decimal number')])
  .transform((v) => (typeof v === 'number' ? v : Number(v)))
  .refine((v) => Number.isFinite(v), 'must be a finite number');
const fraction = num.refine((v) => v >= 0 && v <= 1, 'must be a fraction from 0 to 1');

/** The seed's LoanData. */
const loanData = z.strictObject({
  principal: num.refine((v) => v > 0 && v <= 1e15, 'must be more than 0 and at most 10^15'),
  interest_rate: fraction.describe('annual fraction: 0.06 is 6 %'),
  term_months: z.number().int().min(1).max(1200),
  start_date: z.iso.date().describe('YYYY-MM-DD; period n falls n months later'),
  prepayment_assumption: fraction.default(0).describe('annual CPR, a fraction'),
  default_assumption: fraction.default(0).describe('annual CDR, a fraction'),
  severity: fraction.default(0),
});
type LoanDataBody = z.infer<typeof loanData>;
const toLoanData = (b: LoanDataBody) => ({ principal: b.principal, interestRate: b.interest_rate, termMonths: b.term_months, startDate: b.start_date, prepaymentAssumption: b.prepayment_assumption, defaultAssumption: b.default_assumption, severity: b.severity });

const projectionRow = z.object({ period: z.number().int(), date: z.string(), principal: z.number(), interest: z.number(), total_payment: z.number(), remaining_balance: z.number() });
const summarySchema = z
  .object({
    wal_years: z.number(),
    total_principal: z.number(),
    total_interest: z.number(),
    total_loss: z.number(),
    total_defaults: z.number(),
    cumulative_default_rate: z.number(),
    ending_balance: z.number(),
    price: z.number().nullable(),
    yield: z.number().nullable().describe('bond-equivalent yield at the price'),
    modified_duration: z.number().nullable(),
    convexity: z.number().nullable(),
    discount_rate: z.number().nullable(),
    npv: z.number().nullable(),
  })
  .meta({ id: 'ForecastSummary' });
const loanSummary = summarySchema.extend({ total_payments: z.number() });

const period = z.record(z.string(), z.number()).describe(
  'month, beginning_balance, scheduled_payment, performing_balance, new_defaults, foreclosure_balance, expected_amortization, voluntary_prepayments, amortization_from_defaults, actual_amortization, gross_interest, servicing_fee, expected_interest, interest_lost, actual_interest, principal_recovery, principal_loss, total_principal, total_interest, cash_flow, smm, mdr',
);
const distribution = z.object({ mean: z.number(), p5: z.number(), p50: z.number(), p95: z.number(), min: z.number(), max: z.number() });
const monteCarloSchema = z.object({
  model: z.string(),
  simulations: z.number().int(),
  seed: z.number().int(),
  parameters: z.record(z.string(), z.number()),
  price: z.number(),
  loss: distribution,
  loss_rate: distribution,
  yield: distribution,
  wal_years: distribution,
  yield_paths: z.number().int(),
});

const forecastOptions = {
  assumptions: assumptionsSchema.optional(),
  scenario_id: z.uuid().optional().describe('a saved scenario\'s assumptions, instead of `assumptions`'),
  horizon_months: z.number().int().min(1).max(1200).optional(),
  discount_rate: fraction.optional().describe('bond-equivalent annual rate for the NPV'),
  price: num.refine((v) => v > 0 && v <= 1000, 'must be a price per 100, more than 0').optional().describe('the summary gives the yield at this price'),
  yield: num.refine((v) => v > -1 && v <= 10, 'must be an annual fraction').optional().describe('bond-equivalent yield: the summary gives the price at it (give price or yield)'),
  monte_carlo: z.strictObject({ simulations: z.number().int().min(1).max(10_000), seed: z.number().int().min(0).max(2 ** 31 - 1) }).optional(),
};
const forecastBody = z
  .strictObject({ pool: poolSchema.optional(), loans: z.array(loanSchema).min(1).max(10_000).optional(), ...forecastOptions })
  .superRefine((b, ctx) => {
    if ((b.pool === undefined) === (b.loans === undefined)) ctx.addIssue({ code: 'custom', path: ['pool'], message: 'give either pool or loans' });
    if (b.assumptions !== undefined && b.scenario_id !== undefined) ctx.addIssue({ code: 'custom', path: ['scenario_id'], message: 'give assumptions or scenario_id, not both' });
    if (b.price !== undefined && b.yield !== undefined) ctx.addIssue({ code: 'custom', path: ['yield'], message: 'give price or yield, not both' });
  });
const bookBody = z.strictObject({ currency: z.string().regex(/^[A-Z]{3}$/).default('USD').describe('the book is projected one currency at a time'), ...forecastOptions }).superRefine((b, ctx) => {
  if (b.assumptions !== undefined && b.scenario_id !== undefined) ctx.addIssue({ code: 'custom', path: ['scenario_id'], message: 'give assumptions or scenario_id, not both' });
  if (b.price !== undefined && b.yield !== undefined) ctx.addIssue({ code: 'custom', path: ['yield'], message: 'give price or yield, not both' });
});

const forecastResponse = z
  .object({
    forecast_id: z.uuid(),
    basis,
    loans: z.number().int(),
    months: z.number().int(),
    assumptions: z.record(z.string(), z.unknown()),
    periods: z.array(period),
    summary: summarySchema,
    monte_carlo: monteCarloSchema.nullable(),
  })
  .meta({ id: 'Forecast' });
const queuedResponse = z.object({ forecast_id: z.uuid(), job_id: z.uuid(), status: z.literal('queued'), forecast_url: z.string(), job_url: z.string() });

function viewer(request: FastifyRequest): Viewer {
  const p = request.principal;
  if (!p) throw new AppError('unauthenticated');
  return { userId: p.userId, role: p.role };
}

function sendForecast(reply: FastifyReply, answer: ForecastAnswer) {
  if (answer.kind === 'queued') {
    return reply
      .code(202)
      .header('location', `/v1/forecasts/${answer.forecastId}`)
      .send({ forecast_id: answer.forecastId, job_id: answer.jobId, status: 'queued' as const, forecast_url: `/v1/forecasts/${answer.forecastId}`, job_url: `/v1/jobs/${answer.jobId}` });
  }
  const r = answer.result;
  return reply.code(200).send({ forecast_id: r.forecastId, basis: BASIS, loans: r.loans, months: r.months, assumptions: r.assumptions, periods: r.periods, summary: r.summary, monte_carlo: r.monteCarlo });
}

const scenarioBody = z.strictObject({
  name: z.string().trim().min(1).max(200),
  description: z.string().max(2000).default(''),
  tags: z.array(z.string().regex(/^[a-z0-9][a-z0-9_:-]{0,39}$/, 'lower-case letters, digits, _ : -')).max(20).default([]),
  assumptions: assumptionsSchema,
});
const scenarioSchema = z
  .object({ id: z.uuid(), name: z.string(), description: z.string(), tags: z.array(z.string()), assumptions: z.record(z.string(), z.unknown()), version: z.number().int(), created_by: z.uuid().nullable(), created_at: z.string(), updated_at: z.string() })
  .meta({ id: 'Scenario' });
type ScenarioRow = { id: string; name: string; description: string; tags: string[]; assumptions: Record<string, unknown>; version: number; created_by: string | null; created_at: Date; updated_at: Date };
const scenarioView = (s: ScenarioRow): z.infer<typeof scenarioSchema> => ({ ...s, created_at: s.created_at.toISOString(), updated_at: s.updated_at.toISOString() });

const forecastRecord = z
  .object({
    id: z.uuid(),
    kind: z.string(),
    status: z.enum(['queued', 'running', 'succeeded', 'failed']),
    created_by: z.uuid().nullable(),
    created_at: z.string(),
    finished_at: z.string().nullable(),
    inputs_hash: z.string(),
    inputs: z.record(z.string(), z.unknown()),
    scenario_id: z.uuid().nullable(),
    job_id: z.uuid().nullable(),
    loans: z.number().int(),
    months: z.number().int().nullable(),
    summary: z.record(z.string(), z.unknown()).nullable(),
    error: z.string().nullable(),
    result: z.record(z.string(), z.unknown()).nullable().optional().describe('periods and Monte Carlo of a forecast run as a job'),
  })
  .meta({ id: 'ForecastRecord' });
type ForecastRow = Omit<z.infer<typeof forecastRecord>, 'created_at' | 'finished_at'> & { created_at: Date; finished_at: Date | null };
const forecastRecordView = (f: ForecastRow): z.infer<typeof forecastRecord> => ({ ...f, created_at: f.created_at.toISOString(), finished_at: f.finished_at?.toISOString() ?? null });

const idParams = z.strictObject({ id: z.uuid() });
const page = { limit: z.coerce.number().int().min(1).max(100).default(20), starting_after: z.uuid().optional() };

/** `If-Match: "3"` (or 3) → 3; absent → undefined. */
function ifMatchVersion(request: FastifyRequest): number | undefined {
  const header = request.headers['if-match'];
  if (header === undefined) return undefined;
  const m = /^"?(\d{1,9})"?$/.exec(String(header).trim());
  if (!m) throw new AppError('validation_failed', { detail: 'If-Match must be the scenario version, e.g. "3"', errors: [{ pointer: '/if-match', location: 'header', detail: 'must be a version number' }] });
  return Number(m[1]);
}

export function registerForecastingRoutes(app: App, forecasting: ForecastingService): void {
  app.post(
    '/v1/cashflows/calculate',
    {
      config: { auth: ROLES, idempotency: 'optional' },
      schema: { tags, summary: 'Cash flows of one loan (the seed\'s LoanData), by period, with summary metrics', body: loanData, response: { 200: z.object({ forecast_id: z.uuid(), basis, projections: z.array(projectionRow), summary_metrics: loanSummary }) } },
    },
    async (request) => {
      const r = await forecasting.calculate(toLoanData(request.body), viewer(request));
      return { forecast_id: r.forecastId, basis: BASIS, projections: r.projections, summary_metrics: r.summaryMetrics };
    },
  );
  app.post(
    '/v1/cashflows/calculate-batch',
    {
      config: { auth: ROLES, idempotency: 'optional' },
      schema: {
        tags,
        summary: 'Cash flows of many loans (up to 1,000), each with its summary metrics, and their totals',
        body: z.strictObject({ loans: z.array(loanData).min(1).max(1000), include_projections: z.boolean().default(false) }),
        response: { 200: z.object({ forecast_id: z.uuid(), basis, results: z.array(z.object({ projections: z.array(projectionRow).optional(), summary_metrics: loanSummary })), totals: z.record(z.string(), z.number()) }) },
      },
    },
    async (request) => {
      const r = await forecasting.calculateBatch(request.body.loans.map(toLoanData), request.body.include_projections, viewer(request));
      return { forecast_id: r.forecastId, basis: BASIS, results: r.results.map((x) => ({ ...('projections' in x ? { projections: x.projections } : {}), summary_metrics: x.summaryMetrics })), totals: r.totals };
    },
  );
  app.post(
    '/v1/cashflows/forecast',
    {
      config: { auth: ROLES, idempotency: 'optional' },
      schema: {
        tags,
        summary: 'Project a pool or a list of loans under prepayment and default assumptions (SIFMA standard formulas)',
        description: 'Answers 200 with the periods and summary, or, above the inline size (loans × months × Monte Carlo paths > 2,000,000), 202 with a job; the result is then stored on the forecast (GET /v1/forecasts/{id}).',
        body: forecastBody,
        response: { 200: forecastResponse, 202: queuedResponse },
      },
    },
    async (request, reply) => {
      const b = request.body;
      const answer = await forecasting.forecast(
        { pool: b.pool, loans: b.loans, assumptions: b.assumptions, scenarioId: b.scenario_id, horizonMonths: b.horizon_months, discountRate: b.discount_rate, price: b.price, yieldRate: b.yield, monteCarlo: b.monte_carlo },
        viewer(request),
      );
      return sendForecast(reply, answer);
    },
  );
  app.post(
    '/v1/forecasts/book',
    {
      config: { auth: ROLES, idempotency: 'optional' },
      schema: { tags, summary: 'Project the live loan book (active loans\' outstanding principal, rate, remaining and elapsed installments)', body: bookBody, response: { 200: forecastResponse, 202: queuedResponse } },
    },
    async (request, reply) => {
      const b = request.body;
      const answer = await forecasting.forecastBook({ currency: b.currency, assumptions: b.assumptions, scenarioId: b.scenario_id, horizonMonths: b.horizon_months, discountRate: b.discount_rate, price: b.price, yieldRate: b.yield, monteCarlo: b.monte_carlo }, viewer(request));
      return sendForecast(reply, answer);
    },
  );
  app.get(
    '/v1/forecasts',
    {
      config: { auth: ROLES },
      schema: { tags, summary: 'Forecast history, newest first: who, when, inputs hash, summary', querystring: z.strictObject({ ...page, kind: z.enum(['calculate', 'batch', 'forecast', 'book']).optional() }), response: { 200: z.object({ data: z.array(forecastRecord), has_more: z.boolean() }) } },
    },
    async (request) => {
      const r = await forecasting.forecasts(viewer(request), { kind: request.query.kind, limit: request.query.limit, startingAfter: request.query.starting_after });
      return { data: r.data.map((f) => forecastRecordView(f as ForecastRow)), has_more: r.hasMore };
    },
  );
  app.get(
    '/v1/forecasts/:id',
    { config: { auth: ROLES }, schema: { tags, summary: 'One forecast: inputs, summary, and the stored result of a forecast run as a job', params: idParams, response: { 200: forecastRecord } } },
    async (request) => forecastRecordView((await forecasting.forecastById(request.params.id, viewer(request))) as ForecastRow),
  );

  // -- scenarios ------------------------------------------------------------
  app.post(
    '/v1/scenarios',
    { config: { auth: ROLES, idempotency: 'optional' }, schema: { tags, summary: 'Save a scenario (named assumptions)', body: scenarioBody, response: { 201: scenarioSchema } } },
    async (request, reply) => {
      const s = await forecasting.createScenario(request.body, viewer(request));
      return reply.code(201).header('location', `/v1/scenarios/${s.id}`).header('etag', `"${s.version}"`).send(scenarioView(s));
    },
  );
  app.get(
    '/v1/scenarios',
    { config: { auth: ROLES }, schema: { tags, summary: 'Scenarios by name', querystring: z.strictObject({ ...page, tag: z.string().max(40).optional() }), response: { 200: z.object({ data: z.array(scenarioSchema), has_more: z.boolean() }) } } },
    async (request) => {
      const r = await forecasting.scenarios(viewer(request), { tag: request.query.tag, limit: request.query.limit, startingAfter: request.query.starting_after });
      return { data: r.data.map(scenarioView), has_more: r.hasMore };
    },
  );
  app.get(
    '/v1/scenarios/:id',
    { config: { auth: ROLES }, schema: { tags, summary: 'A scenario (ETag: its version)', params: idParams, response: { 200: scenarioSchema } } },
    async (request, reply) => {
      const s = await forecasting.scenario(request.params.id, viewer(request));
      return reply.header('etag', `"${s.version}"`).send(scenarioView(s));
    },
  );
  app.put(
    '/v1/scenarios/:id',
    {
      config: { auth: ROLES },
      schema: { tags, summary: 'Replace a scenario; with If-Match: "<version>" only if nobody changed it meanwhile (412 otherwise)', params: idParams, body: scenarioBody, response: { 200: scenarioSchema } },
    },
    async (request, reply) => {
      const s = await forecasting.replaceScenario(request.params.id, request.body, ifMatchVersion(request), viewer(request));
      return reply.header('etag', `"${s.version}"`).send(scenarioView(s));
    },
  );
  app.delete(
    '/v1/scenarios/:id',
    { config: { auth: ROLES }, schema: { tags, summary: 'Delete a scenario (forecasts that used it keep its id and their inputs)', params: idParams, response: { 204: z.null() } } },
    async (request, reply) => {
      await forecasting.deleteScenario(request.params.id, viewer(request));
      return reply.code(204).send(null);
    },
  );
}
