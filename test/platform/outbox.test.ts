/**
 * The transactional outbox (src/platform/outbox.ts) on the real database: events commit
 * and roll back with the caller's transaction, payloads are canonical JSON, the relay
 * publishes in id order, records failures and retries them, and (PostgreSQL) two relays
 * draining at once never publish one event twice.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { sql, type Kysely } from 'kysely';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import type { AppDatabase } from '../../src/app.js';
import { openDatabase } from '../../src/platform/database.js';
import { startEventRelay } from '../../src/platform/event-relay.js';
import { createLogger } from '../../src/platform/logger.js';
import { Registry } from 'prom-client';
import {
  OUTBOX_ERROR_MAX_CHARS,
  appendOutbox,
  createOutboxRelay,
  listOutbox,
  relayDelayMs,
  type OutboxMessage,
  type OutboxRecord,
} from '../../src/platform/outbox.js';
import { createTestDatabase, dbTarget, isPostgres, silentLogger, testDbOptions, type TestDatabase } from '../support/db.js';

type Db = Kysely<AppDatabase>;

class Rollback extends Error {}

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

async function aggregate(db: Db, aggregateId: string): Promise<OutboxRecord[]> {
  return listOutbox(db, { aggregateType: 'loan', aggregateId, limit: 100 });
}

async function unpublishedCount(db: Db): Promise<number> {
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from outbox_events where published_at is null`.execute(db);
  return rows[0]!.n;
}

/** The relay claims every unpublished row, so each relay test starts from none. */
async function markAllPublished(db: Db): Promise<void> {
  await sql`update outbox_events set published_at = now() where published_at is null`.execute(db);
}

function loanEvent(aggregateId: string, payload: Record<string, unknown> = {}, topic = 'loan.disbursed') {
  return { topic, aggregateType: 'loan', aggregateId, payload };
}

describe(`outbox (${dbTarget})`, () => {
  let tdb: TestDatabase;
  let db: Db;

  beforeAll(async () => {
    tdb = await createTestDatabase();
    db = tdb.database.db;
  });
  afterAll(async () => tdb?.destroy());

  describe('appendOutbox', () => {
    it('an event appended in a transaction that rolls back is not stored; one appended in a transaction that commits is', async () => {
      await expect(
        db.transaction().execute(async (trx) => {
          await appendOutbox(trx, loanEvent('rolled-back', { n: 1 }));
          // Visible inside the transaction...
          expect(await aggregate(trx, 'rolled-back')).toHaveLength(1);
          throw new Rollback();
        }),
      ).rejects.toBeInstanceOf(Rollback);
      // ...and gone with it.
      expect(await aggregate(db, 'rolled-back')).toStrictEqual([]);

      const occurredAt = new Date('2030-01-02T03:04:05.678Z');
      const ids = await db.transaction().execute((trx) => appendOutbox(trx, loanEvent('committed', { n: 2 }), occurredAt));
      expect(ids).toHaveLength(1);
      expect(ids[0]).toMatch(UUID_V4);
      const rows = await aggregate(db, 'committed');
      expect(rows).toStrictEqual([
        {
          id: expect.any(BigInt) as bigint,
          eventId: ids[0],
          topic: 'loan.disbursed',
          aggregateType: 'loan',
          aggregateId: 'committed',
          payload: { n: 2 },
          occurredAt,
          attempts: 0,
          publishedAt: null,
          lastError: null,
        },
      ]);
    });

    it('several events in one call are stored in the order given, and their ids are returned in that order', async () => {
      const events = ['a', 'b', 'c', 'd'].map((step) => loanEvent('ordered', { step }, `loan.step_${step}`));
      const ids = await db.transaction().execute((trx) => appendOutbox(trx, events));
      expect(new Set(ids).size).toBe(4);
      const rows = await aggregate(db, 'ordered');
      expect(rows.map((r) => r.eventId)).toStrictEqual(ids);
      expect(rows.map((r) => r.payload)).toStrictEqual([{ step: 'a' }, { step: 'b' }, { step: 'c' }, { step: 'd' }]);
      expect(rows.map((r) => r.topic)).toStrictEqual(['loan.step_a', 'loan.step_b', 'loan.step_c', 'loan.step_d']);
      const idsAscending = rows.map((r) => r.id);
      expect([...idsAscending].sort((a, b) => (a < b ? -1 : 1))).toStrictEqual(idsAscending);
      // Without `now`, occurred_at is the database's transaction time: one value for the whole call.
      expect(new Set(rows.map((r) => r.occurredAt.getTime())).size).toBe(1);

      expect(await appendOutbox(db, [])).toStrictEqual([]);
    });

    it('bigint payload values come back as decimal strings (also nested and in arrays), Dates as ISO strings', async () => {
      const payload = {
        principal: 123_456_789_012_345_678_901_234_567_890n,
        fees: [1n, -250n],
        nested: { balance: -9_007_199_254_740_993n, currency: 'USD' },
        value_date: new Date('2030-05-06T07:08:09.010Z'),
        skipped: undefined,
      };
      await appendOutbox(db, loanEvent('bigints', payload));
      const [row] = await aggregate(db, 'bigints');
      expect(row!.payload).toStrictEqual({
        principal: '123456789012345678901234567890',
        fees: ['1', '-250'],
        nested: { balance: '-9007199254740993', currency: 'USD' },
        value_date: '2030-05-06T07:08:09.010Z',
      });
      // Stored as JSON strings, not numbers that lose precision.
      const { rows } = await sql<{ t: string; v: string }>`
        select jsonb_typeof(payload->'principal') as t, payload->>'principal' as v
        from outbox_events where aggregate_id = 'bigints'`.execute(db);
      expect(rows).toStrictEqual([{ t: 'string', v: '123456789012345678901234567890' }]);
    });

    it('a topic outside lower-case dotted names is refused, by appendOutbox and by the table', async () => {
      for (const topic of ['Loan.Disbursed', '1loan', 'loan disbursed', '', '.loan']) {
        await expect(appendOutbox(db, loanEvent('bad-topic', {}, topic))).rejects.toThrow(`outbox topic "${topic}" must match`);
      }
      // The database enforces it for writers that bypass appendOutbox.
      await expect(
        sql`insert into outbox_events (event_id, topic, aggregate_type, aggregate_id, payload)
            values (gen_random_uuid(), 'Loan.Disbursed', 'loan', 'bad-topic', '{}')`.execute(db),
      ).rejects.toMatchObject({ code: '23514' });
      await expect(
        sql`insert into outbox_events (event_id, topic, aggregate_type, aggregate_id, payload)
            values (gen_random_uuid(), 'loan.disbursed', 'loan', 'bad-topic', '[1]')`.execute(db),
      ).rejects.toMatchObject({ code: '23514' });
      expect(await aggregate(db, 'bad-topic')).toStrictEqual([]);
    });

    it('listOutbox filters by aggregate type, aggregate id and topic, in id order, up to the limit', async () => {
      await appendOutbox(db, [
        loanEvent('list-1', { i: 1 }, 'loan.disbursed'),
        { topic: 'payment.posted', aggregateType: 'payment', aggregateId: 'list-1', payload: { i: 2 } },
        loanEvent('list-1', { i: 3 }, 'loan.paid_off'),
        loanEvent('list-2', { i: 4 }, 'loan.disbursed'),
      ]);
      const payloads = (rows: OutboxRecord[]) => rows.map((r) => r.payload.i);
      expect(payloads(await listOutbox(db, { aggregateType: 'loan', aggregateId: 'list-1', limit: 10 }))).toStrictEqual([1, 3]);
      expect(payloads(await listOutbox(db, { aggregateId: 'list-1', limit: 10 }))).toStrictEqual([1, 2, 3]);
      expect(payloads(await listOutbox(db, { aggregateId: 'list-1', limit: 2 }))).toStrictEqual([1, 2]);
      expect(payloads(await listOutbox(db, { aggregateType: 'payment', limit: 10 }))).toStrictEqual([2]);
      expect(payloads(await listOutbox(db, { aggregateType: 'loan', topic: 'loan.disbursed', limit: 10 })).slice(-2)).toStrictEqual([1, 4]);
    });
  });

  describe('relay', () => {
    const publishedAt = new Date('2031-02-03T04:05:06.789Z');
    const clock = () => publishedAt;

    beforeEach(async () => markAllPublished(db));

    it('publishes unpublished events in id order, marks them with the clock, and returns the count; a second drain finds none', async () => {
      const ids = await appendOutbox(db, [1, 2, 3, 4, 5].map((i) => loanEvent('relay-order', { i, amount: BigInt(i) * 100n })));
      const seen: OutboxMessage[] = [];
      const relay = createOutboxRelay({ db, logger: silentLogger, clock, publish: async (e) => void seen.push(e) });

      expect(await relay.drainOnce()).toBe(5);
      expect(seen.map((e) => e.eventId)).toStrictEqual(ids);
      expect(seen.map((e) => e.payload)).toStrictEqual([1, 2, 3, 4, 5].map((i) => ({ i, amount: String(i * 100) })));
      expect(seen[0]).toMatchObject({ topic: 'loan.disbursed', aggregateType: 'loan', aggregateId: 'relay-order', attempts: 0 });
      const rows = await aggregate(db, 'relay-order');
      expect(rows.map((r) => r.publishedAt)).toStrictEqual(Array(5).fill(publishedAt));
      expect(rows.map((r) => r.attempts)).toStrictEqual([0, 0, 0, 0, 0]);

      expect(await relay.drainOnce()).toBe(0);
      expect(seen).toHaveLength(5);
    });

    it('claims at most batchSize events per drain, oldest first', async () => {
      const ids = await appendOutbox(db, [1, 2, 3, 4, 5].map((i) => loanEvent('relay-batch', { i })));
      const seen: string[] = [];
      const relay = createOutboxRelay({ db, logger: silentLogger, batchSize: 2, publish: async (e) => void seen.push(e.eventId) });
      expect(await relay.drainOnce()).toBe(2);
      expect(seen).toStrictEqual(ids.slice(0, 2));
      expect(await unpublishedCount(db)).toBe(3);
      expect(await relay.drainOnce()).toBe(2);
      expect(await relay.drainOnce()).toBe(1);
      expect(await relay.drainOnce()).toBe(0);
      expect(seen).toStrictEqual(ids);
    });

    it('a failing publish records attempts and the truncated message, stops the batch there, and is retried first on the next drain', async () => {
      const [a, b, c] = await appendOutbox(db, ['a', 'b', 'c'].map((step) => loanEvent('relay-fail', { step })));
      const calls: { eventId: string; attempts: number }[] = [];
      let failuresLeft = 2;
      const relay = createOutboxRelay({
        db,
        logger: silentLogger,
        clock,
        publish: async (e) => {
          calls.push({ eventId: e.eventId, attempts: e.attempts });
          if (e.eventId === b && failuresLeft > 0) {
            failuresLeft--;
            // Astral characters among plain ones: the limit counts characters, never half a surrogate pair.
            if (failuresLeft === 1) throw new Error('é💥'.repeat(OUTBOX_ERROR_MAX_CHARS));
            // eslint-disable-next-line @typescript-eslint/only-throw-error -- a publisher may throw anything; coerceError copes
            throw 'broker unavailable';
          }
        },
      });

      expect(await relay.drainOnce()).toBe(1);
      expect(calls).toStrictEqual([
        { eventId: a, attempts: 0 },
        { eventId: b, attempts: 0 },
      ]); // c was not attempted after b failed
      let rows = await aggregate(db, 'relay-fail');
      expect(rows.map((r) => [r.publishedAt, r.attempts])).toStrictEqual([
        [publishedAt, 0],
        [null, 1],
        [null, 0],
      ]);
      expect(rows[1]!.lastError).toBe('é💥'.repeat(OUTBOX_ERROR_MAX_CHARS / 2));
      const { rows: lengths } = await sql<{ n: number }>`
        select char_length(last_error) as n from outbox_events where event_id = ${b}`.execute(db);
      expect(lengths).toStrictEqual([{ n: OUTBOX_ERROR_MAX_CHARS }]);

      expect(await relay.drainOnce()).toBe(0); // b fails again: nothing published
      rows = await aggregate(db, 'relay-fail');
      expect(rows.map((r) => [r.attempts, r.lastError])).toStrictEqual([
        [0, null],
        [2, 'broker unavailable'],
        [0, null],
      ]);

      expect(await relay.drainOnce()).toBe(2);
      expect(calls.slice(2)).toStrictEqual([
        { eventId: b, attempts: 1 },
        { eventId: b, attempts: 2 },
        { eventId: c, attempts: 0 },
      ]);
      rows = await aggregate(db, 'relay-fail');
      expect(rows.map((r) => r.publishedAt)).toStrictEqual([publishedAt, publishedAt, publishedAt]);
      // The failure history stays for diagnosis.
      expect(rows.map((r) => r.attempts)).toStrictEqual([0, 2, 0]);
      expect(await relay.drainOnce()).toBe(0);
    });

    it('start() drains in a loop and keeps polling for new events; stop() ends it', async () => {
      const first = await appendOutbox(db, [1, 2, 3, 4, 5].map((i) => loanEvent('relay-loop', { i })));
      const seen: string[] = [];
      const relay = createOutboxRelay({ db, logger: silentLogger, batchSize: 2, pollIntervalMs: 10, publish: async (e) => void seen.push(e.eventId) });
      relay.start();
      relay.start(); // a second start does not run a second loop
      try {
        await vi.waitFor(() => expect(seen).toHaveLength(5), { timeout: 5_000, interval: 10 });
        expect(seen).toStrictEqual(first);
        const later = await appendOutbox(db, loanEvent('relay-loop', { i: 6 }));
        await vi.waitFor(() => expect(seen).toHaveLength(6), { timeout: 5_000, interval: 10 });
        expect(seen[5]).toBe(later[0]);
      } finally {
        await relay.stop();
      }
      await appendOutbox(db, loanEvent('relay-loop', { i: 7 }));
      await sleep(100); // ten poll intervals
      expect(seen).toHaveLength(6);
      expect(await unpublishedCount(db)).toBe(1);
    });

    it('stop() waits for the batch in progress, which completes, and claims nothing after it', async () => {
      const [first, second] = await appendOutbox(db, [loanEvent('relay-stop', { i: 1 }), loanEvent('relay-stop', { i: 2 })]);
      let entered!: () => void;
      const publishing = new Promise<void>((r) => (entered = r));
      let release!: () => void;
      const released = new Promise<void>((r) => (release = r));
      const seen: string[] = [];
      const relay = createOutboxRelay({
        db,
        logger: silentLogger,
        clock,
        batchSize: 1, // a full batch: without stop the loop would claim the next one at once
        pollIntervalMs: 10,
        publish: async (e) => {
          seen.push(e.eventId);
          entered();
          await released;
        },
      });
      relay.start();
      await publishing;

      let stopped = false;
      const stopping = relay.stop().then(() => (stopped = true));
      await sleep(50);
      expect(stopped).toBe(false);
      release();
      await stopping;

      expect(seen).toStrictEqual([first]);
      const rows = await aggregate(db, 'relay-stop');
      expect(rows.map((r) => [r.eventId, r.publishedAt])).toStrictEqual([
        [first, publishedAt],
        [second, null],
      ]);
    });

    it('refuses a batch size that is not a positive integer', () => {
      const publish = async () => undefined;
      expect(() => createOutboxRelay({ db, logger: silentLogger, publish, batchSize: 0 })).toThrow(RangeError);
      expect(() => createOutboxRelay({ db, logger: silentLogger, publish, batchSize: 1.5 })).toThrow(RangeError);
      expect(() => createOutboxRelay({ db, logger: silentLogger, publish, pollIntervalMs: -1 })).toThrow(RangeError);
      expect(() => createOutboxRelay({ db, logger: silentLogger, publish, maxBackoffMs: -1 })).toThrow(RangeError);
    });

    it('counts published events by topic once marked, and failed publishes, in the registry given', async () => {
      await appendOutbox(db, [
        loanEvent('relay-metrics', { i: 1 }, 'loan.disbursed'),
        loanEvent('relay-metrics', { i: 2 }, 'loan.paid_off'),
        loanEvent('relay-metrics', { i: 3 }, 'loan.disbursed'),
        loanEvent('relay-metrics', { i: 4 }, 'loan.disbursed'),
      ]);
      const registry = new Registry();
      let failNext = false;
      const relay = createOutboxRelay({
        db,
        logger: silentLogger,
        registry,
        batchSize: 3,
        publish: async () => {
          if (failNext) {
            failNext = false;
            throw new Error('broker unavailable');
          }
        },
      });
      // A second relay on the same registry shares the counters instead of failing to register them.
      createOutboxRelay({ db, logger: silentLogger, registry, publish: async () => undefined });
      const value = async (name: string, labels: Record<string, string> = {}) =>
        (await registry.getSingleMetric(name)!.get()).values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))?.value ?? 0;

      expect(await relay.drainOnce()).toBe(3);
      failNext = true;
      expect(await relay.drainOnce()).toBe(0);
      expect(await relay.drainOnce()).toBe(1);
      expect(await value('loanbook_outbox_published_total', { topic: 'loan.disbursed' })).toBe(3);
      expect(await value('loanbook_outbox_published_total', { topic: 'loan.paid_off' })).toBe(1);
      expect(await value('loanbook_outbox_publish_failures_total')).toBe(1);
      expect(await registry.metrics()).toContain('loanbook_outbox_published_total{topic="loan.paid_off"} 1');
    });
  });

  it('startEventRelay without NATS_URL logs each event (debug), marks it published and counts it; stop() ends the loop', async () => {
    await markAllPublished(db);
    const lines: Record<string, unknown>[] = [];
    const logger = createLogger({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
    const registry = new Registry();
    const relay = startEventRelay({
      db,
      logger,
      registry,
      events: { natsUrl: undefined, natsStream: 'UNUSED', natsSubjectPrefix: 'unused', pollIntervalMs: 10 },
    });
    expect(relay.sink).toBe('log');
    expect(relay.healthChecks).toStrictEqual([]);
    const ids = await appendOutbox(db, [loanEvent('log-sink', { i: 1 }), loanEvent('log-sink', { i: 2 }, 'loan.paid_off')]);
    try {
      await vi.waitFor(async () => expect(await unpublishedCount(db)).toBe(0), { timeout: 5_000, interval: 10 });
    } finally {
      await relay.stop(1_000);
    }
    expect(lines.find((l) => l.message === 'outbox relay started; NATS_URL is unset, so events are logged (debug) and marked published')).toBeDefined();
    const logged = lines.filter((l) => l.component === 'events_log');
    expect(logged.map((l) => [l.event_id, l.topic, l.aggregate_id, l.level])).toStrictEqual([
      [ids[0], 'loan.disbursed', 'log-sink', 'debug'],
      [ids[1], 'loan.paid_off', 'log-sink', 'debug'],
    ]);
    expect(await registry.metrics()).toContain('loanbook_outbox_published_total{topic="loan.paid_off"} 1');

    await appendOutbox(db, loanEvent('log-sink', { i: 3 }));
    await sleep(100); // ten poll intervals
    expect(await unpublishedCount(db)).toBe(1);
  });

  it('relayDelayMs: the poll interval, doubled per consecutive failed drain, capped, never below the interval', () => {
    expect(relayDelayMs(1000, 10_000, 0)).toBe(1000);
    expect([1, 2, 3, 4, 5, 100].map((n) => relayDelayMs(1000, 10_000, n))).toStrictEqual([2000, 4000, 8000, 10_000, 10_000, 10_000]);
    // A cap below the poll interval never makes the relay poll faster while failing.
    expect(relayDelayMs(5000, 1000, 3)).toBe(5000);
    expect(relayDelayMs(0, 10_000, 3)).toBe(0);
  });
});

describe.runIf(isPostgres)('outbox relays under real concurrency (postgres)', () => {
  let tdb: TestDatabase;
  const extra: { close(): Promise<void> }[] = [];

  beforeAll(async () => {
    tdb = await createTestDatabase();
  });
  afterAll(async () => {
    for (const d of extra) await d.close();
    await tdb?.destroy();
  });

  it('two relays on separate pools draining at once publish every event exactly once, each in id order', async () => {
    const second = await openDatabase<AppDatabase>({ kind: 'postgres', location: tdb.url! }, testDbOptions, silentLogger);
    extra.push(second);
    const n = 300;
    const ids = await appendOutbox(
      tdb.database.db,
      Array.from({ length: n }, (_, i) => loanEvent(`concurrent-${i % 7}`, { i })),
    );

    const published: { relay: number; id: bigint; eventId: string }[] = [];
    let active = 0;
    let maxActive = 0;
    const relays = [tdb.database.db, second.db].map((db, relay) =>
      createOutboxRelay({
        db,
        logger: silentLogger,
        batchSize: 10,
        publish: async (e) => {
          active++;
          maxActive = Math.max(maxActive, active);
          await sleep(1); // long enough that the other relay claims while this one publishes
          active--;
          published.push({ relay, id: e.id, eventId: e.eventId });
        },
      }),
    );
    await Promise.all(
      relays.map(async (relay, i) => {
        const db = i === 0 ? tdb.database.db : second.db;
        while ((await unpublishedCount(db)) > 0) await relay.drainOnce();
      }),
    );

    expect(published).toHaveLength(n);
    expect(new Set(published.map((p) => p.eventId)).size).toBe(n);
    expect(published.map((p) => p.eventId).sort()).toStrictEqual([...ids].sort());
    // Both relays worked, at the same time.
    expect(maxActive).toBe(2);
    for (const relay of [0, 1]) {
      const mine = published.filter((p) => p.relay === relay).map((p) => p.id);
      expect(mine.length).toBeGreaterThan(0);
      expect([...mine].sort((a, b) => (a < b ? -1 : 1))).toStrictEqual(mine);
    }
    expect(await unpublishedCount(tdb.database.db)).toBe(0);
  });
});
