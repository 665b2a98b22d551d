/**
 * Prometheus metrics with the names the deployment guides use. One registry per app
 * (tests build many apps in one process); Node process metrics are included.
 *
 * Gauges read from the database (backlogs, the book, the ledger's net) are sampled: a
 * scrape triggers a read only when the last one is older than the sampler's maxAge, waits
 * for it a bounded time, and otherwise serves the previous value while the read finishes
 * in the background. The read itself runs under a statement timeout. Nothing reads when
 * nobody scrapes, and no timer outlives the app.
 */
import { sql, type Kysely, type Transaction } from 'kysely';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type Aggregator } from 'prom-client';
import { coerceError } from './errors.js';
import { runHealthChecks, type HealthCheck } from './health.js';
import type { App } from './http.js';
import type { Logger } from './logger.js';

export interface Metrics {
  readonly registry: Registry;
  readonly httpRequestsTotal: Counter<'method' | 'route' | 'status'>;
  readonly httpRequestDuration: Histogram<'method' | 'route' | 'status'>;
  readonly activeRequests: Gauge;
  readonly rateLimitStoreFallbacks: Counter;
  /** Failed reads of sampled gauges, by sampler; their gauges keep the last value read. */
  readonly sampleErrors: Counter<'sampler'>;
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return {
    registry,
    httpRequestsTotal: new Counter({
      name: 'http_requests_total',
      help: 'HTTP requests by method, route template and status code',
      labelNames: ['method', 'route', 'status'] as const,
      registers: [registry],
    }),
    httpRequestDuration: new Histogram({
      name: 'http_request_duration_seconds',
      help: 'HTTP request duration in seconds, by method, route template and status code',
      labelNames: ['method', 'route', 'status'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    activeRequests: new Gauge({
      name: 'active_requests',
      help: 'HTTP requests in flight',
      registers: [registry],
    }),
    rateLimitStoreFallbacks: new Counter({
      name: 'loanbook_rate_limit_store_fallbacks_total',
      help: 'Rate-limit decisions taken in process because Redis was unavailable',
      registers: [registry],
    }),
    sampleErrors: new Counter({
      name: 'loanbook_metrics_sample_errors_total',
      help: 'Failed or timed-out reads of database-sampled gauges, by sampler; the gauges keep their last value',
      labelNames: ['sampler'] as const,
      registers: [registry],
    }),
  };
}

export interface SamplerOptions<T> {
  /** Names the sampler in loanbook_metrics_sample_errors_total and in logs. */
  readonly name: string;
  /** A value at most this old is served without reading again. */
  readonly maxAgeMs: number;
  /** How long a scrape waits for a read in progress before it serves the previous value (default 1000 ms). */
  readonly waitMs?: number;
  /** Reads a fresh value; bound it (readWithTimeout) so a stuck read cannot hold the sampler. */
  readonly read: () => Promise<T>;
}

export interface Sampler<T> {
  /** The latest value read (refreshed first when stale), or undefined before the first successful read. */
  current(): Promise<T | undefined>;
}

export function createSampler<T>(metrics: Metrics, logger: Logger, options: SamplerOptions<T>): Sampler<T> {
  const waitMs = options.waitMs ?? 1000;
  // The series exists from the start (at 0), so `increase()` sees the first failure.
  metrics.sampleErrors.inc({ sampler: options.name }, 0);
  let value: T | undefined;
  let readAt = -Infinity;
  let reading: Promise<void> | undefined;
  const refresh = () => {
    readAt = performance.now();
    reading = options
      .read()
      .then(
        (v) => {
          value = v;
        },
        (e: unknown) => {
          metrics.sampleErrors.inc({ sampler: options.name });
          logger.warn({ err: coerceError(e), sampler: options.name }, 'metrics sample failed; serving the previous value');
        },
      )
      .finally(() => {
        reading = undefined;
      });
    return reading;
  };
  return {
    async current() {
      const inFlight = reading ?? (performance.now() - readAt >= options.maxAgeMs ? refresh() : undefined);
      if (inFlight) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([inFlight, new Promise<void>((resolve) => (timer = setTimeout(resolve, waitMs)))]);
        clearTimeout(timer);
      }
      return value;
    },
  };
}

/**
 * Runs `fn` in a read-only transaction whose statements PostgreSQL cancels after
 * `timeoutMs` (PGlite, single-threaded, cannot interrupt a statement: there the
 * sampler's wait is the only bound).
 */
export function readWithTimeout<DB, T>(db: Kysely<DB>, timeoutMs: number, fn: (trx: Transaction<DB>) => Promise<T>): Promise<T> {
  return db
    .transaction()
    .setAccessMode('read only')
    .execute(async (trx) => {
      await sql`select set_config('statement_timeout', ${String(timeoutMs)}, true)`.execute(trx);
      return fn(trx);
    });
}

export interface SampledGaugeSpec<T, L extends string> {
  readonly name: string;
  readonly help: string;
  readonly labelNames?: readonly L[];
  /**
   * How a `serve --workers` primary combines its workers' series (default 'first': every
   * worker reads the same database, so summing would multiply the value).
   */
  readonly aggregator?: Aggregator;
  /** The series of a sample. None are exported before the first successful read. */
  readonly values: (sample: T) => Iterable<readonly [labels: Partial<Record<L, string>>, value: number]>;
}

/** A gauge whose series are computed from the sampler's current value at each scrape. */
export function registerSampledGauge<T, L extends string>(registry: Registry, sampler: Sampler<T>, spec: SampledGaugeSpec<T, L>): void {
  const labelNames = spec.labelNames ?? [];
  new Gauge<L>({
    name: spec.name,
    help: spec.help,
    labelNames,
    aggregator: spec.aggregator ?? 'first',
    registers: [registry],
    async collect() {
      const sample = await sampler.current();
      this.reset();
      let exported = false;
      if (sample !== undefined) {
        for (const [labels, value] of spec.values(sample)) {
          this.set(labels, value);
          exported = true;
        }
      }
      // An unlabelled gauge would otherwise show 0, which reads as a real value.
      if (!exported && labelNames.length === 0) this.remove();
    },
  });
}

/**
 * `loanbook_component_up{component}`: 1 when the readiness check of the component
 * (database, redis, jobs, …) passes, 0 when it fails; the same checks /health/ready runs,
 * at most every 5 s.
 */
export function registerComponentMetrics(metrics: Metrics, logger: Logger, checks: readonly HealthCheck[], timeoutMs = 2000): void {
  const sampler = createSampler(metrics, logger, {
    name: 'components',
    maxAgeMs: 5000,
    // The checks bound themselves; a scrape waits for them so a failure shows at once.
    waitMs: timeoutMs + 500,
    read: () => runHealthChecks(checks, timeoutMs),
  });
  registerSampledGauge(metrics.registry, sampler, {
    name: 'loanbook_component_up',
    help: 'Whether the component this process depends on passes its readiness check (1) or fails it (0)',
    labelNames: ['component'] as const,
    // Under `serve --workers`, one worker that cannot reach a component is enough to show it.
    aggregator: 'min',
    values: (report) => Object.entries(report.components).map(([component, c]) => [{ component }, c.status === 'ok' ? 1 : 0] as const),
  });
}

/** Requests counted in `active_requests` and not yet released. */
const inFlight = new WeakSet<object>();

/**
 * Counts and times every request; the route label is the template, never the raw URL.
 *
 * `active_requests` is released exactly once per request that incremented it: onResponse
 * and onRequestAbort may both fire for one request, and an earlier onRequest hook (a CORS
 * preflight answered in its hook, an authentication lookup that throws) can end a request
 * before this hook ever ran. The duration is Fastify's own `reply.elapsedTime`, measured
 * from the moment the request arrived, so those requests are timed too.
 */
export function installHttpMetrics(app: App, metrics: Metrics): void {
  const release = (request: object) => {
    if (inFlight.delete(request)) metrics.activeRequests.dec();
  };
  app.addHook('onRequest', async (request) => {
    inFlight.add(request);
    metrics.activeRequests.inc();
  });
  app.addHook('onResponse', async (request, reply) => {
    release(request);
    const route = request.routeOptions.url ?? 'unmatched';
    const labels = { method: request.method, route, status: String(reply.statusCode) };
    metrics.httpRequestsTotal.inc(labels);
    metrics.httpRequestDuration.observe(labels, reply.elapsedTime / 1000);
  });
  app.addHook('onRequestAbort', async (request) => {
    release(request);
  });
}

export function registerMetricsRoute(app: App, metrics: Metrics): void {
  app.get('/metrics', { config: { auth: 'public', rateLimit: false }, schema: { hide: true } }, async (_request, reply) => {
    void reply.type(metrics.registry.contentType);
    return metrics.registry.metrics();
  });
}
