/**
 * Fault drill: pool exhaustion. --requests (500) concurrent slow requests against an API
 * with a small pool (DB_POOL_MAX 5).
 *
 * The slow request is real: a payment on a loan whose row another session holds locked
 * (`select … for update` in an open transaction, on a separate connection). Each payment
 * that gets a pooled connection waits on the lock inside its transaction (up to the
 * servicing lock wait, 5 s; then 503 loan_busy) and so holds the connection; the others
 * wait for one. The
 * lock is released after --hold seconds (3). Checks: the excess requests got 503 with
 * Retry-After within 1 s of arriving: beyond HTTP_MAX_IN_FLIGHT (default 16 per pooled
 * connection) `service_unavailable` from the first hook, the admitted ones that found no
 * connection free `database_unavailable` after DB_POOL_ACQUIRE_TIMEOUT_MS (500 by default); p99
 * printed, 1 s plus 250 ms of handling allowed), none got
 * another 5xx or no answer; /health/live stayed fast throughout (p99 printed; 250 ms limit)
 * and /health/ready stayed 200 (a busy pool is not a dead database).
 *
 *   npx tsx bench/faults/pool-exhaustion.ts [--requests 500] [--pool 5] [--hold 3]
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import pg from 'pg';
import {
  byCode,
  byStatus,
  createBookDatabase,
  drill,
  login,
  ms,
  pay,
  quantile,
  request,
  seedBook,
  sleep,
  startApi,
  startPostgres,
  type Outcome,
} from './support.js';

const { values: flags } = parseArgs({
  options: {
    requests: { type: 'string', default: '500' },
    pool: { type: 'string', default: '5' },
    hold: { type: 'string', default: '3' },
    'acquire-ms': { type: 'string', default: '500' },
  },
});
const REQUESTS = Number(flags.requests);
const ACQUIRE_MS = Number(flags['acquire-ms']);
/** "Within 1 s" for the 503s: the acquire timeout plus this much handling, at p99. */
const LIMIT_503_MS = 1000 + 250;
const LIVE_P99_LIMIT_MS = 250;

await drill('pool-exhaustion', async () => {
  const pgInstance = await startPostgres();
  const url = await createBookDatabase(pgInstance.url);
  const [loanId] = await seedBook(url, 1);
  const api = await startApi({ DATABASE_URL: url, DB_POOL_MAX: flags.pool, DB_POOL_ACQUIRE_TIMEOUT_MS: String(ACQUIRE_MS) }, 'pool-exhaustion');
  const token = await login(api.base);
  // Warm the pool and the routes.
  for (let i = 0; i < 5; i++) await pay(api.base, token, loanId!, randomUUID());

  const locker = new pg.Client({ connectionString: url });
  await locker.connect();
  await locker.query('begin');
  await locker.query('select id from loans where id = $1 for update', [loanId]);

  const live: Outcome[] = [];
  const ready: Outcome[] = [];
  let stop = false;
  const prober = async (path: string, into: Outcome[], every: number) => {
    while (!stop) {
      into.push(await request(api.base, 'GET', path, { timeoutMs: 10_000 }));
      await sleep(every);
    }
  };
  const probes = [prober('/health/live', live, 20), prober('/health/ready', ready, 200)];
  await sleep(300);
  const liveBefore = live.length;

  const cpuBefore = processCpuSeconds(api.pid);
  const burstAt = performance.now();
  const burst = Promise.all(Array.from({ length: REQUESTS }, () => pay(api.base, token, loanId!, randomUUID(), 30_000)));
  await sleep(Number(flags.hold) * 1000);
  await locker.query('rollback');
  await locker.end();
  const outcomes = await burst;
  const burstMs = performance.now() - burstAt;
  const apiCpu = processCpuSeconds(api.pid) - cpuBefore;
  await sleep(300);
  stop = true;
  await Promise.all(probes);
  await api.stop();

  const refused = outcomes.filter((o) => o.code === 'database_unavailable' || o.code === 'service_unavailable');
  const shed = outcomes.filter((o) => o.code === 'service_unavailable');
  const waited = outcomes.filter((o) => o.code === 'database_unavailable');
  const without = outcomes.filter((o) => o.status === 503 && o.retryAfter === null);
  const other5xx = outcomes.filter((o) => (o.status >= 500 && o.status !== 503) || o.status === 0);
  const duringLive = live.slice(liveBefore).filter((o) => o.startedAt < burstAt + burstMs);
  const p99_503 = quantile(refused.map((o) => o.ms), 0.99);
  const p99Live = quantile(duringLive.map((o) => o.ms), 0.99);
  console.log(
    [
      `Pool exhaustion: ${REQUESTS} concurrent payments on one loan held locked ${flags.hold} s; DB_POOL_MAX ${flags.pool}, DB_POOL_ACQUIRE_TIMEOUT_MS ${ACQUIRE_MS}`,
      `  outcomes: ${byStatus(outcomes)} (${byCode(outcomes)}) in ${ms(burstMs)}: 201 got a connection and waited on the lock; service_unavailable shed at admission (HTTP_MAX_IN_FLIGHT); database_unavailable admitted but found no connection free`,
      `  503: ${refused.length} (${shed.length} shed at admission); 503s without Retry-After ${without.length}; time to 503 p50 ${ms(quantile(refused.map((o) => o.ms), 0.5))}, p99 ${ms(p99_503)}, max ${ms(Math.max(0, ...refused.map((o) => o.ms)))}`,
      `  time to 503: shed at admission p50 ${ms(quantile(shed.map((o) => o.ms), 0.5))} p99 ${ms(quantile(shed.map((o) => o.ms), 0.99))}; after the checkout wait p50 ${ms(quantile(waited.map((o) => o.ms), 0.5))} p99 ${ms(quantile(waited.map((o) => o.ms), 0.99))}`,
      `  other 5xx or no answer: ${other5xx.length}; API process CPU during the burst ${apiCpu.toFixed(2)} s over ${(burstMs / 1000).toFixed(2)} s; load average ${loadavg()[0]?.toFixed(1)}`,
      `  /health/live during the burst: ${duringLive.length} probes ${byStatus(duringLive)}, p50 ${ms(quantile(duringLive.map((o) => o.ms), 0.5))}, p99 ${ms(p99Live)}, max ${ms(Math.max(0, ...duringLive.map((o) => o.ms)))}`,
      `  /health/ready during the burst: ${byStatus(ready)}`,
    ].join('\n'),
  );
  const pass =
    refused.length > 0 &&
    without.length === 0 &&
    other5xx.length === 0 &&
    p99_503 <= LIMIT_503_MS &&
    p99Live <= LIVE_P99_LIMIT_MS &&
    duringLive.every((o) => o.status === 200) &&
    ready.every((o) => o.status === 200);
  return { pass, summary: `${refused.length}/${REQUESTS} got 503 (p99 ${ms(p99_503)}); other 5xx ${other5xx.length}; /health/live p99 ${ms(p99Live)}` };
});

/** User + system CPU of a process so far (Linux /proc; clock ticks of 10 ms). */
function processCpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return (Number(fields[11]) + Number(fields[12])) / 100;
}
