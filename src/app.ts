/**
 * buildApp(deps): the HTTP application, separate from `listen` so tests drive it with
 * `app.inject()`. Platform plugins first (ids, headers, CORS, auth, metrics, rate
 * limiting, roles, idempotency, compression), then each part's routes, then the docs.
 */
import type { Kysely, Transaction } from 'kysely';
import type { Redis } from 'ioredis';
import { createIdentityService, type IdentityService } from './identity/service.js';
import type { IdentityDb } from './identity/repository.js';
import type { LedgerDb } from './ledger/repository.js';
import { createLedgerService, type LedgerService } from './ledger/service.js';
import { registerLedgerMetrics } from './ledger/metrics.js';
import { registerLedgerRoutes } from './ledger/routes.js';
import { createEodMetrics, registerBookMetrics } from './servicing/book-metrics.js';
import { createServicingMetrics } from './servicing/metrics.js';
import type { ServicingDb } from './servicing/repository.js';
import { registerServicingRoutes } from './servicing/routes.js';
import { createEodService, type EodService } from './servicing/eod.js';
import { registerEodRoutes } from './servicing/eod-routes.js';
import { createServicingService, type ServicingDatabase, type ServicingService } from './servicing/service.js';
import { registerIdentityRoutes } from './identity/routes.js';
import type { ForecastingDb } from './forecasting/repository.js';
import { registerForecastingRoutes } from './forecasting/routes.js';
import { createForecastingService, type ForecastingService } from './forecasting/service.js';
import { createCalculationPool } from './forecasting/threads.js';
import { createOriginationMetrics } from './origination/metrics.js';
import { createCompanyVerifier, createNarrativeWriter } from './origination/providers/index.js';
import type { OriginationDb } from './origination/repository.js';
import { registerOriginationRoutes } from './origination/routes.js';
import { createOriginationService, type OriginationDatabase, type OriginationService } from './origination/service.js';
import { createMemoryCache, createRedisCache } from './platform/cache.js';
import { registerCalculatorRoutes } from './calculators/routes.js';
import { createTokenSigner } from './identity/tokens.js';
import { ROLES } from './identity/model.js';
import type { Config } from './platform/config.js';
import { createFieldCipher, type FieldCipher } from './platform/crypto.js';
import type { Database } from './platform/database.js';
import { registerHealthRoutes, type HealthCheck } from './platform/health.js';
import { getJob, type JobQueue } from './platform/jobs.js';
import { registerJobRoutes } from './platform/jobs-routes.js';
import {
  createHttpServer,
  installAuthorization,
  installCompression,
  registerDocsRoutes,
  type App,
} from './platform/http.js';
import { installIdempotency } from './platform/idempotency.js';
import { installErrorReporting, type ErrorReporter } from './platform/error-reporting.js';
import { traceQueries } from './platform/telemetry.js';
import type { Logger } from './platform/logger.js';
import { registerBacklogMetrics } from './platform/backlog-metrics.js';
import { createMetrics, installHttpMetrics, registerComponentMetrics, registerMetricsRoute, type Metrics } from './platform/metrics.js';
import { packageVersion } from './platform/paths.js';
import {
  createMemoryRateLimitStore,
  createRedisRateLimitStore,
  fallbackReporter,
  installRateLimit,
  withFallback,
  type RateLimitStore,
} from './platform/rate-limit.js';

/** Every table the application knows. */
export type AppDatabase = IdentityDb & LedgerDb & ServicingDb & OriginationDb & ForecastingDb;

export interface AppDeps {
  readonly config: Config;
  readonly logger: Logger;
  readonly database: Database<AppDatabase>;
  /** Present when REDIS_URL is set. The caller owns and closes it. */
  readonly redis?: Redis;
  readonly clock?: () => Date;
  readonly metrics?: Metrics;
  /** Extra readiness checks. */
  readonly healthChecks?: readonly HealthCheck[];
  /**
   * The job queue (the caller creates, starts and stops it). Its health joins readiness
   * (not critical: a stuck worker reports "degraded"). Without it GET /v1/jobs/{id} still
   * reads the jobs table, but nothing can be enqueued.
   */
  readonly jobs?: JobQueue;
  /**
   * Redis key prefix for rate-limit counters (default `loanbook:rl:`). Deployments (or
   * test runs) that share one Redis but must not share counters use different prefixes.
   */
  readonly rateLimitKeyPrefix?: string;
  /**
   * Extension and test hook: registers extra routes after the platform plugins and the
   * domain routes, before the docs, so they get auth, rate limiting, idempotency and
   * metrics exactly like a domain route. Production code leaves it unset.
   */
  readonly extraRoutes?: (app: App) => void;
  /** Requests answered 500 are reported to it (SENTRY_DSN; see platform/telemetry.ts startTelemetry). */
  readonly errorReporter?: ErrorReporter | undefined;
}

export interface BuiltApp {
  readonly app: App;
  readonly identity: IdentityService;
  readonly cipher: FieldCipher;
  readonly metrics: Metrics;
  readonly rateLimitStore: RateLimitStore;
  readonly ledger: LedgerService;
  readonly servicing: ServicingService;
  readonly eod: EodService;
  readonly origination: OriginationService;
  readonly forecasting: ForecastingService;
  readonly jobs: JobQueue | undefined;
  /** Call when shutdown begins: readiness turns 503 while in-flight requests finish. */
  beginShutdown(): void;
}

/**
 * One part's view of the application database. Kysely's types are invariant in the
 * table map, so the database holding every part's tables is narrowed here, in one place.
 */
function partView<PartDb>(db: Kysely<AppDatabase>): Kysely<PartDb> {
  return db as unknown as Kysely<PartDb>;
}

export async function buildApp(deps: AppDeps): Promise<BuiltApp> {
  const { config, logger, database } = deps;
  const db: Kysely<AppDatabase> = database.db;
  const clock = deps.clock ?? (() => new Date());
  const metrics = deps.metrics ?? createMetrics();
  const cipher = createFieldCipher(config.encryptionKey, config.previousEncryptionKeys);
  const signer = createTokenSigner(config.secretKey, config.accessTokenExpireMinutes, config.previousSecretKeys);

  // The in-process windows follow the app clock (tests move it; production reads Date.now).
  const memoryStore = createMemoryRateLimitStore(() => clock().getTime());
  const rateLimitStore: RateLimitStore = deps.redis
    ? withFallback(
        createRedisRateLimitStore(deps.redis, deps.rateLimitKeyPrefix),
        memoryStore,
        fallbackReporter(logger, metrics.rateLimitStoreFallbacks),
      )
    : memoryStore;

  const identity = createIdentityService({
    db: partView<IdentityDb>(db),
    cipher,
    signer,
    clock,
    logger,
    loginLimiter: { store: rateLimitStore, ...config.loginRateLimit },
    refreshTokenExpireDays: config.refreshTokenExpireDays,
  });

  // Traced only when an OTLP endpoint is configured: off, the hot path has no hooks at all.
  const tracing = config.otel.tracesUrl !== undefined;
  if (tracing) traceQueries(database.pool);
  const app = await createHttpServer({
    logger,
    tracing,
    ...config.http,
    trustProxy: config.trustProxy,
    allowedOrigins: config.allowedOrigins,
    checkoutBudgetMs: config.db.acquireTimeoutMs,
    authenticator: identity.authenticator(),
    openapi: {
      title: 'Loanbook API',
      version: packageVersion,
      description:
        'Lending core: decisions, servicing, ledger and cashflow projection. Errors are RFC 9457 problem+json; ' +
        'amounts are decimal strings; every operation lists the roles that may call it in `x-roles`.',
    },
  });
  if (deps.errorReporter) installErrorReporting(app, deps.errorReporter);
  installHttpMetrics(app, metrics);
  installRateLimit(app, { store: rateLimitStore, ...config.rateLimit });
  installAuthorization(app);
  installIdempotency(app, db, {
    retentionHours: config.idempotencyRetentionHours,
    claimTimeoutMs: config.http.requestTimeoutMs + 30_000,
  });
  await installCompression(app);

  let shuttingDown = false;
  const checks: HealthCheck[] = [{ name: 'database', critical: true, check: () => database.ping() }];
  if (deps.redis) {
    const redis = deps.redis;
    // Not critical: the rate limiter falls back to in-process counting while Redis is away.
    checks.push({ name: 'redis', critical: false, check: async () => void (await redis.ping()) });
  }
  if (deps.jobs) checks.push(deps.jobs.healthCheck());
  checks.push(...(deps.healthChecks ?? []));
  // Gauges sampled at scrape time (bounded; see platform/metrics.ts): readiness per component, backlogs, the ledger's net, the book.
  registerComponentMetrics(metrics, logger, checks);
  registerBacklogMetrics(metrics, logger, db, { jobKinds: () => deps.jobs?.kinds() ?? [] });
  registerLedgerMetrics(metrics, logger, partView<LedgerDb>(db));
  registerBookMetrics(metrics, logger, partView<ServicingDb>(db));
  registerHealthRoutes(app, { checks, isShuttingDown: () => shuttingDown, version: packageVersion });
  if (config.metricsPort === undefined) registerMetricsRoute(app, metrics);

  registerIdentityRoutes(app, identity);
  registerCalculatorRoutes(app);
  const ledger = createLedgerService({ db: partView<LedgerDb>(db), clock });
  registerLedgerRoutes(app, ledger);
  const servicing = createServicingService({ db: partView<ServicingDatabase>(db), ledger, clock, logger, metrics: createServicingMetrics(metrics.registry) });
  registerServicingRoutes(app, servicing);
  const eod = createEodService({ db: partView<ServicingDatabase>(db), ledger, clock, logger, chunkSize: config.eodChunkSize, lanes: config.eodConcurrency, onRun: createEodMetrics(metrics.registry) });
  registerEodRoutes(app, eod, logger);
  // Company verifications are cached 10 minutes (the seed's), in Redis when there is one.
  const cache = deps.redis ? createRedisCache(deps.redis, 'loanbook:cache:') : createMemoryCache({ maxEntries: 10_000 });
  const origination = createOriginationService({
    db: partView<OriginationDatabase>(db),
    cipher,
    clock,
    logger,
    verifier: createCompanyVerifier(config, cache),
    narrator: createNarrativeWriter(config),
    booking: {
      productCurrency: (productId) => servicing.productCurrency(productId),
      book: async (trx, request, ctx) => {
        const loan = await servicing.createLoanIn(trx as unknown as Transaction<ServicingDatabase>, request, { ...ctx, idempotencyKey: undefined });
        return { loanId: loan.id };
      },
    },
    metrics: createOriginationMetrics(metrics.registry),
    applicationsPerDay: config.origination.applicationsPerDay,
    dualApprovalAbove: config.origination.dualApprovalAbove,
  });
  registerOriginationRoutes(app, origination);
  const jobs = deps.jobs;
  // Threads start on first use (a queued projection of a long loan list) and end with the app.
  const threads = createCalculationPool(config.calculationThreadPoolSize);
  app.addHook('onClose', async () => threads.close());
  const forecasting = createForecastingService({
    db: partView<ForecastingDb>(db),
    clock,
    jobs,
    threads,
    book: {
      // The live book one currency at a time: outstanding principal in major units (analytics).
      loans: async (currency) =>
        (await servicing.bookTape())
          .filter((l) => l.currency === currency)
          .map((l) => ({ balance: l.balance, annual_rate: l.annualRate, remaining_term: l.remainingTerm, age: l.age })),
    },
  });
  registerForecastingRoutes(app, forecasting);
  registerJobRoutes(app, jobs ?? { get: (id) => getJob(db, id) }, { roles: ROLES, seeAll: ['admin'] });
  deps.extraRoutes?.(app);

  await registerDocsRoutes(app);
  app.addHook('onClose', async () => memoryStore.close());

  return {
    app,
    identity,
    cipher,
    metrics,
    rateLimitStore,
    ledger,
    servicing,
    eod,
    origination,
    forecasting,
    jobs,
    beginShutdown() {
      shuttingDown = true;
    },
  };
}
