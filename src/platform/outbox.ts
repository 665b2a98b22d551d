/**
 * The transactional outbox (migrations/0004_outbox.sql). `appendOutbox` inserts events
 * in the caller's transaction, so they commit or roll back with the change they
 * announce. A relay claims unpublished rows in id order (`FOR UPDATE SKIP LOCKED`, so
 * several relays never claim the same row), hands each to `publish` and marks it
 * published in the same transaction. Delivery is at least once: a crash or a failed
 * commit after `publish` returned sends the event again, so consumers deduplicate on
 * `eventId`. Order is kept within a batch; relays running side by side publish their
 * batches in parallel, so across batches only "each event after its batch's earlier
 * ones" holds. After a drain whose publish failed the loop waits longer each time
 * (doubling, capped), so a broker outage costs a retry every few seconds, not a warning
 * per poll.
 */
import { randomUUID } from 'node:crypto';
import type { Kysely, Transaction } from 'kysely';
import { Counter, type Registry } from 'prom-client';
import { canonicalJson } from './canonical-json.js';
import { coerceError } from './errors.js';
import type { HealthCheck } from './health.js';
import type { Logger } from './logger.js';
import { platformView, type PlatformTables } from './schema.js';

/**
 * A database or a transaction. Transaction is named as well because TypeScript does not
 * infer DB from a Transaction<AppDatabase> passed as Kysely<DB>.
 */
export type OutboxExecutor<DB> = Kysely<DB> | Transaction<DB>;

/** An event to append. `payload` is stored as canonical JSON: bigint becomes a decimal string, Date an ISO string. */
export interface OutboxEvent {
  /** Lower-case, dot-separated: 'loan.disbursed', 'payment.posted'. */
  readonly topic: string;
  readonly aggregateType: string;
  readonly aggregateId: string;
  readonly payload: Record<string, unknown>;
}

/** An event as stored, and as handed to `publish`. */
export interface OutboxMessage {
  /** Publication order. */
  readonly id: bigint;
  /** Unique per event: what consumers deduplicate on. */
  readonly eventId: string;
  readonly topic: string;
  readonly aggregateType: string;
  readonly aggregateId: string;
  /** The payload as read back from JSON (bigint values are decimal strings). */
  readonly payload: Record<string, unknown>;
  readonly occurredAt: Date;
  /** Failed publish attempts so far. */
  readonly attempts: number;
}

/**
 * Where a relay sends events: a broker (src/platform/events-nats.ts) or the log
 * (src/platform/event-relay.ts). `publish` resolves once the destination has the event
 * durably and throws otherwise; it must not use the relay's database (see OutboxRelayDeps).
 */
export interface EventSink {
  /** Names the destination in logs: 'nats', 'log'. */
  readonly kind: string;
  /** Begins connecting; resolves after the first attempt, whether or not it succeeded. Never throws. */
  start(): Promise<void>;
  publish(event: OutboxMessage): Promise<void>;
  /** Present when the sink depends on a service outside the process. */
  readonly healthCheck?: HealthCheck;
  /** Releases connections; publishes still waiting fail. */
  close(): Promise<void>;
}

export interface OutboxRecord extends OutboxMessage {
  readonly publishedAt: Date | null;
  readonly lastError: string | null;
}

export const OUTBOX_TOPIC = /^[a-z][a-z0-9_.]*$/;
/** last_error keeps this many characters of the failure's message. */
export const OUTBOX_ERROR_MAX_CHARS = 500;

/**
 * Appends one event or several, in order. Pass the transaction that makes the change
 * so both commit together; a plain Kysely instance commits the events on their own.
 * `occurredAt` is `now` when given, else the database's transaction time. Returns the
 * event ids (UUIDs), in the order given.
 */
export async function appendOutbox<DB extends PlatformTables>(
  executor: OutboxExecutor<DB>,
  events: OutboxEvent | readonly OutboxEvent[],
  now?: Date,
): Promise<string[]> {
  const list: readonly OutboxEvent[] = isEventList(events) ? events : [events];
  if (list.length === 0) return [];
  for (const e of list) {
    if (!OUTBOX_TOPIC.test(e.topic)) throw new Error(`outbox topic "${e.topic}" must match ${String(OUTBOX_TOPIC)}`);
  }
  const rows = list.map((e) => ({
    event_id: randomUUID(),
    topic: e.topic,
    aggregate_type: e.aggregateType,
    aggregate_id: e.aggregateId,
    // JSON.stringify throws on a bigint; canonical JSON writes it as a decimal string.
    payload: canonicalJson(e.payload),
    ...(now === undefined ? {} : { occurred_at: now }),
  }));
  // One statement: identity values follow the VALUES order, so ids follow the list.
  await platformView(executor).insertInto('outbox_events').values(rows).execute();
  return rows.map((r) => r.event_id);
}

function isEventList(events: OutboxEvent | readonly OutboxEvent[]): events is readonly OutboxEvent[] {
  return Array.isArray(events);
}

export interface OutboxFilter {
  readonly aggregateType?: string;
  readonly aggregateId?: string;
  readonly topic?: string;
  readonly limit: number;
}

/** Events in id order, published or not, optionally of one aggregate or topic. */
export async function listOutbox<DB extends PlatformTables>(executor: OutboxExecutor<DB>, filter: OutboxFilter): Promise<OutboxRecord[]> {
  let query = platformView(executor).selectFrom('outbox_events').selectAll();
  if (filter.aggregateType !== undefined) query = query.where('aggregate_type', '=', filter.aggregateType);
  if (filter.aggregateId !== undefined) query = query.where('aggregate_id', '=', filter.aggregateId);
  if (filter.topic !== undefined) query = query.where('topic', '=', filter.topic);
  const rows = await query.orderBy('id').limit(filter.limit).execute();
  return rows.map((r) => ({ ...toMessage(r), publishedAt: r.published_at, lastError: r.last_error }));
}

interface MessageRow {
  id: bigint;
  event_id: string;
  topic: string;
  aggregate_type: string;
  aggregate_id: string;
  payload: Record<string, unknown>;
  occurred_at: Date;
  attempts: number;
}

function toMessage(r: MessageRow): OutboxMessage {
  return {
    id: r.id,
    eventId: r.event_id,
    topic: r.topic,
    aggregateType: r.aggregate_type,
    aggregateId: r.aggregate_id,
    payload: r.payload,
    occurredAt: r.occurred_at,
    attempts: r.attempts,
  };
}

export interface OutboxRelayDeps<DB extends PlatformTables> {
  readonly db: Kysely<DB>;
  readonly logger: Logger;
  /**
   * Sends one event (broker, webhook, in-process subscribers); throws to fail it. It runs
   * inside the claiming transaction: on PGlite (one connection) it must not use the same
   * database, and a publish that never settles holds the batch, and `stop()`, with it.
   */
  readonly publish: (event: OutboxMessage) => Promise<void>;
  /** Events claimed per transaction (default 100). */
  readonly batchSize?: number;
  /** Wait between drains that found less than a full batch (default 1000 ms). */
  readonly pollIntervalMs?: number;
  /** Longest wait after consecutive drains whose publish failed (default 10000 ms; never below pollIntervalMs). */
  readonly maxBackoffMs?: number;
  /** Where loanbook_outbox_published_total and loanbook_outbox_publish_failures_total are registered. */
  readonly registry?: Registry;
  /** Sets published_at (default: the system clock). */
  readonly clock?: () => Date;
}

export interface OutboxRelay {
  /** Drains in a loop until `stop()`: again at once after a full batch, else after pollIntervalMs (backing off while drains fail). */
  start(): void;
  /** Ends the loop and waits for batches in progress (the loop's and any drainOnce) to finish. */
  stop(): Promise<void>;
  /** One batch: claims, publishes in id order up to the first failure, marks. Returns how many were published. */
  drainOnce(): Promise<number>;
}

interface LoopState {
  stopped: boolean;
  timer: NodeJS.Timeout | undefined;
  wake: (() => void) | undefined;
  done: Promise<void>;
}

export function createOutboxRelay<DB extends PlatformTables>(deps: OutboxRelayDeps<DB>): OutboxRelay {
  const db = platformView(deps.db);
  const logger = deps.logger.child({ component: 'outbox_relay' });
  const { publish } = deps;
  const batchSize = deps.batchSize ?? 100;
  const pollIntervalMs = deps.pollIntervalMs ?? 1000;
  const maxBackoffMs = deps.maxBackoffMs ?? 10_000;
  const clock = deps.clock ?? (() => new Date());
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError(`outbox batchSize must be a positive integer, got ${batchSize}`);
  if (!Number.isFinite(pollIntervalMs) || pollIntervalMs < 0) {
    throw new RangeError(`outbox pollIntervalMs must be a non-negative number, got ${pollIntervalMs}`);
  }
  if (!Number.isFinite(maxBackoffMs) || maxBackoffMs < 0) throw new RangeError(`outbox maxBackoffMs must be a non-negative number, got ${maxBackoffMs}`);
  const metrics = deps.registry ? outboxMetrics(deps.registry) : undefined;

  const inProgress = new Set<Promise<Drain>>();
  let loop: LoopState | undefined;

  async function claimAndPublish(): Promise<Drain> {
    const drain = await db.transaction().execute(async (trx) => {
      const rows = await trx
        .selectFrom('outbox_events')
        .select(['id', 'event_id', 'topic', 'aggregate_type', 'aggregate_id', 'payload', 'occurred_at', 'attempts'])
        .where('published_at', 'is', null)
        .orderBy('id')
        .limit(batchSize)
        .forUpdate()
        .skipLocked()
        .execute();
      const published: { id: bigint; topic: string }[] = [];
      let failed = false;
      for (const row of rows) {
        try {
          await publish(toMessage(row));
          published.push({ id: row.id, topic: row.topic });
        } catch (e) {
          failed = true;
          metrics?.failures.inc();
          const err = coerceError(e);
          logger.warn(
            { err, event_id: row.event_id, topic: row.topic, attempts: row.attempts + 1 },
            'outbox publish failed; the event and those after it are retried on the next drain',
          );
          await trx
            .updateTable('outbox_events')
            .set((eb) => ({ attempts: eb('attempts', '+', 1), last_error: errorText(err) }))
            .where('id', '=', row.id)
            .execute();
          // Stop here: publishing the later events first would reorder them.
          break;
        }
      }
      if (published.length > 0) {
        const ids = published.map((p) => p.id);
        await trx.updateTable('outbox_events').set({ published_at: clock() }).where('id', 'in', ids).execute();
      }
      return { topics: published.map((p) => p.topic), failed };
    });
    // Counted once committed: a batch whose marks roll back is published again, and counted then.
    for (const topic of drain.topics) metrics?.published.inc({ topic });
    return drain;
  }

  async function drain(): Promise<Drain> {
    const batch = claimAndPublish();
    inProgress.add(batch);
    try {
      return await batch;
    } finally {
      inProgress.delete(batch);
    }
  }

  async function run(state: LoopState): Promise<void> {
    let failures = 0;
    while (!state.stopped) {
      let delay: number;
      try {
        const result = await drain();
        failures = result.failed ? failures + 1 : 0;
        // A full batch that went through: more may be waiting.
        delay = result.topics.length === batchSize ? 0 : relayDelayMs(pollIntervalMs, maxBackoffMs, failures);
      } catch (e) {
        failures++;
        delay = relayDelayMs(pollIntervalMs, maxBackoffMs, failures);
        logger.error({ err: coerceError(e), retry_in_ms: delay }, 'outbox drain failed');
      }
      if (state.stopped) break;
      if (delay > 0) {
        await new Promise<void>((resolve) => {
          state.wake = resolve;
          state.timer = setTimeout(resolve, delay);
          state.timer.unref();
        });
        state.wake = undefined;
        state.timer = undefined;
      }
    }
  }

  return {
    start() {
      if (loop) return;
      const state: LoopState = { stopped: false, timer: undefined, wake: undefined, done: Promise.resolve() };
      state.done = run(state);
      loop = state;
    },
    async stop() {
      const state = loop;
      loop = undefined;
      if (state) {
        state.stopped = true;
        clearTimeout(state.timer);
        state.wake?.();
        await state.done;
      }
      await Promise.allSettled([...inProgress]);
    },
    drainOnce: async () => (await drain()).topics.length,
  };
}

interface Drain {
  /** Topics of the events published, in order. */
  readonly topics: readonly string[];
  /** Whether a publish failed (the batch stopped there). */
  readonly failed: boolean;
}

/**
 * The loop's wait before the next drain: the poll interval, doubled for each consecutive
 * drain that failed, capped at maxBackoffMs (but never below the poll interval).
 */
export function relayDelayMs(pollIntervalMs: number, maxBackoffMs: number, consecutiveFailures: number): number {
  if (consecutiveFailures === 0) return pollIntervalMs;
  const backoff = pollIntervalMs * 2 ** Math.min(consecutiveFailures, 30);
  return Math.max(pollIntervalMs, Math.min(backoff, maxBackoffMs));
}

function outboxMetrics(registry: Registry): { published: Counter<'topic'>; failures: Counter } {
  // Registered once per registry: a process running two relays (tests) shares the counters.
  const existing = (name: string) => registry.getSingleMetric(name) as Counter<'topic'> | undefined;
  return {
    published:
      existing('loanbook_outbox_published_total') ??
      new Counter({
        name: 'loanbook_outbox_published_total',
        help: 'Outbox events published (and marked published), by topic',
        labelNames: ['topic'] as const,
        registers: [registry],
      }),
    failures:
      existing('loanbook_outbox_publish_failures_total') ??
      new Counter({
        name: 'loanbook_outbox_publish_failures_total',
        help: 'Outbox publish attempts that failed (the event stays unpublished and is retried)',
        registers: [registry],
      }),
  };
}

/** The message only (no stack), at most OUTBOX_ERROR_MAX_CHARS characters; text columns refuse NUL. */
function errorText(err: Error): string {
  // eslint-disable-next-line no-control-regex
  const message = err.message.replace(/\u0000/g, '');
  // By code point, so a surrogate pair is never cut in half; 2 × max UTF-16 units always hold max code points.
  return Array.from(message.slice(0, 2 * OUTBOX_ERROR_MAX_CHARS)).slice(0, OUTBOX_ERROR_MAX_CHARS).join('');
}
