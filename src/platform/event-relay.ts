/**
 * The outbox relay as a process runs it: the sink chosen from the configuration, the
 * relay loop over it, and a stop that never outlasts the shutdown grace.
 *
 * With NATS_URL the sink is NATS JetStream (events-nats.ts). Without it the events are
 * logged (debug) and marked published in process, so an installation without a broker
 * does not grow an ever-longer backlog; the rows stay in outbox_events, and setting
 * published_at back to null sends them to a broker configured later.
 */
import type { Kysely } from 'kysely';
import type { Registry } from 'prom-client';
import type { Config } from './config.js';
import { coerceError } from './errors.js';
import { createNatsEventSink, describeNatsUrl } from './events-nats.js';
import type { HealthCheck } from './health.js';
import type { Logger } from './logger.js';
import { createOutboxRelay, type EventSink } from './outbox.js';
import type { PlatformTables } from './schema.js';

export interface EventRelayOptions<DB extends PlatformTables> {
  readonly db: Kysely<DB>;
  readonly logger: Logger;
  readonly events: Config['events'];
  /** Where the relay's counters are registered (the process's /metrics). */
  readonly registry?: Registry;
  /** Replaces the sink the configuration selects. */
  readonly sink?: EventSink;
}

export interface EventRelay {
  /** The sink's kind: 'nats' or 'log'. */
  readonly sink: string;
  /** Readiness components to add to the process's probes ('events' with NATS; not critical). */
  readonly healthChecks: readonly HealthCheck[];
  /**
   * Stops the loop, waits up to graceMs for the batch in flight, then closes the sink;
   * a publish still waiting for the broker then fails and its event stays in the outbox.
   */
  stop(graceMs: number): Promise<void>;
}

/** Creates the sink and starts relaying; the loop begins once the sink's first connection attempt is over. */
export function startEventRelay<DB extends PlatformTables>(options: EventRelayOptions<DB>): EventRelay {
  const { logger, events } = options;
  const sink =
    options.sink ??
    (events.natsUrl === undefined
      ? createLogEventSink(logger)
      : createNatsEventSink({ url: events.natsUrl, stream: events.natsStream, subjectPrefix: events.natsSubjectPrefix, logger }));
  const relay = createOutboxRelay({
    db: options.db,
    logger,
    publish: (event) => sink.publish(event),
    pollIntervalMs: events.pollIntervalMs,
    ...(options.registry ? { registry: options.registry } : {}),
  });
  let stopping = false;
  sink
    .start()
    .then(() => {
      if (!stopping) relay.start();
    })
    .catch((e: unknown) => logger.error({ err: coerceError(e) }, 'event sink failed to start; the outbox relay is not running'));
  if (events.natsUrl === undefined && options.sink === undefined) {
    logger.info({ sink: sink.kind }, 'outbox relay started; NATS_URL is unset, so events are logged (debug) and marked published');
  } else {
    logger.info(
      { sink: sink.kind, ...(events.natsUrl ? { servers: describeNatsUrl(events.natsUrl), stream: events.natsStream, subject_prefix: events.natsSubjectPrefix } : {}) },
      'outbox relay started',
    );
  }

  return {
    sink: sink.kind,
    healthChecks: sink.healthCheck ? [sink.healthCheck] : [],
    async stop(graceMs) {
      stopping = true;
      const drained = relay.stop();
      let timer: NodeJS.Timeout | undefined;
      const inTime = await Promise.race([
        drained.then(() => true),
        new Promise<false>((resolve) => {
          timer = setTimeout(() => resolve(false), graceMs);
        }),
      ]);
      clearTimeout(timer);
      if (!inTime) logger.warn({ grace_ms: graceMs }, 'outbox batch still publishing at the end of the grace; closing the sink under it');
      await sink.close();
      await drained;
    },
  };
}

/** The sink without a broker: each event is logged at debug level and counts as published. */
export function createLogEventSink(logger: Logger): EventSink {
  const log = logger.child({ component: 'events_log' });
  return {
    kind: 'log',
    start: async () => undefined,
    async publish(event) {
      log.debug({ event_id: event.eventId, topic: event.topic, aggregate_type: event.aggregateType, aggregate_id: event.aggregateId }, 'event');
    },
    close: async () => undefined,
  };
}
