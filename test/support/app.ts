/**
 * A running application over a fresh test database, driven with app.inject().
 * Secrets are fixed test values; everything else is the production code path.
 */
import type { Redis } from 'ioredis';
import { buildApp, type BuiltApp } from '../../src/app.js';
import { loadConfig, type Config } from '../../src/platform/config.js';
import type { Role } from '../../src/identity/model.js';
import type { JobQueue } from '../../src/platform/jobs.js';
import { createTestDatabase, silentLogger, type TestDatabase } from './db.js';

export const TEST_SECRET_KEY = 'test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz';
export const TEST_ENCRYPTION_KEY = Buffer.from('0123456789abcdef0123456789ABCDEF').toString('base64');
export const ADMIN_EMAIL = 'admin@example.test';
export const ADMIN_PASSWORD = 'correct-horse-battery-0001';

export function testConfig(env: Record<string, string> = {}): Config {
  return loadConfig({
    ENV: 'test',
    SECRET_KEY: TEST_SECRET_KEY,
    ENCRYPTION_KEY: TEST_ENCRYPTION_KEY,
    DATA_DIR: '/nonexistent-test-data-dir',
    RATE_LIMIT_REQUESTS: '100000',
    ...env,
  });
}

export interface TestApp extends BuiltApp {
  readonly config: Config;
  readonly db: TestDatabase;
  /** Signs in and returns an access token. */
  token(email: string, password: string): Promise<string>;
  /** Creates a user with the role (through the service) and returns their id and token. */
  userWithRole(role: Role, email?: string): Promise<{ id: string; email: string; password: string; token: string }>;
  adminToken(): Promise<string>;
  close(): Promise<void>;
}

export interface TestAppOptions {
  readonly env?: Record<string, string>;
  readonly redis?: Redis;
  readonly clock?: () => Date;
  /** Reuse a database (e.g. to build two apps over one); otherwise a fresh one is made. */
  readonly db?: TestDatabase;
  /** A job queue over the same database (the test starts and stops it). */
  readonly jobs?: JobQueue;
}

let seq = 0;

export async function createTestApp(options: TestAppOptions = {}): Promise<TestApp> {
  const config = testConfig(options.env);
  const db = options.db ?? (await createTestDatabase());
  const built = await buildApp({
    config,
    logger: silentLogger,
    database: db.database,
    // A prefix of its own, so rate-limit and sign-in lockout counters in the shared
    // Redis never leak between test files or CI runs.
    ...(options.redis ? { redis: options.redis, rateLimitKeyPrefix: `loanbook:test:${process.pid}:${++seq}:` } : {}),
    ...(options.clock ? { clock: options.clock } : {}),
    ...(options.jobs ? { jobs: options.jobs } : {}),
  });
  await built.app.ready();
  await built.identity.bootstrapAdmin({ email: ADMIN_EMAIL, password: ADMIN_PASSWORD });

  const token = async (email: string, password: string) => {
    const res = await built.app.inject({ method: 'POST', url: '/v1/auth/token', payload: { email, password } });
    if (res.statusCode !== 200) throw new Error(`sign-in failed: ${res.statusCode} ${res.body}`);
    return res.json<{ access_token: string }>().access_token;
  };
  return {
    ...built,
    config,
    db,
    token,
    adminToken: () => token(ADMIN_EMAIL, ADMIN_PASSWORD),
    async userWithRole(role, email) {
      const e = email ?? `${role}-${process.pid}-${++seq}@example.test`;
      const password = `pw-${role}-${seq}-long-enough`;
      const user = await built.identity.createUser({ email: e, password, role }, { actorId: null, ip: null, requestId: 'test' });
      return { id: user.id, email: e, password, token: await token(e, password) };
    },
    async close() {
      await built.app.close();
      if (!options.db) await db.destroy();
    },
  };
}

export function bearer(token: string): Record<string, string> {
  return { authorization: `Bearer ${token}` };
}

/** A problem+json body without its per-request members (request_id, instance), for exact comparison. */
export function problemOf(res: { json<T>(): T }): Record<string, unknown> {
  const { request_id: _requestId, instance: _instance, ...rest } = res.json<Record<string, unknown>>();
  return rest;
}
