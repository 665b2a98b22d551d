/**
 * The job queue (src/platform/jobs.ts) on the real database, pg-boss included, seen
 * through GET /v1/jobs/{id} where it matters: a job's life from queued to succeeded with
 * its progress and result, retries ending in a failure whose message is safe to show,
 * visibility (the creator and admins; everyone else the same 404 as a missing job), the
 * per-kind concurrency limit, cancellation, a graceful stop that waits for the job in
 * flight (and, past its grace, requeues it), and (PostgreSQL) two workers over one
 * database running each job exactly once. No test asserts on elapsed time: waits poll
 * with a bound.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AppDatabase } from '../../src/app.js';
import { registerJobHandlers, type JobModule } from '../../src/job-handlers.js';
import { openDatabase } from '../../src/platform/database.js';
import {
  JOB_EXPIRED,
  JOB_INTERNAL_ERROR,
  JOB_RELEASED,
  JobError,
  createJobQueue,
  type JobQueue,
  type JobState,
} from '../../src/platform/jobs.js';
import { bearer, createTestApp, problemOf, type TestApp } from '../support/app.js';
import { createTestDatabase, dbTarget, isPostgres, silentLogger, testDbOptions, type TestDatabase } from '../support/db.js';

/** Short polls and immediate retries, so the tests run in well under a second per job. */
const FAST = { pollIntervalMs: 20, retryDelaySeconds: 0, retryBackoff: false, progressIntervalMs: 50 } as const;

interface Gate {
  readonly promise: Promise<void>;
  open(): void;
}

const gates = new Map<string, Gate>();
/** A named gate handlers wait on until the test opens it. */
function gate(name: string): Gate {
  let g = gates.get(name);
  if (!g) {
    let open!: () => void;
    const promise = new Promise<void>((resolve) => (open = resolve));
    g = { promise, open };
    gates.set(name, g);
  }
  return g;
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(15);
  }
}

type JobBody = Record<string, unknown> & { state: JobState; progress: number };

describe(`job queue (${dbTarget})`, () => {
  let tdb: TestDatabase;
  let queue: JobQueue;
  let t: TestApp;
  let owner: { id: string; token: string };
  let other: { id: string; token: string };
  let adminToken: string;

  /** Handler runs per job id. */
  const executions = new Map<string, number>();
  const ran = (id: string) => executions.set(id, (executions.get(id) ?? 0) + 1);
  let gatedInFlight = 0;
  let gatedMaxInFlight = 0;
  const abortsSeen = new Set<string>();

  const testJobs: JobModule = {
    name: 'test',
    register(q) {
      q.work(
        'test.gated',
        async (job) => {
          ran(job.id);
          gatedInFlight++;
          gatedMaxInFlight = Math.max(gatedMaxInFlight, gatedInFlight);
          try {
            await gate(String(job.payload.gate)).promise;
            return { n: job.payload.n };
          } finally {
            gatedInFlight--;
          }
        },
        { concurrency: 2 },
      );
      q.work('test.failing', async (job) => {
        ran(job.id);
        throw new JobError(`the pool is empty (attempt ${job.attempt})`);
      });
      q.work('test.crashing', async (job) => {
        ran(job.id);
        throw new Error('connect ECONNREFUSED 10.1.2.3:5432 (user=loanbook password=hunter2)');
      });
      q.work('test.invalid', async (job) => {
        ran(job.id);
        throw new JobError('the scenario does not exist', { retryable: false });
      });
      q.work('test.cyclic', async (job) => {
        ran(job.id);
        const result: Record<string, unknown> = { n: 1 };
        result.self = result;
        return result;
      });
      q.work('test.flaky', async (job) => {
        ran(job.id);
        if (job.attempt === 1) throw new JobError('try again');
        return { attempt: job.attempt };
      });
      q.work('test.progress', async (job) => {
        ran(job.id);
        // Faster than the throttle: most of these are not written, the last one is.
        for (let i = 1; i <= 9; i++) await job.progress(i / 10);
        await gate(String(job.payload.gate)).promise;
        return null;
      });
      q.work('test.cancellable', async (job) => {
        ran(job.id);
        // Reports progress until told to stop; a cancel from any process shows up here.
        while (!job.signal.aborted) {
          await job.progress(0.25);
          await sleep(10);
        }
        abortsSeen.add(job.id);
        return 'too late';
      });
    },
  };

  beforeAll(async () => {
    tdb = await createTestDatabase();
    queue = createJobQueue({ database: tdb.database, logger: silentLogger, concurrency: 4, ...FAST });
    t = await createTestApp({ db: tdb, jobs: queue });
    registerJobHandlers(queue, { app: t, config: t.config, logger: silentLogger }, [testJobs]);
    await queue.start();
    owner = await t.userWithRole('analyst');
    other = await t.userWithRole('analyst');
    adminToken = await t.adminToken();
  });
  afterAll(async () => {
    for (const g of gates.values()) g.open();
    await queue?.stop({ graceMs: 5_000 });
    await t?.close();
    await tdb?.destroy();
  });

  const get = (id: string, token: string) => t.app.inject({ method: 'GET', url: `/v1/jobs/${id}`, headers: bearer(token) });
  const body = async (id: string, token = owner.token) => (await get(id, token)).json<JobBody>();
  const until = (id: string, what: string, ok: (b: JobBody) => boolean) =>
    waitFor(what, async () => {
      const b = await body(id);
      return ok(b) ? b : undefined;
    });

  it('a job goes queued → running (its progress visible) → succeeded with its result, as GET /v1/jobs/{id} shows', async () => {
    // Sent before its kind has a worker, so "queued" is observed, not raced.
    const { id } = await queue.send('test.later', { gate: 'later', amount: 12_345_678_901_234_567_890n }, { createdBy: owner.id });
    const queued = await get(id, owner.token);
    expect(queued.statusCode).toBe(200);
    expect(queued.json()).toStrictEqual({
      id,
      kind: 'test.later',
      state: 'queued',
      progress: 0,
      attempts: 0,
      max_attempts: 3,
      created_at: expect.any(String) as string,
      started_at: null,
      finished_at: null,
      error: null,
    });

    queue.work('test.later', async (job) => {
      ran(job.id);
      await job.progress(0.5);
      await gate(String(job.payload.gate)).promise;
      return { amount: job.payload.amount, attempt: job.attempt };
    });
    const running = await until(id, 'running at 0.5', (b) => b.state === 'running' && b.progress === 0.5);
    expect(running).toMatchObject({ attempts: 1, started_at: expect.any(String) as string, finished_at: null, error: null });
    expect(running).not.toHaveProperty('result');

    gate('later').open();
    const done = await until(id, 'succeeded', (b) => b.state === 'succeeded');
    expect(done).toStrictEqual({
      ...running,
      state: 'succeeded',
      progress: 1,
      finished_at: expect.any(String) as string,
      // The payload's bigint went through canonical JSON: a decimal string.
      result: { amount: '12345678901234567890', attempt: 1 },
    });
    expect(Date.parse(done.finished_at as string)).toBeGreaterThanOrEqual(Date.parse(done.started_at as string));
    expect(executions.get(id)).toBe(1);
    expect((await queue.get(id))?.payload).toStrictEqual({ gate: 'later', amount: '12345678901234567890' });
  });

  it('a failing handler is retried; after the last attempt the job is failed, showing the last error and no result', async () => {
    const { id } = await queue.send('test.failing', {}, { createdBy: owner.id });
    const failed = await until(id, 'failed', (b) => b.state === 'failed');
    expect(failed).toMatchObject({ attempts: 3, max_attempts: 3, error: 'the pool is empty (attempt 3)', finished_at: expect.any(String) as string });
    expect(failed).not.toHaveProperty('result');
    expect(executions.get(id)).toBe(3);
  });

  it('an unexpected error is shown as a fixed message: its text (hosts, credentials) stays in the worker log', async () => {
    const { id } = await queue.send('test.crashing', {}, { createdBy: owner.id });
    await until(id, 'failed', (b) => b.state === 'failed');
    const res = await get(id, owner.token);
    expect(res.json()).toMatchObject({ state: 'failed', attempts: 3, error: JOB_INTERNAL_ERROR });
    expect(res.body).not.toMatch(/hunter2|10\.1\.2\.3|ECONNREFUSED|at .*\.ts:\d+/);
  });

  it('a result that cannot be stored as JSON fails the attempt like any other internal error', async () => {
    const { id } = await queue.send('test.cyclic', {}, { createdBy: owner.id });
    const failed = await until(id, 'failed', (b) => b.state === 'failed');
    expect(failed).toMatchObject({ attempts: 3, error: JOB_INTERNAL_ERROR });
    expect(failed).not.toHaveProperty('result');
  });

  it('a job that fails on its first attempt and succeeds on the next ends succeeded, with no error left', async () => {
    const { id } = await queue.send('test.flaky', {}, { createdBy: owner.id });
    const done = await until(id, 'succeeded', (b) => b.state === 'succeeded');
    expect(done).toMatchObject({ attempts: 2, error: null, result: { attempt: 2 } });
    expect(executions.get(id)).toBe(2);
  });

  it('a JobError that is not retryable ends the job after one attempt, and pg-boss will not run it again', async () => {
    const { id } = await queue.send('test.invalid', {}, { createdBy: owner.id });
    const failed = await until(id, 'failed', (b) => b.state === 'failed');
    expect(failed).toMatchObject({ attempts: 1, max_attempts: 3, error: 'the scenario does not exist' });
    const { rows } = await sql<{ state: string }>`select state::text as state from pgboss.job where id = ${id}`.execute(tdb.database.db);
    expect(rows).toStrictEqual([{ state: 'cancelled' }]);
    expect(executions.get(id)).toBe(1);
  });

  it("another user's job is a 404 identical to a job that does not exist; the creator and admins see it", async () => {
    const { id } = await queue.send('test.flaky', {}, { createdBy: owner.id });
    const theirs = await get(id, other.token);
    const missing = await get(randomUUID(), other.token);
    expect(theirs.statusCode).toBe(404);
    expect(missing.statusCode).toBe(404);
    expect(problemOf(theirs)).toStrictEqual(problemOf(missing));
    expect(problemOf(missing)).toMatchObject({ status: 404, code: 'job_not_found' });

    expect((await get(id, owner.token)).statusCode).toBe(200);
    expect((await get(id, adminToken)).statusCode).toBe(200);
    expect((await t.app.inject({ method: 'GET', url: `/v1/jobs/${id}` })).statusCode).toBe(401);
    expect((await get('not-a-uuid', owner.token)).statusCode).toBe(400);

    // A system job (no creator) is for admins only.
    const system = await queue.send('test.flaky', {}, { createdBy: null });
    expect((await get(system.id, owner.token)).statusCode).toBe(404);
    expect((await get(system.id, adminToken)).statusCode).toBe(200);
  });

  it('no more jobs of a kind run at once than its concurrency; the rest wait queued and run as slots free', async () => {
    const ids: string[] = [];
    for (let n = 0; n < 5; n++) ids.push((await queue.send('test.gated', { gate: 'concurrency', n }, { createdBy: owner.id })).id);
    await waitFor('two gated jobs running', () => (gatedInFlight === 2 ? true : undefined));
    // Many poll intervals: a worker that ignored its limit would have started more by now.
    await sleep(300);
    expect(gatedInFlight).toBe(2);
    const states = await Promise.all(ids.map(async (id) => (await queue.get(id))!.state));
    expect(states.filter((s) => s === 'running')).toHaveLength(2);
    expect(states.filter((s) => s === 'queued')).toHaveLength(3);

    gate('concurrency').open();
    for (const [n, id] of ids.entries()) expect(await until(id, `job ${n} succeeded`, (b) => b.state === 'succeeded')).toMatchObject({ result: { n } });
    expect(gatedMaxInFlight).toBe(2);
    for (const id of ids) expect(executions.get(id)).toBe(1);
  });

  it('the last progress reported is written even when reports come faster than the throttle', async () => {
    const { id } = await queue.send('test.progress', { gate: 'progress' }, { createdBy: owner.id });
    expect(await until(id, 'progress 0.9', (b) => b.progress === 0.9)).toMatchObject({ state: 'running' });
    gate('progress').open();
    expect(await until(id, 'succeeded', (b) => b.state === 'succeeded')).toMatchObject({ progress: 1, result: null });
  });

  it('a queued job that is cancelled never runs; a running one sees its signal abort and stays cancelled', async () => {
    const queuedJob = await queue.send('test.nobody', {}, { createdBy: owner.id });
    expect(await queue.cancel(queuedJob.id)).toBe(true);
    expect(await queue.cancel(queuedJob.id)).toBe(false);
    expect(await body(queuedJob.id)).toMatchObject({ state: 'cancelled', attempts: 0, finished_at: expect.any(String) as string });

    const { id } = await queue.send('test.cancellable', {}, { createdBy: owner.id });
    await until(id, 'running', (b) => b.state === 'running' && b.progress === 0.25);
    expect(await queue.cancel(id)).toBe(true);
    await waitFor('the handler to see the abort', () => (abortsSeen.has(id) ? true : undefined));
    // Its return value after the abort is not recorded.
    const cancelled = await body(id);
    expect(cancelled).toMatchObject({ state: 'cancelled', attempts: 1, error: null });
    expect(cancelled).not.toHaveProperty('result');
    expect(executions.get(id)).toBe(1);
  });

  it("the queue's health is part of readiness, not critical; a stopped queue reports why", async () => {
    const ready = await t.app.inject({ method: 'GET', url: '/health/ready' });
    expect(ready.statusCode).toBe(200);
    expect(ready.json<{ components: Record<string, unknown> }>().components.jobs).toMatchObject({ status: 'ok', critical: false });

    const idle = createJobQueue({ database: tdb.database, logger: silentLogger, concurrency: 1, ...FAST });
    await expect(idle.healthCheck().check()).rejects.toThrow('the job queue is not running');
    await expect(idle.send('test.flaky', {}, { createdBy: null })).rejects.toThrow('not started');
  });

  it('send refuses a malformed kind or a payload that is not an object', async () => {
    await expect(queue.send('Not A Kind', {}, { createdBy: null })).rejects.toThrow(/job kind "Not A Kind" must match/);
    await expect(queue.send('test.flaky', [] as unknown as Record<string, unknown>, { createdBy: null })).rejects.toThrow('a job payload must be a JSON object');
  });

  describe('stop', () => {
    it('waits for the job in flight to finish and records its result', async () => {
      const q = createJobQueue({ database: tdb.database, logger: silentLogger, concurrency: 1, ...FAST });
      let started = 0;
      q.work('test.stoppable', async (job) => {
        started++;
        await gate(String(job.payload.gate)).promise;
        return { finished: true };
      });
      await q.start();
      const { id } = await q.send('test.stoppable', { gate: 'stop' }, { createdBy: owner.id });
      await waitFor('the job to start', () => (started === 1 ? true : undefined));

      let stopped = false;
      const stopping = q.stop({ graceMs: 60_000 }).then(() => (stopped = true));
      await sleep(200);
      expect(stopped).toBe(false);
      expect((await queue.get(id))?.state).toBe('running');

      gate('stop').open();
      await stopping;
      expect(await queue.get(id)).toMatchObject({ state: 'succeeded', result: { finished: true }, attempts: 1 });
      await expect(q.healthCheck().check()).rejects.toThrow('the job queue is not running');
    });

    it('past its grace period, aborts the job and puts it back in the queue; another worker then runs it', async () => {
      const first = createJobQueue({ database: tdb.database, logger: silentLogger, concurrency: 1, ...FAST });
      let aborted = false;
      first.work('test.stubborn', async (job) => {
        await new Promise<void>((resolve) => job.signal.addEventListener('abort', () => resolve()));
        aborted = true;
        return { from: 'first' };
      });
      await first.start();
      const { id } = await first.send('test.stubborn', {}, { createdBy: owner.id });
      await until(id, 'running', (b) => b.state === 'running');
      await first.stop({ graceMs: 50 });
      expect(aborted).toBe(true);
      expect(await body(id)).toMatchObject({ state: 'queued', attempts: 1, error: JOB_RELEASED, finished_at: null });

      const second = createJobQueue({ database: tdb.database, logger: silentLogger, concurrency: 1, ...FAST });
      second.work('test.stubborn', async (job) => ({ from: 'second', attempt: job.attempt }));
      await second.start();
      try {
        expect(await until(id, 'succeeded', (b) => b.state === 'succeeded')).toMatchObject({ attempts: 2, error: null, result: { from: 'second', attempt: 2 } });
      } finally {
        await second.stop();
      }
    });
  });

  it('a running job whose attempt pg-boss expired (its worker stopped responding) is reconciled; a late outcome changes nothing', async () => {
    const q = createJobQueue({ database: tdb.database, logger: silentLogger, concurrency: 1, ...FAST, sweepIntervalMs: 20 });
    q.work('test.zombie', async (job) => {
      await gate(String(job.payload.gate)).promise;
      return { late: true };
    });
    await q.start();
    try {
      const { id } = await q.send('test.zombie', { gate: 'zombie' }, { createdBy: owner.id });
      await until(id, 'running', (b) => b.state === 'running');
      // What pg-boss's maintenance does to an attempt past its expiry when no retry is left.
      await sql`update pgboss.job set state = 'failed', completed_on = now() where id = ${id}`.execute(tdb.database.db);
      const failed = await until(id, 'reconciled', (b) => b.state === 'failed');
      expect(failed).toMatchObject({ attempts: 1, error: JOB_EXPIRED, finished_at: expect.any(String) as string });

      gate('zombie').open();
      await q.stop();
      expect(await body(id)).toStrictEqual(failed);
    } finally {
      await q.stop();
    }
  });

  describe.runIf(isPostgres)('two workers over one database (PostgreSQL: real concurrent sessions)', () => {
    it('run each job exactly once', async () => {
      const databases = [await openDatabase<AppDatabase>(tdb.target, testDbOptions, silentLogger), await openDatabase<AppDatabase>(tdb.target, testDbOptions, silentLogger)];
      const runs = new Map<string, number>();
      const perWorker = [0, 0];
      const workers = databases.map((database, w) => {
        const q = createJobQueue({ database, logger: silentLogger, concurrency: 3, ...FAST });
        q.work('test.counted', async (job) => {
          runs.set(job.id, (runs.get(job.id) ?? 0) + 1);
          perWorker[w]!++;
          await sleep(2);
          return { worker: w };
        });
        return q;
      });
      try {
        await Promise.all(workers.map((q) => q.start()));
        const ids: string[] = [];
        for (let n = 0; n < 60; n++) ids.push((await queue.send('test.counted', { n }, { createdBy: null })).id);
        await waitFor('every counted job to succeed', async () => {
          const { rows } = await sql<{ n: number }>`select count(*)::int as n from jobs where kind = 'test.counted' and state = 'succeeded'`.execute(tdb.database.db);
          return rows[0]!.n === ids.length ? true : undefined;
        });
        expect(runs.size).toBe(ids.length);
        expect([...runs.values()].filter((n) => n !== 1)).toStrictEqual([]);
        expect(perWorker[0]! + perWorker[1]!).toBe(ids.length);
        const attempts = await sql<{ attempts: number }>`select distinct attempts from jobs where kind = 'test.counted'`.execute(tdb.database.db);
        expect(attempts.rows).toStrictEqual([{ attempts: 1 }]);
      } finally {
        await Promise.all(workers.map((q) => q.stop()));
        await Promise.all(databases.map((d) => d.close()));
      }
    });
  });
});
