/**
 * Gauges of the loan book and of end of day, sampled from the database (so every
 * process shows the same book, whichever process booked the loans or ran end of day),
 * plus the counters of end-of-day runs made in this process.
 *
 * The book is one grouped scan of `loans` at most once a minute; end of day reads one
 * row of `business_date` and the handful of `eod_runs` rows (one per date).
 */
import { sql, type Kysely } from 'kysely';
import { Counter, Histogram, type Registry } from 'prom-client';
import type { Logger } from '../platform/logger.js';
import { createSampler, readWithTimeout, registerSampledGauge, type Metrics } from '../platform/metrics.js';
import { LOAN_STATUSES } from './model.js';
import type { ServicingDb } from './repository.js';

export interface BookGroup {
  readonly status: string;
  readonly currency: string;
  /** The product's delinquency bucket name, or 'current'. */
  readonly bucket: string;
  readonly pastDue: boolean;
  readonly loans: number;
  /** Principal outstanding, minor units. */
  readonly outstanding: bigint;
}

export async function readBook(db: Kysely<ServicingDb>): Promise<BookGroup[]> {
  const r = await sql<{ status: string; currency: string; bucket: string; past_due: boolean; loans: bigint; outstanding: bigint }>`
    select status, currency, delinquency_bucket as bucket, days_past_due > 0 as past_due,
      count(*)::bigint as loans, coalesce(sum(principal_outstanding), 0)::bigint as outstanding
    from loans group by status, currency, delinquency_bucket, days_past_due > 0`.execute(db);
  return r.rows.map((row) => ({ status: row.status, currency: row.currency, bucket: row.bucket, pastDue: row.past_due, loans: Number(row.loans), outstanding: row.outstanding }));
}

export interface EodStatus {
  /** The open business date (the next to close), or null before anything used it. */
  readonly businessDate: string | null;
  readonly lastSuccessAt: Date | null;
  readonly running: number;
  readonly failed: number;
}

export async function readEodStatus(db: Kysely<ServicingDb>): Promise<EodStatus> {
  const r = await sql<{ business_date: string | null; last_success: Date | null; running: bigint; failed: bigint }>`
    select (select today from business_date) as business_date,
      (select max(finished_at) from eod_runs where status = 'completed') as last_success,
      (select count(*) from eod_runs where status = 'running')::bigint as running,
      (select count(*) from eod_runs where status = 'failed')::bigint as failed`.execute(db);
  const row = r.rows[0];
  return { businessDate: row?.business_date ?? null, lastSuccessAt: row?.last_success ?? null, running: Number(row?.running ?? 0n), failed: Number(row?.failed ?? 0n) };
}

/** Sums `value` of the groups into one series per key. */
function sumBy<K extends string>(groups: readonly BookGroup[], key: (g: BookGroup) => Record<K, string> | undefined, value: (g: BookGroup) => number): [Record<K, string>, number][] {
  const out = new Map<string, [Record<K, string>, number]>();
  for (const g of groups) {
    const labels = key(g);
    if (labels === undefined) continue;
    const id = JSON.stringify(labels);
    const [, total] = out.get(id) ?? [labels, 0];
    out.set(id, [labels, total + value(g)]);
  }
  return [...out.values()];
}

const minor = (v: bigint) => Number(v); // exact to 2^53 minor units; these gauges are for dashboards

export function registerBookMetrics(metrics: Metrics, logger: Logger, db: Kysely<ServicingDb>, options: { maxAgeMs?: number; statementTimeoutMs?: number } = {}): void {
  const timeout = options.statementTimeoutMs ?? 5000;
  const book = createSampler(metrics, logger, { name: 'book', maxAgeMs: options.maxAgeMs ?? 60_000, read: () => readWithTimeout(db, timeout, readBook) });
  const eod = createSampler(metrics, logger, { name: 'eod', maxAgeMs: options.maxAgeMs ?? 15_000, read: () => readWithTimeout(db, timeout, readEodStatus) });
  const { registry } = metrics;
  const active = (g: BookGroup) => g.status === 'active';
  registerSampledGauge(registry, book, {
    name: 'loanbook_loans',
    help: 'Loans by status',
    labelNames: ['status'] as const,
    values: (groups) => {
      const counts = new Map<string, number>(LOAN_STATUSES.map((s) => [s, 0]));
      for (const g of groups) counts.set(g.status, (counts.get(g.status) ?? 0) + g.loans);
      return [...counts].map(([status, n]) => [{ status }, n] as const);
    },
  });
  registerSampledGauge(registry, book, {
    name: 'loanbook_loans_outstanding_minor',
    help: 'Principal outstanding on active loans, by currency, in minor units',
    labelNames: ['currency'] as const,
    values: (groups) => sumBy(groups, (g) => (active(g) ? { currency: g.currency } : undefined), (g) => minor(g.outstanding)),
  });
  registerSampledGauge(registry, book, {
    name: 'loanbook_loans_past_due',
    help: 'Active loans past due, by delinquency bucket (the product\'s bucket names; "current" for loans past due but below the first bucket)',
    labelNames: ['bucket'] as const,
    values: (groups) => sumBy(groups, (g) => (active(g) && g.pastDue ? { bucket: g.bucket } : undefined), (g) => g.loans),
  });
  registerSampledGauge(registry, book, {
    name: 'loanbook_loans_past_due_outstanding_minor',
    help: 'Principal outstanding on active loans past due, by currency and delinquency bucket, in minor units',
    labelNames: ['currency', 'bucket'] as const,
    values: (groups) => sumBy(groups, (g) => (active(g) && g.pastDue ? { currency: g.currency, bucket: g.bucket } : undefined), (g) => minor(g.outstanding)),
  });
  registerSampledGauge(registry, eod, {
    name: 'loanbook_eod_business_date_timestamp_seconds',
    help: 'The open business date (the next end of day closes it), as the Unix time of its 00:00 UTC',
    values: (s) => (s.businessDate === null ? [] : [[{}, Date.parse(`${s.businessDate}T00:00:00Z`) / 1000]]),
  });
  registerSampledGauge(registry, eod, {
    name: 'loanbook_eod_last_success_timestamp_seconds',
    help: 'When the last end-of-day run completed (Unix time); absent before the first',
    values: (s) => (s.lastSuccessAt === null ? [] : [[{}, s.lastSuccessAt.getTime() / 1000]]),
  });
  registerSampledGauge(registry, eod, {
    name: 'loanbook_eod_unfinished_runs',
    help: 'End-of-day runs not completed, by status: running, or failed and not yet resumed',
    labelNames: ['status'] as const,
    values: (s) => [
      [{ status: 'running' }, s.running],
      [{ status: 'failed' }, s.failed],
    ],
  });
}

/** Counts and times the end-of-day runs this process makes (EodDeps.onRun). */
export function createEodMetrics(registry: Registry): (outcome: 'completed' | 'failed', seconds: number) => void {
  const runs = new Counter({
    name: 'loanbook_eod_runs_total',
    help: 'End-of-day runs processed in this process, by outcome (completed, failed)',
    labelNames: ['outcome'] as const,
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'loanbook_eod_run_duration_seconds',
    help: 'End-of-day run processing time, by outcome',
    labelNames: ['outcome'] as const,
    buckets: [0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600],
    registers: [registry],
  });
  return (outcome, seconds) => {
    runs.inc({ outcome });
    duration.observe({ outcome }, seconds);
  };
}
