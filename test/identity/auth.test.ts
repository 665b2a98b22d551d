/**
 * Sign-in, access tokens, refresh-token rotation with reuse detection, logout and
 * /v1/me, driven through app.inject() on the real application.
 */
import { createHash } from 'node:crypto';
import { decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';
import type { LightMyRequestResponse as InjectResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_EMAIL, ADMIN_PASSWORD, bearer, createTestApp, problemOf, TEST_SECRET_KEY, type TestApp } from '../support/app.js';
import { dbTarget, isPostgres } from '../support/db.js';
import { signingKeyId } from '../../src/identity/tokens.js';

interface TokenBody {
  access_token: string;
  token_type: string;
  expires_in: number;
  refresh_token: string;
  refresh_expires_in: number;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;


const UNAUTHENTICATED = {
  type: '/problems/unauthenticated',
  title: 'Authentication required',
  status: 401,
  detail: 'The access token is missing, malformed, expired or revoked.',
  code: 'unauthenticated',
};

const INVALID_REFRESH = {
  type: '/problems/invalid_refresh_token',
  title: 'Invalid refresh token',
  status: 401,
  detail: 'Invalid refresh token',
  code: 'invalid_refresh_token',
};

function helpers(get: () => TestApp) {
  return {
    login: (email: string, password: string) =>
      get().app.inject({ method: 'POST', url: '/v1/auth/token', payload: { email, password } }),
    refresh: (token: string) => get().app.inject({ method: 'POST', url: '/v1/auth/refresh', payload: { refresh_token: token } }),
    logout: (token: string) => get().app.inject({ method: 'POST', url: '/v1/auth/logout', headers: bearer(token) }),
    me: (token: string) => get().app.inject({ method: 'GET', url: '/v1/me', headers: bearer(token) }),
  };
}

function expectUnauthenticated(res: InjectResponse): void {
  expect(res.statusCode).toBe(401);
  expect(res.headers['www-authenticate']).toBe('Bearer realm="loanbook"');
  expect(problemOf(res)).toEqual(UNAUTHENTICATED);
}

function expectInvalidRefresh(res: InjectResponse): void {
  expect(res.statusCode).toBe(401);
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
  expect(problemOf(res)).toEqual(INVALID_REFRESH);
}

describe(`sign-in, refresh, logout (${dbTarget})`, () => {
  let t: TestApp;
  const { login, refresh, logout, me } = helpers(() => t);

  beforeAll(async () => {
    t = await createTestApp();
  });
  afterAll(async () => t?.close());

  const adminId = async () =>
    (await t.db.database.db.selectFrom('users').select('id').where('role', '=', 'admin').executeTakeFirstOrThrow()).id;

  it('POST /v1/auth/token returns a 15-minute HS256 access JWT signed with SECRET_KEY and an opaque refresh token', async () => {
    const res = await login(ADMIN_EMAIL, ADMIN_PASSWORD);
    expect(res.statusCode).toBe(200);
    const body = res.json<TokenBody>();
    expect(Object.keys(body).sort()).toEqual(['access_token', 'expires_in', 'refresh_expires_in', 'refresh_token', 'token_type']);
    expect(body.token_type).toBe('Bearer');
    expect(body.expires_in).toBe(900);
    expect(body.refresh_expires_in).toBe(14 * 86_400);

    // kid names the signing key (a hash of SECRET_KEY, never the key), for rotation.
    expect(decodeProtectedHeader(body.access_token)).toEqual({ alg: 'HS256', typ: 'JWT', kid: signingKeyId(TEST_SECRET_KEY) });
    const claims = decodeJwt(body.access_token);
    expect(claims.exp! - claims.iat!).toBe(900);
    expect(claims.iss).toBe('loanbook');
    expect(claims.aud).toBe('loanbook-api');
    expect(claims.sub).toBe(await adminId());
    expect(claims.role).toBe('admin');
    expect(claims.sid).toMatch(UUID);
    expect(claims.jti).toMatch(UUID);
    // The signature verifies with SECRET_KEY itself.
    await expect(jwtVerify(body.access_token, new TextEncoder().encode(TEST_SECRET_KEY), { algorithms: ['HS256'] })).resolves.toBeDefined();

    // The refresh token is opaque and only its SHA-256 is stored.
    expect(body.refresh_token).toMatch(/^lbr_[A-Za-z0-9_-]{43}$/);
    const rows = await t.db.database.db.selectFrom('refresh_tokens').selectAll().where('session_id', '=', claims.sid as string).execute();
    expect(rows).toHaveLength(1);
    expect(rows[0]!.token_hash).toBe(createHash('sha256').update(body.refresh_token).digest('hex'));
    expect(rows[0]!.used_at).toBeNull();
    expect(JSON.stringify(rows)).not.toContain(body.refresh_token);
  });

  it('GET /v1/me returns the signed-in user and nothing secret', async () => {
    const { access_token } = (await login(ADMIN_EMAIL, ADMIN_PASSWORD)).json<TokenBody>();
    const res = await me(access_token);
    expect(res.statusCode).toBe(200);
    const body = res.json<Record<string, unknown>>();
    expect(Object.keys(body).sort()).toEqual(['created_at', 'email', 'id', 'role', 'status', 'updated_at']);
    expect(body).toMatchObject({ id: await adminId(), email: ADMIN_EMAIL, role: 'admin', status: 'active' });
  });

  it('GET /v1/me without a token is 401 with WWW-Authenticate', async () => {
    expectUnauthenticated(await t.app.inject({ method: 'GET', url: '/v1/me' }));
  });

  it('a wrong password and an unknown email get the same 401 invalid_credentials', async () => {
    const wrong = await login(ADMIN_EMAIL, 'not-the-right-password');
    const unknown = await login('nobody-here@example.test', 'not-the-right-password');
    for (const res of [wrong, unknown]) {
      expect(res.statusCode).toBe(401);
      expect(problemOf(res)).toEqual({
        type: '/problems/invalid_credentials',
        title: 'Invalid credentials',
        status: 401,
        detail: 'Invalid credentials',
        code: 'invalid_credentials',
      });
    }
    // Clear the failure counter so later sign-ins in this file are not throttled.
    expect((await login(ADMIN_EMAIL, ADMIN_PASSWORD)).statusCode).toBe(200);
  });

  it('email lookup at sign-in is case-insensitive', async () => {
    const res = await login(ADMIN_EMAIL.toUpperCase(), ADMIN_PASSWORD);
    expect(res.statusCode).toBe(200);
    expect(decodeJwt(res.json<TokenBody>().access_token).sub).toBe(await adminId());
  });

  it('POST /v1/auth/refresh rotates: a new pair for the same session, the old refresh token spent', async () => {
    const first = (await login(ADMIN_EMAIL, ADMIN_PASSWORD)).json<TokenBody>();
    const res = await refresh(first.refresh_token);
    expect(res.statusCode).toBe(200);
    const second = res.json<TokenBody>();
    expect(second.refresh_token).not.toBe(first.refresh_token);
    expect(second.access_token).not.toBe(first.access_token);
    expect(second.expires_in).toBe(900);
    const sid = decodeJwt(first.access_token).sid as string;
    expect(decodeJwt(second.access_token).sid).toBe(sid);
    expect((await me(second.access_token)).statusCode).toBe(200);
    // Rotation alone does not end the session: the older access token still works until it expires.
    expect((await me(first.access_token)).statusCode).toBe(200);

    const tokens = await t.db.database.db
      .selectFrom('refresh_tokens')
      .select(['token_hash', 'used_at'])
      .where('session_id', '=', sid)
      .execute();
    const byHash = new Map(tokens.map((r) => [r.token_hash, r.used_at]));
    const sha = (s: string) => createHash('sha256').update(s).digest('hex');
    expect(byHash.size).toBe(2);
    expect(byHash.get(sha(first.refresh_token))).toBeInstanceOf(Date);
    expect(byHash.get(sha(second.refresh_token))).toBeNull();
  });

  it('reusing a spent refresh token revokes its whole family: newer refresh token and every access token of the session', async () => {
    const first = (await login(ADMIN_EMAIL, ADMIN_PASSWORD)).json<TokenBody>();
    const other = (await login(ADMIN_EMAIL, ADMIN_PASSWORD)).json<TokenBody>(); // a separate session
    const second = (await refresh(first.refresh_token)).json<TokenBody>();
    const third = (await refresh(second.refresh_token)).json<TokenBody>();
    expect((await me(third.access_token)).statusCode).toBe(200);

    // The thief (or a confused client) presents the first, long-spent token.
    expectInvalidRefresh(await refresh(first.refresh_token));

    expectInvalidRefresh(await refresh(third.refresh_token));
    expectUnauthenticated(await me(first.access_token));
    expectUnauthenticated(await me(second.access_token));
    expectUnauthenticated(await me(third.access_token));

    const sid = decodeJwt(first.access_token).sid as string;
    const session = await t.db.database.db.selectFrom('sessions').selectAll().where('id', '=', sid).executeTakeFirstOrThrow();
    expect(session.revoked_why).toBe('refresh_token_reuse');
    expect(session.revoked_at).toBeInstanceOf(Date);

    // Another sign-in of the same user is a different family and is untouched.
    expect((await me(other.access_token)).statusCode).toBe(200);
    expect((await refresh(other.refresh_token)).statusCode).toBe(200);
  });

  it('an unknown or malformed refresh token is 401 invalid_refresh_token', async () => {
    expectInvalidRefresh(await refresh('lbr_' + 'A'.repeat(43)));
    expectInvalidRefresh(await refresh('x'));
  });

  it('POST /v1/auth/logout revokes the session: its access and refresh tokens stop working, other sessions do not', async () => {
    const session = (await login(ADMIN_EMAIL, ADMIN_PASSWORD)).json<TokenBody>();
    const other = (await login(ADMIN_EMAIL, ADMIN_PASSWORD)).json<TokenBody>();
    const res = await logout(session.access_token);
    expect(res.statusCode).toBe(204);
    expect(res.body).toBe('');

    expectUnauthenticated(await me(session.access_token));
    expectInvalidRefresh(await refresh(session.refresh_token));
    expectUnauthenticated(await logout(session.access_token));

    const sid = decodeJwt(session.access_token).sid as string;
    const row = await t.db.database.db.selectFrom('sessions').selectAll().where('id', '=', sid).executeTakeFirstOrThrow();
    expect(row.revoked_why).toBe('logout');

    expect((await me(other.access_token)).statusCode).toBe(200);
  });

  it('logout without a token is 401', async () => {
    expectUnauthenticated(await t.app.inject({ method: 'POST', url: '/v1/auth/logout' }));
  });

  it('the sign-in body is validated: unknown fields and a non-email are 400', async () => {
    const extra = await t.app.inject({
      method: 'POST',
      url: '/v1/auth/token',
      payload: { email: ADMIN_EMAIL, password: ADMIN_PASSWORD, role: 'admin' },
    });
    expect(extra.statusCode).toBe(400);
    expect(extra.json()).toMatchObject({ code: 'validation_failed', errors: [{ pointer: '#/role', location: 'body' }] });
    const notEmail = await login('not-an-email', ADMIN_PASSWORD);
    expect(notEmail.statusCode).toBe(400);
    expect(notEmail.json()).toMatchObject({ code: 'validation_failed', errors: [{ pointer: '#/email', location: 'body' }] });
  });
});

describe(`token lifetimes under a controlled clock (${dbTarget})`, () => {
  const start = new Date('2030-01-01T00:00:00.000Z');
  let now = start;
  let t: TestApp;
  const { login, refresh, me } = helpers(() => t);
  const at = (seconds: number) => {
    now = new Date(start.getTime() + seconds * 1000);
  };

  beforeAll(async () => {
    t = await createTestApp({ clock: () => now });
  });
  afterAll(async () => t?.close());

  it('an access token is accepted for 899 s and refused from 900 s (exp − iat = 900)', async () => {
    at(0);
    const tokens = (await login(ADMIN_EMAIL, ADMIN_PASSWORD)).json<TokenBody>();
    const claims = decodeJwt(tokens.access_token);
    expect(claims.iat).toBe(start.getTime() / 1000);
    expect(claims.exp).toBe(start.getTime() / 1000 + 900);
    at(899);
    expect((await me(tokens.access_token)).statusCode).toBe(200);
    at(900);
    expectUnauthenticated(await me(tokens.access_token));

    // The refresh token outlives the access token and yields a fresh one.
    const res = await refresh(tokens.refresh_token);
    expect(res.statusCode).toBe(200);
    const renewed = res.json<TokenBody>();
    expect(decodeJwt(renewed.access_token).iat).toBe(start.getTime() / 1000 + 900);
    expect((await me(renewed.access_token)).statusCode).toBe(200);
  });

  it('a session ends 14 days after sign-in however often it is refreshed', async () => {
    at(0);
    let tokens = (await login(ADMIN_EMAIL, ADMIN_PASSWORD)).json<TokenBody>();
    at(13 * 86_400);
    const res = await refresh(tokens.refresh_token);
    expect(res.statusCode).toBe(200);
    tokens = res.json<TokenBody>();
    at(14 * 86_400 - 1);
    const last = await refresh(tokens.refresh_token);
    expect(last.statusCode).toBe(200);
    tokens = last.json<TokenBody>();
    expect((await me(tokens.access_token)).statusCode).toBe(200);
    at(14 * 86_400);
    // Both tokens are a second old and unexpired themselves, but their session has ended.
    expectInvalidRefresh(await refresh(tokens.refresh_token));
    expectUnauthenticated(await me(tokens.access_token));
  });

  it('an unused refresh token expires after 14 days', async () => {
    at(100 * 86_400);
    const tokens = (await login(ADMIN_EMAIL, ADMIN_PASSWORD)).json<TokenBody>();
    at(114 * 86_400);
    expectInvalidRefresh(await refresh(tokens.refresh_token));
  });
});

describe.runIf(isPostgres)('refresh-token rotation race (postgres: real concurrent transactions)', () => {
  let t: TestApp;
  const { login, refresh, me } = helpers(() => t);

  beforeAll(async () => {
    t = await createTestApp();
  });
  afterAll(async () => t?.close());

  it('two concurrent refreshes with one token: exactly one succeeds, the loser is treated as reuse and the session is revoked', async () => {
    for (let round = 0; round < 3; round++) {
      const tokens = (await login(ADMIN_EMAIL, ADMIN_PASSWORD)).json<TokenBody>();
      const results = await Promise.all([refresh(tokens.refresh_token), refresh(tokens.refresh_token)]);
      expect(results.map((r) => r.statusCode).sort()).toEqual([200, 401]);
      const winner = results.find((r) => r.statusCode === 200)!.json<TokenBody>();
      const loser = results.find((r) => r.statusCode === 401)!;
      expectInvalidRefresh(loser);

      // The row lock serialises the two: the second sees the token spent, so the
      // family is revoked and even the winner's fresh pair is dead.
      expectInvalidRefresh(await refresh(winner.refresh_token));
      expectUnauthenticated(await me(winner.access_token));
      const sid = decodeJwt(tokens.access_token).sid as string;
      const session = await t.db.database.db.selectFrom('sessions').selectAll().where('id', '=', sid).executeTakeFirstOrThrow();
      expect(session.revoked_why).toBe('refresh_token_reuse');
      const issued = await t.db.database.db.selectFrom('refresh_tokens').select('used_at').where('session_id', '=', sid).execute();
      // Exactly one rotation happened: the original (spent) and the winner's token.
      expect(issued).toHaveLength(2);
      expect(issued.filter((r) => r.used_at !== null)).toHaveLength(1);
    }
  });
});
