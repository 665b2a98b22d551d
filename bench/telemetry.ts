/**
 * What tracing costs per request. Measures GET /v1/me with a bearer token (two queries
 * per request) with autocannon over loopback:
 *   off   no OTLP endpoint: no hooks, no query wrapper, the no-op API
 *   on    every request traced (a SERVER span and its CLIENT spans) and exported to a
 *         loopback OTLP/HTTP sink that discards what it receives
 * and prints requests/s, p50/p99 latency, the spans exported and the ratio on/off.
 *
 *   npx tsx bench/telemetry.ts [seconds, default 5]        # embedded PGlite
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import autocannon from 'autocannon';
import type { Kysely } from 'kysely';
import { buildApp, type AppDatabase } from '../src/app.js';
import { loadConfig } from '../src/platform/config.js';
import { openDatabase } from '../src/platform/database.js';
import { createLogger } from '../src/platform/logger.js';
import { migrateUp } from '../src/platform/migrate.js';
import { startTelemetry } from '../src/platform/telemetry.js';

const DURATION_S = Number(process.argv[2] ?? 5);
const CONNECTIONS = 16;
const ADMIN = { email: 'bench@example.test', password: 'correct-horse-battery-9931' };

interface Figures {
  readonly rps: number;
  readonly p50: number;
  readonly p99: number;
  readonly non2xx: number;
}

/** An OTLP/HTTP endpoint that counts the bytes it is sent and answers full success. */
async function startSink(): Promise<{ url: string; bytes(): number; close(): Promise<void> }> {
  let bytes = 0;
  const server = createServer((req, res) => {
    req.on('data', (c: Buffer) => (bytes += c.length));
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    bytes: () => bytes,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

async function run(env: Record<string, string>): Promise<Figures> {
  const config = loadConfig({
    ENV: 'test',
    SECRET_KEY: 'bench-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz',
    ENCRYPTION_KEY: Buffer.from('0123456789abcdef0123456789ABCDEF').toString('base64'),
    DATA_DIR: '/nonexistent-bench-data-dir',
    RATE_LIMIT_REQUESTS: '1000000',
    ...env,
  });
  const logger = createLogger({ level: 'silent' });
  const telemetry = await startTelemetry(config, logger);
  const database = await openDatabase<AppDatabase>({ kind: 'pglite', location: 'memory://' }, { ...config.db }, logger);
  await migrateUp(database.db as Kysely<unknown>);
  const built = await buildApp({ config, logger, database });
  await built.identity.bootstrapAdmin(ADMIN);
  await built.app.listen({ port: 0, host: '127.0.0.1' });
  try {
    const port = (built.app.server.address() as AddressInfo).port;
    const signIn = await fetch(`http://127.0.0.1:${port}/v1/auth/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(ADMIN),
    });
    const { access_token: token } = (await signIn.json()) as { access_token: string };
    const opts = { url: `http://127.0.0.1:${port}/v1/me`, headers: { authorization: `Bearer ${token}` }, connections: CONNECTIONS, workers: 1 };
    await autocannon({ ...opts, duration: 1 });
    const r = await autocannon({ ...opts, duration: DURATION_S });
    return { rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, non2xx: r.non2xx };
  } finally {
    await built.app.close();
    await database.close();
    await telemetry.shutdown();
  }
}

const off = await run({});
const sink = await startSink();
const on = await run({ OTEL_EXPORTER_OTLP_ENDPOINT: sink.url });
await sink.close();

const row = (name: string, f: Figures) =>
  `${name.padEnd(4)} ${f.rps.toFixed(0).padStart(8)} req/s   p50 ${String(f.p50).padStart(4)} ms   p99 ${String(f.p99).padStart(4)} ms   non-2xx ${f.non2xx}`;
process.stdout.write(`GET /v1/me, ${CONNECTIONS} connections, ${DURATION_S} s, embedded PGlite\n`);
process.stdout.write(`${row('off', off)}\n${row('on', on)}   (${(sink.bytes() / 1024).toFixed(0)} KiB of OTLP JSON exported)\n`);
process.stdout.write(`on/off throughput: ${(on.rps / off.rps).toFixed(2)}\n`);
