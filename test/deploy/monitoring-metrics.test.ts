/**
 * The metrics the alerts and dashboards need, read from a real database: the ledger's net
 * per currency (non-zero once an unbalanced line gets in around the triggers), the outbox
 * and job backlogs (equal to the rows), the loan book and its delinquency, end of day,
 * and readiness per component; and the sampler that bounds every scrape-time read.
 */
import { randomUUID } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LedgerDb } from '../../src/ledger/repository.js';
import { registerLedgerMetrics } from '../../src/ledger/metrics.js';
import { registerBacklogMetrics } from '../../src/platform/backlog-metrics.js';
import { createMetrics, createSampler, registerComponentMetrics, type Metrics } from '../../src/platform/metrics.js';
import { appendOutbox } from '../../src/platform/outbox.js';
import { registerBookMetrics } from '../../src/servicing/book-metrics.js';
import type { ServicingDb } from '../../src/servicing/repository.js';
import { createTestApp, type TestApp } from '../support/app.js';
import { dbTarget, silentLogger } from '../support/db.js';
import { parseMetrics, type Sample } from '../support/metrics.js';
import { bookLoan, createProduct, post, servicingDb, setBusinessDate } from '../support/servicing.js';

/** Every series of `name` as labels-JSON → value. */
function series(samples: readonly Sample[], name: string): Record<string, number> {
  return Object.fromEntries(samples.filter((s) => s.name === name).map((s) => [JSON.stringify(s.labels), s.value]));
}

const key = (labels: Record<string, string>) => JSON.stringify(labels);

let t: TestApp;
let admin: string;
/** A registry of its own whose samplers read on every scrape (maxAge 0), over the app's database. */
let fresh: Metrics;

async function scrape(metrics: Metrics = fresh): Promise<Sample[]> {
  return parseMetrics(await metrics.registry.metrics());
}

beforeAll(async () => {
  t = await createTestApp();
  admin = await t.adminToken();
  fresh = createMetrics();
  const db = t.db.database.db;
  registerBacklogMetrics(fresh, silentLogger, db, { jobKinds: () => ['test.idle'], maxAgeMs: 0 });
  registerLedgerMetrics(fresh, silentLogger, db as unknown as Kysely<LedgerDb>, { maxAgeMs: 0 });
  registerBookMetrics(fresh, silentLogger, db as unknown as Kysely<ServicingDb>, { maxAgeMs: 0 });
});
afterAll(async () => t?.close());

describe(`monitoring metrics (${dbTarget})`, () => {
  it('outbox: the pending gauge equals the unpublished rows, and the oldest age is theirs', async () => {
    const db = t.db.database.db;
    const before = series(await scrape(), 'loanbook_outbox_pending_events')[key({})] ?? -1;
    const pendingRows = async () => Number((await sql<{ n: bigint }>`select count(*)::bigint as n from outbox_events where published_at is null`.execute(db)).rows[0]!.n);
    expect(before).toBe(await pendingRows());
    const old = new Date(Date.now() - 600_000);
    await appendOutbox(db, [1, 2, 3].map((i) => ({ topic: 'test.event', aggregateType: 'test', aggregateId: String(i), payload: { i } })), old);
    let samples = await scrape();
    expect(series(samples, 'loanbook_outbox_pending_events')[key({})]).toBe(before + 3);
    expect(series(samples, 'loanbook_outbox_oldest_pending_age_seconds')[key({})]).toBeGreaterThanOrEqual(600);
    await sql`update outbox_events set published_at = now() where published_at is null`.execute(db);
    samples = await scrape();
    expect(series(samples, 'loanbook_outbox_pending_events')[key({})]).toBe(0);
    expect(series(samples, 'loanbook_outbox_oldest_pending_age_seconds')[key({})]).toBe(0);
  });

  it('jobs: queued and running per kind equal the rows; a handled kind with nothing to do shows 0', async () => {
    const db = t.db.database.db;
    const insert = (state: 'queued' | 'running', updatedAgoSeconds: number) =>
      sql`insert into jobs (id, kind, state, payload, attempts, max_attempts, started_at, updated_at)
          values (${randomUUID()}, 'test.busy', ${state}, '{}'::jsonb, ${state === 'running' ? 1 : 0}, 3,
                  ${state === 'running' ? sql`now()` : null}, now() - make_interval(secs => ${updatedAgoSeconds}))`.execute(db);
    await insert('queued', 120);
    await insert('queued', 5);
    await insert('running', 0);
    const samples = await scrape();
    expect(series(samples, 'loanbook_jobs_queued')).toEqual({ [key({ kind: 'test.busy' })]: 2, [key({ kind: 'test.idle' })]: 0 });
    expect(series(samples, 'loanbook_jobs_running')).toEqual({ [key({ kind: 'test.busy' })]: 1, [key({ kind: 'test.idle' })]: 0 });
    const age = series(samples, 'loanbook_jobs_oldest_queued_age_seconds');
    expect(age[key({ kind: 'test.busy' })]).toBeGreaterThanOrEqual(120);
    expect(age[key({ kind: 'test.busy' })]).toBeLessThan(3600);
    expect(age[key({ kind: 'test.idle' })]).toBe(0);
  });

  it('book and ledger: an active loan shows in the book; the ledger nets to 0 until a line gets in around the triggers', async () => {
    await setBusinessDate(t, '2026-01-15');
    const product = await createProduct(t, admin);
    const borrower = await t.userWithRole('borrower');
    const loan = await bookLoan(t, admin, { product_id: product.id, borrower_id: borrower.id, principal: '1200.00', annual_rate: '0.12', term: 12 });
    expect((await post(t, admin, `/v1/loans/${loan.id}/disbursements`, {})).statusCode).toBe(201);

    let samples = await scrape();
    expect(series(samples, 'loanbook_loans')[key({ status: 'active' })]).toBe(1);
    expect(series(samples, 'loanbook_loans')[key({ status: 'paid_off' })]).toBe(0);
    expect(series(samples, 'loanbook_loans_outstanding_minor')).toEqual({ [key({ currency: 'USD' })]: 120_000 });
    expect(series(samples, 'loanbook_loans_past_due')).toEqual({});
    expect(series(samples, 'loanbook_ledger_imbalance_minor')).toEqual({ [key({ currency: 'USD' })]: 0 });

    // Past due in a product bucket: the book gauges follow the loan row.
    await sql`update loans set days_past_due = 40, delinquency_bucket = '30-59' where id = ${loan.id}`.execute(servicingDb(t));
    samples = await scrape();
    expect(series(samples, 'loanbook_loans_past_due')).toEqual({ [key({ bucket: '30-59' })]: 1 });
    expect(series(samples, 'loanbook_loans_past_due_outstanding_minor')).toEqual({ [key({ currency: 'USD', bucket: '30-59' })]: 120_000 });

    // What a restore or a manual fix with the triggers disabled can leave behind: one line, no counterpart.
    const db = t.db.database.db;
    const entry = randomUUID();
    await db.transaction().execute(async (trx) => {
      await sql`alter table journal_lines disable trigger journal_lines_balanced`.execute(trx);
      await sql`alter table journal_entries disable trigger journal_entries_balanced`.execute(trx);
      await sql`insert into journal_entries (id, entry_date, description, source_type) values (${entry}, '2026-01-15', 'stray', 'test.stray')`.execute(trx);
      await sql`insert into journal_lines (entry_id, line_no, account_code, currency, amount) values (${entry}, 1, 'suspense', 'EUR', -1234)`.execute(trx);
      await sql`alter table journal_lines enable trigger journal_lines_balanced`.execute(trx);
      await sql`alter table journal_entries enable trigger journal_entries_balanced`.execute(trx);
    });
    samples = await scrape();
    expect(series(samples, 'loanbook_ledger_imbalance_minor')).toEqual({ [key({ currency: 'USD' })]: 0, [key({ currency: 'EUR' })]: -1234 });
  });

  it('end of day: the business date, the last success, a failed run, and the runs made in this process', async () => {
    await setBusinessDate(t, '2026-01-20');
    let samples = await scrape();
    expect(series(samples, 'loanbook_eod_business_date_timestamp_seconds')[key({})]).toBe(Date.parse('2026-01-20T00:00:00Z') / 1000);
    const run = await t.eod.run({ actorId: null });
    expect(run.status).toBe('completed');
    samples = await scrape();
    expect(series(samples, 'loanbook_eod_business_date_timestamp_seconds')[key({})]).toBe(Date.parse('2026-01-21T00:00:00Z') / 1000);
    expect(series(samples, 'loanbook_eod_last_success_timestamp_seconds')[key({})]).toBe((run.finishedAt as Date).getTime() / 1000);
    expect(series(samples, 'loanbook_eod_unfinished_runs')).toEqual({ [key({ status: 'running' })]: 0, [key({ status: 'failed' })]: 0 });
    // The counter lives on the app's own registry (the run was made by its EOD service).
    const own = await scrape(t.metrics);
    expect(series(own, 'loanbook_eod_runs_total')).toEqual({ [key({ outcome: 'completed' })]: 1 });
    expect(series(own, 'loanbook_eod_run_duration_seconds_count')).toEqual({ [key({ outcome: 'completed' })]: 1 });

    // A loan whose terms cannot be read makes the next run fail: recorded, and counted here.
    await sql`update loans set terms = '{}'::jsonb where status = 'active'`.execute(servicingDb(t));
    await expect(t.eod.run({ actorId: null })).rejects.toThrow();
    samples = await scrape();
    expect(series(samples, 'loanbook_eod_unfinished_runs')).toEqual({ [key({ status: 'running' })]: 0, [key({ status: 'failed' })]: 1 });
    expect(series(samples, 'loanbook_eod_business_date_timestamp_seconds')[key({})]).toBe(Date.parse('2026-01-21T00:00:00Z') / 1000);
    expect(series(await scrape(t.metrics), 'loanbook_eod_runs_total')).toEqual({ [key({ outcome: 'completed' })]: 1, [key({ outcome: 'failed' })]: 1 });
  });

  it('the app exports readiness per component: the database is up', async () => {
    const samples = await scrape(t.metrics);
    expect(series(samples, 'loanbook_component_up')[key({ component: 'database' })]).toBe(1);
  });
});

describe('component and sampler behaviour', () => {
  it('a failing readiness check reads 0, a passing one 1', async () => {
    const metrics = createMetrics();
    registerComponentMetrics(metrics, silentLogger, [
      { name: 'redis', critical: false, check: () => Promise.reject(new Error('connect ECONNREFUSED')) },
      { name: 'database', critical: true, check: () => Promise.resolve() },
    ]);
    expect(series(await scrape(metrics), 'loanbook_component_up')).toEqual({ [key({ component: 'redis' })]: 0, [key({ component: 'database' })]: 1 });
  });

  it('a slow read does not hold the scrape: the previous value is served while it finishes; failures are counted and keep the value', async () => {
    const metrics = createMetrics();
    let release: (v: number) => void = () => undefined;
    const reads: (() => Promise<number>)[] = [
      () => Promise.resolve(1),
      () => new Promise<number>((resolve) => (release = resolve)),
      () => Promise.reject(new Error('canceling statement due to statement timeout')),
    ];
    const sampler = createSampler(metrics, silentLogger, { name: 'unit', maxAgeMs: 0, waitMs: 20, read: () => reads.shift()!() });
    expect(await sampler.current()).toBe(1);
    expect(await sampler.current()).toBe(1); // the second read is still running
    release(2);
    await new Promise((r) => setTimeout(r, 0));
    expect(await sampler.current()).toBe(2); // the third read fails
    expect(series(await scrape(metrics), 'loanbook_metrics_sample_errors_total')).toEqual({ [key({ sampler: 'unit' })]: 1 });
  });
});
