/**
 * Fault drill: the database unreachable (iptables DROP on loopback, the private
 * PostgreSQL's port only) for --drop seconds (15) under load.
 *
 * Packets are dropped, not refused: nothing tells the API the server is gone, so only
 * its own bounds end the wait (the reachability probe cuts the connections in use and
 * refuses checkouts; DB_CONNECTION_TIMEOUT_MS bounds a connect). Clients give every
 * request 30 s. Checks: every request completes (success or error) within 5 s; every
 * failure is 503 database_unavailable with Retry-After; the first 2xx comes within 5 s
 * of the rule's removal; /health/live stays up; acknowledged payments are recorded.
 *
 *   npx tsx bench/faults/network-drop.ts [--drop 15] [--clients 16]
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import {
  allowTraffic,
  byCode,
  byStatus,
  checkLedger,
  createBookDatabase,
  drill,
  dropTraffic,
  login,
  ms,
  pay,
  quantile,
  repaymentsByKey,
  request,
  seedBook,
  sleep,
  startApi,
  startPostgres,
  type Outcome,
} from './support.js';

const { values: flags } = parseArgs({
  options: {
    drop: { type: 'string', default: '15' },
    clients: { type: 'string', default: '16' },
    loans: { type: 'string', default: '40' },
  },
});
const LIMIT_MS = 5000;

await drill('network-drop', async () => {
  const pgInstance = await startPostgres();
  const url = await createBookDatabase(pgInstance.url);
  const loans = await seedBook(url, Number(flags.loans));
  const api = await startApi({ DATABASE_URL: url, DB_POOL_MAX: '10' }, 'network-drop');
  const token = await login(api.base);

  const outcomes: (Outcome & { key?: string })[] = [];
  const live: Outcome[] = [];
  let stop = false;
  const client = async (i: number) => {
    while (!stop) {
      const loanId = loans[Math.floor(Math.random() * loans.length)]!;
      const key = randomUUID();
      const o = i % 2 === 0 ? { ...(await pay(api.base, token, loanId, key, 30_000)), key } : await request(api.base, 'GET', `/v1/loans/${loanId}`, { token, timeoutMs: 30_000 });
      outcomes.push(o);
      if (o.status === 503) await sleep(200);
    }
  };
  const liveProber = async () => {
    while (!stop) {
      live.push(await request(api.base, 'GET', '/health/live', { timeoutMs: 30_000 }));
      await sleep(50);
    }
  };
  const running = [...Array.from({ length: Number(flags.clients) }, (_, i) => client(i)), liveProber()];
  await sleep(3000);

  const droppedAt = performance.now();
  await dropTraffic();
  await sleep(Number(flags.drop) * 1000);
  await allowTraffic();
  const restoredAt = performance.now();
  await sleep(6000);
  stop = true;
  await Promise.all(running);

  const window = outcomes.filter((o) => o.startedAt + o.ms >= droppedAt);
  const slowest = Math.max(0, ...outcomes.map((o) => o.ms));
  const over = outcomes.filter((o) => o.ms > LIMIT_MS);
  const failures = outcomes.filter((o) => o.status < 200 || o.status >= 300);
  const bad = failures.filter((o) => o.status !== 503 || o.retryAfter === null);
  const firstFailure = Math.min(...failures.map((o) => o.startedAt + o.ms));
  const firstOk = outcomes.filter((o) => o.status >= 200 && o.status < 300 && o.startedAt + o.ms > restoredAt).reduce((m, o) => Math.min(m, o.startedAt + o.ms), Infinity);
  const recoveryMs = firstOk - restoredAt;
  const inFlightAtDrop = outcomes.filter((o) => o.startedAt < droppedAt && o.startedAt + o.ms > droppedAt);
  const acked = outcomes.filter((o) => o.key !== undefined && o.status === 201).map((o) => o.key!);
  const recorded = await repaymentsByKey(url, acked);
  const lost = acked.filter((k) => recorded.get(k) !== 1).length;
  const ledger = await checkLedger(url);
  const alive = api.alive();
  await api.stop();

  console.log(
    [
      `Database unreachable (iptables DROP on port ${new URL(url).port}) for ${flags.drop} s under load: ${flags.clients} clients (payments and reads)`,
      `  requests ending after the drop: ${byStatus(window)}; failures ${failures.length} (${byCode(failures)}), not 503 with Retry-After: ${bad.length}${bad.length ? ` (${byStatus(bad)}; e.g. ${bad[0]!.body.slice(0, 160)})` : ''}`,
      `  request duration: p50 ${ms(quantile(window.map((o) => o.ms), 0.5))}, p99 ${ms(quantile(window.map((o) => o.ms), 0.99))}, max ${ms(slowest)}; over ${LIMIT_MS} ms: ${over.length}`,
      ...over.slice(0, 5).map((o) => `    slow: started ${ms(o.startedAt - droppedAt)} after the drop, ${ms(o.ms)}, ${o.status} ${o.code ?? ''}`),
      `  in flight when the rule went in: ${inFlightAtDrop.length} (${byStatus(inFlightAtDrop)}), slowest ${ms(Math.max(0, ...inFlightAtDrop.map((o) => o.ms)))}`,
      `  first failure ${Number.isFinite(firstFailure) ? ms(firstFailure - droppedAt) : 'none'} after the drop; first 2xx ${Number.isFinite(recoveryMs) ? ms(recoveryMs) : 'never'} after the rule was removed`,
      `  /health/live: ${byStatus(live)}, p99 ${ms(quantile(live.map((o) => o.ms), 0.99))}, max ${ms(Math.max(0, ...live.map((o) => o.ms)))}; API process ${alive ? 'up' : 'GONE'}`,
      `  acknowledged payments ${acked.length}, recorded exactly once ${acked.length - lost}; journal unbalanced ${ledger.unbalanced}`,
    ].join('\n'),
  );
  const pass = alive && over.length === 0 && failures.length > 0 && bad.length === 0 && recoveryMs <= 5000 && lost === 0 && ledger.unbalanced === 0 && live.every((o) => o.status === 200);
  return { pass, summary: `max request ${ms(slowest)} (limit ${LIMIT_MS}); ${failures.length} failures all 503=${bad.length === 0}; recovery ${Number.isFinite(recoveryMs) ? ms(recoveryMs) : 'never'} after rule removal` };
});
