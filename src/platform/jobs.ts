/**
 * The job queue: work that outlives a request (large projections), run by worker loops in
 * `loanbook worker` processes or, in the embedded mode, in the API process.
 *
 * Two stores, one id. The `jobs` table (migrations/0008_jobs.sql) is the record the API
 * reads: state, progress, attempts, the last error, the result. pg-boss 10 (its own
 * schema, installed and upgraded by `start()`) does the queueing: claiming with
 * `FOR UPDATE SKIP LOCKED` (so two workers never take one job), retries with backoff,
 * expiry of jobs whose worker died, archiving. A job is inserted in `jobs` and enqueued
 * in pg-boss in one transaction (pg-boss's `db` option runs its insert on ours), and each
 * attempt's outcome is written to both in one transaction, guarded by the attempt number,
 * so a late or duplicate outcome changes nothing.
 *
 * Both run modes use pg-boss. On PGlite (one connection behind the pg.Pool bridge) it
 * works because pg-boss 10 only polls (no LISTEN/NOTIFY) and every statement it sends is
 * self-contained; its schema install, send, fetch, complete, fail, cancel and maintenance
 * were checked there, and this module's tests run on both databases. The one rule PGlite
 * adds: call `send` and `cancel` outside any other open transaction (they open their
 * own; on one connection a second transaction waits for the first forever).
 *
 * The worker loop is ours, over `fetch` (not pg-boss's `work`): a fixed number of slots
 * per kind, a poll whose failures are seen (health), an AbortSignal per job (timeout,
 * cancellation, shutdown), and a graceful stop that waits for jobs in flight and then
 * releases the rest back to the queue.
 */
import { randomUUID } from 'node:crypto';
import { CompiledQuery, sql, type Kysely } from 'kysely';
import PgBoss from 'pg-boss';
import { Counter, Histogram, type Registry } from 'prom-client';
import { canonicalJson } from './canonical-json.js';
import type { Database } from './database.js';
import { coerceError, defineProblems, isAppError } from './errors.js';
import type { HealthCheck } from './health.js';
import type { Logger } from './logger.js';
import type { ErrorReporter } from './error-reporting.js';
import { isRetryableDbError } from './retry.js';
import { startJobSpan } from './telemetry.js';
import { platformView, type PlatformTables } from './schema.js';

export const JOB_STATES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const;
export type JobState = (typeof JOB_STATES)[number];

/** Lower-case, dot-separated by part: 'forecast.project'. Also the pg-boss queue name. */
export const JOB_KIND = /^[a-z][a-z0-9_.-]*$/;
export const JOB_KIND_MAX_CHARS = 100;
/** `error` keeps this many characters of the failure's message. */
export const JOB_ERROR_MAX_CHARS = 500;

/** What the caller sees when a handler fails with anything but a JobError (the worker logs the real error). */
export const JOB_INTERNAL_ERROR = 'The job failed with an internal error; the worker logged the details.';
export const JOB_TIMED_OUT = 'The job did not finish within its time limit.';
export const JOB_RELEASED = 'The worker stopped before the job finished.';
export const JOB_EXPIRED = 'The job’s worker stopped responding before the job finished.';

export const JobProblem = defineProblems({
  job_not_found: { status: 404, title: 'Job not found', description: 'No job has this id, or it is not yours to see.' },
});

/** A job as stored (and as GET /v1/jobs/{id} shows it). */
export interface Job {
  readonly id: string;
  readonly kind: string;
  readonly state: JobState;
  /** 0–1, as last reported by the handler; 1 once succeeded. */
  readonly progress: number;
  /** As read back from JSON (bigint values are decimal strings). */
  readonly payload: Record<string, unknown>;
  /** The handler's return value once succeeded, else null. */
  readonly result: unknown;
  /** The last failure's message (safe to show), or null. */
  readonly error: string | null;
  readonly attempts: number;
  readonly maxAttempts: number;
  readonly createdBy: string | null;
  readonly createdAt: Date;
  readonly startedAt: Date | null;
  readonly finishedAt: Date | null;
  readonly updatedAt: Date;
}

/** What a handler receives. */
export interface JobContext<P extends Record<string, unknown> = Record<string, unknown>> {
  readonly id: string;
  readonly kind: string;
  readonly payload: P;
  /** 1 on the first attempt. */
  readonly attempt: number;
  readonly maxAttempts: number;
  /**
   * Reports the fraction done (0–1; clamped). Writes are throttled (at most one per
   * `progressIntervalMs`; the last value reported is always written). Never throws for a
   * failed write: progress is advisory.
   */
  progress(fraction: number): Promise<void>;
  /**
   * Aborted when the job times out, is cancelled, or the worker stops and the grace period
   * is over. A handler that does long work checks it between steps; the outcome is settled
   * when it aborts whether or not the handler returns.
   */
  readonly signal: AbortSignal;
}

/** Returns a JSON-serializable result (bigint becomes a decimal string), stored on the job. */
export type JobHandler<P extends Record<string, unknown> = Record<string, unknown>> = (job: JobContext<P>) => Promise<unknown>;

/**
 * An expected failure whose message is shown to the caller as the job's `error`. Anything
 * else a handler throws is shown as JOB_INTERNAL_ERROR (messages of unexpected errors can
 * hold SQL, hosts or personal data). `retryable: false` ends the job at once: retrying a
 * job whose input is wrong only fails again.
 */
export class JobError extends Error {
  override readonly name = 'JobError';
  readonly retryable: boolean;
  constructor(message: string, options: { retryable?: boolean; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.retryable = options.retryable ?? true;
  }
}

export interface SendOptions {
  /** The user who asked; only they (and admins) see the job. Null for system jobs. */
  readonly createdBy: string | null;
}

export interface WorkOptions {
  /** Jobs of this kind run at once in this process (default: the queue's `concurrency`). */
  readonly concurrency?: number;
}

export interface WorkerStatus {
  readonly kind: string;
  readonly concurrency: number;
  readonly active: number;
  /** The last poll that reached the database, or undefined before the first. */
  readonly lastPollAt: Date | undefined;
  /** Why the last poll failed, undefined when it succeeded. */
  readonly lastPollError: string | undefined;
}

export interface JobQueueStatus {
  readonly running: boolean;
  readonly workers: readonly WorkerStatus[];
}

export interface StopOptions {
  /** How long jobs in flight may take to finish before they are aborted and released (default: the queue's stopGraceMs). */
  readonly graceMs?: number;
}

export interface JobQueue {
  /** Records the job and enqueues it, in one transaction. The queue must be started. */
  send(kind: string, payload: Record<string, unknown>, options: SendOptions): Promise<{ id: string }>;
  /** Registers the handler of a kind; its worker loop runs while the queue is started. One handler per kind. */
  work<P extends Record<string, unknown>>(kind: string, handler: JobHandler<P>, options?: WorkOptions): void;
  get(id: string): Promise<Job | undefined>;
  /** Cancels a queued or running job (a running handler sees its signal abort). False when it had already finished. */
  cancel(id: string): Promise<boolean>;
  /** Installs or upgrades pg-boss's schema and starts the worker loops of the registered kinds. */
  start(): Promise<void>;
  /** Stops polling, lets jobs in flight finish within the grace period, then aborts and releases the rest. */
  stop(options?: StopOptions): Promise<void>;
  status(): JobQueueStatus;
  /** Not critical: a stuck worker reports "degraded" without taking the API out of rotation. */
  healthCheck(): HealthCheck;
  /** The kinds with a registered handler. */
  kinds(): string[];
}

export interface JobQueueOptions<DB extends PlatformTables> {
  readonly database: Database<DB>;
  readonly logger: Logger;
  /** Jobs of each kind run at once in this process, unless `work` says otherwise (WORKER_CONCURRENCY). */
  readonly concurrency: number;
  /** Retries after the first attempt (default 2: three attempts). */
  readonly retryLimit?: number;
  /** Wait before a retry, in seconds; doubled per attempt with jitter when retryBackoff (default 10). */
  readonly retryDelaySeconds?: number;
  readonly retryBackoff?: boolean;
  /** An attempt running longer is aborted and fails (default 30 minutes). */
  readonly timeoutMs?: number;
  /** Wait between polls that found nothing (default 1000 ms); a send in this process wakes its worker at once. */
  readonly pollIntervalMs?: number;
  /** At most one progress write per job per interval (default 250 ms). */
  readonly progressIntervalMs?: number;
  /** Default grace period of `stop()` (default 30 s). */
  readonly stopGraceMs?: number;
  /** How often running jobs that pg-boss expired are reconciled (default 60 s). */
  readonly sweepIntervalMs?: number;
  /** pg-boss's schema (default 'pgboss'). */
  readonly schema?: string;
  /** Registers loanbook_jobs_total and loanbook_job_duration_seconds when given. */
  readonly registry?: Registry;
  /** Handler failures other than JobErrors, AppErrors and aborts are reported to it (SENTRY_DSN). */
  readonly errorReporter?: ErrorReporter | undefined;
}

type JobRow = {
  id: string;
  kind: string;
  state: JobState;
  progress: string;
  payload: Record<string, unknown>;
  result: unknown;
  error: string | null;
  attempts: number;
  max_attempts: number;
  created_by: string | null;
  created_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
  updated_at: Date;
};

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function toJob(r: JobRow): Job {
  return {
    id: r.id,
    kind: r.kind,
    state: r.state,
    progress: Number(r.progress),
    payload: r.payload,
    result: r.result ?? null,
    error: r.error,
    attempts: r.attempts,
    maxAttempts: r.max_attempts,
    createdBy: r.created_by,
    createdAt: r.created_at,
    startedAt: r.started_at,
    finishedAt: r.finished_at,
    updatedAt: r.updated_at,
  };
}

/** Reads one job (no queue needed: any process that can read the database can answer GET /v1/jobs/{id}). */
export async function getJob<DB extends PlatformTables>(executor: Kysely<DB>, id: string): Promise<Job | undefined> {
  if (!UUID.test(id)) return undefined;
  const row = await platformView(executor).selectFrom('jobs').selectAll().where('id', '=', id).executeTakeFirst();
  return row ? toJob(row) : undefined;
}

export function assertJobKind(kind: string): void {
  if (!JOB_KIND.test(kind) || kind.length > JOB_KIND_MAX_CHARS) {
    throw new Error(`job kind "${kind}" must match ${String(JOB_KIND)} and be at most ${JOB_KIND_MAX_CHARS} characters`);
  }
}

/** pg-boss's database port over a Kysely instance or transaction, so its statements join ours. */
function bossDb(executor: Kysely<PlatformTables>): PgBoss.Db {
  return {
    async executeSql(text: string, values: unknown[] | undefined) {
      const result = await executor.executeQuery(CompiledQuery.raw(text, values ?? []));
      return { rows: result.rows };
    },
  };
}

type Outcome = { ok: true; result: unknown } | { ok: false; error: unknown };

/** Why a job's signal was aborted. */
class JobAbort extends Error {
  override readonly name = 'JobAbort';
  constructor(readonly reason: 'timeout' | 'cancelled' | 'released') {
    super(reason === 'timeout' ? JOB_TIMED_OUT : reason === 'released' ? JOB_RELEASED : 'The job was cancelled.');
  }
}

interface RunningJob {
  readonly id: string;
  readonly controller: AbortController;
  /** Settles once the attempt's outcome is written (or found superseded). */
  readonly recorded: Promise<void>;
}

interface WorkerLoop {
  readonly kind: string;
  readonly handler: JobHandler;
  readonly concurrency: number;
  /** Slots in use: a slot is freed when the handler settles, even after its outcome was recorded. */
  readonly slots: Set<Promise<void>>;
  readonly running: Map<string, RunningJob>;
  lastPollAt: Date | undefined;
  lastPollError: string | undefined;
  stopped: boolean;
  /** Ends the current sleep; set while the loop sleeps. */
  wake: (() => void) | undefined;
  /** A wake that arrived while the loop was polling: skip the next sleep. */
  woken: boolean;
  done: Promise<void>;
}

function wakeLoop(loop: WorkerLoop | undefined): void {
  if (!loop) return;
  loop.woken = true;
  loop.wake?.();
}

export function createJobQueue<DB extends PlatformTables>(options: JobQueueOptions<DB>): JobQueue {
  const { database } = options;
  const db = platformView(database.db);
  const logger = options.logger.child({ component: 'jobs' });
  const retryLimit = options.retryLimit ?? 2;
  const retryDelay = options.retryDelaySeconds ?? 10;
  const retryBackoff = options.retryBackoff ?? true;
  const timeoutMs = options.timeoutMs ?? 30 * 60_000;
  const pollIntervalMs = options.pollIntervalMs ?? 1000;
  const progressIntervalMs = options.progressIntervalMs ?? 250;
  const stopGraceMs = options.stopGraceMs ?? 30_000;
  const sweepIntervalMs = options.sweepIntervalMs ?? 60_000;
  const schema = options.schema ?? 'pgboss';
  positiveInt('concurrency', options.concurrency);
  positiveInt('retryLimit', retryLimit, 0);
  positiveInt('retryDelaySeconds', retryDelay, 0);
  positiveInt('timeoutMs', timeoutMs);
  if (!/^[a-z_][a-z0-9_]*$/.test(schema)) throw new RangeError(`job queue schema "${schema}" must be a lower-case SQL identifier`);

  const metrics = options.registry ? createJobMetrics(options.registry) : undefined;
  const boss = new PgBoss({
    db: { executeSql: (text: string, values?: unknown[]) => database.pool.query(text, values) },
    schema,
    migrate: true,
    // Maintenance (expiring jobs whose worker died, archiving, purging) under pg-boss's
    // advisory lock, so one instance at a time does it. No cron: nothing here schedules.
    supervise: true,
    schedule: false,
  });
  boss.on('error', (e: unknown) => logger.error({ err: coerceError(e) }, 'pg-boss error'));

  const loops = new Map<string, WorkerLoop>();
  const queuesReady = new Map<string, Promise<void>>();
  let running = false;
  let sweepTimer: NodeJS.Timeout | undefined;
  let transition: Promise<void> = Promise.resolve();

  /**
   * pg-boss 10 needs a queue (a partition of its job table) per kind before the first send
   * or fetch. Creating one is DDL: two creations at once deadlock on pg-boss's queue
   * table (each holds its new row and wants a table lock for the foreign key). So this
   * process creates one at a time, skips queues that exist, and retries a deadlock with
   * another process.
   */
  let queueCreation: Promise<unknown> = Promise.resolve();
  function ensureQueue(kind: string): Promise<void> {
    let ready = queuesReady.get(kind);
    if (!ready) {
      const created = queueCreation.catch(() => undefined).then(() => createQueue(kind));
      queueCreation = created;
      ready = created;
      queuesReady.set(kind, ready);
      ready.catch(() => queuesReady.delete(kind));
    }
    return ready;
  }

  async function createQueue(kind: string): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      if (await boss.getQueue(kind)) return;
      try {
        // INSERT … ON CONFLICT DO NOTHING, then the partition: a second creation of the same queue is a no-op.
        await boss.createQueue(kind, { name: kind, policy: 'standard' });
        return;
      } catch (e) {
        if (!isRetryableDbError(e) || attempt >= 5) throw e;
        logger.debug({ kind, attempt }, 'job queue creation deadlocked with another process; retrying');
        await new Promise((resolve) => setTimeout(resolve, Math.random() * 50 * 2 ** attempt));
      }
    }
  }

  async function send(kind: string, payload: Record<string, unknown>, sendOptions: SendOptions): Promise<{ id: string }> {
    assertJobKind(kind);
    if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) throw new TypeError('a job payload must be a JSON object');
    if (!running) throw new Error('the job queue is not started');
    await ensureQueue(kind);
    const id = randomUUID();
    const payloadJson = canonicalJson(payload);
    await db.transaction().execute(async (trx) => {
      await trx
        .insertInto('jobs')
        .values({ id, kind, payload: payloadJson, created_by: sendOptions.createdBy, max_attempts: retryLimit + 1 })
        .execute();
      // The payload lives in `jobs` only; pg-boss carries the id.
      await boss.send(kind, {}, {
        id,
        db: bossDb(trx),
        retryLimit,
        retryDelay,
        retryBackoff,
        // Past our own timeout (which fails the attempt cleanly), so pg-boss expires only
        // attempts whose worker died.
        expireInSeconds: Math.ceil(timeoutMs / 1000) + 60,
      });
    });
    wakeLoop(loops.get(kind));
    return { id };
  }

  async function cancel(id: string): Promise<boolean> {
    if (!UUID.test(id)) return false;
    const cancelled = await db.transaction().execute(async (trx) => {
      const row = await trx
        .updateTable('jobs')
        .set({ state: 'cancelled', finished_at: sql<Date>`now()`, updated_at: sql<Date>`now()` })
        .where('id', '=', id)
        .where('state', 'in', ['queued', 'running'])
        .returning(['kind'])
        .executeTakeFirst();
      if (!row) return false;
      await boss.cancel(row.kind, id, { db: bossDb(trx) });
      return true;
    });
    // A handler in this process stops now; one elsewhere at its next progress report.
    if (cancelled) for (const loop of loops.values()) loop.running.get(id)?.controller.abort(new JobAbort('cancelled'));
    return cancelled;
  }

  function work<P extends Record<string, unknown>>(kind: string, handler: JobHandler<P>, workOptions: WorkOptions = {}): void {
    assertJobKind(kind);
    if (loops.has(kind)) throw new Error(`job kind "${kind}" already has a handler`);
    const concurrency = workOptions.concurrency ?? options.concurrency;
    positiveInt('concurrency', concurrency);
    const loop: WorkerLoop = {
      kind,
      handler: handler as JobHandler,
      concurrency,
      slots: new Set(),
      running: new Map(),
      lastPollAt: undefined,
      lastPollError: undefined,
      stopped: true,
      wake: undefined,
      woken: false,
      done: Promise.resolve(),
    };
    loops.set(kind, loop);
    if (running) startLoop(loop);
  }

  function startLoop(loop: WorkerLoop): void {
    loop.stopped = false;
    loop.done = runLoop(loop);
  }

  async function runLoop(loop: WorkerLoop): Promise<void> {
    while (!loop.stopped) {
      loop.woken = false;
      const free = loop.concurrency - loop.slots.size;
      if (free > 0) {
        try {
          await ensureQueue(loop.kind);
          for (const job of await fetch(loop.kind, free)) startJob(loop, job);
          loop.lastPollAt = new Date();
          loop.lastPollError = undefined;
        } catch (e) {
          const err = coerceError(e);
          if (loop.lastPollError === undefined) logger.error({ err, kind: loop.kind }, 'job poll failed; retrying after the poll interval');
          loop.lastPollError = err.message;
        }
      }
      if (loop.stopped) break;
      if (loop.woken) continue;
      // Sleep until the poll interval passes, a slot frees or a job is sent in this process.
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, pollIntervalMs);
        function done() {
          clearTimeout(timer);
          loop.wake = undefined;
          resolve();
        }
        loop.wake = done;
      });
    }
  }

  /** pg-boss's fetch returns [] when its query fails; this one throws. */
  async function fetch(kind: string, batchSize: number): Promise<PgBoss.JobWithMetadata<Record<string, unknown>>[]> {
    let failure: unknown;
    const pollDb: PgBoss.Db = {
      executeSql: async (text: string, values?: unknown[]) => {
        try {
          return await database.pool.query(text, values);
        } catch (e) {
          failure = e;
          throw e;
        }
      },
    };
    const jobs = await boss.fetch<Record<string, unknown>>(kind, { batchSize, includeMetadata: true, db: pollDb });
    if (failure !== undefined) throw coerceError(failure);
    return jobs;
  }

  function startJob(loop: WorkerLoop, bossJob: PgBoss.JobWithMetadata<Record<string, unknown>>): void {
    const controller = new AbortController();
    let recordedResolve!: () => void;
    const recorded = new Promise<void>((resolve) => (recordedResolve = resolve));
    const entry: RunningJob = { id: bossJob.id, controller, recorded };
    loop.running.set(bossJob.id, entry);
    const slot = runJob(loop, bossJob, controller, recordedResolve)
      .catch((e: unknown) => logger.error({ err: coerceError(e), job_id: bossJob.id, kind: loop.kind }, 'job bookkeeping failed'))
      .finally(() => {
        recordedResolve();
        loop.slots.delete(slot);
        if (loop.running.get(bossJob.id) === entry) loop.running.delete(bossJob.id);
        wakeLoop(loop);
      });
    loop.slots.add(slot);
  }

  async function runJob(
    loop: WorkerLoop,
    bossJob: PgBoss.JobWithMetadata<Record<string, unknown>>,
    controller: AbortController,
    recordedResolve: () => void,
  ): Promise<void> {
    const { id } = bossJob;
    const { kind } = loop;
    const attempt = bossJob.retryCount + 1;
    const lastAttempt = bossJob.retryCount >= bossJob.retryLimit;
    const log = logger.child({ job_id: id, kind, attempt });

    let claimed: { payload: Record<string, unknown>; max_attempts: number } | undefined;
    try {
      claimed = await db
        .updateTable('jobs')
        .set((eb) => ({
          state: 'running',
          attempts: attempt,
          progress: '0',
          started_at: eb.fn.coalesce('started_at', sql<Date>`now()`),
          updated_at: sql<Date>`now()`,
        }))
        .where('id', '=', id)
        .where('state', 'in', ['queued', 'running'])
        .returning(['payload', 'max_attempts'])
        .executeTakeFirst();
    } catch (e) {
      // Hand the job back at once rather than leave it active until pg-boss expires it.
      await boss.fail(kind, id, { message: 'claim failed' }).catch(() => undefined);
      throw e;
    }
    if (!claimed) {
      // Cancelled or finished meanwhile (or enqueued without a row): nothing to run.
      log.warn('job fetched but its row is not queued; not running it');
      await boss.cancel(kind, id);
      recordedResolve();
      return;
    }

    const progress = createProgressWriter(id, attempt, () => controller.abort(new JobAbort('cancelled')), log);
    const timer = setTimeout(() => controller.abort(new JobAbort('timeout')), timeoutMs);
    const started = performance.now();
    const span = startJobSpan(kind, id, attempt);
    const handlerDone = Promise.resolve().then(() =>
      span.run(() => loop.handler({
        id,
        kind,
        payload: claimed.payload,
        attempt,
        maxAttempts: claimed.max_attempts,
        progress: (fraction) => progress.report(fraction),
        signal: controller.signal,
      })),
    );
    let outcome: Outcome;
    try {
      outcome = { ok: true, result: await untilAborted(handlerDone, controller.signal) };
    } catch (error) {
      outcome = { ok: false, error };
    } finally {
      clearTimeout(timer);
      await progress.close();
    }
    const seconds = (performance.now() - started) / 1000;
    if (!outcome.ok && publicMessage(outcome.error) === JOB_INTERNAL_ERROR) {
      options.errorReporter?.report(outcome.error, { 'job.kind': kind, 'job.id': id, 'job.attempt': attempt, trace_id: span.traceId });
    }

    let recordedAs = 'unrecorded';
    try {
      // Not inside `metrics?.finished(…)`: without metrics that would skip the call.
      recordedAs = await record(kind, id, attempt, lastAttempt, outcome, log);
      metrics?.finished(kind, recordedAs, seconds);
    } finally {
      span.end(recordedAs, outcome.ok ? undefined : outcome.error);
      recordedResolve();
      // The slot stays taken until the handler really returns (an aborted one may not at once).
      await handlerDone.catch(() => undefined);
    }
  }

  /** Writes the attempt's outcome to `jobs` and pg-boss in one transaction; returns the outcome label. */
  async function record(kind: string, id: string, attempt: number, lastAttempt: boolean, outcome: Outcome, log: Logger): Promise<string> {
    if (outcome.ok) {
      let resultJson: string | undefined;
      try {
        resultJson = canonicalJson(outcome.result ?? null);
      } catch (e) {
        // A cycle (RangeError) or a throwing toJSON: the handler's bug, recorded as a failure.
        outcome = { ok: false, error: new Error('the job handler returned a value that is not JSON-serializable', { cause: e }) };
      }
      if (resultJson !== undefined) return recordSuccess(kind, id, attempt, resultJson, log);
    }
    const error = outcome.ok ? undefined : outcome.error;
    if (error instanceof JobAbort && error.reason === 'cancelled') {
      log.info('job cancelled');
      return 'cancelled';
    }
    const message = publicMessage(error);
    const final = lastAttempt || (error instanceof JobError && !error.retryable);
    return db.transaction().execute(async (trx) => {
      const updated = await trx
        .updateTable('jobs')
        .set({ state: final ? 'failed' : 'queued', error: message, finished_at: final ? sql<Date>`now()` : null, updated_at: sql<Date>`now()` })
        .where('id', '=', id)
        .where('state', '=', 'running')
        .where('attempts', '=', attempt)
        .executeTakeFirst();
      if (updated.numUpdatedRows === 0n) return superseded(log);
      // pg-boss schedules the retry (or marks the job failed after the last attempt); a
      // job ended early is cancelled there so that it is not retried.
      await boss.fail(kind, id, { message }, { db: bossDb(trx) });
      if (final && !lastAttempt) await boss.cancel(kind, id, { db: bossDb(trx) });
      const fields = { err: coerceError(error), final };
      if (final) log.error(fields, 'job failed');
      else log.warn(fields, 'job attempt failed; it will be retried');
      return final ? 'failed' : 'retried';
    });
  }

  async function recordSuccess(kind: string, id: string, attempt: number, resultJson: string, log: Logger): Promise<string> {
    return db.transaction().execute(async (trx) => {
      const updated = await trx
        .updateTable('jobs')
        .set({ state: 'succeeded', progress: '1', result: resultJson, error: null, finished_at: sql<Date>`now()`, updated_at: sql<Date>`now()` })
        .where('id', '=', id)
        .where('state', '=', 'running')
        .where('attempts', '=', attempt)
        .executeTakeFirst();
      if (updated.numUpdatedRows === 0n) return superseded(log);
      await boss.complete(kind, id, {}, { db: bossDb(trx) });
      log.info('job succeeded');
      return 'succeeded';
    });
  }

  function superseded(log: Logger): string {
    // Cancelled, or this attempt was given up (expired, released) and another took over.
    log.info('job outcome not recorded: the job was cancelled or another attempt owns it');
    return 'superseded';
  }

  function createProgressWriter(id: string, attempt: number, onLost: () => void, log: Logger) {
    let pending: number | undefined;
    let lastWriteAt = -Infinity;
    let writing: Promise<void> | undefined;
    let timer: NodeJS.Timeout | undefined;
    let closed = false;

    async function write(): Promise<void> {
      if (pending === undefined || closed) return;
      const value = pending;
      pending = undefined;
      lastWriteAt = performance.now();
      try {
        const updated = await db
          .updateTable('jobs')
          .set({ progress: value.toFixed(4), updated_at: sql<Date>`now()` })
          .where('id', '=', id)
          .where('state', '=', 'running')
          .where('attempts', '=', attempt)
          .executeTakeFirst();
        if (updated.numUpdatedRows === 0n) onLost();
      } catch (e) {
        log.warn({ err: coerceError(e) }, 'job progress write failed');
      }
    }
    function flush(): Promise<void> {
      const w = write().finally(() => {
        writing = undefined;
        if (pending !== undefined) schedule();
      });
      writing = w;
      return w;
    }
    function schedule(): void {
      if (timer !== undefined || closed) return;
      timer = setTimeout(
        () => {
          timer = undefined;
          if (writing === undefined) void flush();
        },
        Math.max(0, lastWriteAt + progressIntervalMs - performance.now()),
      );
    }
    return {
      report(fraction: number): Promise<void> {
        if (typeof fraction !== 'number' || Number.isNaN(fraction)) return Promise.reject(new RangeError(`progress must be a number from 0 to 1, got ${String(fraction)}`));
        pending = Math.min(1, Math.max(0, fraction));
        if (closed) return Promise.resolve();
        if (writing === undefined && timer === undefined && performance.now() - lastWriteAt >= progressIntervalMs) return flush();
        schedule();
        return Promise.resolve();
      },
      async close(): Promise<void> {
        closed = true;
        clearTimeout(timer);
        timer = undefined;
        await writing;
      },
    };
  }

  /**
   * A worker that died mid-job leaves its row `running`; pg-boss expires the attempt
   * (retry, or failed after the last one) and this brings the row in line. A retry that
   * another worker claims first fixes the row itself.
   */
  async function sweep(): Promise<void> {
    const result = await sql`
      UPDATE jobs AS j SET
        state = CASE WHEN b.state = 'retry' THEN 'queued' ELSE 'failed' END,
        error = ${JOB_EXPIRED},
        finished_at = CASE WHEN b.state = 'retry' THEN NULL ELSE now() END,
        updated_at = now()
      FROM ${sql.table(`${schema}.job`)} AS b
      WHERE j.state = 'running' AND b.name = j.kind AND b.id = j.id AND b.state IN ('retry', 'failed')`.execute(db);
    const n = Number(result.numAffectedRows ?? 0n);
    if (n > 0) logger.warn({ jobs: n }, 'running jobs whose worker stopped responding were requeued or failed');
  }

  async function start(): Promise<void> {
    // A failed start or stop does not wedge the next one.
    transition = transition.catch(() => undefined).then(async () => {
      if (running) return;
      await boss.start();
      try {
        // Before the loops start, so their first polls do not all create queues at once.
        for (const kind of loops.keys()) await ensureQueue(kind);
      } catch (e) {
        await boss.stop({ graceful: false, close: false }).catch(() => undefined);
        throw e;
      }
      running = true;
      for (const loop of loops.values()) startLoop(loop);
      sweepTimer = setInterval(() => {
        sweep().catch((e: unknown) => logger.warn({ err: coerceError(e) }, 'job sweep failed'));
      }, sweepIntervalMs);
      sweepTimer.unref();
    });
    return transition;
  }

  async function stop(stopOptions: StopOptions = {}): Promise<void> {
    transition = transition.catch(() => undefined).then(async () => {
      if (!running) return;
      const graceMs = stopOptions.graceMs ?? stopGraceMs;
      clearInterval(sweepTimer);
      for (const loop of loops.values()) {
        loop.stopped = true;
        wakeLoop(loop);
      }
      await Promise.all([...loops.values()].map((l) => l.done));
      const inFlight = [...loops.values()].flatMap((l) => [...l.running.values()]);
      if (inFlight.length > 0) logger.info({ jobs: inFlight.length, grace_ms: graceMs }, 'waiting for jobs in flight');
      const grace = setTimeout(() => {
        for (const job of inFlight) job.controller.abort(new JobAbort('released'));
      }, graceMs);
      try {
        await Promise.all(inFlight.map((j) => j.recorded));
      } finally {
        clearTimeout(grace);
      }
      running = false;
      // No pg-boss workers run (the loops above are ours), so this only ends maintenance.
      await boss.stop({ graceful: true, wait: true, close: false, timeout: 1000 });
    });
    return transition;
  }

  function status(): JobQueueStatus {
    return {
      running,
      workers: [...loops.values()].map((l) => ({
        kind: l.kind,
        concurrency: l.concurrency,
        active: l.slots.size,
        lastPollAt: l.lastPollAt,
        lastPollError: l.lastPollError,
      })),
    };
  }

  return {
    send,
    work,
    get: (id) => getJob(database.db, id),
    cancel,
    start,
    stop,
    status,
    kinds: () => [...loops.keys()],
    healthCheck: () => ({
      name: 'jobs',
      critical: false,
      async check() {
        const s = status();
        if (!s.running) throw new Error('the job queue is not running');
        // A worker with every slot busy does not poll; one with a free slot polls each interval.
        const staleMs = Math.max(30_000, 5 * pollIntervalMs);
        for (const w of s.workers) {
          if (w.lastPollError !== undefined) throw new Error(`the ${w.kind} worker cannot poll: ${w.lastPollError}`);
          if (w.active < w.concurrency && w.lastPollAt !== undefined && Date.now() - w.lastPollAt.getTime() > staleMs) {
            throw new Error(`the ${w.kind} worker has not polled for ${Math.round((Date.now() - w.lastPollAt.getTime()) / 1000)} s`);
          }
        }
      },
    }),
  };
}

/** Resolves or rejects with the promise, or rejects with the signal's reason once it aborts. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(coerceError(e));
      },
    );
  });
}

/** The message the caller may see: a JobError's or AppError's own, a fixed text for anything else. */
function publicMessage(error: unknown): string {
  let message: string;
  if (error instanceof JobError || error instanceof JobAbort) message = error.message;
  else if (isAppError(error)) message = error.detail;
  else message = JOB_INTERNAL_ERROR;
  // eslint-disable-next-line no-control-regex
  const clean = message.replace(/\u0000/g, '');
  return Array.from(clean.slice(0, 2 * JOB_ERROR_MAX_CHARS)).slice(0, JOB_ERROR_MAX_CHARS).join('');
}

function positiveInt(name: string, value: number, min = 1): void {
  if (!Number.isInteger(value) || value < min) throw new RangeError(`job queue ${name} must be an integer ≥ ${min}, got ${value}`);
}

function createJobMetrics(registry: Registry) {
  const finished = new Counter({
    name: 'loanbook_jobs_total',
    help: 'Job attempts by kind and outcome (succeeded, retried, failed, cancelled, superseded)',
    labelNames: ['kind', 'outcome'] as const,
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'loanbook_job_duration_seconds',
    help: 'Job attempt duration by kind and outcome',
    labelNames: ['kind', 'outcome'] as const,
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900],
    registers: [registry],
  });
  return {
    finished(kind: string, outcome: string, seconds: number) {
      finished.inc({ kind, outcome });
      duration.observe({ kind, outcome }, seconds);
    },
  };
}
