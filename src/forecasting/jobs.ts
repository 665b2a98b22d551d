/** Forecasting's background work: a queued projection (POST /v1/cashflows/forecast or /v1/forecasts/book above the inline size). */
import type { JobModule } from '../job-handlers.js';
import { FORECAST_JOB_KIND } from './service.js';

export const forecastingJobs: JobModule = {
  name: 'forecasting',
  register(queue, { app }) {
    queue.work(FORECAST_JOB_KIND, async (job) => {
      const payload = job.payload as unknown as Parameters<typeof app.forecasting.runQueued>[0];
      return app.forecasting.runQueued(payload, (fraction) => job.progress(fraction));
    });
  },
};
