/**
 * A calculation thread (threads.ts): projects the slice of loans it is sent into monthly
 * totals and sends them back (the buffer transferred, not copied). Pure engine work.
 */
import { parentPort } from 'node:worker_threads';
import { preparePool, projectionTotals, type NormalizedAssumptions } from '../engine/index.js';

export interface SliceRequest {
  readonly id: number;
  readonly balance: Float64Array;
  readonly rate: Float64Array;
  readonly netRate: Float64Array | null;
  readonly remainingTerm: Float64Array;
  readonly age: Float64Array;
  readonly assumptions: NormalizedAssumptions;
  readonly horizonMonths: number;
}

export type SliceReply =
  | { readonly id: number; readonly months: number; readonly originalBalance: number; readonly loans: number; readonly data: Float64Array }
  | { readonly id: number; readonly error: string };

const port = parentPort;
if (port) {
  port.on('message', (r: SliceRequest) => {
    try {
      const pool = preparePool({ balance: r.balance, rate: r.rate, remainingTerm: r.remainingTerm, age: r.age, ...(r.netRate ? { netRate: r.netRate } : {}) });
      const totals = projectionTotals(pool, r.assumptions, { horizonMonths: r.horizonMonths });
      const reply: SliceReply = { id: r.id, months: totals.months, originalBalance: totals.originalBalance, loans: totals.loans, data: totals.data };
      port.postMessage(reply, [totals.data.buffer as ArrayBuffer]);
    } catch (error) {
      const reply: SliceReply = { id: r.id, error: error instanceof Error ? error.message : String(error) };
      port.postMessage(reply);
    }
  });
}
