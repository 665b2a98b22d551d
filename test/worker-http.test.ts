/**
 * The probe and scrape endpoints of `loanbook worker` (WORKER_HTTP_PORT), over real
 * HTTP: the worker as a child process on a migrated PostgreSQL database, and the ops
 * server itself in process for readiness while shutting down and a failing check.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { request } from 'node:http';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOpsHttpServer } from '../src/platform/ops-http.js';
import { TEST_ENCRYPTION_KEY, TEST_SECRET_KEY } from './support/app.js';
import { createTestDatabase, isPostgres, silentLogger, type TestDatabase } from './support/db.js';
import { freePort } from './support/net.js';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function call(port: number, path: string, method = 'GET'): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (s: string) => (body += s));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('the ops HTTP server', () => {
  let shuttingDown = false;
  let dbUp = true;
  const ops = createOpsHttpServer({
    logger: silentLogger,
    metrics: { contentType: 'text/plain; version=0.0.4; charset=utf-8', metrics: async () => 'x_total 1\n' },
    health: {
      checks: [
        {
          name: 'database',
          critical: true,
          check: async () => {
            if (!dbUp) throw new Error('connect ECONNREFUSED postgres://user:secret@db:5432/x');
          },
        },
      ],
      isShuttingDown: () => shuttingDown,
      version: '9.9.9',
    },
  });
  let port: number;
  beforeAll(async () => {
    port = await ops.listen(0, '127.0.0.1');
  });
  afterAll(() => ops.close());

  it('answers live and ready with the API’s bodies and baseline headers', async () => {
    const live = await call(port, '/health/live');
    expect(live.status).toBe(200);
    expect(JSON.parse(live.body)).toMatchObject({ status: 'ok', version: '9.9.9' });
    expect(live.headers['x-content-type-options']).toBe('nosniff');
    const ready = await call(port, '/health/ready');
    expect(ready.status).toBe(200);
    expect(JSON.parse(ready.body)).toMatchObject({ status: 'ok', components: { database: { status: 'ok', critical: true } } });
  });

  it('ready is 503 when a critical check fails (its URL redacted), and while shutting down; live stays 200', async () => {
    dbUp = false;
    const down = await call(port, '/health/ready');
    expect(down.status).toBe(503);
    expect(down.body).not.toContain('secret');
    expect(JSON.parse(down.body)).toMatchObject({ status: 'fail', components: { database: { status: 'fail', error: 'connect ECONNREFUSED <url>' } } });
    dbUp = true;
    shuttingDown = true;
    const draining = await call(port, '/health/ready');
    expect(draining.status).toBe(503);
    expect(JSON.parse(draining.body)).toMatchObject({ status: 'fail', shutting_down: true });
    expect((await call(port, '/health/live')).status).toBe(200);
    shuttingDown = false;
  });

  it('serves /metrics; anything else is a problem: 404, or 405 with Allow for another method; HEAD has no body', async () => {
    expect(await call(port, '/metrics')).toMatchObject({ status: 200, body: 'x_total 1\n' });
    const missing = await call(port, '/nope');
    expect(missing.status).toBe(404);
    expect(missing.headers['content-type']).toBe('application/problem+json');
    expect(JSON.parse(missing.body)).toMatchObject({ status: 404, code: 'not_found' });
    const post = await call(port, '/metrics', 'POST');
    expect(post.status).toBe(405);
    expect(post.headers.allow).toBe('GET, HEAD');
    expect(JSON.parse(post.body)).toMatchObject({ code: 'method_not_allowed' });
    const head = await call(port, '/health/live', 'HEAD');
    expect(head).toMatchObject({ status: 200, body: '' });
  });
});

describe.runIf(isPostgres)('loanbook worker on WORKER_HTTP_PORT (postgres)', { timeout: 120_000 }, () => {
  let database: TestDatabase;
  let child: ChildProcess;
  let output = '';
  let httpPort: number;
  let exited: Promise<number | null>;

  const start = (env: Record<string, string>) => {
    output = '';
    const proc = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'worker'], {
      cwd: repoRoot,
      env: {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        ENV: 'development',
        LOG_LEVEL: 'info',
        DATABASE_URL: database.url!,
        SECRET_KEY: TEST_SECRET_KEY,
        ENCRYPTION_KEY: TEST_ENCRYPTION_KEY,
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    proc.stdout.setEncoding('utf8').on('data', (s: string) => (output += s));
    proc.stderr.setEncoding('utf8').on('data', (s: string) => (output += s));
    const done = new Promise<number | null>((resolve) => proc.on('close', (code) => resolve(code)));
    const running = new Promise<void>((resolve, reject) => {
      const check = () => {
        if (output.includes('"message":"loanbook worker running"')) resolve();
        else if (proc.exitCode !== null) reject(new Error(output));
        else setTimeout(check, 50);
      };
      check();
    });
    return { proc, done, running };
  };

  beforeAll(async () => {
    database = await createTestDatabase();
    httpPort = await freePort();
    const w = start({ WORKER_HTTP_PORT: String(httpPort) });
    child = w.proc;
    exited = w.done;
    await w.running;
  });
  afterAll(async () => {
    child.kill('SIGKILL');
    await database.destroy();
  });

  it('announces the port, and answers live', async () => {
    expect(output).toContain(`"http_port":${httpPort}`);
    const live = await call(httpPort, '/health/live');
    expect(live.status).toBe(200);
    expect(JSON.parse(live.body)).toMatchObject({ status: 'ok' });
  });

  it('is ready: the database answers and the queue runs (both critical)', async () => {
    const ready = await call(httpPort, '/health/ready');
    expect(ready.status, ready.body).toBe(200);
    expect(JSON.parse(ready.body)).toMatchObject({
      status: 'ok',
      components: { database: { status: 'ok', critical: true }, jobs: { status: 'ok', critical: true } },
    });
  });

  it('serves the job metrics and the process metrics', async () => {
    const scrape = await call(httpPort, '/metrics');
    expect(scrape.status).toBe(200);
    expect(scrape.body).toContain('# TYPE loanbook_jobs_total counter');
    expect(scrape.body).toContain('# TYPE loanbook_job_duration_seconds histogram');
    expect(scrape.body).toMatch(/^process_cpu_user_seconds_total \d/m);
  });

  it('SIGTERM: exits 0 and the port closes', async () => {
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(output).toContain('"message":"stopped"');
    await expect(call(httpPort, '/health/live')).rejects.toThrow(/ECONNREFUSED/);
  });

  it('WORKER_HTTP_PORT=0 runs without the server', async () => {
    const w = start({ WORKER_HTTP_PORT: '0' });
    try {
      await w.running;
      expect(output).toContain('"http_port":"off"');
    } finally {
      w.proc.kill('SIGTERM');
      expect(await w.done).toBe(0);
    }
  });
});
