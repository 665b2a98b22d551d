/**
 * Backlog gauges from the platform's own tables: the outbox (events not yet published)
 * and the job queue (jobs waiting and running, by kind). Both queries read only the
 * unfinished rows through their partial indexes (outbox_events_unpublished,
 * jobs_unfinished), so they stay cheap while the relay and the workers keep up, and are
 * bounded by a statement timeout when they do not.
 */
import { sql, type Kysely } from 'kysely';
import type { Logger } from './logger.js';
import { createSampler, readWithTimeout, registerSampledGauge, type Metrics } from './metrics.js';
import { platformView, type PlatformTables } from './schema.js';

export interface OutboxBacklog {
  readonly pending: number;
  /** Seconds since the oldest unpublished event occurred; 0 when none is pending. */
  readonly oldestAgeSeconds: number;
}

export interface JobBacklog {
  readonly kind: string;
  readonly queued: number;
  readonly running: number;
  /** Seconds the longest-waiting queued job has been waiting (since it was queued or requeued); 0 when none. */
  readonly oldestQueuedAgeSeconds: number;
}

export interface Backlogs {
  readonly outbox: OutboxBacklog;
  readonly jobs: readonly JobBacklog[];
}

export async function readBacklogs<DB extends PlatformTables>(db: Kysely<DB>): Promise<Backlogs> {
  const pdb = platformView(db);
  const outbox = await sql<{ pending: bigint; oldest: number | null }>`
    select count(*)::bigint as pending, extract(epoch from now() - min(occurred_at))::float8 as oldest
    from outbox_events where published_at is null`.execute(pdb);
  const jobs = await sql<{ kind: string; queued: bigint; running: bigint; oldest: number | null }>`
    select kind,
      count(*) filter (where state = 'queued')::bigint as queued,
      count(*) filter (where state = 'running')::bigint as running,
      extract(epoch from now() - min(updated_at) filter (where state = 'queued'))::float8 as oldest
    from jobs where state in ('queued', 'running') group by kind`.execute(pdb);
  const o = outbox.rows[0];
  return {
    outbox: { pending: Number(o?.pending ?? 0n), oldestAgeSeconds: Math.max(0, o?.oldest ?? 0) },
    jobs: jobs.rows.map((r) => ({ kind: r.kind, queued: Number(r.queued), running: Number(r.running), oldestQueuedAgeSeconds: Math.max(0, r.oldest ?? 0) })),
  };
}

export interface BacklogMetricsOptions {
  /**
   * Kinds exported at 0 when nothing of theirs is unfinished (the kinds this process
   * handles), so a quiet queue shows 0 rather than no data. Kinds seen once stay too.
   */
  readonly jobKinds: () => readonly string[];
  /** Default 15 s. */
  readonly maxAgeMs?: number;
  /** Default 2 s. */
  readonly statementTimeoutMs?: number;
}

export function registerBacklogMetrics<DB extends PlatformTables>(metrics: Metrics, logger: Logger, db: Kysely<DB>, options: BacklogMetricsOptions): void {
  const timeout = options.statementTimeoutMs ?? 2000;
  const sampler = createSampler(metrics, logger, { name: 'backlogs', maxAgeMs: options.maxAgeMs ?? 15_000, read: () => readWithTimeout(db, timeout, readBacklogs) });
  const seen = new Set<string>();
  /** Every kind to export: the ones handled here, the ones seen, and the sample's. */
  const byKind = (sample: Backlogs): JobBacklog[] => {
    for (const k of options.jobKinds()) seen.add(k);
    for (const j of sample.jobs) seen.add(j.kind);
    const rows = new Map(sample.jobs.map((j) => [j.kind, j]));
    return [...seen].sort().map((kind) => rows.get(kind) ?? { kind, queued: 0, running: 0, oldestQueuedAgeSeconds: 0 });
  };
  const { registry } = metrics;
  registerSampledGauge(registry, sampler, {
    name: 'loanbook_outbox_pending_events',
    help: 'Outbox events not yet published',
    values: (s) => [[{}, s.outbox.pending]],
  });
  registerSampledGauge(registry, sampler, {
    name: 'loanbook_outbox_oldest_pending_age_seconds',
    help: 'Age of the oldest unpublished outbox event (0 when none is pending)',
    values: (s) => [[{}, s.outbox.oldestAgeSeconds]],
  });
  registerSampledGauge(registry, sampler, {
    name: 'loanbook_jobs_queued',
    help: 'Jobs waiting for a worker, by kind',
    labelNames: ['kind'] as const,
    values: (s) => byKind(s).map((j) => [{ kind: j.kind }, j.queued] as const),
  });
  registerSampledGauge(registry, sampler, {
    name: 'loanbook_jobs_running',
    help: 'Jobs a worker is running, by kind',
    labelNames: ['kind'] as const,
    values: (s) => byKind(s).map((j) => [{ kind: j.kind }, j.running] as const),
  });
  registerSampledGauge(registry, sampler, {
    name: 'loanbook_jobs_oldest_queued_age_seconds',
    help: 'How long the longest-waiting queued job has waited, by kind (0 when none is queued)',
    labelNames: ['kind'] as const,
    values: (s) => byKind(s).map((j) => [{ kind: j.kind }, j.oldestQueuedAgeSeconds] as const),
  });
}
