/**
 * `loanbook serve --workers N`: a node:cluster primary supervising N serving processes
 * that share one listening socket (the primary accepts and hands connections out round
 * robin). The primary serves no API itself; it
 *
 * - forks the workers and waits for each to report ready (listening, signals handled);
 * - restarts a worker that exits unexpectedly, after a backoff that doubles with each
 *   crash in the last minute, and gives up (stops the rest, exits 1) on a crash loop;
 * - on SIGHUP replaces the workers one at a time: fork the new one, wait until it is
 *   ready, then ask the old one to stop (an IPC message: it drains, see drain.ts, but
 *   keeps answering ready, since its successor serves the same port). There are N or
 *   N+1 listeners throughout, so no connection is refused and no request is lost;
 * - on SIGTERM/SIGINT stops every worker the same way and reports whether all drained;
 * - aggregates the workers' metrics for one /metrics (a per-process /metrics behind a
 *   shared port would answer for whichever process the scrape reached). Counters and
 *   histograms of workers that have exited are kept and added in, so the sums never go
 *   down on a restart (Prometheus would read a drop as a counter reset).
 * - hands the once-per-cluster duties (schedulers) to the worker in slot 0.
 *
 * Domain-free: what a worker runs is the caller's; this module only knows processes,
 * messages and metrics.
 */
import cluster, { type Worker } from 'node:cluster';
import { AggregatorRegistry, Counter, Gauge, Registry } from 'prom-client';
import { coerceError } from './errors.js';
import type { Logger } from './logger.js';
import type { MetricsSource } from './ops-http.js';

type MetricsJson = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;

/** The messages between primary and workers (prefixed: prom-client and others share the channel). */
const MSG = {
  ready: 'loanbook:ready',
  duty: 'loanbook:duty',
  retire: 'loanbook:retire',
  metricsRequest: 'loanbook:metrics-request',
  metrics: 'loanbook:metrics',
} as const;

type WorkerMessage =
  | { type: typeof MSG.ready }
  | { type: typeof MSG.metrics; id: number | 'final'; metrics: MetricsJson };

function isWorkerMessage(m: unknown): m is WorkerMessage {
  return typeof m === 'object' && m !== null && typeof (m as { type?: unknown }).type === 'string' && (m as { type: string }).type.startsWith('loanbook:');
}

export interface SupervisorOptions {
  readonly workers: number;
  readonly logger: Logger;
  /** Each worker's own drain budget (SHUTDOWN_GRACE_MS); the primary waits this plus a margin. */
  readonly shutdownGraceMs: number;
  /** Added to each worker's environment. */
  readonly env?: Readonly<Record<string, string>>;
  /** A new worker not ready within this long is stopped and counts as failed (default 60 s). */
  readonly readyTimeoutMs?: number;
  /** More unexpected exits than this within `crashWindowMs` is a crash loop (default 5 in 60 s). */
  readonly maxCrashes?: number;
  readonly crashWindowMs?: number;
}

export interface Supervisor {
  /** Forks the workers; resolves once every slot has a ready worker, rejects if the supervisor gave up first. */
  start(): Promise<void>;
  /** Replaces every worker, one at a time. A second call while one runs queues one more pass. */
  rollingRestart(): Promise<void>;
  /** Stops every worker (SIGTERM, drain). Resolves with the exit code: 0 when all drained and exited 0. */
  stop(reason: string): Promise<number>;
  /** Settles with the exit code once the supervisor has stopped, by request or by giving up. */
  readonly finished: Promise<number>;
  /** The workers' metrics, aggregated, plus the supervisor's own. */
  readonly metrics: MetricsSource;
}

interface Member {
  readonly worker: Worker;
  readonly slot: number;
  readonly pid: number;
  ready: boolean;
  /** Sent SIGTERM by the supervisor: its exit is expected. */
  retiring: boolean;
  /** Restart its slot if it exits unexpectedly; false for a rolling-restart candidate until it is ready. */
  restartOnExit: boolean;
  /** Its latest metrics (the final ones after a graceful stop). */
  snapshot: MetricsJson | undefined;
  readonly exited: Promise<{ code: number | null; signal: string | null }>;
}

const STOP_MARGIN_MS = 5_000;
const METRICS_TIMEOUT_MS = 3_000;
/** Metric types whose values only grow (prom-client's typings say enum; at run time the type is its name). */
const COUNTING_TYPES = new Set<unknown>(['counter', 'histogram']);

export function createSupervisor(options: SupervisorOptions): Supervisor {
  const { logger } = options;
  const readyTimeoutMs = options.readyTimeoutMs ?? 60_000;
  const maxCrashes = options.maxCrashes ?? 5;
  const crashWindowMs = options.crashWindowMs ?? 60_000;
  const members = new Map<number, Member>();
  const crashes: number[] = [];
  const restartTimers = new Set<NodeJS.Timeout>();
  let stopping: Promise<number> | undefined;
  let rolling: Promise<void> | undefined;
  let rollAgain = false;
  let finish!: (code: number) => void;
  const finished = new Promise<number>((resolve) => (finish = resolve));
  let readyWaiter: (() => void) | undefined;

  const own = new Registry();
  new Gauge({
    name: 'loanbook_cluster_workers',
    help: 'Serving processes of this `serve --workers` primary that are ready',
    registers: [own],
    collect() {
      this.set([...members.values()].filter((m) => m.ready && !m.retiring).length);
    },
  });
  const crashCounter = new Counter({
    name: 'loanbook_cluster_worker_crashes_total',
    help: 'Serving processes that exited without being asked to (each is restarted unless in a crash loop)',
    registers: [own],
  });
  /** Counters and histograms of workers that have exited, summed. Replaced, never mutated. */
  let retired: MetricsJson = [];

  function fork(slot: number, restartOnExit: boolean): { member: Member; ready: Promise<void> } {
    const worker = cluster.fork({ ...options.env });
    let onExit!: (e: { code: number | null; signal: string | null }) => void;
    const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => (onExit = resolve));
    const member: Member = { worker, slot, pid: worker.process.pid ?? 0, ready: false, retiring: false, restartOnExit, snapshot: undefined, exited };
    members.set(worker.id, member);
    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        logger.error({ slot, worker_pid: member.pid, timeout_ms: readyTimeoutMs }, 'worker not ready in time; stopping it');
        reject(new Error(`worker ${member.pid} was not ready within ${readyTimeoutMs} ms`));
        worker.process.kill('SIGKILL');
      }, readyTimeoutMs);
      worker.on('message', (m: unknown) => {
        if (!isWorkerMessage(m)) return;
        if (m.type === MSG.ready && !member.ready) {
          clearTimeout(timer);
          member.ready = true;
          member.restartOnExit = true;
          logger.info({ slot, worker_pid: member.pid }, 'worker ready');
          resolve();
          if (slot === 0 && !member.retiring) {
            // The previous holder of slot 0 (if any) is retiring and stops its duties as it drains.
            worker.send({ type: MSG.duty });
          }
          readyWaiter?.();
        } else if (m.type === MSG.metrics) {
          member.snapshot = m.metrics;
          if (typeof m.id === 'number') pendingMetrics.get(m.id)?.(m.metrics);
        }
      });
      // The IPC channel closes after the last message (the final metrics) is delivered;
      // 'exit' can come first. Handled once both happened (a second at most after the exit).
      const disconnected = new Promise<void>((r) => worker.once('disconnect', r));
      worker.on('exit', (code, signal) => {
        clearTimeout(timer);
        if (!member.ready) reject(new Error(`worker ${member.pid} exited before it was ready (${signal ?? `code ${code}`})`));
        void Promise.race([disconnected, new Promise((r) => setTimeout(r, 1000))]).then(() => {
          onWorkerExit(member, code, signal);
          onExit({ code, signal });
        });
      });
    });
    ready.catch(() => undefined); // the caller awaits it or not; the exit handler deals with the worker
    return { member, ready };
  }

  function onWorkerExit(member: Member, code: number | null, signal: string | null): void {
    members.delete(member.worker.id);
    if (member.snapshot) retired = foldCounting(retired, member.snapshot);
    if (member.retiring || stopping) {
      logger.info({ slot: member.slot, worker_pid: member.pid, code, signal }, 'worker stopped');
      return;
    }
    crashCounter.inc();
    const now = Date.now();
    crashes.push(now);
    while (crashes.length > 0 && (crashes[0] as number) < now - crashWindowMs) crashes.shift();
    if (!member.restartOnExit) {
      logger.error({ slot: member.slot, worker_pid: member.pid, code, signal }, 'new worker exited before it was ready');
      return;
    }
    if (crashes.length > maxCrashes) {
      logger.fatal(
        { slot: member.slot, worker_pid: member.pid, code, signal, crashes: crashes.length, window_ms: crashWindowMs },
        'workers keep exiting: crash loop; stopping the cluster',
      );
      void stop('crash loop', 1);
      return;
    }
    const delayMs = Math.min(10_000, 500 * 2 ** (crashes.length - 1));
    logger.error({ slot: member.slot, worker_pid: member.pid, code, signal, restart_in_ms: delayMs }, 'worker exited unexpectedly; restarting it');
    const timer = setTimeout(() => {
      restartTimers.delete(timer);
      if (!stopping) fork(member.slot, true);
    }, delayMs);
    restartTimers.add(timer);
  }

  /**
   * Asks a worker to stop, then waits for its exit (the worker's own grace timer bounds it;
   * SIGKILL after a margin). 'replace' tells it a successor serves in its place (it drains
   * but stays ready); 'stop' is SIGTERM, as for the whole cluster.
   */
  async function retire(member: Member, how: 'replace' | 'stop'): Promise<{ code: number | null; signal: string | null }> {
    member.retiring = true;
    if (how === 'replace' && member.worker.isConnected()) member.worker.send({ type: MSG.retire });
    else member.worker.process.kill('SIGTERM');
    const kill = setTimeout(() => {
      logger.error({ slot: member.slot, worker_pid: member.pid }, 'worker did not stop within SHUTDOWN_GRACE_MS; killing it');
      member.worker.process.kill('SIGKILL');
    }, options.shutdownGraceMs + STOP_MARGIN_MS);
    try {
      return await member.exited;
    } finally {
      clearTimeout(kill);
    }
  }

  async function start(): Promise<void> {
    for (let slot = 0; slot < options.workers; slot++) fork(slot, true);
    const allReady = () => {
      const slots = new Set([...members.values()].filter((m) => m.ready).map((m) => m.slot));
      return slots.size === options.workers;
    };
    await Promise.race([
      new Promise<void>((resolve) => {
        readyWaiter = () => {
          if (allReady()) {
            readyWaiter = undefined;
            resolve();
          }
        };
      }),
      finished.then((code) => {
        throw new Error(`the workers could not start (exit code ${code}); see the log above`);
      }),
    ]);
  }

  async function rollOnce(): Promise<void> {
    const started = Date.now();
    // A worker still starting (a crash restart) loads the current code anyway.
    const current = [...members.values()].filter((m) => m.ready && !m.retiring).sort((a, b) => a.slot - b.slot);
    logger.info({ workers: current.length }, 'rolling restart: replacing the workers one at a time');
    for (const old of current) {
      if (stopping) return;
      if (!members.has(old.worker.id)) continue; // it crashed meanwhile: the crash path restarts its slot
      const t0 = Date.now();
      const next = fork(old.slot, false);
      try {
        await next.ready;
      } catch (e) {
        logger.error({ err: coerceError(e), slot: old.slot }, 'rolling restart stopped: the new worker did not start; the old ones keep serving');
        return;
      }
      const exit = await retire(old, 'replace');
      logger.info(
        { slot: old.slot, old_pid: old.pid, new_pid: next.member.pid, old_exit_code: exit.code, duration_ms: Date.now() - t0 },
        'worker replaced',
      );
    }
    logger.info({ workers: current.length, duration_ms: Date.now() - started }, 'rolling restart complete');
  }

  function rollingRestart(): Promise<void> {
    if (stopping) return Promise.resolve();
    if (rolling) {
      rollAgain = true;
      return rolling;
    }
    rolling = (async () => {
      do {
        rollAgain = false;
        await rollOnce();
      } while (rollAgain && !stopping);
    })().finally(() => (rolling = undefined));
    return rolling;
  }

  function stop(reason: string, exitCode?: number): Promise<number> {
    stopping ??= (async () => {
      for (const t of restartTimers) clearTimeout(t);
      restartTimers.clear();
      const all = [...members.values()];
      logger.info({ reason, workers: all.length }, 'stopping the workers: draining in-flight requests');
      const exits = await Promise.all(all.map((m) => retire(m, 'stop')));
      const code = exitCode ?? (exits.every((e) => e.code === 0) ? 0 : 1);
      finish(code);
      return code;
    })();
    return stopping;
  }

  const pendingMetrics = new Map<number, (metrics: MetricsJson) => void>();
  let nextRequest = 0;

  /** One worker's metrics: asked for now, or its last known ones if it does not answer in time. */
  function workerMetrics(member: Member): Promise<MetricsJson> {
    const id = nextRequest++;
    return new Promise<MetricsJson>((resolve) => {
      const timer = setTimeout(() => settle(member.snapshot ?? []), METRICS_TIMEOUT_MS);
      const settle = (metrics: MetricsJson) => {
        clearTimeout(timer);
        pendingMetrics.delete(id);
        resolve(metrics);
      };
      pendingMetrics.set(id, settle);
      void member.exited.then(() => settle(member.snapshot ?? []));
      if (!member.worker.isConnected()) return settle(member.snapshot ?? []);
      member.worker.send({ type: MSG.metricsRequest, id }, (e: Error | null) => {
        if (e) settle(member.snapshot ?? []);
      });
    });
  }

  const metrics: MetricsSource = {
    contentType: own.contentType,
    async metrics() {
      // Taken in the same tick: a worker that exits meanwhile is counted once, among the live.
      const gone = retired;
      const live = await Promise.all([...members.values()].filter((m) => m.ready).map(workerMetrics));
      const registry = AggregatorRegistry.aggregate([gone, ...live, await own.getMetricsAsJSON()]);
      return registry.metrics();
    },
  };

  return { start, rollingRestart, stop, finished, metrics };
}

/** `into` plus the counters and histograms of `add`, sample by sample (a new array; neither input changes). */
function foldCounting(into: MetricsJson, add: MetricsJson): MetricsJson {
  const sampleKey = (v: { labels: object; metricName?: string }) => `${v.metricName ?? ''}${JSON.stringify(Object.entries(v.labels).sort())}`;
  const byName = new Map(into.map((m) => [m.name, { ...m, values: m.values.map((v) => ({ ...v })) }]));
  for (const m of add) {
    if (!COUNTING_TYPES.has(m.type)) continue;
    const target = byName.get(m.name) ?? { ...m, values: [] };
    byName.set(m.name, target);
    const samples = new Map(target.values.map((v) => [sampleKey(v), v]));
    for (const v of m.values) {
      const existing = samples.get(sampleKey(v));
      if (existing) existing.value += v.value;
      else target.values.push({ ...v });
    }
  }
  return [...byName.values()];
}

/** The worker's side of the link; undefined in a process that is not a cluster worker. */
export interface ClusterWorkerLink {
  /** Tells the primary this worker is serving. */
  ready(): void;
  /** Answers the primary's metric requests from this registry. */
  exposeMetrics(registry: Registry): void;
  /** `start` runs when the primary hands this worker the once-per-cluster duties. */
  onDuty(start: () => void): void;
  /** `stop` runs when the primary retires this worker in a rolling restart (its successor is serving). */
  onRetire(stop: () => void): void;
  /** Sends the final metrics; the last step of a graceful stop. */
  farewell(): Promise<void>;
}

export function clusterWorkerLink(): ClusterWorkerLink | undefined {
  if (!cluster.isWorker) return undefined;
  let registry: Registry | undefined;
  let duty: (() => void) | undefined;
  let hasDuty = false;
  let retire: (() => void) | undefined;
  const send = (message: unknown) =>
    new Promise<void>((resolve) => {
      if (!process.connected || !process.send) return resolve();
      process.send(message, undefined, {}, () => resolve());
    });
  process.on('message', (m: unknown) => {
    if (typeof m !== 'object' || m === null) return;
    const message = m as { type?: string; id?: number };
    if (message.type === MSG.duty && !hasDuty) {
      hasDuty = true;
      duty?.();
    } else if (message.type === MSG.retire) {
      retire?.();
    } else if (message.type === MSG.metricsRequest && registry) {
      registry
        .getMetricsAsJSON()
        .then((metrics) => send({ type: MSG.metrics, id: message.id, metrics }))
        .catch(() => undefined);
    }
  });
  return {
    ready: () => void send({ type: MSG.ready }),
    exposeMetrics(r) {
      registry = r;
    },
    onDuty(start) {
      duty = start;
      if (hasDuty) start();
    },
    onRetire(stop) {
      retire = stop;
    },
    async farewell() {
      if (registry) await send({ type: MSG.metrics, id: 'final', metrics: await registry.getMetricsAsJSON() });
    },
  };
}
