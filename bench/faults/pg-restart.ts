/**
 * Fault drill: PostgreSQL restarted under load (`pg_ctl restart -m fast` on the private
 * instance: every session terminated with 57P01, a clean shutdown, a start).
 *
 * Clients post payments and read loans throughout; a prober polls /health/ready. Checks:
 * the API process stays up (same PID, /health/live answers); every failure in the gap is
 * a 503 with Retry-After (counted by status); the first 2xx comes within 10 s of
 * PostgreSQL accepting connections again (pg_isready, polled every 100 ms); readiness is
 * 503 in the gap and 200 after; every acknowledged payment is recorded.
 *
 *   npx tsx bench/faults/pg-restart.ts [--clients 16] [--before 4] [--after 6]
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import {
  byCode,
  byStatus,
  checkLedger,
  createBookDatabase,
  drill,
  login,
  ms,
  pay,
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
    clients: { type: 'string', default: '16' },
    before: { type: 'string', default: '4' },
    after: { type: 'string', default: '6' },
    loans: { type: 'string', default: '40' },
  },
});
const CLIENTS = Number(flags.clients);

await drill('pg-restart', async () => {
  const pgInstance = await startPostgres();
  const url = await createBookDatabase(pgInstance.url);
  const loans = await seedBook(url, Number(flags.loans));
  const api = await startApi({ DATABASE_URL: url, DB_POOL_MAX: '10' }, 'pg-restart');
  const token = await login(api.base);

  const outcomes: (Outcome & { key?: string })[] = [];
  const ready: Outcome[] = [];
  let stop = false;
  const client = async (i: number) => {
    while (!stop) {
      const loanId = loans[Math.floor(Math.random() * loans.length)]!;
      const key = randomUUID();
      const o = i % 2 === 0 ? { ...(await pay(api.base, token, loanId, key)), key } : await request(api.base, 'GET', `/v1/loans/${loanId}`, { token });
      outcomes.push(o);
      // A client honours Retry-After, capped so the drill sees the recovery promptly.
      if (o.status === 503) await sleep(Math.min(Number(o.retryAfter ?? 1), 1) * 200);
    }
  };
  const prober = async () => {
    while (!stop) {
      ready.push(await request(api.base, 'GET', '/health/ready', { timeoutMs: 5000 }));
      await sleep(100);
    }
  };
  const running = [...Array.from({ length: CLIENTS }, (_, i) => client(i)), prober()];
  await sleep(Number(flags.before) * 1000);

  const restartAt = performance.now();
  const restarting = pgInstance.restart();
  // Accepting connections again: the first pg_isready success after the server went away.
  let wentAway: number | undefined;
  let acceptingAt: number | undefined;
  while (acceptingAt === undefined && performance.now() - restartAt < 60_000) {
    const ok = await pgInstance.isReady();
    if (!ok) wentAway ??= performance.now();
    else if (wentAway !== undefined) acceptingAt = performance.now();
    await sleep(100);
  }
  await restarting;
  await sleep(Number(flags.after) * 1000);
  stop = true;
  await Promise.all(running);

  const live = await request(api.base, 'GET', '/health/live');
  const alive = api.alive() && live.status === 200;
  const failures = outcomes.filter((o) => o.status < 200 || o.status >= 300);
  const firstFailure = Math.min(...failures.map((o) => o.startedAt + o.ms));
  const bad = failures.filter((o) => o.status !== 503 || o.retryAfter === null);
  const firstOkAfter = outcomes
    .filter((o) => o.status >= 200 && o.status < 300 && o.startedAt + o.ms > (acceptingAt ?? Infinity))
    .reduce((m, o) => Math.min(m, o.startedAt + o.ms), Infinity);
  const recoveryMs = firstOkAfter - (acceptingAt ?? Infinity);
  const readyInGap = ready.filter((r) => r.startedAt > (wentAway ?? Infinity) && r.startedAt + r.ms < (acceptingAt ?? 0));
  const readyBackAt = ready.filter((r) => r.status === 200 && r.startedAt > (acceptingAt ?? Infinity)).reduce((m, r) => Math.min(m, r.startedAt + r.ms), Infinity);
  const acked = outcomes.filter((o) => o.key !== undefined && o.status === 201).map((o) => o.key!);
  const recorded = await repaymentsByKey(url, acked);
  const lost = acked.filter((k) => recorded.get(k) !== 1).length;
  const ledger = await checkLedger(url);
  await api.stop();

  console.log(
    [
      `PostgreSQL restart (pg_ctl restart -m fast) under load: ${CLIENTS} clients (payments and reads)`,
      `  API pid ${api.pid}: ${alive ? 'still running, /health/live 200' : 'GONE'}`,
      `  postgres away ${wentAway === undefined ? '?' : ms(wentAway - restartAt)} after the restart began; accepting again after ${acceptingAt === undefined ? 'never' : ms(acceptingAt - restartAt)}`,
      `  requests ${outcomes.length}: ${byStatus(outcomes)}; failures ${failures.length}, by code ${byCode(failures)}; not 503 with Retry-After: ${bad.length}${bad.length ? ` (${byStatus(bad)})` : ''}`,
      `  first failure at ${Number.isFinite(firstFailure) ? ms(firstFailure - restartAt) : 'none'}; first 2xx after postgres accepted: ${Number.isFinite(recoveryMs) ? ms(recoveryMs) : 'never'} later`,
      `  failure latency p50 ${ms(median(failures.map((f) => f.ms)))}, max ${ms(Math.max(0, ...failures.map((f) => f.ms)))}`,
      `  /health/ready during the gap: ${byStatus(readyInGap)} (the probe runs every DB_PROBE_INTERVAL_MS); 200 again ${Number.isFinite(readyBackAt) ? ms(readyBackAt - (acceptingAt ?? 0)) : 'never'} after postgres accepted`,
      ...bad.slice(0, 3).map((b) => `    e.g. ${b.status} retry-after=${b.retryAfter} ${b.body.slice(0, 200)}`),
      `  acknowledged payments ${acked.length}, recorded exactly once ${acked.length - lost}; journal unbalanced ${ledger.unbalanced}, keys recorded twice ${ledger.duplicateKeys}`,
    ].join('\n'),
  );
  const pass =
    alive &&
    acceptingAt !== undefined &&
    failures.length > 0 &&
    bad.length === 0 &&
    recoveryMs <= 10_000 &&
    lost === 0 &&
    ledger.unbalanced === 0 &&
    // A gap shorter than a probe period plus its timeout may pass between two probes.
    ((acceptingAt ?? 0) - (wentAway ?? 0) < 3000 || readyInGap.some((r) => r.status === 503)) &&
    Number.isFinite(readyBackAt);
  return {
    pass,
    summary: `same pid ${alive}; ${failures.length} failures all 503+Retry-After=${bad.length === 0}; recovery ${Number.isFinite(recoveryMs) ? ms(recoveryMs) : 'never'} after pg ready; lost ${lost}`,
  };
});

function median(values: number[]): number {
  if (values.length === 0) return 0;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}
