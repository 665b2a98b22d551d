/**
 * GET /v1/jobs/{id}: a background job's state, progress and, once it succeeded, its
 * result. A job is visible to the user who asked for it and to the roles given as
 * `seeAll` (admins); anyone else gets the same 404 as for an id that does not exist, so
 * job ids cannot be probed.
 */
import { z } from 'zod';
import { AppError } from './errors.js';
import type { App } from './http.js';
import { JOB_STATES, type Job } from './jobs.js';

export interface JobRouteOptions {
  /** Roles that may call the route at all (every signed-in role). */
  readonly roles: readonly string[];
  /** Roles that see every job, not only their own. */
  readonly seeAll: readonly string[];
}

const jobSchema = z
  .object({
    id: z.uuid(),
    kind: z.string().describe("what the job does, e.g. 'forecast.project'"),
    state: z.enum(JOB_STATES).describe('queued → running → succeeded | failed; a failed attempt with attempts left goes back to queued; cancelled'),
    progress: z.number().min(0).max(1).describe('fraction done (0–1) as last reported by the worker; 1 once succeeded'),
    attempts: z.number().int().describe('attempts started so far'),
    max_attempts: z.number().int(),
    created_at: z.string(),
    started_at: z.string().nullable().describe('when the first attempt started'),
    finished_at: z.string().nullable(),
    error: z.string().nullable().describe('the last failure, safe to show (set while a retry is pending, too)'),
    result: z.unknown().optional().describe('present once succeeded: what the job produced'),
  })
  .meta({ id: 'Job' });

export function jobView(job: Job): z.infer<typeof jobSchema> {
  return {
    id: job.id,
    kind: job.kind,
    state: job.state,
    progress: job.progress,
    attempts: job.attempts,
    max_attempts: job.maxAttempts,
    created_at: job.createdAt.toISOString(),
    started_at: job.startedAt?.toISOString() ?? null,
    finished_at: job.finishedAt?.toISOString() ?? null,
    error: job.error,
    ...(job.state === 'succeeded' ? { result: job.result } : {}),
  };
}

export function registerJobRoutes(app: App, jobs: { get(id: string): Promise<Job | undefined> }, options: JobRouteOptions): void {
  app.get(
    '/v1/jobs/:id',
    {
      config: { auth: options.roles },
      schema: {
        tags: ['jobs'],
        summary: 'A background job: state, progress, and its result once it succeeded',
        description: 'Visible to the user who started the job and to admins; for anyone else it does not exist (404).',
        params: z.strictObject({ id: z.uuid() }),
        response: { 200: jobSchema },
      },
    },
    async (request) => {
      const job = await jobs.get(request.params.id);
      const viewer = request.principal;
      if (!job || !viewer || !(options.seeAll.includes(viewer.role) || job.createdBy === viewer.userId)) {
        throw new AppError('job_not_found');
      }
      return jobView(job);
    },
  );
}
