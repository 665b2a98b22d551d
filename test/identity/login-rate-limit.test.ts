/**
 * The per-account limit on failed sign-ins (LOGIN_RATE_LIMIT_FAILURES per
 * LOGIN_RATE_LIMIT_WINDOW, default 5 per 15 minutes), separate from and stricter than
 * the general request rate limit.
 */
import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, problemOf, type TestApp } from '../support/app.js';
import { dbTarget } from '../support/db.js';


const LOCKED = {
  type: '/problems/too_many_login_failures',
  title: 'Too many failed sign-ins',
  status: 429,
  detail: 'Too many failed sign-ins for this account.',
  code: 'too_many_login_failures',
};

describe(`login failure limit (${dbTarget})`, () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await createTestApp();
  });
  afterAll(async () => t?.close());

  const login = (email: string, password: string) =>
    t.app.inject({ method: 'POST', url: '/v1/auth/token', payload: { email, password } });

  function expectLocked(res: LightMyRequestResponse): void {
    expect(res.statusCode).toBe(429);
    const retryAfter = res.headers['retry-after'];
    expect(retryAfter).toMatch(/^\d+$/);
    expect(Number(retryAfter)).toBeGreaterThanOrEqual(1);
    expect(Number(retryAfter)).toBeLessThanOrEqual(900);
    expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(problemOf(res)).toEqual(LOCKED);
  }

  it('the default is 5 failures per 15 minutes', () => {
    expect(t.config.loginRateLimit).toEqual({ failures: 5, windowMs: 15 * 60 * 1000 });
  });

  it('after 5 failures even the correct password gets 429 with Retry-After; another account is not affected', async () => {
    const a = await t.userWithRole('analyst');
    const b = await t.userWithRole('analyst');
    for (let i = 1; i <= 5; i++) {
      const res = await login(a.email, `wrong-password-${i}`);
      expect(res.statusCode, `failure ${i}`).toBe(401);
      expect(res.json<{ code: string }>().code).toBe('invalid_credentials');
    }
    expectLocked(await login(a.email, a.password));
    // The same account under another spelling of its email is the same account.
    expectLocked(await login(a.email.toUpperCase(), a.password));
    expectLocked(await login(a.email, 'wrong-again-password'));

    const other = await login(b.email, b.password);
    expect(other.statusCode).toBe(200);
  });

  it('a success resets the count: 4 failures, success, 4 failures, success', async () => {
    const u = await t.userWithRole('servicer');
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 4; i++) expect((await login(u.email, `wrong-password-${i}`)).statusCode).toBe(401);
      expect((await login(u.email, u.password)).statusCode, `round ${round}`).toBe(200);
    }
    // Without the reset this would be the 9th failure; with it, the 1st.
    expect((await login(u.email, 'wrong-password-x')).statusCode).toBe(401);
    expect((await login(u.email, u.password)).statusCode).toBe(200);
  });

  it('unknown emails are limited the same way (no hint that the account does not exist)', async () => {
    const email = 'no-such-person@example.test';
    for (let i = 0; i < 5; i++) expect((await login(email, 'whatever-password')).statusCode).toBe(401);
    expectLocked(await login(email, 'whatever-password'));
  });

  it('a burst of concurrent wrong guesses verifies at most 5 of them; the rest are refused with 429', async () => {
    const u = await t.userWithRole('underwriter');
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => login(u.email, `parallel-guess-${i}`)));
    const statuses = results.map((r) => r.statusCode).sort();
    expect(statuses).toEqual([401, 401, 401, 401, 401, 429, 429, 429, 429, 429]);
    expectLocked(await login(u.email, u.password));
  });

  it('under a controlled clock: Retry-After counts down to the end of the 15-minute window, then the account unlocks', async () => {
    const start = new Date('2031-05-01T12:00:00.000Z').getTime();
    let now = start;
    const clocked = await createTestApp({ db: t.db, clock: () => new Date(now) });
    try {
      const u = await clocked.userWithRole('borrower');
      const inject = (password: string) =>
        clocked.app.inject({ method: 'POST', url: '/v1/auth/token', payload: { email: u.email, password } });
      for (let i = 0; i < 5; i++) expect((await inject(`wrong-password-${i}`)).statusCode).toBe(401);
      now = start + 60_000;
      const locked = await inject(u.password);
      expect(locked.statusCode).toBe(429);
      expect(locked.headers['retry-after']).toBe('840');
      now = start + 900_000 - 1;
      expect((await inject(u.password)).headers['retry-after']).toBe('1');
      now = start + 900_000;
      expect((await inject(u.password)).statusCode).toBe(200);
    } finally {
      await clocked.close();
    }
  });

  it('LOGIN_RATE_LIMIT_FAILURES configures the threshold', async () => {
    const strict = await createTestApp({ db: t.db, env: { LOGIN_RATE_LIMIT_FAILURES: '2', LOGIN_RATE_LIMIT_WINDOW: '10m' } });
    try {
      expect(strict.config.loginRateLimit).toEqual({ failures: 2, windowMs: 600_000 });
      const u = await strict.userWithRole('auditor');
      const inject = (password: string) =>
        strict.app.inject({ method: 'POST', url: '/v1/auth/token', payload: { email: u.email, password } });
      expect((await inject('wrong-password-1')).statusCode).toBe(401);
      expect((await inject('wrong-password-2')).statusCode).toBe(401);
      const locked = await inject(u.password);
      expect(locked.statusCode).toBe(429);
      expect(Number(locked.headers['retry-after'])).toBeLessThanOrEqual(600);
      expect(problemOf(locked)).toEqual(LOCKED);
    } finally {
      await strict.close();
    }
  });
});
