/**
 * An EventSink that publishes outbox events to a NATS JetStream stream.
 *
 * Each event goes to `<prefix>.<topic>` with `Nats-Msg-Id` set to its event id, and the
 * publish waits for the stream's acknowledgement. The relay marks an event published
 * only after that, so a crash in between publishes it again; JetStream drops the copy
 * when it arrives within the stream's duplicate window (2 minutes by default), and
 * consumers deduplicate on the event id beyond it.
 *
 * One connection per sink, opened in the background with a bounded handshake and
 * retried with a capped backoff until it succeeds; from then on the client reconnects
 * for ever by itself. While it is not connected, publish fails at once (the relay counts
 * an attempt and retries later) instead of queueing behind the reconnect. The stream is
 * created or brought up to date (subjects, duplicate window) on every (re)connection,
 * keeping whatever else an operator changed on it.
 */
import { connect, headers as natsHeaders, nanos, type ConnectionOptions, type NatsConnection } from '@nats-io/transport-node';
import {
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  jetstream,
  jetstreamManager,
  type JetStreamClient,
  type StreamInfo,
} from '@nats-io/jetstream';
import { coerceError } from './errors.js';
import type { Logger } from './logger.js';
import type { EventSink, OutboxMessage } from './outbox.js';

export interface NatsEventSinkOptions {
  /** NATS_URL: `nats://[user:password@|token@]host:port`, several separated by commas. */
  readonly url: string;
  /** JetStream stream name (NATS_STREAM). */
  readonly stream: string;
  /** First subject token(s) (NATS_SUBJECT_PREFIX): events go to `<prefix>.<topic>`; the stream takes `<prefix>.>`. */
  readonly subjectPrefix: string;
  readonly logger: Logger;
  /** JetStream drops a message whose id it saw this recently (default 120000 ms). */
  readonly duplicateWindowMs?: number;
  /** Connection handshake limit (default 5000 ms). */
  readonly connectTimeoutMs?: number;
  /** Wait for a publish acknowledgement or a stream API answer (default 5000 ms). */
  readonly requestTimeoutMs?: number;
  /** Longest wait between attempts at the first connection (default 30000 ms). */
  readonly maxConnectBackoffMs?: number;
  /** Client name shown by the server's monitoring (default 'loanbook'). */
  readonly clientName?: string;
}

/** JetStream's "stream name already in use": another relay created the stream first. */
const STREAM_NAME_IN_USE = 10058;

/**
 * The NATS_URL split into server addresses and credentials: the client takes
 * user/password or a token as options, not inside the URL.
 */
export function natsConnectOptions(url: string): { servers: string[]; user?: string; pass?: string; token?: string } {
  const servers: string[] = [];
  let user: string | undefined;
  let pass: string | undefined;
  for (const entry of url.split(',').map((s) => s.trim()).filter((s) => s.length > 0)) {
    const parsed = new URL(entry);
    if (parsed.username !== '') {
      user = decodeURIComponent(parsed.username);
      pass = parsed.password === '' ? undefined : decodeURIComponent(parsed.password);
    }
    servers.push(`${parsed.protocol}//${parsed.host}`);
  }
  if (user === undefined) return { servers };
  return pass === undefined ? { servers, token: user } : { servers, user, pass };
}

/** The server list without credentials, for logs. */
export function describeNatsUrl(url: string): string {
  return natsConnectOptions(url).servers.join(',');
}

export function createNatsEventSink(options: NatsEventSinkOptions): EventSink {
  const logger = options.logger.child({ component: 'events_nats' });
  const { stream, subjectPrefix } = options;
  const duplicateWindowMs = options.duplicateWindowMs ?? 120_000;
  const connectTimeoutMs = options.connectTimeoutMs ?? 5_000;
  const requestTimeoutMs = options.requestTimeoutMs ?? 5_000;
  const maxConnectBackoffMs = options.maxConnectBackoffMs ?? 30_000;
  const connectOptions: ConnectionOptions = {
    ...natsConnectOptions(options.url),
    name: options.clientName ?? 'loanbook',
    timeout: connectTimeoutMs,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 1_000,
    // A peer that vanished without closing the socket is noticed within about 30 s, not several minutes.
    pingInterval: 10_000,
    maxPingOut: 2,
  };
  const servers = describeNatsUrl(options.url);

  let nc: NatsConnection | undefined;
  let js: JetStreamClient | undefined;
  let connected = false;
  let streamReady: Promise<void> | undefined;
  let closing = false;
  let retryTimer: NodeJS.Timeout | undefined;
  let firstAttempt: Promise<void> | undefined;

  /** Connects, or schedules another try; resolves after this attempt either way. */
  async function attemptConnect(failures: number): Promise<void> {
    if (closing) return;
    let conn: NatsConnection;
    try {
      conn = await connect(connectOptions);
    } catch (e) {
      const delay = Math.min(1_000 * 2 ** Math.min(failures, 15), maxConnectBackoffMs);
      logger.warn({ err: coerceError(e), servers, retry_in_ms: delay }, 'NATS unreachable; events wait in the outbox');
      if (!closing) {
        retryTimer = setTimeout(() => void attemptConnect(failures + 1), delay);
        retryTimer.unref();
      }
      return;
    }
    if (closing) {
      await conn.close();
      return;
    }
    nc = conn;
    js = jetstream(conn, { timeout: requestTimeoutMs });
    connected = true;
    logger.info({ servers: conn.getServer(), stream }, 'NATS connected');
    watch(conn);
    await readyStream().catch(() => undefined); // logged there; publish tries again
  }

  /** Follows the connection's state; a connection closed for good (not by us) starts over. */
  function watch(conn: NatsConnection): void {
    void (async () => {
      for await (const status of conn.status()) {
        if (status.type === 'disconnect') {
          connected = false;
          logger.warn({ server: status.server }, 'NATS connection lost; reconnecting (publishes fail until then)');
        } else if (status.type === 'reconnect') {
          connected = true;
          // The server may be another one, or have lost its state: check the stream again.
          streamReady = undefined;
          logger.info({ server: status.server }, 'NATS reconnected');
        }
      }
    })();
    void conn.closed().then((err) => {
      if (nc !== conn) return;
      nc = undefined;
      js = undefined;
      connected = false;
      streamReady = undefined;
      if (closing) return;
      logger.error({ err }, 'NATS connection closed; connecting again');
      void attemptConnect(0);
    });
  }

  /** The stream exists with our subjects and at least our duplicate window; shared by concurrent callers. */
  function readyStream(): Promise<void> {
    streamReady ??= ensureStream().catch((e: unknown) => {
      streamReady = undefined;
      logger.error({ err: coerceError(e), stream }, 'JetStream stream could not be created or updated');
      throw e;
    });
    return streamReady;
  }

  async function ensureStream(): Promise<void> {
    const conn = nc;
    if (conn === undefined) throw new Error('NATS is not connected');
    const jsm = await jetstreamManager(conn, { timeout: requestTimeoutMs });
    const subject = `${subjectPrefix}.>`;
    const window = nanos(duplicateWindowMs);
    let info: StreamInfo | undefined;
    try {
      info = await jsm.streams.info(stream);
    } catch (e) {
      if (!(e instanceof JetStreamApiError && e.code === JetStreamApiCodes.StreamNotFound)) throw e;
    }
    if (info === undefined) {
      try {
        await jsm.streams.add({
          name: stream,
          subjects: [subject],
          storage: StorageType.File,
          retention: RetentionPolicy.Limits,
          discard: DiscardPolicy.Old,
          duplicate_window: window,
        });
        logger.info({ stream, subjects: [subject], duplicate_window_ms: duplicateWindowMs }, 'JetStream stream created');
        return;
      } catch (e) {
        if (!(e instanceof JetStreamApiError && e.code === STREAM_NAME_IN_USE)) throw e;
        info = await jsm.streams.info(stream);
      }
    }
    const subjects = info.config.subjects ?? [];
    const missing = !subjects.includes(subject);
    const shortWindow = (info.config.duplicate_window ?? 0) < window;
    if (missing || shortWindow) {
      await jsm.streams.update(stream, {
        subjects: missing ? [...subjects, subject] : subjects,
        duplicate_window: Math.max(info.config.duplicate_window ?? 0, window),
      });
      logger.info({ stream, added_subject: missing ? subject : undefined, duplicate_window_ms: duplicateWindowMs }, 'JetStream stream updated');
    }
  }

  return {
    kind: 'nats',
    start() {
      firstAttempt ??= attemptConnect(0);
      return firstAttempt;
    },
    async publish(event: OutboxMessage): Promise<void> {
      if (closing) throw new Error('the NATS event sink is closed');
      if (js === undefined || !connected) throw new Error(`NATS is not connected (${servers})`);
      const client = js;
      await readyStream();
      const h = natsHeaders();
      // CloudEvents attributes as `ce-` headers (binary content mode); the body is the payload itself.
      h.set('ce-specversion', '1.0');
      h.set('ce-id', event.eventId);
      h.set('ce-source', `/${subjectPrefix}`);
      h.set('ce-type', event.topic);
      h.set('ce-time', event.occurredAt.toISOString());
      h.set('ce-subject', headerValue(event.aggregateId));
      h.set('ce-aggregatetype', headerValue(event.aggregateType));
      h.set('ce-aggregateid', headerValue(event.aggregateId));
      h.set('content-type', 'application/json');
      try {
        const ack = await client.publish(`${subjectPrefix}.${event.topic}`, JSON.stringify(event.payload), {
          msgID: event.eventId,
          headers: h,
          timeout: requestTimeoutMs,
        });
        if (ack.stream !== stream) throw new Error(`subject ${subjectPrefix}.${event.topic} is captured by stream ${ack.stream}, not ${stream}`);
        if (ack.duplicate) logger.debug({ event_id: event.eventId, seq: ack.seq }, 'JetStream already had this event; not stored twice');
      } catch (e) {
        // No stream answered for the subject (deleted, or the server lost it): create it again before the next try.
        // (The client's JetStreamNotEnabled class is not exported; its name is set.)
        if (e instanceof Error && e.name === 'JetStreamNotEnabled') streamReady = undefined;
        throw e;
      }
    },
    healthCheck: {
      name: 'events',
      // Events wait in the outbox while NATS is away; serving goes on.
      critical: false,
      async check() {
        const conn = nc;
        if (conn === undefined || !connected) throw new Error('NATS is not connected');
        await readyStream();
        await conn.rtt();
      },
    },
    async close() {
      closing = true;
      clearTimeout(retryTimer);
      const conn = nc;
      nc = undefined;
      js = undefined;
      connected = false;
      // close(), not drain(): publishes still waiting for an ack fail now, and the relay keeps those events.
      if (conn && !conn.isClosed()) await conn.close();
    },
  };
}

/**
 * NATS header values are printable ASCII: anything else (and '%') is percent-encoded as
 * UTF-8, the CloudEvents HTTP binding's rule.
 */
function headerValue(value: string): string {
  return value.replace(/[^\x21-\x24\x26-\x7e]/gu, (c) =>
    Array.from(Buffer.from(c, 'utf8'), (b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join(''),
  );
}
