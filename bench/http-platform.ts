/**
 * What the platform costs per request. Measures, with autocannon over loopback:
 *   reference   a bare Fastify app answering GET /ping with {"status":"ok"}
 *   platform    GET /health/live through Loanbook's full stack (ids, security headers,
 *               CORS, metrics, rate limiting, problem+json handler, compression hook)
 *   auth        GET /v1/me with a bearer token (JWT verification, session + user lookup,
 *               role check, field decryption of the email)
 * and prints requests/s, p50/p99 latency and the ratio to the reference.
 *
 *   npx tsx bench/http-platform.ts [seconds]                                    # embedded PGlite
 *   BENCH_POSTGRES_URL=postgres://127.0.0.1:5432/test npx tsx bench/http-platform.ts  # PostgreSQL
 * With BENCH_POSTGRES_URL the bench creates a scratch database beside the one named
 * and drops it afterwards; the named database is only used to issue CREATE/DROP.
 */
import autocannon from 'autocannon';
import Fastify from 'fastify';
import { buildApp, type AppDatabase } from '../src/app.js';
import { loadConfig } from '../src/platform/config.js';
import { openDatabase } from '../src/platform/database.js';
import { createLogger } from '../src/platform/logger.js';
import { migrateUp } from '../src/platform/migrate.js';
import type { Kysely } from 'kysely';
import pg from 'pg';

const DURATION_S = Number(process.argv[2] ?? 5);
const CONNECTIONS = 16;

interface Figures {
  readonly rps: number;
  readonly p50: number;
  readonly p99: number;
  readonly non2xx: number;
}

async function measure(url: string, headers: Record<string, string> = {}): Promise<Figures> {
  // Warm-up, then the measured run.
  // The load generator runs in a worker thread, so it does not share the server's event loop.
  await autocannon({ url, headers, connections: CONNECTIONS, duration: 1, workers: 1 });
  const r = await autocannon({ url, headers, connections: CONNECTIONS, duration: DURATION_S, workers: 1 });
  return { rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, non2xx: r.non2xx };
}

async function scratchDatabase(adminUrl: string): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `lb_bench_${Date.now().toString(36)}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`create database ${name}`);
  await admin.end();
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const c = new pg.Client({ connectionString: adminUrl });
      await c.connect();
      await c.query(`drop database if exists ${name} with (force)`);
      await c.end();
    },
  };
}

async function main(): Promise<void> {
  const adminUrl = process.env.BENCH_POSTGRES_URL;
  const scratch = adminUrl ? await scratchDatabase(adminUrl) : undefined;
  const ref = Fastify();
  ref.get('/ping', async () => ({ status: 'ok' }));
  await ref.listen({ port: 0, host: '127.0.0.1' });
  const refAddr = ref.server.address() as { port: number };

  const config = loadConfig({
    ENV: 'test',
    SECRET_KEY: 'bench-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz',
    ENCRYPTION_KEY: Buffer.from('0123456789abcdef0123456789ABCDEF').toString('base64'),
    DATA_DIR: '/nonexistent-bench-dir',
    RATE_LIMIT_REQUESTS: '1000000',
    ...(scratch ? { DATABASE_URL: scratch.url } : {}),
  });
  const logger = createLogger({ level: 'silent' });
  const database = await openDatabase<AppDatabase>(
    config.databaseUrl ? { kind: 'postgres', location: config.databaseUrl } : { kind: 'pglite', location: 'memory://' },
    config.db,
    logger,
  );
  await migrateUp(database.db as Kysely<unknown>);
  const built = await buildApp({ config, logger, database });
  const email = `bench-${Date.now()}@example.test`;
  const password = 'bench-password-0123';
  await built.identity.createUser({ email, password, role: 'analyst' }, { actorId: null, ip: null, requestId: 'bench' });
  await built.app.listen({ port: 0, host: '127.0.0.1' });
  const port = (built.app.server.address() as { port: number }).port;
  const login = await built.app.inject({ method: 'POST', url: '/v1/auth/token', payload: { email, password } });
  const token = login.json<{ access_token: string }>().access_token;

  const reference = await measure(`http://127.0.0.1:${refAddr.port}/ping`);
  const platform = await measure(`http://127.0.0.1:${port}/health/live`);
  const auth = await measure(`http://127.0.0.1:${port}/v1/me`, { authorization: `Bearer ${token}` });

  const row = (name: string, f: Figures) =>
    `${name.padEnd(10)} ${f.rps.toFixed(0).padStart(8)} req/s   p50 ${String(f.p50).padStart(3)} ms   p99 ${String(f.p99).padStart(3)} ms   ` +
    `${(f.rps / reference.rps).toFixed(2)}× reference${f.non2xx > 0 ? `   (${f.non2xx} non-2xx!)` : ''}`;
  process.stdout.write(
    `HTTP platform overhead (${database.kind}, ${CONNECTIONS} connections, ${DURATION_S} s, Node ${process.version})\n` +
      `${row('reference', reference)}\n${row('platform', platform)}\n${row('auth', auth)}\n`,
  );

  await built.app.close();
  await database.close();
  await ref.close();
  await scratch?.drop();
}

await main();
