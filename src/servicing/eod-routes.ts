/** End-of-day and business-date routes. A run started over HTTP is processed in this process, in the background. */
import { z } from 'zod';
import { formatMoney, isCurrency } from '../engine/index.js';
import { coerceError } from '../platform/errors.js';
import type { App } from '../platform/http.js';
import type { Logger } from '../platform/logger.js';
import type { EodRun, EodService } from './eod.js';

const OPERATORS = ['admin', 'servicer'] as const;
const READERS = ['admin', 'servicer', 'auditor', 'analyst', 'underwriter'] as const;
const tags = ['end of day'];

const runSchema = z
  .object({
    id: z.uuid(),
    business_date: z.string(),
    status: z.enum(['running', 'completed', 'failed']),
    loans_total: z.number().int(),
    loans_processed: z.number().int(),
    progress: z.number().describe('loans processed / loans open when the run started (0–1)'),
    chunks: z.number().int(),
    accrued: z.record(z.string(), z.string()).describe('interest recognized per currency'),
    late_fees: z.number().int(),
    charge_offs: z.number().int(),
    newly_delinquent: z.number().int(),
    reconciliation: z
      .object({
        balanced: z.boolean(),
        breaks: z.array(z.object({ currency: z.string(), account: z.string(), gl: z.string(), subledger: z.string() })),
        gl_totals: z.record(z.string(), z.string()),
      })
      .nullable(),
    error: z.string().nullable(),
    started_at: z.string(),
    finished_at: z.string().nullable(),
  })
  .meta({ id: 'EodRun' });

function runView(r: EodRun): z.infer<typeof runSchema> {
  return {
    id: r.id,
    business_date: r.businessDate,
    status: r.status,
    loans_total: r.loansTotal,
    loans_processed: r.loansProcessed,
    progress: r.loansTotal === 0 ? (r.status === 'completed' ? 1 : 0) : Math.min(1, r.loansProcessed / r.loansTotal),
    chunks: r.chunks,
    accrued: Object.fromEntries(Object.entries(r.accrued).map(([c, v]) => [c, isCurrency(c) ? formatMoney(v, c) : v.toString()])),
    late_fees: r.lateFees,
    charge_offs: r.chargeOffs,
    newly_delinquent: r.newlyDelinquent,
    reconciliation: r.reconciliation === null ? null : { balanced: r.reconciliation.balanced, breaks: [...r.reconciliation.breaks], gl_totals: { ...r.reconciliation.glTotals } },
    error: r.error,
    started_at: r.startedAt.toISOString(),
    finished_at: r.finishedAt?.toISOString() ?? null,
  };
}

export function registerEodRoutes(app: App, eod: EodService, logger: Logger): void {
  const running = new Set<Promise<unknown>>();
  app.addHook('onClose', async () => {
    await Promise.allSettled([...running]);
  });

  app.get(
    '/v1/business-date',
    { config: { auth: [...READERS, 'borrower'] }, schema: { tags, summary: 'The installation’s business date', response: { 200: z.object({ business_date: z.string() }) } } },
    async () => ({ business_date: await eod.businessDate() }),
  );
  app.post(
    '/v1/eod/runs',
    {
      config: { auth: OPERATORS, idempotency: 'optional' },
      schema: {
        tags,
        summary: 'Close a business date (start or resume its run)',
        description: 'Processing continues in the background; follow it with GET /v1/eod/runs/{id}. A date already closed answers 200 with its run.',
        body: z.strictObject({ date: z.iso.date().optional().describe('default: the business date') }),
        response: { 200: runSchema, 202: runSchema },
      },
    },
    async (request, reply) => {
      const run = await eod.start({ date: request.body.date, actorId: request.principal?.userId ?? null });
      if (run.status === 'completed') return reply.code(200).send(runView(run));
      const work = eod.process(run.id).catch((e: unknown) => logger.error({ err: coerceError(e), run_id: run.id }, 'end-of-day run failed'));
      running.add(work);
      void work.finally(() => running.delete(work));
      return reply.code(202).header('location', `/v1/eod/runs/${run.id}`).send(runView(run));
    },
  );
  app.get(
    '/v1/eod/runs',
    { config: { auth: READERS }, schema: { tags, summary: 'Recent runs, newest date first', querystring: z.strictObject({ limit: z.coerce.number().int().min(1).max(100).default(20) }), response: { 200: z.object({ data: z.array(runSchema) }) } } },
    async (request) => ({ data: (await eod.list(request.query.limit)).map(runView) }),
  );
  app.get(
    '/v1/eod/runs/:id',
    { config: { auth: READERS }, schema: { tags, summary: 'A run: status, progress, totals and reconciliation', params: z.strictObject({ id: z.uuid() }), response: { 200: runSchema } } },
    async (request) => runView(await eod.get(request.params.id)),
  );
}
