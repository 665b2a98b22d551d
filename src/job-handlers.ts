/**
 * The job kinds this installation runs. Each part with background work contributes a
 * JobModule (from its own jobs.ts); the composition root (src/cli.ts) registers them on
 * the queue of every process that runs workers: `loanbook worker`, and `loanbook serve`
 * when JOBS_IN_PROCESS is on. Processes that only enqueue register nothing.
 */
import type { BuiltApp } from './app.js';
import { forecastingJobs } from './forecasting/jobs.js';
import type { Config } from './platform/config.js';
import type { JobQueue } from './platform/jobs.js';
import type { Logger } from './platform/logger.js';

/** What a handler may use: the built services (the same ones the API uses), configuration and the logger. */
export interface JobHandlerDeps {
  readonly app: BuiltApp;
  readonly config: Config;
  readonly logger: Logger;
}

export interface JobModule {
  readonly name: string;
  /** Calls `queue.work(kind, handler, options)` for each kind the part runs. */
  register(queue: JobQueue, deps: JobHandlerDeps): void;
}

/** The shipped modules. */
export const JOB_MODULES: readonly JobModule[] = [forecastingJobs];

/** Registers every module's handlers; `modules` replaces the shipped list (tests pass their own). */
export function registerJobHandlers(queue: JobQueue, deps: JobHandlerDeps, modules: readonly JobModule[] = JOB_MODULES): void {
  for (const module of modules) module.register(queue, deps);
}
