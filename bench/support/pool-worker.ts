/**
 * Worker thread of bench/pool.ts: projects loans [from, to) of a pool held in
 * SharedArrayBuffers (views, no copy) and sends back its monthly totals.
 */
import { performance } from 'node:perf_hooks';
import { parentPort } from 'node:worker_threads';
import { preparePool, projectionTotals } from '../../src/engine/index.js';
import { BENCH_ASSUMPTIONS, type WorkerReply, type WorkerRequest } from './pool-fixtures.js';

const port = parentPort;
if (!port) throw new Error('pool-worker.ts runs as a worker thread');

port.on('message', (request: WorkerRequest) => {
  const start = performance.now();
  const { pool, from, to } = request;
  const slice = preparePool({
    balance: pool.balance.subarray(from, to),
    rate: pool.rate.subarray(from, to),
    remainingTerm: pool.remainingTerm.subarray(from, to),
    age: pool.age.subarray(from, to),
  });
  const totals = projectionTotals(slice, BENCH_ASSUMPTIONS, { horizonMonths: request.months });
  const reply: WorkerReply = { id: request.id, ...totals, seconds: (performance.now() - start) / 1000 };
  port.postMessage(reply, [totals.data.buffer as ArrayBuffer]);
});
