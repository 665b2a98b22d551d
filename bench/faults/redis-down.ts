/**
 * Fault drill: Redis stopped under load (REDIS_URL at a private redis-server).
 *
 * Clients post payments and read loans throughout; Redis is killed for --down seconds
 * (60 by default, as the issue asks), then started again. Checks: no 5xx while Redis is
 * away (the rate limiter and the login-failure limit fall back to in-process counters;
 * commands fail fast instead of queueing); the login-failure limit is still enforced
 * while Redis is away (LOGIN_RATE_LIMIT_FAILURES wrong passwords, then 429); after the
 * restart the counters are in Redis again and readiness reports Redis ok.
 *
 *   npx tsx bench/faults/redis-down.ts [--down 60] [--clients 8]
 */
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import {
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
  startRedis,
  type Outcome,
} from './support.js';

const { values: flags } = parseArgs({
  options: {
    down: { type: 'string', default: '60' },
    clients: { type: 'string', default: '8' },
    loans: { type: 'string', default: '40' },
  },
});
const DOWN_S = Number(flags.down);
const FAILURES = 5;

await drill('redis-down', async () => {
  const pgInstance = await startPostgres();
  const redis = await startRedis();
  const url = await createBookDatabase(pgInstance.url);
  const loans = await seedBook(url, Number(flags.loans));
  const api = await startApi({ DATABASE_URL: url, REDIS_URL: redis.url, LOGIN_RATE_LIMIT_FAILURES: String(FAILURES) }, 'redis-down');
  const token = await login(api.base);

  type Phase = 'before' | 'down' | 'after';
  let phase: Phase = 'before';
  const outcomes: (Outcome & { phase: Phase })[] = [];
  let stop = false;
  const client = async (i: number) => {
    while (!stop) {
      const loanId = loans[Math.floor(Math.random() * loans.length)]!;
      const at = phase;
      const o = i % 2 === 0 ? await pay(api.base, token, loanId, randomUUID()) : await request(api.base, 'GET', `/v1/loans/${loanId}`, { token });
      outcomes.push({ ...o, phase: at });
    }
  };
  const running = Array.from({ length: Number(flags.clients) }, (_, i) => client(i));
  await sleep(3000);
  const keysBefore = Number(await redis.cli('dbsize'));

  await redis.stop();
  phase = 'down';
  await sleep(Math.min(2000, DOWN_S * 500));
  // The login-failure limit while Redis is away: an address that does not exist, wrong each time.
  const victim = `nobody-${randomUUID().slice(0, 8)}@example.test`;
  const attempts: Outcome[] = [];
  for (let i = 0; i <= FAILURES; i++) attempts.push(await request(api.base, 'POST', '/v1/auth/token', { body: { email: victim, password: 'wrong-password-123456' } }));
  const readyDown = await request(api.base, 'GET', '/health/ready');
  const remaining = DOWN_S * 1000 - Math.min(2000, DOWN_S * 500);
  await sleep(Math.max(0, remaining));

  await redis.start();
  phase = 'after';
  // The client reconnects with a capped backoff (at most 5 s between attempts).
  let readyAfter: Outcome | undefined;
  for (let i = 0; i < 100; i++) {
    readyAfter = await request(api.base, 'GET', '/health/ready');
    if ((JSON.parse(readyAfter.body) as { components?: { redis?: { status?: string } } }).components?.redis?.status === 'ok') break;
    await sleep(100);
  }
  await sleep(2000);
  stop = true;
  await Promise.all(running);
  const keysAfter = Number(await redis.cli('dbsize'));
  await api.stop();

  const during = outcomes.filter((o) => o.phase === 'down');
  const fiveXX = outcomes.filter((o) => o.status >= 500 || o.status === 0);
  const redisComponent = (o: Outcome | undefined) => (o ? ((JSON.parse(o.body) as { status?: string; components?: { redis?: { status?: string } } })) : undefined);
  const lockout = attempts.slice(0, FAILURES).every((a) => a.status === 401) && attempts[FAILURES]?.status === 429;
  console.log(
    [
      `Redis stopped ${DOWN_S} s under load: ${flags.clients} clients (payments and reads)`,
      `  before: ${byStatus(outcomes.filter((o) => o.phase === 'before'))}; counters in Redis: ${keysBefore}`,
      `  while down: ${byStatus(during)}; latency p50 ${ms(quantile(during.map((o) => o.ms), 0.5))}, p99 ${ms(quantile(during.map((o) => o.ms), 0.99))}, max ${ms(Math.max(0, ...during.map((o) => o.ms)))}`,
      `  login with a wrong password ${FAILURES + 1}× while down: ${attempts.map((a) => a.status).join(' ')} (${lockout ? 'limit enforced in process' : 'LIMIT NOT ENFORCED'})`,
      `  /health/ready while down: ${readyDown.status} ${JSON.stringify(redisComponent(readyDown)?.components?.redis)}`,
      `  after restart: ${byStatus(outcomes.filter((o) => o.phase === 'after'))}; /health/ready ${readyAfter?.status} redis ${redisComponent(readyAfter)?.components?.redis?.status}; counters in Redis again: ${keysAfter}`,
      `  5xx or no answer in total: ${fiveXX.length}`,
    ].join('\n'),
  );
  const pass = fiveXX.length === 0 && during.length > 0 && lockout && readyDown.status === 200 && redisComponent(readyAfter)?.components?.redis?.status === 'ok' && keysAfter > 0;
  return { pass, summary: `${during.length} requests while down, 5xx ${fiveXX.length}; login limit ${lockout ? 'enforced' : 'NOT enforced'}; back on Redis ${keysAfter > 0}` };
});
