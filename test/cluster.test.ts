/**
 * `loanbook serve --workers N` as an operator runs it (a child process): N serving
 * processes on one port, their metrics aggregated on METRICS_PORT, a worker that dies
 * restarted, SIGHUP replacing every worker under load without a failed request, SIGTERM
 * draining all and exiting 0, a crash loop ending in exit 1. PostgreSQL only (the
 * embedded database belongs to one process); the refusal of the embedded database runs
 * on both targets. Ordering is proven by log lines and responses, never by the clock.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { Agent, request, type IncomingMessage } from 'node:http';
import { createServer, type Server } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_ENCRYPTION_KEY, TEST_SECRET_KEY } from './support/app.js';
import { createEmptyDatabase, dbTarget, isPostgres } from './support/db.js';
import { freePort } from './support/net.js';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const ADMIN = { email: 'ops@example.test', password: 'cluster-test-password-0001' };

const children = new Set<ChildProcess>();
const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  for (const c of cleanups.reverse()) await c();
});

interface LogEntry {
  message: string;
  [field: string]: unknown;
}

class Serve {
  readonly child: ChildProcess;
  output = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly waiters = new Set<() => void>();

  constructor(args: string[], env: Record<string, string>) {
    this.child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], {
      cwd: repoRoot,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(this.child);
    const onData = (s: string) => {
      this.output += s;
      for (const w of this.waiters) w();
    };
    this.child.stdout!.setEncoding('utf8').on('data', onData);
    this.child.stderr!.setEncoding('utf8').on('data', onData);
    this.exited = new Promise((resolve) => {
      this.child.on('close', (code, signal) => {
        children.delete(this.child);
        for (const w of this.waiters) w();
        resolve({ code, signal });
      });
    });
  }

  entries(): LogEntry[] {
    return this.output
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as LogEntry);
  }

  /** Resolves once `count` log lines with this message have been written. */
  waitFor(message: string, count = 1): Promise<LogEntry[]> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = this.entries().filter((e) => e.message === message);
        if (found.length >= count) {
          this.waiters.delete(check);
          resolve(found);
        } else if (this.child.exitCode !== null || this.child.signalCode !== null) {
          this.waiters.delete(check);
          reject(new Error(`exited before ${count}× "${message}":\n${this.output}`));
        }
      };
      this.waiters.add(check);
      check();
    });
  }
}

interface Reply {
  status: number;
  headers: IncomingMessage['headers'];
  body: string;
}

function call(port: number, path: string, options: { agent?: Agent | false; method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path, method: options.method ?? 'GET', agent: options.agent ?? false, headers: options.headers },
      (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (s: string) => (body += s));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

/** The sum of a metric's samples whose label set includes `labels` (Prometheus text format). */
function sampleSum(text: string, name: string, labels: Record<string, string>): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const wanted = Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`));
    if (wanted) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

async function startCluster(workers: number, extra: Record<string, string> = {}): Promise<{ serve: Serve; port: number; metricsPort: number }> {
  const empty = await createEmptyDatabase(); // the primary migrates it
  cleanups.push(() => empty.destroy());
  const port = Number(extra.PORT ?? (await freePort()));
  const metricsPort = await freePort();
  const serve = new Serve(['serve', '--workers', String(workers)], {
    ENV: 'development',
    LOG_LEVEL: 'info',
    DATABASE_URL: empty.url!,
    PORT: String(port),
    METRICS_PORT: String(metricsPort),
    SECRET_KEY: TEST_SECRET_KEY,
    ENCRYPTION_KEY: TEST_ENCRYPTION_KEY,
    ADMIN_EMAIL: ADMIN.email,
    ADMIN_PASSWORD: ADMIN.password,
    // Long enough never to cut a drain short on a slow machine.
    SHUTDOWN_GRACE_MS: '60000',
    ...extra,
  });
  return { serve, port, metricsPort };
}

describe('serve --workers refuses the embedded database', { timeout: 60_000 }, () => {
  it(`exits 2 naming DATABASE_URL, before forking anything (${dbTarget})`, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'lb-cluster-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const serve = new Serve(['serve', '--workers', '2'], { ENV: 'development', DATA_DIR: dataDir, PORT: String(await freePort()) });
    expect(await serve.exited).toStrictEqual({ code: 2, signal: null });
    expect(serve.output).toContain('`serve --workers` needs DATABASE_URL');
    expect(serve.output).not.toContain('worker ready');
  });

  it('refuses a --workers that is not a whole number from 1 to 256 with exit code 2', async () => {
    const serve = new Serve(['serve', '--workers', 'many'], { ENV: 'development' });
    expect(await serve.exited).toStrictEqual({ code: 2, signal: null });
    expect(serve.output).toContain('--workers must be a whole number from 1 to 256, got "many"');
  });
});

describe.runIf(isPostgres)('serve --workers 2 on PostgreSQL; steps run in order', { timeout: 240_000 }, () => {
  let serve: Serve;
  let port: number;
  let metricsPort: number;
  let token: string;
  /** Every GET /health/live this test has had answered, across all workers. */
  let liveRequests = 0;

  beforeAll(async () => {
    ({ serve, port, metricsPort } = await startCluster(2));
    await serve.waitFor('loanbook cluster ready');
    const signIn = await call(port, '/v1/auth/token', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(ADMIN) });
    expect(signIn.status, signIn.body).toBe(200);
    token = (JSON.parse(signIn.body) as { access_token: string }).access_token;
  });

  const live = async (agent: Agent | false = false) => {
    const r = await call(port, '/health/live', { agent });
    if (r.status === 200) liveRequests++;
    return r;
  };

  it('runs two workers on the one port, and the primary migrated the database once', async () => {
    const ready = await serve.waitFor('worker ready', 2);
    expect(new Set(ready.map((e) => e.worker_pid)).size).toBe(2);
    expect(serve.entries().filter((e) => e.message === 'migrations applied')).toHaveLength(1);
    expect(serve.entries().filter((e) => e.message === 'loanbook listening')).toHaveLength(2);
    for (let i = 0; i < 10; i++) expect((await live()).status).toBe(200);
    // An authenticated call reaches whichever worker and succeeds: they share keys and database.
    for (let i = 0; i < 4; i++) {
      const me = await call(port, '/v1/me', { headers: { authorization: `Bearer ${token}` } });
      expect(me.status, me.body).toBe(200);
    }
  });

  it('serves the aggregate of both workers on METRICS_PORT, and no /metrics on the API port', async () => {
    const scrape = await call(metricsPort, '/metrics');
    expect(scrape.status).toBe(200);
    expect(sampleSum(scrape.body, 'http_requests_total', { route: '/health/live', status: '200' })).toBe(liveRequests);
    expect(sampleSum(scrape.body, 'loanbook_cluster_workers', {})).toBe(2);
    expect((await call(port, '/metrics')).status).toBe(404);
  });

  it('SIGHUP replaces both workers one at a time while requests keep coming on kept-alive connections: none fails, ready stays 200', async () => {
    const before = new Set((await serve.waitFor('worker ready', 2)).map((e) => e.worker_pid));
    const agent = new Agent({ keepAlive: true, maxSockets: 8 });
    const failures: string[] = [];
    let running = true;
    const loop = async () => {
      for (let i = 0; running; i++) {
        try {
          // Readiness too: a worker being replaced drains but stays ready (its successor serves).
          const r = i % 2 === 0 ? await live(agent) : await call(port, '/health/ready', { agent });
          if (r.status !== 200) failures.push(`status ${r.status}: ${r.body}`);
        } catch (e) {
          failures.push((e as Error).message);
        }
      }
    };
    const loops = Array.from({ length: 8 }, loop);
    await serve.waitFor('worker ready', 2);
    serve.child.kill('SIGHUP');
    await serve.waitFor('rolling restart complete');
    running = false;
    await Promise.all(loops);
    agent.destroy();

    expect(failures).toStrictEqual([]);
    const replaced = await serve.waitFor('worker replaced', 2);
    expect(replaced.map((e) => e.slot).sort()).toStrictEqual([0, 1]);
    for (const r of replaced) {
      expect(before.has(r.old_pid)).toBe(true);
      expect(before.has(r.new_pid)).toBe(false);
      expect(r.old_exit_code).toBe(0);
    }
    // Counts of the workers that left are kept: the sum still equals every request answered.
    const scrape = await call(metricsPort, '/metrics');
    expect(sampleSum(scrape.body, 'http_requests_total', { route: '/health/live', status: '200' })).toBe(liveRequests);
    expect(sampleSum(scrape.body, 'loanbook_cluster_workers', {})).toBe(2);
  });

  it('restarts a worker killed with SIGKILL, and counts the crash', async () => {
    const readyBefore = (await serve.waitFor('worker ready')).length;
    const victim = serve.entries().filter((e) => e.message === 'worker ready').at(-1)!;
    process.kill(victim.worker_pid as number, 'SIGKILL');
    const [crash] = await serve.waitFor('worker exited unexpectedly; restarting it');
    expect(crash).toMatchObject({ worker_pid: victim.worker_pid, signal: 'SIGKILL', slot: victim.slot });
    const ready = await serve.waitFor('worker ready', readyBefore + 1);
    expect(ready.at(-1)).toMatchObject({ slot: victim.slot });
    expect((await live()).status).toBe(200);
    const scrape = await call(metricsPort, '/metrics');
    expect(sampleSum(scrape.body, 'loanbook_cluster_worker_crashes_total', {})).toBe(1);
    expect(sampleSum(scrape.body, 'loanbook_cluster_workers', {})).toBe(2);
  });

  it('SIGTERM drains every worker and exits 0; the port is then closed', async () => {
    serve.child.kill('SIGTERM');
    expect(await serve.exited).toStrictEqual({ code: 0, signal: null });
    const stopped = serve.entries().filter((e) => e.message === 'worker stopped');
    expect(stopped.length).toBeGreaterThanOrEqual(2);
    expect(serve.entries().filter((e) => e.role === 'primary' && e.message === 'stopped')).toHaveLength(1);
    await expect(call(port, '/health/live')).rejects.toThrow(/ECONNREFUSED/);
  });
});

describe.runIf(isPostgres)('serve --workers: a crash loop', { timeout: 240_000 }, () => {
  let blocker: Server;
  afterAll(() => new Promise<void>((r) => blocker.close(() => r())));

  it('workers that cannot start are restarted with backoff until the primary gives up and exits 1', async () => {
    // Another program holds the port: every worker's listen fails.
    blocker = createServer();
    const port = await freePort();
    await new Promise<void>((r) => blocker.listen(port, '127.0.0.1', r));
    const { serve } = await startCluster(2, { PORT: String(port) });
    expect(await serve.exited).toStrictEqual({ code: 1, signal: null });
    const restarts = serve.entries().filter((e) => e.message === 'worker exited unexpectedly; restarting it');
    expect(restarts.length).toBeGreaterThanOrEqual(4);
    // The backoff doubles with each crash in the window.
    const delays = restarts.map((e) => e.restart_in_ms as number);
    expect(delays.slice(0, 4)).toStrictEqual([500, 1000, 2000, 4000]);
    expect(serve.entries().some((e) => e.message === 'workers keep exiting: crash loop; stopping the cluster')).toBe(true);
    expect(serve.output).not.toContain('loanbook cluster ready');
  });
});
