#!/usr/bin/env node
/**
 * The `loanbook` command, and the composition root of every process: the only place
 * that reads the environment (through loadConfig), opens connections and wires parts.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Command, Option } from 'commander';
import { buildApp, type AppDatabase, type BuiltApp } from './app.js';
import { registerJobHandlers } from './job-handlers.js';
import { ROLES, type Role } from './identity/model.js';
import { verifyAuditChain } from './platform/audit.js';
import { ConfigError, fingerprint, loadConfig, type Config } from './platform/config.js';
import { databaseTarget, describeTarget, openDatabase, type Database } from './platform/database.js';
import { AppError, coerceError, isAppError } from './platform/errors.js';
import { BASELINE_SECURITY_HEADERS } from './platform/http-errors.js';
import { purgeExpiredIdempotencyKeys } from './platform/idempotency.js';
import { createJobQueue, type JobQueue } from './platform/jobs.js';
import { createLogger, type Logger } from './platform/logger.js';
import { createMetrics } from './platform/metrics.js';
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

async function serve(): Promise<void> {
  const cfg = config();
  const logger = createLogger({ level: cfg.logLevel });
  const target = databaseTarget(cfg);
  const database = await openDatabase<AppDatabase>(target, cfg.db, logger);
  const db = database.db as Kysely<unknown>;
  let redis: Redis | undefined;
  let built: BuiltApp | undefined;
  let jobs: JobQueue | undefined;
  let metricsServer: Server | undefined;
  let port: number;
  const inFlight = new Set<ServerResponse>();
  try {
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

    redis = cfg.redisUrl ? createRedis(cfg.redisUrl, logger) : undefined;
    const metrics = createMetrics();
    jobs = jobQueue(cfg, logger, database, metrics.registry);
    built = await buildApp({ config: cfg, logger, database, metrics, jobs, ...(redis ? { redis } : {}) });
    // Every process enqueues; this one also runs the jobs in the embedded mode, or when asked to.
    if (cfg.jobsInProcess) registerJobHandlers(jobs, { app: built, config: cfg, logger });
    await jobs.start();

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

    if (cfg.metricsPort !== undefined) {
      const registry = built.metrics.registry;
      const problem = (res: ServerResponse, code: 'not_found' | 'internal_error') => {
        const body = JSON.stringify(new AppError(code).toProblem());
        res.writeHead(code === 'not_found' ? 404 : 500, { ...BASELINE_SECURITY_HEADERS, 'content-type': 'application/problem+json' }).end(body);
      };
      metricsServer = createServer((req, res) => {
        if (req.url !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
          problem(res, 'not_found');
          return;
        }
        registry
          .metrics()
          .then((text) => res.writeHead(200, { ...BASELINE_SECURITY_HEADERS, 'content-type': registry.contentType }).end(text))
          .catch((e: unknown) => {
            logger.error({ err: coerceError(e) }, 'metrics collection failed');
            problem(res, 'internal_error');
          });
      });
      await listen(metricsServer, cfg.metricsPort, cfg.host);
      metricsServer.on('error', (e) => logger.error({ err: coerceError(e) }, 'metrics server error'));
    }

    trackInFlight(built.app.server, inFlight);
    await built.app.listen({ port: cfg.port, host: cfg.host });
    // PORT=0 asks the OS for a free port: report the one actually bound.
    const address = built.app.server.address();
    port = typeof address === 'object' && address !== null ? address.port : cfg.port;
  } catch (e) {
    // Start-up failed: release what was opened (the embedded database is closed cleanly).
    metricsServer?.close();
    await jobs?.stop({ graceMs: 0 }).catch(() => undefined);
    await built?.app.close().catch(() => undefined);
    redis?.disconnect();
    await database.close().catch(() => undefined);
    throw e;
  }
  const { app } = built;
  const queue = jobs;

  // Expired Idempotency-Key rows: once at start (processes may restart more often than
  // hourly), then every hour.
  const purgeOnce = () => {
    purgeExpiredIdempotencyKeys(database.db)
      .then((n) => n > 0 && logger.info({ deleted: n }, 'expired idempotency keys purged'))
      .catch((e: unknown) => logger.warn({ err: coerceError(e) }, 'idempotency purge failed'));
  };
  purgeOnce();
  const purge = setInterval(purgeOnce, 3_600_000);
  purge.unref();
  const eodScheduler = cfg.eodSchedule === undefined ? undefined : createEodScheduler({ eod: built.eod, logger, clock: () => new Date(), at: cfg.eodSchedule });
  eodScheduler?.start();

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
  if (cfg.env !== 'production') {
    process.stdout.write(`  Loanbook ${packageVersion} on http://${cfg.host}:${port}  (API docs: /docs)\n`);
  }

  onStopSignal(logger, cfg.http.shutdownGraceMs, 'shutting down: draining in-flight requests', async () => {
    built.beginShutdown();
    // Requests that arrive from now on get 503 and `Connection: close` (Fastify's
    // return503OnClosing). Those already in flight finish normally; without this their
    // keep-alive connections would sit idle and hold the drain open until the client
    // or keepAliveTimeout closed them.
    const server = app.server;
    for (const res of inFlight) {
      if (!res.headersSent) res.setHeader('connection', 'close');
      else res.once('finish', () => setImmediate(() => server.closeIdleConnections()));
    }
    clearInterval(purge);
    void eodScheduler?.stop();
    // app.close stops accepting, lets in-flight requests finish, then runs onClose hooks.
    // Jobs in flight get the same grace, less a second to release the ones still running.
    await Promise.all([app.close(), queue.stop({ graceMs: jobGraceMs(cfg) })]);
    metricsServer?.close();
    redis?.disconnect();
    await database.close();
  });
}

/**
 * On SIGTERM or SIGINT (once): logs `message`, runs `stop`, exits 0 when it is done, 1 when it
 * fails or has not finished within `graceMs`.
 */
function onStopSignal(logger: Logger, graceMs: number, message: string, stop: () => Promise<void>): void {
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, message);
    const force = setTimeout(() => {
      logger.error('shutdown grace period over; exiting');
      process.exit(1);
    }, graceMs);
    force.unref();
    stop()
      .then(() => {
        logger.info('stopped');
        process.exit(0);
      })
      .catch((e: unknown) => {
        logger.error({ err: coerceError(e) }, 'error during shutdown');
        process.exit(1);
      });
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

function jobQueue(cfg: Config, logger: Logger, database: Database<AppDatabase>, registry: Registry): JobQueue {
  return createJobQueue({ database, logger, concurrency: cfg.workerConcurrency, registry, stopGraceMs: jobGraceMs(cfg) });
}

/** Within SHUTDOWN_GRACE_MS, leaving a second to release (requeue) the jobs still running. */
function jobGraceMs(cfg: Config): number {
  return Math.max(0, cfg.http.shutdownGraceMs - 1000);
}

/** `loanbook worker`: runs the registered job kinds until SIGTERM/SIGINT. */
async function worker(): Promise<void> {
  const cfg = config();
  if (cfg.databaseUrl === undefined) {
    throw new CliError(
      '`loanbook worker` needs DATABASE_URL: the embedded database belongs to one process, and `loanbook serve` runs its jobs itself',
      2,
    );
  }
  const logger = createLogger({ level: cfg.logLevel });
  const target = databaseTarget(cfg);
  const database = await openDatabase<AppDatabase>(target, { ...cfg.db, applicationName: 'loanbook-worker' }, logger);
  let built: BuiltApp | undefined;
  let jobs: JobQueue | undefined;
  try {
    await requireMigrated(database);
    const metrics = createMetrics();
    jobs = jobQueue(cfg, logger, database, metrics.registry);
    built = await buildApp({ config: cfg, logger, database, metrics, jobs });
    registerJobHandlers(jobs, { app: built, config: cfg, logger });
    await jobs.start();
  } catch (e) {
    await jobs?.stop({ graceMs: 0 }).catch(() => undefined);
    await built?.app.close().catch(() => undefined);
    await database.close().catch(() => undefined);
    throw e;
  }
  const app = built.app;
  const queue = jobs;

  onStopSignal(logger, cfg.http.shutdownGraceMs, 'shutting down: finishing jobs in flight', async () => {
    await queue.stop({ graceMs: jobGraceMs(cfg) });
    await app.close();
    await database.close();
  });
  // Announced once the signals are handled: whoever waits for this line may stop the worker at once.
  logger.info(
    { database: describeTarget(target), kinds: queue.kinds(), concurrency: cfg.workerConcurrency, env: cfg.env, version: packageVersion },
    'loanbook worker running',
  );
}

/** Keeps `inFlight` holding the responses not yet finished or aborted. */
function trackInFlight(server: Server, inFlight: Set<ServerResponse>): void {
  server.on('request', (_req: IncomingMessage, res: ServerResponse) => {
    inFlight.add(res);
    res.once('close', () => inFlight.delete(res));
  });
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** What each environment variable does, for `--help` (configuration is environment only). */
const ENVIRONMENT: Record<string, string> = {
  ENV: 'development (default), test or production; production requires real secrets and migrated databases',
  DATABASE_URL: 'postgres://… URL; unset: embedded PGlite under DATA_DIR',
  DATA_DIR: 'embedded database and generated secrets (default ./.loanbook/data)',
  SECRET_KEY: 'JWT signing key, at least 32 characters (openssl rand -base64 48); generated in DATA_DIR when unset outside production',
  ENCRYPTION_KEY: 'field encryption key, 32 bytes base64 (openssl rand -base64 32); generated like SECRET_KEY',
  PORT: 'HTTP port (default 8000; 0 picks a free one)',
  HOST: 'listen address (default 127.0.0.1, 0.0.0.0 in production)',
  REDIS_URL: 'redis://… for shared rate limits; unset: in process',
  ADMIN_EMAIL: 'first start: email of the admin created on an empty database',
  ADMIN_PASSWORD: 'first start: its password; unset: generated and printed once',
  METRICS_PORT: 'serve /metrics on this port only',
  LOG_LEVEL: 'fatal, error, warn, info (default), debug, trace or silent',
  SHUTDOWN_GRACE_MS: 'how long SIGTERM waits for in-flight requests and jobs (default 10000)',
  DB_POOL_MAX: 'PostgreSQL connections per process (default 10)',
  DB_STATEMENT_TIMEOUT_MS: 'PostgreSQL statement timeout (default 30000; migrations are exempt)',
  EOD_SCHEDULE: 'HH:MM (UTC): serving processes close the business date daily at this time; unset: only on request',
  EOD_CHUNK_SIZE: 'loans per end-of-day transaction (default 500)',
  EOD_CONCURRENCY: 'end-of-day chunks in flight at once, each over its own slice of the book (default 2)',
  WORKER_CONCURRENCY: 'jobs of each kind run at once per process (default 4)',
  JOBS_IN_PROCESS: 'serve runs the job workers itself (default: true embedded, false with DATABASE_URL)',
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
      'drain in-flight requests, then exit 0.',
  )
  .addHelpText('after', environmentHelp(Object.keys(ENVIRONMENT)))
  .action(serve);

program
  .command('worker')
  .description(
    'Run background jobs (PostgreSQL only: DATABASE_URL). Needs a migrated database. SIGTERM/SIGINT stop taking jobs, ' +
      'let those in flight finish within SHUTDOWN_GRACE_MS, requeue the rest, then exit 0.',
  )
  .addHelpText('after', environmentHelp([...DATABASE_ENV, 'WORKER_CONCURRENCY', 'SHUTDOWN_GRACE_MS']))
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
