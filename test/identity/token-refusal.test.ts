/**
 * Every kind of bad access token is refused with one and the same 401 problem body and
 * a WWW-Authenticate challenge, so a caller learns nothing about why. Forged tokens are
 * built with jose; a control token built by the same forge with the right parameters
 * is accepted, so each refusal is caused by the one thing that differs.
 */
import type { LightMyRequestResponse } from 'fastify';
import { SignJWT, UnsecuredJWT, decodeJwt, generateKeyPair, type JWTPayload } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, createTestApp, problemOf, TEST_SECRET_KEY, type TestApp } from '../support/app.js';
import { dbTarget } from '../support/db.js';

const secret = new TextEncoder().encode(TEST_SECRET_KEY);

const EXPECTED_401 = {
  type: '/problems/unauthenticated',
  title: 'Authentication required',
  status: 401,
  detail: 'The access token is missing, malformed, expired or revoked.',
  code: 'unauthenticated',
};


interface Forge {
  readonly alg?: string;
  readonly key?: Uint8Array;
  readonly iss?: string;
  readonly aud?: string;
  /** Seconds relative to the real clock. */
  readonly iatOffset?: number;
  readonly ttl?: number;
  readonly claims?: JWTPayload;
}

describe(`access-token refusal (${dbTarget})`, () => {
  let t: TestApp;
  /** Claims of a live admin session: forged tokens name a real user and session. */
  let live: { sub: string; sid: string };

  beforeAll(async () => {
    t = await createTestApp();
    const claims = decodeJwt(await t.adminToken());
    live = { sub: claims.sub!, sid: claims.sid as string };
  });
  afterAll(async () => t?.close());

  const me = (headers: Record<string, string> = {}) => t.app.inject({ method: 'GET', url: '/v1/me', headers });

  async function forge(f: Forge = {}): Promise<string> {
    const iat = Math.floor(Date.now() / 1000) + (f.iatOffset ?? 0);
    return new SignJWT({ sid: live.sid, role: 'admin', ...f.claims })
      .setProtectedHeader({ alg: f.alg ?? 'HS256', typ: 'JWT' })
      .setSubject(live.sub)
      .setIssuer(f.iss ?? 'loanbook')
      .setAudience(f.aud ?? 'loanbook-api')
      .setIssuedAt(iat)
      .setExpirationTime(iat + (f.ttl ?? 900))
      .setJti(crypto.randomUUID())
      .sign(f.key ?? secret);
  }

  function expectRefused(res: LightMyRequestResponse, label: string): void {
    expect(res.statusCode, label).toBe(401);
    expect(res.headers['www-authenticate'], label).toBe('Bearer realm="loanbook"');
    expect(res.headers['content-type'], label).toMatch(/^application\/problem\+json/);
    expect(problemOf(res), label).toEqual(EXPECTED_401);
  }

  it('control: the forge with the right algorithm, key, issuer and audience makes an accepted token', async () => {
    const res = await me(bearer(await forge()));
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ id: live.sub, role: 'admin' });
  });

  it('a missing or malformed Authorization header gets the 401 body', async () => {
    expectRefused(await me(), 'no header');
    expectRefused(await me({ authorization: 'Bearer' }), 'empty bearer');
    expectRefused(await me({ authorization: 'Bearer not-a-jwt' }), 'not a JWT');
    expectRefused(await me({ authorization: 'Bearer a.b.c' }), 'garbage segments');
    expectRefused(await me({ authorization: `Basic ${Buffer.from('admin:pw').toString('base64')}` }), 'basic auth');
    expectRefused(await me({ authorization: `bearer${' '}${await forge()}x` }), 'lower-case scheme with junk');
  });

  it('alg none is refused', async () => {
    const iat = Math.floor(Date.now() / 1000);
    const token = new UnsecuredJWT({ sid: live.sid, role: 'admin' })
      .setSubject(live.sub)
      .setIssuer('loanbook')
      .setAudience('loanbook-api')
      .setIssuedAt(iat)
      .setExpirationTime(iat + 900)
      .setJti(crypto.randomUUID())
      .encode();
    expect(token.endsWith('.')).toBe(true);
    expectRefused(await me(bearer(token)), 'alg none');
    // The same header and payload with a signature copied from a real token.
    const real = await forge();
    expectRefused(await me(bearer(token + real.split('.')[2])), 'alg none with a signature');
  });

  it('HS512 and HS384 signed with the same secret are refused (algorithm pinned to HS256)', async () => {
    expectRefused(await me(bearer(await forge({ alg: 'HS512' }))), 'HS512');
    expectRefused(await me(bearer(await forge({ alg: 'HS384' }))), 'HS384');
  });

  it('an RS256 token from a key pair the server never saw is refused', async () => {
    const { privateKey } = await generateKeyPair('RS256');
    const token = await new SignJWT({ sid: live.sid, role: 'admin' })
      .setProtectedHeader({ alg: 'RS256' })
      .setSubject(live.sub)
      .setIssuer('loanbook')
      .setAudience('loanbook-api')
      .setIssuedAt()
      .setExpirationTime('15m')
      .setJti(crypto.randomUUID())
      .sign(privateKey);
    expectRefused(await me(bearer(token)), 'RS256');
  });

  it('a bad signature is refused: a payload edited after signing, and a signature with a changed byte', async () => {
    const good = await forge();
    const [header, payload, signature] = good.split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown>;
    const edited = Buffer.from(JSON.stringify({ ...claims, exp: (claims.exp as number) + 86_400 })).toString('base64url');
    expectRefused(await me(bearer(`${header}.${edited}.${signature}`)), 'edited payload');

    const sig = Buffer.from(signature, 'base64url');
    sig[0] = sig[0]! ^ 0xff;
    expectRefused(await me(bearer(`${header}.${payload}.${sig.toString('base64url')}`)), 'changed signature byte');
    expectRefused(await me(bearer(`${header}.${payload}.`)), 'signature removed');
  });

  it('an expired token is refused', async () => {
    expectRefused(await me(bearer(await forge({ iatOffset: -3600, ttl: 900 }))), 'expired an hour after issue, 45 min ago');
    expectRefused(await me(bearer(await forge({ iatOffset: -900, ttl: 900 }))), 'exp = now');
  });

  it('a token signed with a different key is refused', async () => {
    const other = new TextEncoder().encode('another-secret-key-0123456789-ABCDEFGHIJKLMNOP');
    expectRefused(await me(bearer(await forge({ key: other }))), 'wrong key');
  });

  it('a wrong issuer or audience is refused even with the right key', async () => {
    expectRefused(await me(bearer(await forge({ iss: 'someone-else' }))), 'wrong issuer');
    expectRefused(await me(bearer(await forge({ aud: 'another-api' }))), 'wrong audience');
  });

  it('a correctly signed token that names no live session, or a malformed one, is refused (not a 500)', async () => {
    expectRefused(await me(bearer(await forge({ claims: { sid: crypto.randomUUID() } }))), 'unknown session');
    expectRefused(await me(bearer(await forge({ claims: { sid: 'not-a-uuid' } }))), 'malformed session id');
    expectRefused(await me(bearer(await forge({ claims: { sid: undefined } }))), 'no session id');
    const otherUser = await new SignJWT({ sid: live.sid, role: 'admin' })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('not-a-uuid')
      .setIssuer('loanbook')
      .setAudience('loanbook-api')
      .setIssuedAt()
      .setExpirationTime('15m')
      .setJti(crypto.randomUUID())
      .sign(secret);
    expectRefused(await me(bearer(otherUser)), 'malformed subject');
  });

  it('tokens of a disabled user, a deleted user, and a logged-out session are refused', async () => {
    const admin = bearer(await t.adminToken());
    const disabled = await t.userWithRole('analyst');
    const deleted = await t.userWithRole('servicer');
    const loggedOut = await t.userWithRole('borrower');
    for (const u of [disabled, deleted, loggedOut]) expect((await me(bearer(u.token))).statusCode).toBe(200);

    const patch = await t.app.inject({ method: 'PATCH', url: `/v1/users/${disabled.id}`, headers: admin, payload: { status: 'disabled' } });
    expect(patch.statusCode).toBe(200);
    const del = await t.app.inject({ method: 'DELETE', url: `/v1/users/${deleted.id}`, headers: admin });
    expect(del.statusCode).toBe(204);
    const out = await t.app.inject({ method: 'POST', url: '/v1/auth/logout', headers: bearer(loggedOut.token) });
    expect(out.statusCode).toBe(204);

    expectRefused(await me(bearer(disabled.token)), 'disabled user');
    expectRefused(await me(bearer(deleted.token)), 'deleted user');
    expectRefused(await me(bearer(loggedOut.token)), 'logged out');
  });

  it('every refusal above has the same body on an admin-only route too', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/v1/users', headers: bearer(await forge({ alg: 'HS512' })) });
    expectRefused(res, 'admin route, HS512');
    expect(res.json<{ instance: string }>().instance).toBe('/v1/users');
  });
});
