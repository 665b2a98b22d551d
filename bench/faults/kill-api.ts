/**
 * Fault drill: kill -9 of the API under payment load, repeated.
 *
 * Each round starts `loanbook serve` on a private PostgreSQL, runs concurrent clients
 * posting payments (POST /v1/loans/:id/payments, a fresh Idempotency-Key each), and
 * SIGKILLs the server mid-load. After the last round it checks:
 *  - every acknowledged (2xx) payment is recorded exactly once;
 *  - no Idempotency-Key is recorded twice, and no journal entry is unbalanced or partial;
 *  - no Idempotency-Key stays in flight: each key whose request died is retried with the
 *    same body (waiting out its lease, as a client would on 409 + Retry-After) and ends
 *    with a 2xx and at most one payment;
 *  - replaying an acknowledged key returns the stored response and records nothing new.
 *
 *   npx tsx bench/faults/kill-api.ts [--rounds 5] [--clients 16] [--seconds 4] [--loans 40]
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import {
  byStatus,
  checkLedger,
  createBookDatabase,
  drill,
  login,
  pay,
  repaymentsByKey,
  seedBook,
  sleep,
  startApi,
  startPostgres,
  withClient,
  type Outcome,
} from './support.js';

const { values: flags } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    clients: { type: 'string', default: '16' },
    seconds: { type: 'string', default: '4' },
    loans: { type: 'string', default: '40' },
  },
});
const ROUNDS = Number(flags.rounds);
const CLIENTS = Number(flags.clients);
const SECONDS = Number(flags.seconds);
const LOANS = Number(flags.loans);
/** The claim lease is HTTP_REQUEST_TIMEOUT_MS + 30 s: a short request timeout keeps the drill short. */
const REQUEST_TIMEOUT_MS = 5000;

interface Attempt {
  readonly key: string;
  readonly loanId: string;
  readonly round: number;
  outcome?: Outcome;
}

await drill('kill-api', async () => {
  const pgInstance = await startPostgres();
  const url = await createBookDatabase(pgInstance.url);
  const loans = await seedBook(url, LOANS);
  const env = { DATABASE_URL: url, DB_POOL_MAX: '10', HTTP_REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS), HTTP_HEADERS_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS) };
  const attempts: Attempt[] = [];

  for (let round = 1; round <= ROUNDS; round++) {
    const api = await startApi(env, 'kill-api');
    const token = await login(api.base);
    let stop = false;
    const client = async () => {
      while (!stop) {
        const a: Attempt = { key: randomUUID(), loanId: loans[Math.floor(Math.random() * loans.length)]!, round };
        attempts.push(a);
        a.outcome = await pay(api.base, token, a.loanId, a.key);
        if (a.outcome.status === 0) return; // the server is gone
      }
    };
    const running = Array.from({ length: CLIENTS }, client);
    // Kill somewhere in the second half of the round, while requests are in flight.
    await sleep((SECONDS * (0.5 + Math.random() * 0.5)) * 1000);
    await api.kill9();
    stop = true;
    await Promise.all(running);
    const mine = attempts.filter((a) => a.round === round);
    console.log(`round ${round}: pid ${api.pid} killed after ${mine.length} requests (${byStatus(mine.map((a) => a.outcome!))})`);
  }

  const acknowledged = attempts.filter((a) => a.outcome!.status >= 200 && a.outcome!.status < 300);
  const unanswered = attempts.filter((a) => a.outcome!.status === 0);
  const refused = attempts.filter((a) => a.outcome!.status >= 300);

  // Restart once more, and look at the database as the crashes left it.
  const api = await startApi(env, 'kill-api');
  const token = await login(api.base);
  const afterCrashes = await checkLedger(url);
  const leases = await withClient(url, async (c) =>
    (
      await c.query<{ in_flight: string; max_lease_s: string | null }>(
        `select count(*)::text as in_flight, max(extract(epoch from locked_until - now()))::text as max_lease_s from idempotency_keys where state = 'in_flight'`,
      )
    ).rows[0]!,
  );
  const ackCounts = await repaymentsByKey(url, acknowledged.map((a) => a.key));
  const ackMissing = acknowledged.filter((a) => (ackCounts.get(a.key) ?? 0) === 0).length;
  const ackTwice = acknowledged.filter((a) => (ackCounts.get(a.key) ?? 0) > 1).length;
  const unansweredBefore = await repaymentsByKey(url, unanswered.map((a) => a.key));
  const committedUnanswered = unanswered.filter((a) => unansweredBefore.has(a.key)).length;

  // Replay every unanswered key as its client would: same key, same body, honouring 409 + Retry-After.
  const replayStarted = performance.now();
  let waits409 = 0;
  const replayed = await Promise.all(
    unanswered.map(async (a) => {
      for (;;) {
        const r = await pay(api.base, token, a.loanId, a.key);
        if (r.status !== 409 || r.code !== 'idempotency_key_in_use' || performance.now() - replayStarted > 120_000) return r;
        waits409++;
        await sleep(Number(r.retryAfter ?? '1') * 1000);
      }
    }),
  );
  const replaySeconds = (performance.now() - replayStarted) / 1000;
  const replayOk = replayed.filter((r) => r.status >= 200 && r.status < 300).length;
  const unansweredAfter = await repaymentsByKey(url, unanswered.map((a) => a.key));
  const unansweredOverOne = unanswered.filter((a) => (unansweredAfter.get(a.key) ?? 0) > 1).length;
  const unansweredNone = unanswered.filter((a) => (unansweredAfter.get(a.key) ?? 0) === 0).length;

  // Replaying acknowledged keys: the stored response, nothing new.
  const beforeAckReplay = await checkLedger(url);
  const sample = acknowledged.slice(0, 200);
  const ackReplays = await Promise.all(sample.map((a) => pay(api.base, token, a.loanId, a.key)));
  const sameResponse = ackReplays.filter((r, i) => r.status === sample[i]!.outcome!.status && r.body === sample[i]!.outcome!.body).length;
  const final = await checkLedger(url);
  const stuck = await withClient(url, async (c) => Number((await c.query<{ n: string }>(`select count(*)::text as n from idempotency_keys where state = 'in_flight'`)).rows[0]!.n));
  await api.stop();

  console.log(
    [
      `kill -9 under payment load: ${ROUNDS} rounds × ${CLIENTS} clients, ${LOANS} loans`,
      `  requests ${attempts.length}: acknowledged ${acknowledged.length}, refused ${refused.length} (${byStatus(refused.map((a) => a.outcome!))}), no answer (killed in flight) ${unanswered.length}`,
      `  acknowledged recorded exactly once: ${acknowledged.length - ackMissing - ackTwice}/${acknowledged.length} (missing ${ackMissing}, twice ${ackTwice})`,
      `  after the crashes: ${afterCrashes.entries} journal entries, unbalanced or partial ${afterCrashes.unbalanced}, keys recorded twice ${afterCrashes.duplicateKeys}`,
      `  keys left in flight by the kills: ${leases.in_flight} (longest remaining lease ${Math.max(0, Number(leases.max_lease_s ?? 0)).toFixed(1)} s); unanswered requests that had committed: ${committedUnanswered}`,
      `  replayed ${unanswered.length} unanswered keys in ${replaySeconds.toFixed(1)} s (${waits409} waits on 409 in_use): ${replayOk} 2xx (${byStatus(replayed)}); with >1 payment ${unansweredOverOne}, with none ${unansweredNone}`,
      `  replayed ${sample.length} acknowledged keys: identical response ${sameResponse}/${sample.length}; repayments ${beforeAckReplay.repayments} → ${final.repayments}`,
      `  finally: journal entries ${final.entries}, unbalanced ${final.unbalanced}, keys recorded twice ${final.duplicateKeys}, idempotency keys in flight ${stuck}`,
    ].join('\n'),
  );
  const pass =
    ROUNDS > 0 &&
    acknowledged.length > 0 &&
    ackMissing === 0 &&
    ackTwice === 0 &&
    afterCrashes.unbalanced === 0 &&
    final.unbalanced === 0 &&
    final.duplicateKeys === 0 &&
    replayOk === unanswered.length &&
    unansweredOverOne === 0 &&
    unansweredNone === 0 &&
    sameResponse === sample.length &&
    final.repayments === beforeAckReplay.repayments &&
    stuck === 0 &&
    refused.every((a) => a.outcome!.status < 500);
  return {
    pass,
    summary: `${ROUNDS} kills; ${acknowledged.length} acked all present once; ${unanswered.length} in-flight replayed → ${replayOk} ok, 0 dup=${unansweredOverOne === 0}; unbalanced ${final.unbalanced}; stuck keys ${stuck}`,
  };
});
