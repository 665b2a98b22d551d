/**
 * The outbox relay publishing to the real NATS JetStream (src/platform/events-nats.ts):
 * subjects, headers, payloads and order in the stream; the stream created and brought up
 * to date idempotently; two relays on one PostgreSQL database publishing each event once;
 * a relay killed between publish and mark leaving no duplicate (JetStream's msgID
 * deduplication); NATS unreachable, lost and stalled without a crash, with the events
 * waiting in the outbox and published once NATS is back; shutdown bounded by the grace.
 *
 * Runs with DB_TARGET=postgres (CI starts NATS with PostgreSQL) or TEST_NATS=1, against
 * TEST_NATS_URL (default nats://127.0.0.1:4222). Every test uses its own stream and
 * subject prefix and deletes the stream afterwards. Outages are made with a TCP relay in
 * front of the shared server, which is never stopped.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { connect, nanos, type NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager, type JetStreamManager, type StoredMsg } from '@nats-io/jetstream';
import { sql, type Kysely } from 'kysely';
import { Registry } from 'prom-client';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import type { AppDatabase } from '../../src/app.js';
import { loadConfig } from '../../src/platform/config.js';
import { openDatabase } from '../../src/platform/database.js';
import { startEventRelay } from '../../src/platform/event-relay.js';
import { createNatsEventSink, natsConnectOptions, type NatsEventSinkOptions } from '../../src/platform/events-nats.js';
import { appendOutbox, createOutboxRelay, listOutbox, type EventSink, type OutboxEvent } from '../../src/platform/outbox.js';
import { createTestDatabase, isPostgres, silentLogger, testDbOptions, type TestDatabase } from '../support/db.js';
import { freePort, startRelay, type Relay } from '../support/net.js';
import { TEST_ENCRYPTION_KEY, TEST_SECRET_KEY } from '../support/app.js';

type Db = Kysely<AppDatabase>;

const natsUrl = process.env.TEST_NATS_URL ?? 'nats://127.0.0.1:4222';
const runNats = isPostgres || process.env.TEST_NATS === '1';
const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const runId = randomBytes(4).toString('hex');
let streamCount = 0;

interface Target {
  readonly stream: string;
  readonly prefix: string;
}

function loanEvent(aggregateId: string, payload: Record<string, unknown>, topic = 'loan.disbursed'): OutboxEvent {
  return { topic, aggregateType: 'loan', aggregateId, payload };
}

async function unpublishedCount(db: Db): Promise<number> {
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from outbox_events where published_at is null`.execute(db);
  return rows[0]!.n;
}

/** Every stored message, in stream order. */
async function streamMessages(jsm: JetStreamManager, stream: string): Promise<StoredMsg[]> {
  const info = await jsm.streams.info(stream);
  const out: StoredMsg[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const m = await jsm.streams.getMessage(stream, { seq });
    if (m) out.push(m);
  }
  return out;
}

/** The event ids (ce-id) of stored messages: a duplicate shows as a repeated id. */
function eventIds(messages: readonly StoredMsg[]): (string | undefined)[] {
  return messages.map((m) => m.header.get('ce-id'));
}

describe('NATS settings', () => {
  const keys = { SECRET_KEY: TEST_SECRET_KEY, ENCRYPTION_KEY: TEST_ENCRYPTION_KEY };

  it('NATS_URL, NATS_STREAM, NATS_SUBJECT_PREFIX and OUTBOX_POLL_INTERVAL_MS: defaults, and the values given', () => {
    expect(loadConfig(keys).events).toStrictEqual({ natsUrl: undefined, natsStream: 'LOANBOOK', natsSubjectPrefix: 'loanbook', pollIntervalMs: 1000 });
    expect(
      loadConfig({ ...keys, NATS_URL: 'nats://a:4222,tls://b:4222', NATS_STREAM: 'LB_EVENTS', NATS_SUBJECT_PREFIX: 'acme.loanbook', OUTBOX_POLL_INTERVAL_MS: '250' }).events,
    ).toStrictEqual({ natsUrl: 'nats://a:4222,tls://b:4222', natsStream: 'LB_EVENTS', natsSubjectPrefix: 'acme.loanbook', pollIntervalMs: 250 });
  });

  it('refuses a NATS_URL that is not nats:// or tls://, a stream name or subject prefix NATS would refuse, and a poll interval out of range', () => {
    const refused = (env: Record<string, string>, message: RegExp) => expect(() => loadConfig({ ...keys, ...env })).toThrow(message);
    refused({ NATS_URL: 'http://nats:4222' }, /NATS_URL: must be a nats:\/\/ or tls:\/\/ URL/);
    refused({ NATS_URL: 'nats://a:4222,redis://b' }, /NATS_URL/);
    refused({ NATS_STREAM: 'LOAN.BOOK' }, /NATS_STREAM: must be a JetStream stream name/);
    refused({ NATS_SUBJECT_PREFIX: 'loanbook.>' }, /NATS_SUBJECT_PREFIX: must be subject tokens/);
    refused({ NATS_SUBJECT_PREFIX: 'loanbook.' }, /NATS_SUBJECT_PREFIX/);
    refused({ OUTBOX_POLL_INTERVAL_MS: '5' }, /OUTBOX_POLL_INTERVAL_MS: must be between 10 and 60000/);
  });

  it('natsConnectOptions takes credentials out of the URL: user and password, or a token', () => {
    expect(natsConnectOptions('nats://a:4222, nats://b:4223')).toStrictEqual({ servers: ['nats://a:4222', 'nats://b:4223'] });
    expect(natsConnectOptions('nats://svc:p%40ss@a:4222')).toStrictEqual({ servers: ['nats://a:4222'], user: 'svc', pass: 'p@ss' });
    expect(natsConnectOptions('tls://s3cr3t@a:4222')).toStrictEqual({ servers: ['tls://a:4222'], token: 's3cr3t' });
  });
});

describe.runIf(runNats)('outbox relay to NATS JetStream', () => {
  let tdb: TestDatabase;
  let db: Db;
  let admin: NatsConnection;
  let jsm: JetStreamManager;
  let target: Target;
  const cleanups: (() => Promise<void> | void)[] = [];

  beforeAll(async () => {
    tdb = await createTestDatabase();
    db = tdb.database.db;
    admin = await connect({ ...natsConnectOptions(natsUrl), name: 'loanbook-test-admin' });
    jsm = await jetstreamManager(admin);
  });
  afterAll(async () => {
    await admin?.close();
    await tdb?.destroy();
  });
  beforeEach(async () => {
    // The relay claims every unpublished row: each test starts from none.
    await sql`update outbox_events set published_at = now() where published_at is null`.execute(db);
    streamCount++;
    target = { stream: `LB_TEST_${runId}_${streamCount}`, prefix: `lbtest.${runId}.${streamCount}` };
  });
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
    await jsm.streams.delete(target.stream).catch(() => undefined);
  });

  /** A started sink on the test's stream, closed after the test. */
  async function sink(overrides: Partial<NatsEventSinkOptions> = {}): Promise<EventSink> {
    const s = createNatsEventSink({ url: natsUrl, stream: target.stream, subjectPrefix: target.prefix, logger: silentLogger, ...overrides });
    cleanups.push(() => s.close());
    await s.start();
    return s;
  }

  async function tcpRelay(): Promise<Relay> {
    const port = Number(new URL(natsUrl).port || 4222);
    const relay = await startRelay(new URL(natsUrl).hostname, port);
    cleanups.push(() => relay.kill().catch(() => undefined));
    return relay;
  }

  it('publishes each event to <prefix>.<topic> in outbox order, with its id as Nats-Msg-Id, CloudEvents headers and the JSON payload', async () => {
    const s = await sink();
    const occurredAt = new Date('2030-04-05T06:07:08.009Z');
    const ids = await appendOutbox(
      db,
      [
        loanEvent('loan-a', { loan_id: 'loan-a', principal: 250_000n }),
        { topic: 'payment.posted', aggregateType: 'payment', aggregateId: 'pay-1', payload: { amount: 1_999n, currency: 'USD' } },
        loanEvent('loan é 1', { n: 3 }, 'loan.paid_off'),
      ],
      occurredAt,
    );
    const relay = createOutboxRelay({ db, logger: silentLogger, publish: (e) => s.publish(e) });
    expect(await relay.drainOnce()).toBe(3);

    const info = await jsm.streams.info(target.stream);
    expect(info.config).toMatchObject({ subjects: [`${target.prefix}.>`], storage: 'file', duplicate_window: nanos(120_000), retention: 'limits' });
    const messages = await streamMessages(jsm, target.stream);
    expect(messages.map((m) => m.subject)).toStrictEqual([
      `${target.prefix}.loan.disbursed`,
      `${target.prefix}.payment.posted`,
      `${target.prefix}.loan.paid_off`,
    ]);
    expect(messages.map((m) => m.header.get('Nats-Msg-Id'))).toStrictEqual(ids);
    expect(messages.map((m) => m.json())).toStrictEqual([
      { loan_id: 'loan-a', principal: '250000' },
      { amount: '1999', currency: 'USD' },
      { n: 3 },
    ]);
    const headers = (m: StoredMsg) =>
      Object.fromEntries(
        ['ce-specversion', 'ce-id', 'ce-source', 'ce-type', 'ce-time', 'ce-subject', 'ce-aggregatetype', 'ce-aggregateid', 'content-type'].map((k) => [
          k,
          m.header.get(k),
        ]),
      );
    expect(headers(messages[1]!)).toStrictEqual({
      'ce-specversion': '1.0',
      'ce-id': ids[1],
      'ce-source': `/${target.prefix}`,
      'ce-type': 'payment.posted',
      'ce-time': '2030-04-05T06:07:08.009Z',
      'ce-subject': 'pay-1',
      'ce-aggregatetype': 'payment',
      'ce-aggregateid': 'pay-1',
      'content-type': 'application/json',
    });
    // Outside printable ASCII, header values are percent-encoded UTF-8.
    expect(messages[2]!.header.get('ce-aggregateid')).toBe('loan%20%C3%A9%201');
    await expect(s.healthCheck!.check()).resolves.toBeUndefined();
  });

  it('creates the stream once, and on an existing one adds its subjects and lengthens a short duplicate window, keeping the rest', async () => {
    await jsm.streams.add({ name: target.stream, subjects: [`${target.prefix}-other.>`], duplicate_window: nanos(10_000), max_age: nanos(3_600_000) });
    await sink();
    let info = await jsm.streams.info(target.stream);
    expect(info.config.subjects).toStrictEqual([`${target.prefix}-other.>`, `${target.prefix}.>`]);
    expect(info.config.duplicate_window).toBe(nanos(120_000));
    expect(info.config.max_age).toBe(nanos(3_600_000));

    // Two more sinks starting at once on the stream as it now is: nothing to change, nothing fails.
    await Promise.all([sink(), sink()]);
    info = await jsm.streams.info(target.stream);
    expect(info.config.subjects).toStrictEqual([`${target.prefix}-other.>`, `${target.prefix}.>`]);
    expect(info.config.max_age).toBe(nanos(3_600_000));
  });

  it('a stream deleted under a running relay fails one publish and is created again for the next', async () => {
    const s = await sink();
    const relay = createOutboxRelay({ db, logger: silentLogger, publish: (e) => s.publish(e) });
    await appendOutbox(db, loanEvent('recreate', { i: 1 }));
    expect(await relay.drainOnce()).toBe(1);
    await jsm.streams.delete(target.stream);
    const [second] = await appendOutbox(db, loanEvent('recreate', { i: 2 }));
    expect(await relay.drainOnce()).toBe(0);
    expect(await relay.drainOnce()).toBe(1);
    expect(eventIds(await streamMessages(jsm, target.stream))).toStrictEqual([second]);
  });

  it('an event published but not marked (the mark never happened) is published again by the next relay and stored once', async () => {
    const first = await sink();
    const ids = await appendOutbox(db, [1, 2, 3].map((i) => loanEvent('unmarked', { i })));
    // Publishes every event, then fails: the relay records a failed attempt and leaves the event unpublished.
    const publishedThenLost = createOutboxRelay({
      db,
      logger: silentLogger,
      publish: async (e) => {
        await first.publish(e);
        if (e.eventId === ids[1]) throw new Error('crashed before the mark');
      },
    });
    expect(await publishedThenLost.drainOnce()).toBe(1);
    expect(eventIds(await streamMessages(jsm, target.stream))).toStrictEqual(ids.slice(0, 2));

    const restarted = await sink();
    const relay = createOutboxRelay({ db, logger: silentLogger, publish: (e) => restarted.publish(e) });
    expect(await relay.drainOnce()).toBe(2);
    expect(eventIds(await streamMessages(jsm, target.stream))).toStrictEqual(ids);
  });

  it.runIf(isPostgres)('a relay process killed (SIGKILL) after publishing, before its marks commit, leaves no duplicate in the stream', async () => {
    const n = 20;
    const ids = await appendOutbox(db, Array.from({ length: n }, (_, i) => loanEvent(`killed-${i % 3}`, { i })));
    // A separate process: relays the batch, says so after the 15th publish, then waits (its transaction open) to be killed.
    const script = `
      import { openDatabase } from './src/platform/database.ts';
      import { createNatsEventSink } from './src/platform/events-nats.ts';
      import { createOutboxRelay } from './src/platform/outbox.ts';
      import { createLogger } from './src/platform/logger.ts';
      const logger = createLogger({ level: 'silent' });
      const database = await openDatabase({ kind: 'postgres', location: process.env.DB_URL }, ${JSON.stringify(testDbOptions)}, logger);
      const sink = createNatsEventSink({ url: process.env.NATS_URL, stream: process.env.STREAM, subjectPrefix: process.env.PREFIX, logger });
      await sink.start();
      let published = 0;
      const relay = createOutboxRelay({ db: database.db, logger, publish: async (e) => {
        await sink.publish(e);
        if (++published === 15) { process.stdout.write('published 15\\n'); await new Promise(() => {}); }
      } });
      await relay.drainOnce();
    `;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: repoRoot,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, DB_URL: tdb.url, NATS_URL: natsUrl, STREAM: target.stream, PREFIX: target.prefix },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    cleanups.push(() => void child.kill('SIGKILL'));
    let output = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (output += d));
    await new Promise<void>((resolve, reject) => {
      child.stdout.setEncoding('utf8').on('data', (d: string) => d.includes('published 15') && resolve());
      child.once('exit', (code) => reject(new Error(`relay process exited (${code}) before publishing: ${output}`)));
    });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;

    // Its transaction rolled back with the connection: nothing was marked.
    expect(await unpublishedCount(db)).toBe(n);
    expect(await streamMessages(jsm, target.stream)).toHaveLength(15);

    const s = await sink();
    const relay = createOutboxRelay({ db, logger: silentLogger, publish: (e) => s.publish(e) });
    // PostgreSQL may take a moment to notice the dead connection and release its row locks.
    await vi.waitFor(async () => {
      await relay.drainOnce();
      expect(await unpublishedCount(db)).toBe(0);
    }, { timeout: 10_000, interval: 50 });
    const messages = await streamMessages(jsm, target.stream);
    expect(eventIds(messages)).toStrictEqual(ids);
  });

  it.runIf(isPostgres)('two relays on separate pools and connections, draining at once, put each event in the stream exactly once', async () => {
    const second = await openDatabase<AppDatabase>({ kind: 'postgres', location: tdb.url! }, testDbOptions, silentLogger);
    cleanups.push(() => second.close());
    const n = 300;
    const ids = await appendOutbox(
      db,
      Array.from({ length: n }, (_, i) => loanEvent(`concurrent-${i % 7}`, { i })),
    );
    const sinks = [await sink(), await sink()];
    const perRelay = [0, 0];
    await Promise.all(
      [db, second.db].map(async (relayDb, i) => {
        const relay = createOutboxRelay({
          db: relayDb,
          logger: silentLogger,
          batchSize: 10,
          publish: async (e) => {
            await sinks[i]!.publish(e);
            perRelay[i]!++;
          },
        });
        while ((await unpublishedCount(relayDb)) > 0) await relay.drainOnce();
      }),
    );
    const messages = await streamMessages(jsm, target.stream);
    expect(messages).toHaveLength(n);
    expect(eventIds(messages).sort()).toStrictEqual([...ids].sort());
    // Both took part, and neither published anything the other had (no duplicate acks needed).
    expect(perRelay[0]).toBeGreaterThan(0);
    expect(perRelay[1]).toBeGreaterThan(0);
    expect(perRelay[0]! + perRelay[1]!).toBe(n);
  });

  it('NATS unreachable at start, then lost while connected: events wait with attempts counted, nothing crashes, and they are published once NATS is back', async () => {
    const relayPort = await tcpRelay();
    await relayPort.kill(); // nothing listens: NATS is down
    const registry = new Registry();
    const s = await sink({ url: `nats://127.0.0.1:${relayPort.port}`, maxConnectBackoffMs: 50 });
    const relay = createOutboxRelay({ db, logger: silentLogger, registry, publish: (e) => s.publish(e) });
    const failures = async () => (await registry.getSingleMetric('loanbook_outbox_publish_failures_total')!.get()).values[0]?.value ?? 0;

    const early = await appendOutbox(db, [1, 2, 3].map((i) => loanEvent('outage', { i })));
    await expect(s.healthCheck!.check()).rejects.toThrow('NATS is not connected');
    expect(await relay.drainOnce()).toBe(0);
    expect(await relay.drainOnce()).toBe(0);
    let rows = await listOutbox(db, { aggregateId: 'outage', limit: 10 });
    expect(rows.map((r) => [r.publishedAt, r.attempts])).toStrictEqual([
      [null, 2],
      [null, 0],
      [null, 0],
    ]);
    expect(rows[0]!.lastError).toMatch(/^NATS is not connected/);
    expect(await failures()).toBe(2);

    await relayPort.revive();
    await vi.waitFor(() => s.healthCheck!.check(), { timeout: 10_000, interval: 50 });
    expect(await relay.drainOnce()).toBe(3);

    // Lost while connected: the client notices, publishes fail at once, and it reconnects by itself.
    await relayPort.kill();
    await vi.waitFor(() => expect(s.healthCheck!.check()).rejects.toThrow('NATS is not connected'), { timeout: 10_000, interval: 20 });
    const late = await appendOutbox(db, [4, 5].map((i) => loanEvent('outage', { i })));
    expect(await relay.drainOnce()).toBe(0);
    rows = await listOutbox(db, { aggregateId: 'outage', limit: 10 });
    expect(rows.map((r) => r.attempts)).toStrictEqual([2, 0, 0, 1, 0]);
    // Failed at once, not queued behind the reconnect until the acknowledgement timed out.
    expect(rows[3]!.lastError).toMatch(/^NATS is not connected/);
    await relayPort.revive();
    await vi.waitFor(() => s.healthCheck!.check(), { timeout: 15_000, interval: 50 });
    expect(await relay.drainOnce()).toBe(2);

    expect(eventIds(await streamMessages(jsm, target.stream))).toStrictEqual([...early, ...late]);
    expect(await unpublishedCount(db)).toBe(0);
    expect(await failures()).toBe(3);
  });

  it.runIf(isPostgres)('`loanbook worker` with NATS_URL relays the outbox to the stream, reports "events" in /health/ready, and exits 0 on SIGTERM', async () => {
    const httpPort = await freePort();
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'worker'], {
      cwd: repoRoot,
      env: {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        ENV: 'production',
        LOG_LEVEL: 'info',
        DATABASE_URL: tdb.url,
        SECRET_KEY: TEST_SECRET_KEY,
        ENCRYPTION_KEY: TEST_ENCRYPTION_KEY,
        WORKER_HTTP_PORT: String(httpPort),
        NATS_URL: natsUrl,
        NATS_STREAM: target.stream,
        NATS_SUBJECT_PREFIX: target.prefix,
        OUTBOX_POLL_INTERVAL_MS: '20',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    cleanups.push(() => void child.kill('SIGKILL'));
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (output += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (output += d));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    await vi.waitFor(() => expect(output).toContain('"message":"loanbook worker running"'), { timeout: 20_000, interval: 50 });
    expect(output).toContain('"message":"outbox relay started"');

    const ids = await appendOutbox(db, [loanEvent('worker-relay', { i: 1 }), loanEvent('worker-relay', { i: 2 }, 'loan.paid_off')]);
    await vi.waitFor(async () => expect(eventIds(await streamMessages(jsm, target.stream))).toStrictEqual(ids), { timeout: 10_000, interval: 50 });
    expect(await unpublishedCount(db)).toBe(0);

    const ready = await fetch(`http://127.0.0.1:${httpPort}/health/ready`);
    const body = (await ready.json()) as { components: Record<string, { status: string; critical: boolean }> };
    expect(ready.status).toBe(200);
    expect(body.components.events).toMatchObject({ status: 'ok', critical: false });
    const metrics = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
    expect(metrics).toContain('loanbook_outbox_published_total{topic="loan.paid_off"} 1');

    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });

  it('stop(grace) returns with a publish stuck on a stalled NATS: the sink closes under it and the event stays in the outbox', async () => {
    const relayPort = await tcpRelay();
    // An acknowledgement wait longer than the test's own timeout: only the grace can end it.
    const inner = await sink({ url: `nats://127.0.0.1:${relayPort.port}`, requestTimeoutMs: 120_000 });
    let entered!: () => void;
    const publishing = new Promise<void>((r) => (entered = r));
    const stalling: EventSink = {
      kind: inner.kind,
      start: () => inner.start(),
      close: () => inner.close(),
      publish: async (e) => {
        relayPort.stall(true);
        entered();
        return inner.publish(e);
      },
    };
    const [id] = await appendOutbox(db, loanEvent('stalled', { i: 1 }));
    const relay = startEventRelay({
      db,
      logger: silentLogger,
      sink: stalling,
      events: { natsUrl, natsStream: target.stream, natsSubjectPrefix: target.prefix, pollIntervalMs: 10 },
    });
    await publishing;
    await relay.stop(200);

    const [row] = await listOutbox(db, { aggregateId: 'stalled', limit: 10 });
    expect(row).toMatchObject({ eventId: id, publishedAt: null, attempts: 1 });
    expect(row!.lastError).not.toBeNull();
    await expect(inner.publish(row!)).rejects.toThrow('closed');
  });
});
