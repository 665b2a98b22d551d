#!/usr/bin/env node
/**
 * The `loanbook` command, and the composition root of every process: the only place
 * that reads the environment (through loadConfig), opens connections and wires parts.
 */
import { createServer } from 'node:http';
import { Command, Option } from 'commander';
import { buildApp, type AppDatabase } from './app.js';
import { ROLES, type Role } from './identity/model.js';
import { verifyAuditChain } from './platform/audit.js';
import { ConfigError, fingerprint, loadConfig, type Config } from './platform/config.js';
import { databaseTarget, describeTarget, openDatabase, type Database } from './platform/database.js';
import { coerceError, isAppError } from './platform/errors.js';
import { purgeExpiredIdempotencyKeys } from './platform/idempotency.js';
import { createLogger, type Logger } from './platform/logger.js';
import { migrateUp, migrationStatus, pendingMigrations } from './platform/migrate.js';
import { packageVersion } from './platform/paths.js';
import { createRedis } from './platform/redis.js';
import type { Kysely } from 'kysely';

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

async function serve(): Promise<void> {
  const cfg = config();
  const logger = createLogger({ level: cfg.logLevel });
  const target = databaseTarget(cfg);
  const database = await openDatabase<AppDatabase>(target, cfg.db, logger);
  const db = database.db as Kysely<unknown>;

  if (cfg.env === 'production') {
    const pending = await pendingMigrations(db);
    if (pending.length > 0) {
      await database.close();
      throw new CliError(
        `the database has ${pending.length} pending migration(s) (${pending.join(', ')}); ` +
          'run `loanbook migrate up` (with the same DATABASE_URL) before starting the service',
      );
    }
  } else {
    const applied = await migrateUp(db);
    if (applied.length > 0) logger.info({ migrations: applied }, 'migrations applied');
  }

  const redis = cfg.redisUrl ? createRedis(cfg.redisUrl, logger) : undefined;
  const built = await buildApp({ config: cfg, logger, database, ...(redis ? { redis } : {}) });
  const { app } = built;

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

  let metricsServer: ReturnType<typeof createServer> | undefined;
  if (cfg.metricsPort !== undefined) {
    metricsServer = createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end();
        return;
      }
      built.metrics.registry
        .metrics()
        .then((text) => res.writeHead(200, { 'content-type': built.metrics.registry.contentType }).end(text))
        .catch(() => res.writeHead(500).end());
    });
    metricsServer.listen(cfg.metricsPort, cfg.host);
  }

  const purge = setInterval(() => {
    purgeExpiredIdempotencyKeys(database.db).catch((e: unknown) => logger.warn({ err: coerceError(e) }, 'idempotency purge failed'));
  }, 3_600_000);
  purge.unref();

  await app.listen({ port: cfg.port, host: cfg.host });
  logger.info(
    {
      port: cfg.port,
      host: cfg.host,
      database: describeTarget(target),
      redis: cfg.redisUrl ? 'configured' : 'in-process',
      env: cfg.env,
      secret_key: cfg.secretSources.secretKey,
      secret_key_id: fingerprint(cfg.secretKey),
      version: packageVersion,
    },
    'loanbook listening',
  );
  if (cfg.env !== 'production') {
    process.stdout.write(`  Loanbook ${packageVersion} on http://${cfg.host}:${cfg.port}  (API docs: /docs)\n`);
  }

  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down: draining in-flight requests');
    built.beginShutdown();
    const force = setTimeout(() => {
      logger.error('shutdown grace period over; exiting');
      process.exit(1);
    }, cfg.http.shutdownGraceMs);
    force.unref();
    clearInterval(purge);
    // app.close stops accepting, lets in-flight requests finish, then runs onClose hooks.
    app
      .close()
      .then(async () => {
        metricsServer?.close();
        redis?.disconnect();
        await database.close();
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

const program = new Command();
program
  .name('loanbook')
  .description('Loanbook: lending core. Configuration comes from the environment (see README).')
  .version(packageVersion)
  .showHelpAfterError();

program
  .command('serve')
  .description('Run the HTTP API (embedded PGlite unless DATABASE_URL is set)')
  .action(serve);

const migrate = program.command('migrate').description('Database migrations (numbered, forward-only SQL)');
migrate
  .command('up')
  .description('Apply every pending migration')
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
  .requiredOption('--email <email>', 'email address (sign-in name)')
  .addOption(new Option('--role <role>', 'role').choices([...ROLES]).makeOptionMandatory())
  .option('--password <password>', 'password (at least 12 characters); generated if omitted')
  .action(async (opts: { email: string; role: Role; password?: string }) => {
    const cfg = config();
    const logger = createLogger({ level: cfg.logLevel });
    await withDatabase(cfg, logger, async (database) => {
      const pending = await pendingMigrations(database.db as Kysely<unknown>);
      if (pending.length > 0) throw new CliError('the database is not migrated; run `loanbook migrate up` first');
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

const audit = program.command('audit').description('The append-only audit log');
audit
  .command('verify')
  .description('Recompute the hash chain; names the first broken row and exits 1 if any')
  .action(async () => {
    const cfg = config();
    const logger = createLogger({ level: cfg.logLevel });
    const result = await withDatabase(cfg, logger, (database) => verifyAuditChain(database.db));
    if (result.ok) {
      process.stdout.write(`audit chain intact: ${result.rowsChecked} row(s) verified\n`);
    } else {
      process.stdout.write(
        `audit chain BROKEN at row ${result.firstBroken?.id}: ${result.firstBroken?.reason} ` +
          `(${result.rowsChecked} row(s) before it verified)\n`,
      );
      process.exitCode = 1;
    }
  });

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
