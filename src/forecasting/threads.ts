/**
 * The calculation thread pool (CALCULATION_THREAD_POOL_SIZE): a large loan list is cut
 * into slices, each projected on a worker thread into monthly totals, and the totals are
 * added (the standard formulas are per loan, so parts of a pool add up exactly as the
 * engine's mergeProjectionTotals does). The result is the engine's projectLoans, computed
 * on several cores. Threads start on first use and are reused.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import {
  mergeProjectionTotals,
  normalizeAssumptions,
  preparePool,
  projectionFromTotals,
  projectionMonths,
  projectionTotals,
  type LoanArrays,
  type PoolProjection,
  type PricingInput,
  type ProjectionAssumptions,
  type ProjectionTotals,
} from '../engine/index.js';
import type { SliceReply, SliceRequest } from './projection-worker.js';

export interface CalculationPool {
  readonly size: number;
  /** The same projection as the engine's projectLoans, over the threads. */
  projectLoans(loans: LoanArrays, assumptions: ProjectionAssumptions, options?: { horizonMonths?: number | undefined; pricing?: PricingInput | undefined }, onProgress?: (fraction: number) => void): Promise<PoolProjection>;
  close(): Promise<void>;
}

/** Running from TypeScript sources (tsx, tests), a worker registers tsx's loader before it loads its module. */
function startWorker(): Worker {
  const here = import.meta.url;
  if (here.endsWith('.ts')) {
    // Node 20 does not apply --import hooks to a worker's own module, so the worker
    // registers tsx (its ESM API, found through the package's exports) before loading it.
    const tsxPackage = createRequire(here).resolve('tsx/package.json');
    const exportsMap = (JSON.parse(readFileSync(tsxPackage, 'utf8')) as { exports: Record<string, { import: { default: string } }> }).exports;
    const api = pathToFileURL(join(dirname(tsxPackage), exportsMap['./esm/api']?.import.default ?? 'dist/esm/api/index.mjs')).href;
    const script = new URL('./projection-worker.ts', here).href;
    return new Worker(`const { register } = await import(${JSON.stringify(api)}); register(); await import(${JSON.stringify(script)});`, { eval: true });
  }
  return new Worker(new URL('./projection-worker.js', here));
}

export function createCalculationPool(size: number): CalculationPool {
  if (!Number.isInteger(size) || size < 1) throw new RangeError(`the calculation pool needs at least one thread, got ${size}`);
  let workers: Worker[] | undefined;
  const idle: Worker[] = [];
  const waiting: ((w: Worker) => void)[] = [];
  let nextId = 0;

  function acquire(): Promise<Worker> {
    workers ??= Array.from({ length: size }, () => {
      const w = startWorker();
      idle.push(w);
      return w;
    });
    const w = idle.pop();
    return w ? Promise.resolve(w) : new Promise((resolve) => waiting.push(resolve));
  }

  function release(w: Worker): void {
    const next = waiting.shift();
    if (next) next(w);
    else idle.push(w);
  }

  function run(w: Worker, request: SliceRequest, transfer: ArrayBuffer[]): Promise<ProjectionTotals> {
    return new Promise((resolve, reject) => {
      const onMessage = (reply: SliceReply): void => {
        if (reply.id !== request.id) return;
        w.off('message', onMessage);
        w.off('error', onError);
        if ('error' in reply) reject(new Error(`calculation thread: ${reply.error}`));
        else resolve({ months: reply.months, originalBalance: reply.originalBalance, loans: reply.loans, data: reply.data });
      };
      const onError = (error: Error): void => {
        w.off('message', onMessage);
        reject(error);
      };
      w.on('message', onMessage);
      w.once('error', onError);
      w.postMessage(request, transfer);
    });
  }

  return {
    size,
    async projectLoans(loans, assumptions, options = {}, onProgress) {
      // Validated here, once, so a bad loan is an EngineError naming it, not a thread's failure.
      const prepared = preparePool(loans);
      const a = normalizeAssumptions(assumptions);
      // Zero loans projected: checks the options and assumptions against the pool (e.g. net
      // rates and a servicing fee together) before any thread is asked.
      projectionTotals(prepared, a, { from: 0, to: 0, horizonMonths: options.horizonMonths });
      const months = projectionMonths(prepared, a, options.horizonMonths);
      const n = prepared.count;
      // A few slices per thread, so the threads stay busy and progress moves.
      const slices = Math.max(1, Math.min(n, size * 4));
      let done = 0;
      const parts = await Promise.all(
        Array.from({ length: slices }, async (_, s) => {
          const from = Math.floor((n * s) / slices);
          const to = Math.floor((n * (s + 1)) / slices);
          // Arrays on a SharedArrayBuffer are shared with the thread (a view, no copy); others are copied and moved.
          const copy = (x: Float64Array) => (x.buffer instanceof SharedArrayBuffer ? x.subarray(from, to) : x.slice(from, to));
          const request: SliceRequest = {
            id: nextId++,
            balance: copy(prepared.balance),
            rate: copy(prepared.rate),
            netRate: prepared.netRate ? copy(prepared.netRate) : null,
            remainingTerm: copy(prepared.remainingTerm),
            age: copy(prepared.age),
            assumptions: a,
            horizonMonths: months,
          };
          const transfer = [request.balance, request.rate, request.remainingTerm, request.age, ...(request.netRate ? [request.netRate] : [])]
            .map((x) => x.buffer)
            .filter((b): b is ArrayBuffer => !(b instanceof SharedArrayBuffer));
          const w = await acquire();
          try {
            return await run(w, request, transfer);
          } finally {
            release(w);
            onProgress?.(++done / slices);
          }
        }),
      );
      return projectionFromTotals(mergeProjectionTotals(parts), a, options.pricing);
    },
    async close() {
      const all = workers ?? [];
      workers = undefined;
      idle.length = 0;
      await Promise.all(all.map((w) => w.terminate()));
    },
  };
}
