#!/usr/bin/env node
/**
 * The `loanbook` command, and the composition root of every process: the only place
 * that reads the environment (through loadConfig), opens connections and wires parts.
 */
import { Command, Option } from 'commander';
import { buildApp, type AppDatabase, type BuiltApp } from './app.js';
import { registerBackupCommands } from './backup-cli.js';
import { registerJobHandlers } from './job-handlers.js';
import { ROLES, type Role } from './identity/model.js';
import { appendAudit, verifyAuditChain } from './platform/audit.js';
import { createFieldCipher } from './platform/crypto.js';
import { reencryptTable } from './platform/reencrypt.js';
import { IDENTITY_ENCRYPTED } from './identity/encrypted-columns.js';
import { ORIGINATION_ENCRYPTED } from './origination/encrypted-columns.js';
import { ConfigError, fingerprint, loadConfig, type Config } from './platform/config.js';
import { clusterWorkerLink, createSupervisor, type ClusterWorkerLink } from './platform/cluster.js';
import { databaseTarget, describeTarget, openDatabase, type Database } from './platform/database.js';
import { trackHttpDrain } from './platform/drain.js';
import { coerceError, isAppError } from './platform/errors.js';
import { purgeExpiredIdempotencyKeys } from './platform/idempotency.js';
import { createJobQueue, type JobQueue } from './platform/jobs.js';
import { createLogger, type Logger } from './platform/logger.js';
import type { ErrorReporter } from './platform/error-reporting.js';
import { startTelemetry } from './platform/telemetry.js';
import { startEventRelay, type EventRelay } from './platform/event-relay.js';
import { createMetrics } from './platform/metrics.js';
import { createOpsHttpServer, type OpsHttpServer } from './platform/ops-http.js';
import { migrateUp, migrationStatus, pendingMigrations } from './platform/migrate.js';
import { packageVersion } from './platform/paths.js';
import { createRedis } from './platform/redis.js';
import { createEodScheduler } from './servicing/eod-schedule.js';
import { formatMoney, isCurrency, isEngineError, type PoolProjection } from './engine/index.js';
import {
  ForecastOptionError,
  forecastJson,
  forecastSettings,
  periodsCsv,
  projectTape,
  readLoanTape,
  summaryText,
  TAPE_SLICE,
  TapeError,
  type ForecastFlags,
  type ForecastSettings,
  type LoanTape,
} from './forecasting/tape.js';
import type { Redis } from 'ioredis';
import type { Kysely } from 'kysely';
import type { Registry } from 'prom-client';

class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

function config(): Config {
  try {
    return loadConfig();
  } catch (e) {
    if (e instanceof ConfigError) throw new CliError(e.message, 2);
    throw e;
  }
}

async function withDatabase<T>(cfg: Config, logger: Logger, fn: (db: Database<AppDatabase>) => Promise<T>): Promise<T> {
  const database = await openDatabase<AppDatabase>(databaseTarget(cfg), cfg.db, logger);
  try {
    return await fn(database);
  } finally {
    await database.close();
  }
}

async function requireMigrated(database: Database<AppDatabase>): Promise<void> {
  const pending = await pendingMigrations(database.db as Kysely<unknown>);
  if (pending.length > 0) {
    throw new CliError(`the database has ${pending.length} pending migration(s); run \`loanbook migrate up\` first`);
  }
}

/** `loanbook serve`: one serving process, or with `--workers N` (N > 1) a cluster primary over N of them. */
async function serve(opts: { workers?: string }): Promise<void> {
  const cfg = config();
  const link = clusterWorkerLink();
  // A cluster worker runs the same command line as its primary: it serves.
  if (link) return serveProcess(cfg, link);
  const workers = opts.workers === undefined ? cfg.webConcurrency : parseWorkers(opts.workers);
  return workers > 1 ? servePrimary(cfg, workers) : serveProcess(cfg, undefined);
}

function parseWorkers(value: string): number {
  const n = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > 256) throw new CliError(`--workers must be a whole number from 1 to 256, got "${value}"`, 2);
  return n;
}

/** Outside production, applies pending migrations; in production, refuses to start until they have run. */
async function prepareSchema(cfg: Config, logger: Logger, db: Kysely<unknown>): Promise<void> {
  if (cfg.env === 'production') {
    const pending = await pendingMigrations(db);
    if (pending.length > 0) {
      throw new CliError(
        `the database has ${pending.length} pending migration(s) (${pending.join(', ')}); ` +
          'run `loanbook migrate up` (with the same DATABASE_URL) before starting the service',
      );
    }
  } else {
    const applied = await migrateUp(db);
    if (applied.length > 0) logger.info({ migrations: applied }, 'migrations applied');
  }
}

/** Where the primary of `serve --workers` serves the aggregated /metrics when METRICS_PORT is unset. */
const CLUSTER_METRICS_PORT = 9464;

/**
 * The primary of `serve --workers N`: prepares the schema once, forks N serving processes
 * on the shared PORT, serves their aggregated /metrics on METRICS_PORT, and turns signals
 * into supervisor actions (TERM/INT: drain all and exit; HUP: rolling restart).
 */
async function servePrimary(cfg: Config, workers: number): Promise<void> {
  if (cfg.databaseUrl === undefined) {
    throw new CliError(
      '`serve --workers` needs DATABASE_URL: the embedded database (PGlite) is a directory one process owns, so several ' +
        'processes cannot share it. Use PostgreSQL, or run a single process (no --workers, WEB_CONCURRENCY unset or 1).',
      2,
    );
  }
  const logger = createLogger({ level: cfg.logLevel }).child({ pid: process.pid, role: 'primary' });
  await withDatabase(cfg, logger, (database) => prepareSchema(cfg, logger, database.db as Kysely<unknown>));

  const metricsPort = cfg.metricsPort ?? CLUSTER_METRICS_PORT;
  const supervisor = createSupervisor({
    workers,
    logger,
    shutdownGraceMs: cfg.http.shutdownGraceMs,
    // Workers then leave /metrics off the API port: a scrape there would reach one process at random.
    env: { METRICS_PORT: String(metricsPort) },
  });
  const ops = createOpsHttpServer({ logger, metrics: supervisor.metrics });
  await ops.listen(metricsPort, cfg.host);

  // Before the first fork: a signal during start-up already stops the workers cleanly.
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down: draining the workers');
    void supervisor.stop(signal);
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => {
    if (stopping) return;
    logger.info({ signal: 'SIGHUP' }, 'rolling restart requested');
    void supervisor.rollingRestart();
  });

  try {
    await supervisor.start();
    logger.info(
      { workers, port: cfg.port, host: cfg.host, metrics_port: metricsPort, database: describeTarget(databaseTarget(cfg)), env: cfg.env, version: packageVersion },
      'loanbook cluster ready',
    );
    if (cfg.env !== 'production') {
      process.stdout.write(`  Loanbook ${packageVersion} on http://${cfg.host}:${cfg.port}  (${workers} workers; metrics on :${metricsPort})\n`);
    }
  } catch (e) {
    if (!stopping) {
      await ops.close();
      throw new CliError(coerceError(e).message);
    }
  }
  const code = await supervisor.finished;
  await ops.close();
  if (code === 0) logger.info('stopped');
  else logger.error({ exit_code: code }, 'stopped with errors');
  process.exit(code);
}

/**
 * One serving process: the whole of `serve` without --workers, or one worker of the
 * cluster (`link`), which leaves the schema, the aggregated /metrics and the choice of
 * who runs the schedulers to the primary.
 */
async function serveProcess(cfg: Config, link: ClusterWorkerLink | undefined): Promise<void> {
  const base = createLogger({ level: cfg.logLevel });
  const logger = link ? base.child({ pid: process.pid }) : base;
  const telemetry = await startTelemetry(cfg, logger);
  const target = databaseTarget(cfg);
  const database = await openDatabase<AppDatabase>(target, cfg.db, logger);
  const db = database.db as Kysely<unknown>;
  let redis: Redis | undefined;
  let built: BuiltApp | undefined;
  let jobs: JobQueue | undefined;
  let metricsServer: OpsHttpServer | undefined;
  let events: EventRelay | undefined;
  const release = async () => {
    await metricsServer?.close();
    await events?.stop(0);
    await jobs?.stop({ graceMs: 0 }).catch(() => undefined);
    await built?.app.close().catch(() => undefined);
    redis?.disconnect();
    await database.close().catch(() => undefined);
    await telemetry.shutdown();
  };
  try {
    if (!link) await prepareSchema(cfg, logger, db);

    redis = cfg.redisUrl ? createRedis(cfg.redisUrl, logger) : undefined;
    const metrics = createMetrics();
    jobs = jobQueue(cfg, logger, database, metrics.registry, telemetry.errorReporter);
    // The outbox relay runs where the jobs run: here in the embedded mode or when asked to, else in `loanbook worker`.
    if (cfg.jobsInProcess) events = startEventRelay({ db: database.db, logger, events: cfg.events, registry: metrics.registry });
    built = await buildApp({ config: cfg, logger, database, metrics, jobs, healthChecks: events?.healthChecks, errorReporter: telemetry.errorReporter, ...(redis ? { redis } : {}) });
    // Every process enqueues; this one also runs the jobs in the embedded mode, or when asked to.
    if (cfg.jobsInProcess) registerJobHandlers(jobs, { app: built, config: cfg, logger });
    await jobs.start();

    // In a cluster every worker may try; an advisory lock lets exactly one create the admin.
    const boot = await built.identity.bootstrapAdmin({ email: cfg.adminEmail, password: cfg.adminPassword });
    if (boot.created) {
      if (boot.generatedPassword) {
        // Printed once, to the terminal only: never logged.
        process.stdout.write(
          `\n  First start: created admin ${boot.email}\n  Generated password (shown once): ${boot.generatedPassword}\n\n`,
        );
      } else {
        logger.info('first start: created the admin from ADMIN_EMAIL / ADMIN_PASSWORD');
      }
    }

    if (link) link.exposeMetrics(built.metrics.registry);
    else if (cfg.metricsPort !== undefined) {
      metricsServer = createOpsHttpServer({ logger, metrics: built.metrics.registry });
      await metricsServer.listen(cfg.metricsPort, cfg.host);
    }
  } catch (e) {
    // Start-up failed: release what was opened (the embedded database is closed cleanly).
    await release();
    throw e;
  }
  const { app } = built;
  const queue = jobs;
  const drain = trackHttpDrain(app.server);

  // Duties that want one runner per deployment unit (in a cluster: the worker the primary
  // picks). Both are also safe when several run: the purge is idempotent and end-of-day
  // runs are claimed per date in the database.
  let purge: NodeJS.Timeout | undefined;
  let eodScheduler: ReturnType<typeof createEodScheduler> | undefined;
  let stopping = false;
  const startDuties = () => {
    if (stopping) return;
    // Expired Idempotency-Key rows: once at start (processes may restart more often than
    // hourly), then every hour.
    const purgeOnce = () => {
      purgeExpiredIdempotencyKeys(database.db)
        .then((n) => n > 0 && logger.info({ deleted: n }, 'expired idempotency keys purged'))
        .catch((e: unknown) => logger.warn({ err: coerceError(e) }, 'idempotency purge failed'));
    };
    purgeOnce();
    purge = setInterval(purgeOnce, 3_600_000);
    purge.unref();
    if (cfg.eodSchedule !== undefined) {
      eodScheduler = createEodScheduler({ eod: built.eod, logger, clock: () => new Date(), at: cfg.eodSchedule });
      eodScheduler.start();
    }
  };

  // The signal handlers go in before the listener opens: whoever sees the server answer
  // may stop it at once, and the stop drains it.
  const listening = app.listen({ port: cfg.port, host: cfg.host });
  const shutdown = onStopSignal(logger, cfg.http.shutdownGraceMs, 'shutting down: draining in-flight requests', async (trigger) => {
    stopping = true;
    const deadline = Date.now() + jobGraceMs(cfg);
    // A worker replaced in a rolling restart stays ready: its replacement and the others
    // serve the same port, and a probe on one of its kept-alive connections must not take
    // the whole instance out of rotation.
    if (!('reason' in trigger)) built.beginShutdown();
    await listening.catch(() => undefined);
    // Connections finish their requests (see drain.ts); jobs in flight keep running meanwhile.
    if (!(await drain.drain(jobGraceMs(cfg)))) {
      logger.warn({ connections: drain.openConnections() }, 'shutdown grace nearly over: closing the connections still open');
    }
    clearInterval(purge);
    // The queue stops after the HTTP drain: a request still being served may enqueue a job.
    void eodScheduler?.stop();
    await Promise.all([app.close(), queue.stop({ graceMs: Math.max(0, deadline - Date.now()) }), events?.stop(Math.max(0, deadline - Date.now()))]);
    await metricsServer?.close();
    // Every request and job is counted by now; gauges that sample the database still can.
    await link?.farewell();
    redis?.disconnect();
    await database.close();
    await telemetry.shutdown();
  });
  let port: number;
  try {
    await listening;
    // PORT=0 asks the OS for a free port: report the one actually bound.
    const address = app.server.address();
    port = typeof address === 'object' && address !== null ? address.port : cfg.port;
  } catch (e) {
    await release();
    throw e;
  }

  if (link) {
    link.onDuty(startDuties);
    link.onRetire(() => shutdown({ reason: 'replaced' }));
  } else startDuties();

  logger.info(
    {
      port,
      host: cfg.host,
      database: describeTarget(target),
      redis: cfg.redisUrl ? 'configured' : 'in-process',
      jobs: cfg.jobsInProcess ? { workers: 'in process', kinds: queue.kinds(), concurrency: cfg.workerConcurrency } : { workers: 'loanbook worker' },
      env: cfg.env,
      // Where the keys came from ('env' or 'generated') and which keys they are; never the keys.
      secret_key_source: cfg.secretSources.secretKey,
      secret_key_id: fingerprint(cfg.secretKey),
      encryption_key_source: cfg.secretSources.encryptionKey,
      encryption_key_id: fingerprint(cfg.encryptionKey),
      version: packageVersion,
    },
    'loanbook listening',
  );
  if (link) link.ready();
  else if (cfg.env !== 'production') {
    process.stdout.write(`  Loanbook ${packageVersion} on http://${cfg.host}:${port}  (API docs: /docs)\n`);
  }
}

/** What began a stop: a signal, or the cluster primary replacing this worker (rolling restart). */
type StopTrigger = { signal: NodeJS.Signals } | { reason: 'replaced' };

/**
 * On SIGTERM or SIGINT, or a call of the returned function (once): logs `message`, runs
 * `stop`, exits 0 when it is done, 1 when it fails or has not finished within `graceMs`.
 */
function onStopSignal(logger: Logger, graceMs: number, message: string, stop: (trigger: StopTrigger) => Promise<void>): (trigger: StopTrigger) => void {
  let stopping = false;
  const shutdown = (trigger: StopTrigger) => {
    if (stopping) return;
    stopping = true;
    logger.info(trigger, message);
    const force = setTimeout(() => {
      logger.error('shutdown grace period over; exiting');
      process.exit(1);
    }, graceMs);
    force.unref();
    stop(trigger)
      .then(() => {
        logger.info('stopped');
        process.exit(0);
      })
      .catch((e: unknown) => {
        logger.error({ err: coerceError(e) }, 'error during shutdown');
        process.exit(1);
      });
  };
  process.on('SIGTERM', () => shutdown({ signal: 'SIGTERM' }));
  process.on('SIGINT', () => shutdown({ signal: 'SIGINT' }));
  return shutdown;
}

function jobQueue(cfg: Config, logger: Logger, database: Database<AppDatabase>, registry: Registry, errorReporter: ErrorReporter | undefined): JobQueue {
  return createJobQueue({ database, logger, concurrency: cfg.workerConcurrency, registry, stopGraceMs: jobGraceMs(cfg), errorReporter });
}

/** Within SHUTDOWN_GRACE_MS, leaving a second to release (requeue) the jobs still running. */
function jobGraceMs(cfg: Config): number {
  return Math.max(0, cfg.http.shutdownGraceMs - 1000);
}

/**
 * `loanbook worker`: runs the registered job kinds until SIGTERM/SIGINT, with
 * /health/live, /health/ready (database reachable, queue running) and /metrics on
 * WORKER_HTTP_PORT. The probes keep answering while jobs drain (ready says 503).
 */
async function worker(): Promise<void> {
  const cfg = config();
  if (cfg.databaseUrl === undefined) {
    throw new CliError(
      '`loanbook worker` needs DATABASE_URL: the embedded database belongs to one process, and `loanbook serve` runs its jobs itself',
      2,
    );
  }
  const logger = createLogger({ level: cfg.logLevel });
  const telemetry = await startTelemetry(cfg, logger);
  const target = databaseTarget(cfg);
  const database = await openDatabase<AppDatabase>(target, { ...cfg.db, applicationName: 'loanbook-worker' }, logger);
  let built: BuiltApp | undefined;
  let jobs: JobQueue | undefined;
  let ops: OpsHttpServer | undefined;
  let events: EventRelay | undefined;
  let httpPort: number | undefined;
  let shuttingDown = false;
  try {
    await requireMigrated(database);
    const metrics = createMetrics();
    jobs = jobQueue(cfg, logger, database, metrics.registry, telemetry.errorReporter);
    built = await buildApp({ config: cfg, logger, database, metrics, jobs, errorReporter: telemetry.errorReporter });
    registerJobHandlers(jobs, { app: built, config: cfg, logger });
    await jobs.start();
    events = startEventRelay({ db: database.db, logger, events: cfg.events, registry: metrics.registry });
    if (cfg.workerHttpPort !== undefined) {
      const queueCheck = jobs.healthCheck();
      ops = createOpsHttpServer({
        logger,
        metrics: metrics.registry,
        health: {
          // Both critical here: a worker whose queue is not running does no work.
          checks: [
            { name: 'database', critical: true, check: () => database.ping() },
            { name: queueCheck.name, critical: true, check: () => queueCheck.check() },
            ...events.healthChecks,
          ],
          isShuttingDown: () => shuttingDown,
          version: packageVersion,
        },
      });
      httpPort = await ops.listen(cfg.workerHttpPort, cfg.host);
    }
  } catch (e) {
    await ops?.close();
    await events?.stop(0);
    await jobs?.stop({ graceMs: 0 }).catch(() => undefined);
    await built?.app.close().catch(() => undefined);
    await database.close().catch(() => undefined);
    await telemetry.shutdown();
    throw e;
  }
  const app = built.app;
  const queue = jobs;
  const relay = events;

  onStopSignal(logger, cfg.http.shutdownGraceMs, 'shutting down: finishing jobs in flight', async () => {
    shuttingDown = true;
    await Promise.all([queue.stop({ graceMs: jobGraceMs(cfg) }), relay.stop(jobGraceMs(cfg))]);
    await app.close();
    await ops?.close();
    await database.close();
    await telemetry.shutdown();
  });
  // Announced once the signals are handled: whoever waits for this line may stop the worker at once.
  logger.info(
    {
      database: describeTarget(target),
      kinds: queue.kinds(),
      concurrency: cfg.workerConcurrency,
      http_port: httpPort ?? 'off',
      env: cfg.env,
      version: packageVersion,
    },
    'loanbook worker running',
  );
}

/** What each environment variable does, for `--help` (configuration is environment only). */
const ENVIRONMENT: Record<string, string> = {
  ENV: 'development (default), test or production; production requires real secrets and migrated databases',
  DATABASE_URL: 'postgres://… URL; unset: embedded PGlite under DATA_DIR',
  DATA_DIR: 'embedded database and generated secrets (default ./.loanbook/data)',
  SECRET_KEY: 'JWT signing key, at least 32 characters (openssl rand -base64 48); generated in DATA_DIR when unset outside production',
  ENCRYPTION_KEY: 'field encryption key, 32 bytes base64 (openssl rand -base64 32); generated like SECRET_KEY',
  SECRET_KEY_PREVIOUS: 'during a rotation: the old SECRET_KEY(s), comma-separated; tokens they signed still verify',
  ENCRYPTION_KEY_PREVIOUS: 'during a rotation: the old ENCRYPTION_KEY(s), comma-separated; their values still decrypt until `keys reencrypt`',
  PORT: 'HTTP port (default 8000; 0 picks a free one)',
  HOST: 'listen address (default 127.0.0.1, 0.0.0.0 in production)',
  REDIS_URL: 'redis://… for shared rate limits; unset: in process',
  ADMIN_EMAIL: 'first start: email of the admin created on an empty database',
  ADMIN_PASSWORD: 'first start: its password; unset: generated and printed once',
  METRICS_PORT: 'serve /metrics on this port only (with serve --workers: the aggregate of all workers, default 9464)',
  LOG_LEVEL: 'fatal, error, warn, info (default), debug, trace or silent',
  SHUTDOWN_GRACE_MS: 'how long SIGTERM waits for in-flight requests and jobs (default 10000)',
  DB_POOL_MAX: 'PostgreSQL connections per process (default 10)',
  DB_STATEMENT_TIMEOUT_MS: 'PostgreSQL statement timeout (default 30000; migrations are exempt)',
  DB_POOL_ACQUIRE_TIMEOUT_MS: 'longest wait for a free pooled connection before 503 database_unavailable (default 500)',
  DB_PROBE_INTERVAL_MS: 'PostgreSQL reachability probe period; 0 turns it off (default 1000)',
  DB_PROBE_TIMEOUT_MS: 'a probe slower than this marks the database unreachable: requests get 503 at once (default 2000)',
  EOD_SCHEDULE: 'HH:MM (UTC): serving processes close the business date daily at this time; unset: only on request',
  EOD_CHUNK_SIZE: 'loans per end-of-day transaction (default 500)',
  EOD_CONCURRENCY: 'end-of-day chunks in flight at once, each over its own slice of the book (default 2)',
  WORKER_CONCURRENCY: 'jobs of each kind run at once per process (default 4)',
  JOBS_IN_PROCESS: 'serve runs the job workers itself (default: true embedded, false with DATABASE_URL)',
  WEB_CONCURRENCY: 'serving processes of `loanbook serve` (default 1; more needs DATABASE_URL); --workers overrides',
  WORKER_HTTP_PORT: '`loanbook worker` /health/live, /health/ready and /metrics port (default 9465; 0 turns it off)',
  NATS_URL: 'nats://host:4222: the outbox relay (in the processes that run jobs) publishes events to NATS JetStream; unset: events are logged (debug)',
  NATS_STREAM: 'JetStream stream for the events, created or updated at start (default LOANBOOK)',
  NATS_SUBJECT_PREFIX: 'events go to <prefix>.<topic> (default loanbook)',
  OUTBOX_POLL_INTERVAL_MS: 'how often the outbox relay looks for new events (default 1000)',
  OTEL_EXPORTER_OTLP_ENDPOINT: 'http(s)://collector:4318: traces of requests, queries and jobs over OTLP/HTTP (JSON) to <endpoint>/v1/traces; unset: off',
  OTEL_SERVICE_NAME: 'service.name of the traces (default loanbook)',
  SENTRY_DSN: 'Sentry DSN: unexpected errors (500s, failed jobs, crashes) are reported there, scrubbed of personal data; unset: off',
};

function environmentHelp(names: readonly (keyof typeof ENVIRONMENT)[]): string {
  const width = Math.max(...names.map((n) => n.length));
  return `\nEnvironment:\n${names.map((n) => `  ${n.padEnd(width)}  ${ENVIRONMENT[n]}`).join('\n')}\n`;
}

const DATABASE_ENV = ['ENV', 'DATABASE_URL', 'DATA_DIR', 'LOG_LEVEL'] as const;

const program = new Command();
program
  .name('loanbook')
  .description('Loanbook: lending core. Configuration comes from the environment (see README).')
  .version(packageVersion)
  .showHelpAfterError()
  .addHelpText('after', environmentHelp(Object.keys(ENVIRONMENT)));

program
  .command('serve')
  .description(
    'Run the HTTP API (embedded PGlite unless DATABASE_URL is set). Outside production it applies pending ' +
      'migrations first; in production it refuses to start until `loanbook migrate up` has run. SIGTERM/SIGINT ' +
      'drain in-flight requests, then exit 0. With --workers N (N > 1, PostgreSQL only) a primary process runs N ' +
      'serving processes on the same PORT, serves their aggregated /metrics on METRICS_PORT, restarts a worker that ' +
      'dies, and on SIGHUP replaces the workers one at a time without losing a request.',
  )
  .option('--workers <n>', 'serving processes sharing PORT (default: WEB_CONCURRENCY, else 1 = this process serves)')
  .addHelpText('after', environmentHelp(Object.keys(ENVIRONMENT)))
  .action(serve);

program
  .command('worker')
  .description(
    'Run background jobs (PostgreSQL only: DATABASE_URL). Needs a migrated database. SIGTERM/SIGINT stop taking jobs, ' +
      'let those in flight finish within SHUTDOWN_GRACE_MS, requeue the rest, then exit 0.',
  )
  .addHelpText('after', environmentHelp([...DATABASE_ENV, 'WORKER_CONCURRENCY', 'WORKER_HTTP_PORT', 'SHUTDOWN_GRACE_MS', 'NATS_URL', 'NATS_STREAM', 'NATS_SUBJECT_PREFIX']))
  .action(worker);

const migrate = program
  .command('migrate')
  .description('Database migrations (numbered, forward-only SQL)')
  .addHelpText('after', environmentHelp(DATABASE_ENV));
migrate
  .command('up')
  .description('Apply every pending migration, in one transaction (a failure applies none)')
  .addHelpText('after', environmentHelp(DATABASE_ENV))
  .action(async () => {
    const cfg = config();
    const logger = createLogger({ level: cfg.logLevel });
    await withDatabase(cfg, logger, async (database) => {
      const applied = await migrateUp(database.db as Kysely<unknown>);
      process.stdout.write(applied.length === 0 ? 'already up to date\n' : applied.map((m) => `applied ${m}\n`).join(''));
    });
  });
migrate
  .command('status')
  .description('List migrations and whether each has run; exits 1 when any is pending')
  .addHelpText('after', environmentHelp(DATABASE_ENV))
  .action(async () => {
    const cfg = config();
    const logger = createLogger({ level: cfg.logLevel });
    const pending = await withDatabase(cfg, logger, async (database) => {
      const status = await migrationStatus(database.db as Kysely<unknown>);
      for (const m of status) {
        process.stdout.write(`${m.executedAt ? 'applied ' : 'pending '} ${m.name}${m.executedAt ? `  ${m.executedAt.toISOString()}` : ''}\n`);
      }
      return status.filter((m) => !m.executedAt).length;
    });
    if (pending > 0) process.exitCode = 1;
  });

const user = program.command('user').description('User administration');
user
  .command('create')
  .description('Create a user; prints a generated password when --password is not given')
  .addHelpText('after', environmentHelp([...DATABASE_ENV, 'SECRET_KEY', 'ENCRYPTION_KEY']))
  .requiredOption('--email <email>', 'email address (sign-in name)')
  .addOption(new Option('--role <role>', 'role').choices([...ROLES]).makeOptionMandatory())
  .option('--password <password>', 'password (at least 12 characters); generated if omitted')
  .action(async (opts: { email: string; role: Role; password?: string }) => {
    const cfg = config();
    const logger = createLogger({ level: cfg.logLevel });
    await withDatabase(cfg, logger, async (database) => {
      await requireMigrated(database);
      const { randomBytes } = await import('node:crypto');
      const password = opts.password ?? randomBytes(18).toString('base64url');
      const built = await buildApp({ config: cfg, logger, database });
      try {
        const created = await built.identity.createUser(
          { email: opts.email, password, role: opts.role },
          { actorId: null, ip: null, requestId: 'cli' },
        );
        process.stdout.write(`created ${created.role} ${created.email} (${created.id})\n`);
        if (!opts.password) process.stdout.write(`generated password (shown once): ${password}\n`);
      } finally {
        await built.app.close();
      }
    });
  });

program
  .command('eod')
  .description(
    'Close a business date for the whole book: interest recognized, delinquency aged, late fees, charge-off by policy, ' +
      'subledger reconciled with the general ledger; then the business date moves to the next day. A run that stopped ' +
      'part-way resumes where it stopped. Exits 1 when the reconciliation finds a break.',
  )
  .option('--date <YYYY-MM-DD>', 'the date to close (default: the business date)')
  .option('--until <YYYY-MM-DD>', 'close every date from the business date through this one')
  .addHelpText('after', environmentHelp([...DATABASE_ENV, 'EOD_CHUNK_SIZE', 'EOD_CONCURRENCY']))
  .action(async (opts: { date?: string; until?: string }) => {
    const cfg = config();
    const logger = createLogger({ level: cfg.logLevel });
    const balanced = await withDatabase(cfg, logger, async (database) => {
      await requireMigrated(database);
      const built = await buildApp({ config: cfg, logger, database });
      try {
        const dates: (string | undefined)[] = [];
        if (opts.until === undefined) dates.push(opts.date);
        else for (const d of datesThrough(await built.eod.businessDate(), opts.until)) dates.push(d);
        let ok = true;
        for (const date of dates) {
          const started = Date.now();
          const run = await built.eod.run({ date, actorId: null });
          const seconds = (Date.now() - started) / 1000;
          const accrued = Object.entries(run.accrued).map(([c, v]) => `${c} ${isCurrency(c) ? formatMoney(v, c) : v.toString()}`).join(', ') || 'none';
          process.stdout.write(
            `closed ${run.businessDate}: ${run.loansProcessed} loan(s) in ${run.chunks} chunk(s), ${seconds.toFixed(1)} s; interest recognized ${accrued}; ` +
              `${run.lateFees} late fee(s), ${run.chargeOffs} charge-off(s), ${run.newlyDelinquent} newly delinquent; ` +
              `reconciliation ${run.reconciliation?.balanced ? 'balanced' : 'BROKEN'}\n`,
          );
          for (const b of run.reconciliation?.breaks ?? []) process.stdout.write(`  break: ${b.currency} ${b.account}: general ledger ${b.gl}, loans ${b.subledger}\n`);
          ok &&= run.reconciliation?.balanced ?? false;
        }
        return ok;
      } finally {
        await built.app.close();
      }
    });
    if (!balanced) process.exitCode = 1;
  });

/** Every date from `from` through `to`. */
function datesThrough(from: string, to: string): string[] {
  const out: string[] = [];
  for (let d = new Date(`${from}T00:00:00Z`); d.toISOString().slice(0, 10) <= to; d = new Date(d.getTime() + 86_400_000)) out.push(d.toISOString().slice(0, 10));
  return out;
}

const audit = program.command('audit').description('The append-only audit log');
audit
  .command('verify')
  .description('Recompute the hash chain; names the first broken row and exits 1 if any')
  .addHelpText('after', environmentHelp(DATABASE_ENV))
  .action(async () => {
    const cfg = config();
    const logger = createLogger({ level: cfg.logLevel });
    const result = await withDatabase(cfg, logger, async (database) => {
      await requireMigrated(database);
      return verifyAuditChain(database.db);
    });
    if (result.ok) {
      process.stdout.write(`audit chain intact: ${result.rowsChecked} row(s) verified\nhead hash: ${result.headHash}\n`);
    } else {
      process.stdout.write(
        `audit chain BROKEN at row ${result.firstBroken?.id}: ${result.firstBroken?.reason} ` +
          `(${result.rowsChecked} row(s) before it verified)\n`,
      );
      process.exitCode = 1;
    }
  });

const keys = program.command('keys').description('Key rotation (see docs/operations.md, "Rotating keys")');
keys
  .command('reencrypt')
  .description(
    'Re-encrypt every personal-data column with the current ENCRYPTION_KEY and recompute the blind indexes; values ' +
      'under a key in ENCRYPTION_KEY_PREVIOUS are decrypted with it. Runs beside the live service (one locked batch per ' +
      'transaction), can be interrupted and run again. Once it reports 0 re-encrypted, drop ENCRYPTION_KEY_PREVIOUS.',
  )
  .option('--batch-size <n>', 'rows per transaction', '500')
  .addHelpText('after', environmentHelp([...DATABASE_ENV, 'ENCRYPTION_KEY', 'ENCRYPTION_KEY_PREVIOUS']))
  .action(async (flags: { batchSize: string }) => {
    const cfg = config();
    const batchSize = Number(flags.batchSize);
    if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 100_000) throw new CliError('--batch-size must be a whole number from 1 to 100000', 2);
    const logger = createLogger({ level: cfg.logLevel });
    const cipher = createFieldCipher(cfg.encryptionKey, cfg.previousEncryptionKeys);
    await withDatabase(cfg, logger, async (database) => {
      await requireMigrated(database);
      const results = [];
      for (const spec of [...IDENTITY_ENCRYPTED, ...ORIGINATION_ENCRYPTED]) {
        const result = await reencryptTable(database.db as Kysely<unknown>, cipher, spec, { batchSize });
        process.stdout.write(`${result.table}: ${result.rows} row(s), ${result.reencrypted} re-encrypted with key ${cipher.keyId}\n`);
        results.push(result);
      }
      await appendAudit(database.db, { action: 'keys.reencrypted', subjectType: 'encryption_key', subjectId: cipher.keyId, details: { tables: results } }, new Date());
    });
  });

/** Tapes from this size up show a reading bar (on a terminal): big enough that reading them takes a noticeable while. */
const LARGE_TAPE_BYTES = 4 << 20;

/**
 * A one-line progress bar on stderr, redrawn when the whole percentage changes. The caller
 * draws it only on a terminal: piped or captured stderr gets nothing.
 */
function progressBar(label: string): { update(done: number, total: number, unit?: string): void; end(): void } {
  let drawn = -1;
  return {
    update(done, total, unit) {
      const pct = total > 0 ? Math.min(100, Math.floor((done / total) * 100)) : 100;
      if (pct === drawn) return;
      drawn = pct;
      const filled = Math.round((30 * pct) / 100);
      const counts = unit === undefined ? '' : `  ${done.toLocaleString('en-US')} / ${total.toLocaleString('en-US')} ${unit}`;
      process.stderr.write(`\r${label}  [${'#'.repeat(filled)}${'.'.repeat(30 - filled)}] ${String(pct).padStart(3)} %${counts}`);
    },
    end() {
      if (drawn >= 0) process.stderr.write('\r\x1b[K');
      drawn = -1;
    },
  };
}

/**
 * `loanbook forecast TAPE.csv`: pure computation over a file. It reads no configuration and
 * opens no database, so it runs anywhere the tape is, with any environment.
 */
async function forecastTape(file: string, flags: ForecastFlags): Promise<void> {
  let settings: ForecastSettings;
  try {
    settings = forecastSettings(flags);
  } catch (e) {
    if (e instanceof ForecastOptionError || isEngineError(e)) throw new CliError(e.message, 2);
    throw e;
  }
  const terminal = process.stderr.isTTY === true;
  const bar = progressBar(`reading ${file}`);
  let tape: LoanTape;
  try {
    tape = await readLoanTape(file, {
      servicingFee: settings.servicingFee,
      ...(terminal ? { onProgress: (read: number, size: number) => size >= LARGE_TAPE_BYTES && bar.update(read, size) } : {}),
    });
  } catch (e) {
    if (e instanceof TapeError) throw new CliError(e.message, 2);
    throw e;
  } finally {
    bar.end();
  }

  const projecting = progressBar('projecting');
  let projection: PoolProjection;
  try {
    projection = projectTape(tape, settings, {
      ...(terminal && tape.count > TAPE_SLICE ? { onProgress: (done: number, total: number) => projecting.update(done, total, 'loans') } : {}),
    });
  } catch (e) {
    // The tape was validated line by line; anything the engine still refuses is the input's fault too.
    if (isEngineError(e)) throw new CliError(`${file}: ${e.message}`, 2);
    throw e;
  } finally {
    projecting.end();
  }

  if (settings.out) {
    const { writeFile } = await import('node:fs/promises');
    const text = settings.out.format === 'csv' ? periodsCsv(projection) : forecastJson(projection, tape, settings);
    try {
      await writeFile(settings.out.path, text);
    } catch (e) {
      throw new CliError(`cannot write ${settings.out.path}: ${coerceError(e).message}`);
    }
  }
  process.stdout.write(summaryText(projection, file, settings));
  if (settings.out) process.stdout.write(`wrote ${projection.months} period(s) to ${settings.out.path}\n`);
}

program
  .command('forecast')
  .description(
    'Project the cash flows of a loan tape (CSV) under the SIFMA standard formulas: prints the summary and, with --out, ' +
      'writes the monthly periods. Needs no database and no configuration. Exit code 2 for a bad tape or bad options.',
  )
  .argument('<tape>', 'CSV with a header row and the columns loan_id, balance, annual_rate, net_rate, remaining_term, age (any order and case; other columns ignored)')
  .option('--psa <speed>', 'prepayments: PSA speed in percent (150 = 150 % PSA)')
  .option('--cpr <rate>', 'prepayments: constant annual rate, a fraction (0.06 = 6 % CPR)')
  .option('--smm <rate>', 'prepayments: constant monthly rate, a fraction')
  .option('--sda <speed>', 'defaults: SDA speed in percent (100 = 100 % SDA); default: no defaults')
  .option('--cdr <rate>', 'defaults: constant annual rate, a fraction')
  .option('--mdr <rate>', 'defaults: constant monthly rate, a fraction')
  .option('--severity <fraction>', 'loss severity, a fraction of the defaulted balance (default 0)')
  .option('--lag <months>', 'months from default to liquidation, 0 to 360 (default 0)')
  .option('--advances', 'the servicer advances principal and interest on defaulted loans until liquidation (the default)')
  .option('--no-advances', 'no advancing: investors get only what the performing loans pay')
  .option('--horizon <months>', 'project at most this many months (default: until every loan is paid or liquidated)')
  .option('--servicing-fee <rate>', 'annual fee, a fraction: the net rate of a line whose net_rate is empty is annual_rate minus it (default: the gross rate)')
  .option('--price <price>', 'price per 100 of balance: the summary shows the yield and modified duration at it')
  .option('--discount-rate <rate>', 'bond-equivalent annual rate, a fraction: the summary shows the NPV at it')
  .option('--out <file>', 'write the periods: .csv (one row per month) or .json (periods, summary and assumptions)')
  .addHelpText(
    'after',
    '\nExactly one of --psa, --cpr, --smm is required; at most one of --sda, --cdr, --mdr. Rates are fractions,\n' +
      'PSA and SDA speeds percentages. A progress bar is drawn on stderr for large tapes when it is a terminal.\n\n' +
      'Example:\n  loanbook forecast tape.csv --psa 150 --sda 100 --severity 0.35 --lag 12 --price 101 --out periods.csv\n',
  )
  // Usage errors exit 2 with one line (the other commands keep commander's default: 1, with the help).
  .showHelpAfterError(false)
  .configureOutput({ outputError: () => undefined })
  .exitOverride((e) => {
    if (e.exitCode === 0) return; // --help: commander exits 0 after this returns
    throw new CliError(`${e.message.replace(/^error: /, '')} (see loanbook forecast --help)`, 2);
  })
  .action(forecastTape);

registerBackupCommands(program);

program.parseAsync(process.argv).catch((e: unknown) => {
  if (e instanceof CliError) {
    process.stderr.write(`loanbook: ${e.message}\n`);
    process.exit(e.exitCode);
  }
  if (isAppError(e)) {
    process.stderr.write(`loanbook: ${e.detail}\n`);
    process.exit(1);
  }
  process.stderr.write(`loanbook: ${coerceError(e).message}\n`);
  process.exit(1);
});
