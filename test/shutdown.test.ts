/**
 * Graceful shutdown of `loanbook serve` (a child process on the current DB_TARGET):
 * on SIGTERM/SIGINT the listener closes at once, a request already in flight still
 * gets its normal response, a kept-alive connection is served until it closes (told
 * so by `Connection: close`), and the process logs 'stopped' and exits 0.
 *
 * The in-flight request is POST /v1/auth/token with its body streamed in two parts.
 * `Expect: 100-continue` makes the server confirm it has parsed the headers and
 * dispatched the request before the signal is sent; the rest of the body is held back
 * until the test has seen the listener refuse new connections. Ordering is proven by
 * events, never by the clock.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { Agent, request, type ClientRequest, type IncomingMessage } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEmptyDatabase, dbTarget, isPostgres } from './support/db.js';
import { TEST_ENCRYPTION_KEY, TEST_SECRET_KEY } from './support/app.js';
import { freePort } from './support/net.js';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const ADMIN = { email: 'ops@example.test', password: 'shutdown-test-password-0001' };

const children = new Set<ChildProcess>();
const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  for (const c of cleanups.reverse()) await c();
});


interface Served {
  readonly child: ChildProcess;
  readonly port: number;
  output(): string;
  waitForOutput(pattern: RegExp): Promise<void>;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `loanbook serve` on a fresh database of the current target, with a known admin. */
async function startServe(): Promise<Served> {
  const dataDir = mkdtempSync(join(tmpdir(), 'lb-shutdown-'));
  cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
  let databaseUrl: string | undefined;
  if (isPostgres) {
    const empty = await createEmptyDatabase(); // serve (ENV=development) migrates it
    cleanups.push(() => empty.destroy());
    databaseUrl = empty.url;
  }
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve'], {
    cwd: repoRoot,
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      ENV: 'development',
      LOG_LEVEL: 'info',
      DATA_DIR: dataDir,
      PORT: String(port),
      SECRET_KEY: TEST_SECRET_KEY,
      ENCRYPTION_KEY: TEST_ENCRYPTION_KEY,
      ADMIN_EMAIL: ADMIN.email,
      ADMIN_PASSWORD: ADMIN.password,
      // Long enough never to cut the drain short on a slow machine: this test is about draining.
      SHUTDOWN_GRACE_MS: '120000',
      ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let output = '';
  const waiters = new Set<() => void>();
  const onData = (s: string) => {
    output += s;
    for (const w of waiters) w();
  };
  child.stdout.setEncoding('utf8').on('data', onData);
  child.stderr.setEncoding('utf8').on('data', onData);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('close', (code, signal) => {
      children.delete(child);
      for (const w of waiters) w();
      resolve({ code, signal });
    });
  });
  const waitForOutput = (pattern: RegExp) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (pattern.test(output)) {
          waiters.delete(check);
          resolve();
        } else if (child.exitCode !== null || child.signalCode !== null) {
          waiters.delete(check);
          reject(new Error(`serve exited before ${String(pattern)}:\n${output}`));
        }
      };
      waiters.add(check);
      check();
    });
  await waitForOutput(/"message":"loanbook listening"/);
  return { child, port, output: () => output, waitForOutput, exited };
}

/** One request on a fresh connection: its status, or the connection error's code. */
function probe(port: number): Promise<{ status: number } | { error: string }> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/health/live', agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0 }));
    });
    req.on('error', (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message }));
    req.end();
  });
}

/** A GET through `agent`: status, headers, and whether it went out on a kept-alive connection. */
function get(port: number, agent: Agent, path: string): Promise<{ status: number; headers: IncomingMessage['headers']; reused: boolean }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, reused: req.reusedSocket }));
    });
    req.on('error', reject);
    req.end();
  });
}

interface Response {
  status: number;
  headers: IncomingMessage['headers'];
  body: string;
}

/** A sign-in whose body is sent in two parts; `finish()` sends the rest. */
function slowSignIn(port: number, agent: Agent): { continued: Promise<void>; finish(): void; response: Promise<Response> } {
  const body = JSON.stringify(ADMIN);
  const cut = Math.floor(body.length / 2);
  let req!: ClientRequest;
  let onContinue!: () => void;
  const continued = new Promise<void>((resolve) => (onContinue = resolve));
  const response = new Promise<Response>((resolve, reject) => {
    req = request(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/v1/auth/token',
        agent,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), expect: '100-continue' },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (s: string) => (text += s));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
        res.on('error', reject);
      },
    );
    req.on('error', reject); // a socket reset (ECONNRESET) fails the test here
    req.on('continue', () => {
      req.write(body.slice(0, cut));
      onContinue();
    });
    req.flushHeaders();
  });
  response.catch(() => undefined); // awaited by the test; never an unhandled rejection if it fails early
  return { continued, finish: () => req.end(body.slice(cut)), response };
}

describe(`graceful shutdown of serve (${dbTarget})`, { timeout: 120_000 }, () => {
  describe('SIGTERM with a request in flight', () => {
    let served: Served;
    const agent = new Agent({ keepAlive: true }); // as a load balancer would connect
    beforeAll(async () => {
      served = await startServe();
    });
    afterAll(() => agent.destroy());

    it('serves normally before the signal', async () => {
      expect(await probe(served.port)).toStrictEqual({ status: 200 });
    });

    it('refuses new connections, completes the in-flight request normally, logs stopped and exits 0', async () => {
      const inFlight = slowSignIn(served.port, agent);
      await inFlight.continued; // the server has the request; half its body is still to come

      served.child.kill('SIGTERM');
      await served.waitForOutput(/"message":"shutting down: draining in-flight requests"/);

      // The listener closed with the signal, while the request is still open: a new
      // connection is refused (or reset, if it was caught in the accept queue as the
      // listener closed); it is never served.
      const seen: ({ status: number } | { error: string })[] = [];
      for (;;) {
        const r = await probe(served.port);
        seen.push(r);
        if ('error' in r && r.error === 'ECONNREFUSED') break;
      }
      for (const r of seen.slice(0, -1)) expect(r).toStrictEqual({ error: 'ECONNRESET' });

      inFlight.finish();
      const res = await inFlight.response;
      expect(res.status, res.body).toBe(200);
      // Its keep-alive connection is not left open to hold the drain up.
      expect(res.headers.connection).toBe('close');
      const token = JSON.parse(res.body) as { token_type: string; access_token: string };
      expect(token.token_type).toBe('Bearer');
      expect(token.access_token.split('.')).toHaveLength(3);

      expect(await served.exited).toStrictEqual({ code: 0, signal: null });
      const lines = served.output().split('\n');
      const entries = lines
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as { message: string; route?: string; status?: number });
      const drainStart = entries.findIndex((e) => e.message === 'shutting down: draining in-flight requests');
      expect(drainStart).toBeGreaterThanOrEqual(0);
      const afterSignal = entries.slice(drainStart + 1);
      // After the signal: only access-log lines and one 'stopped'. (The drained request's
      // access line may land just before or just after 'stopped': onResponse runs once the
      // socket has flushed, which can be after close() resolves, e.g. on Node 24.)
      expect(afterSignal.filter((e) => e.message === 'stopped')).toHaveLength(1);
      expect(afterSignal.filter((e) => e.message === 'request completed' && e.status === 200)).toMatchObject([
        { route: '/v1/auth/token', status: 200 },
      ]);
      expect(afterSignal.every((e) => e.message === 'request completed' || e.message === 'stopped')).toBe(true);
      expect(served.output()).toContain('"signal":"SIGTERM"');
      expect(await probe(served.port)).toStrictEqual({ error: 'ECONNREFUSED' });
    });
  });

  it('a kept-alive connection idle at the signal is still served during the drain, told to close, and not reset', async () => {
    const served = await startServe();
    const agent = new Agent({ keepAlive: true });
    try {
      // The in-flight request holds the drain open on its own connection.
      const inFlight = slowSignIn(served.port, agent);
      await inFlight.continued;
      // A second connection, idle once answered: the one a client is about to reuse.
      const warm = await get(served.port, agent, '/health/live');
      expect(warm).toMatchObject({ status: 200, reused: false });
      expect(warm.headers.connection).toBe('keep-alive');

      served.child.kill('SIGTERM');
      await served.waitForOutput(/"message":"shutting down: draining in-flight requests"/);
      // Served normally (not 503, not ECONNRESET), on the same connection, which it then closes.
      const during = await get(served.port, agent, '/health/live');
      expect(during).toMatchObject({ status: 200, reused: true });
      expect(during.headers.connection).toBe('close');

      inFlight.finish();
      expect((await inFlight.response).status).toBe(200);
      expect(await served.exited).toStrictEqual({ code: 0, signal: null });
    } finally {
      agent.destroy();
    }
  });

  it('SIGINT (Ctrl-C) stops an idle server the same way', async () => {
    const served = await startServe();
    expect(await probe(served.port)).toStrictEqual({ status: 200 });
    served.child.kill('SIGINT');
    expect(await served.exited).toStrictEqual({ code: 0, signal: null });
    expect(served.output()).toContain('"signal":"SIGINT"');
    expect(served.output()).toMatch(/"message":"stopped"/);
    expect(await probe(served.port)).toStrictEqual({ error: 'ECONNREFUSED' });
  });
});
