/**
 * The daily end of day: at EOD_SCHEDULE (UTC) every serving process checks whether the
 * business date lags the calendar and closes the missing dates one by one. Several
 * processes may do so at once: runs are one per date and chunks skip locked loans.
 */
import { addDays, compareDates, formatDate, parseDate } from '../engine/index.js';
import { coerceError } from '../platform/errors.js';
import type { Logger } from '../platform/logger.js';
import type { EodService } from './eod.js';

/** The dates to close at `now`: from the business date through yesterday, once `at` (HH:MM UTC) has passed today. */
export function datesToClose(businessDate: string, now: Date, at: string): string[] {
  const [hh, mm] = at.split(':').map(Number) as [number, number];
  const minutes = now.getUTCHours() * 60 + now.getUTCMinutes();
  const today = parseDate(now.toISOString().slice(0, 10));
  const last = minutes >= hh * 60 + mm ? addDays(today, -1) : addDays(today, -2);
  const dates: string[] = [];
  for (let d = parseDate(businessDate); compareDates(d, last) <= 0 && dates.length < 366; d = addDays(d, 1)) dates.push(formatDate(d));
  return dates;
}

export function createEodScheduler(deps: { eod: EodService; logger: Logger; clock: () => Date; at: string; intervalMs?: number }) {
  let timer: NodeJS.Timeout | undefined;
  let busy: Promise<void> | undefined;
  const tick = async () => {
    const dates = datesToClose(await deps.eod.businessDate(), deps.clock(), deps.at);
    for (const date of dates) {
      const run = await deps.eod.run({ date, actorId: null });
      deps.logger.info({ run_id: run.id, business_date: date, loans: run.loansProcessed, balanced: run.reconciliation?.balanced }, 'scheduled end of day completed');
    }
  };
  return {
    start() {
      timer = setInterval(() => {
        if (busy) return;
        busy = tick()
          .catch((e: unknown) => deps.logger.error({ err: coerceError(e) }, 'scheduled end of day failed; retried at the next check'))
          .finally(() => (busy = undefined));
      }, deps.intervalMs ?? 60_000);
      timer.unref();
    },
    async stop() {
      if (timer) clearInterval(timer);
      await busy;
    },
  };
}
