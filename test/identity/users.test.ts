/**
 * User administration (admin-only /v1/users), roles and their enforcement, argon2id
 * password storage, encrypted email with a blind index, and last-admin protection.
 */
import type { LightMyRequestResponse } from 'fastify';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROLES, type Role } from '../../src/identity/model.js';
import { bearer, createTestApp, problemOf, type TestApp } from '../support/app.js';
import { dbTarget, isPostgres } from '../support/db.js';

interface UserBody {
  id: string;
  email: string;
  role: Role;
  status: 'active' | 'disabled';
  created_at: string;
  updated_at: string;
}
interface Page {
  data: UserBody[];
  has_more: boolean;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;


describe(`user administration (${dbTarget})`, () => {
  let t: TestApp;
  let admin: Record<string, string>;
  let adminId: string;
  /** One user per role, created through POST /v1/users. */
  const byRole = new Map<Role, UserBody & { password: string }>();

  const api = (method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, headers: Record<string, string>, payload?: object) =>
    t.app.inject({ method, url, headers, ...(payload ? { payload } : {}) });
  const login = (email: string, password: string) =>
    t.app.inject({ method: 'POST', url: '/v1/auth/token', payload: { email, password } });
  const tokenOf = async (email: string, password: string) => {
    const res = await login(email, password);
    expect(res.statusCode).toBe(200);
    return res.json<{ access_token: string }>().access_token;
  };
  const userRow = (id: string) => t.db.database.db.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirstOrThrow();

  beforeAll(async () => {
    t = await createTestApp();
    admin = bearer(await t.adminToken());
    adminId = (await api('GET', '/v1/me', admin)).json<UserBody>().id;
  });
  afterAll(async () => t?.close());

  it('POST /v1/users creates a user of each role: 201, Location, and the user can sign in with that role', async () => {
    for (const role of ROLES) {
      const email = `Person.${role}@Example.test`;
      const password = `a-${role}-password-that-is-long`;
      const res = await api('POST', '/v1/users', admin, { email, password, role });
      expect(res.statusCode).toBe(201);
      const user = res.json<UserBody>();
      expect(user.id).toMatch(UUID);
      expect(res.headers.location).toBe(`/v1/users/${user.id}`);
      expect(user).toMatchObject({ email, role, status: 'active' });
      expect(Object.keys(user).sort()).toEqual(['created_at', 'email', 'id', 'role', 'status', 'updated_at']);
      byRole.set(role, { ...user, password });

      const me = await api('GET', '/v1/me', bearer(await tokenOf(email, password)));
      expect(me.statusCode).toBe(200);
      expect(me.json()).toMatchObject({ id: user.id, role, email });
    }
    expect(byRole.size).toBe(6);
  });

  it('passwords are stored as argon2id with at least the OWASP minimum (m ≥ 19456 KiB, t ≥ 2, p ≥ 1)', async () => {
    const rows = await t.db.database.db.selectFrom('users').select(['id', 'password_hash']).execute();
    expect(rows).toHaveLength(7);
    for (const row of rows) {
      const m = /^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$[A-Za-z0-9+/]{22,}\$[A-Za-z0-9+/]{43,}$/.exec(row.password_hash);
      expect(m, row.password_hash).not.toBeNull();
      const [memory, time, parallelism] = [Number(m![1]), Number(m![2]), Number(m![3])];
      expect(memory).toBeGreaterThanOrEqual(19_456);
      expect(time).toBeGreaterThanOrEqual(2);
      expect(parallelism).toBeGreaterThanOrEqual(1);
    }
    // Salted: two users never share a hash.
    expect(new Set(rows.map((r) => r.password_hash)).size).toBe(rows.length);
  });

  it('email is stored encrypted with a blind index; no column holds the plaintext', async () => {
    const user = byRole.get('analyst')!;
    const row = await userRow(user.id);
    expect(row.email_encrypted).not.toBe(user.email);
    expect(row.email_encrypted).toMatch(/^v1\.[0-9a-f]{8}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
    expect(t.cipher.decrypt(row.email_encrypted, { table: 'users', column: 'email', rowId: user.id })).toBe(user.email);
    // A ciphertext is bound to its row: it does not decrypt as another user's email.
    expect(() => t.cipher.decrypt(row.email_encrypted, { table: 'users', column: 'email', rowId: adminId })).toThrow();
    expect(row.email_index).toBe(t.cipher.blindIndex(user.email.toLowerCase(), 'users.email'));

    const plain = user.email.toLowerCase();
    const local = plain.split('@')[0]!;
    for (const [column, value] of Object.entries(row)) {
      const text = (value instanceof Date ? value.toISOString() : String(value)).toLowerCase();
      expect(text, column).not.toContain(plain);
      expect(text, column).not.toContain(local);
    }
    // Nor does the audit trail or any session row.
    const audit = await t.db.database.db.selectFrom('audit_log').selectAll().execute();
    expect(JSON.stringify(audit, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)).toLowerCase()).not.toContain(local);
  });

  it('email lookups are case-insensitive: sign-in in any case, and a duplicate in another case is 409 email_taken', async () => {
    const user = byRole.get('servicer')!;
    expect((await login(user.email.toUpperCase(), user.password)).statusCode).toBe(200);
    expect((await login(user.email.toLowerCase(), user.password)).statusCode).toBe(200);

    const dup = await api('POST', '/v1/users', admin, { email: user.email.toLowerCase(), password: 'another-long-password-9', role: 'analyst' });
    expect(dup.statusCode).toBe(409);
    expect(problemOf(dup)).toEqual({
      type: '/problems/email_taken',
      title: 'Email already registered',
      status: 409,
      detail: 'Email already registered',
      code: 'email_taken',
    });
  });

  it('creation is validated: unknown role, weak password, bad email, unknown field', async () => {
    const badRole = await api('POST', '/v1/users', admin, { email: 'x1@example.test', password: 'long-enough-password-1', role: 'root' });
    expect(badRole.statusCode).toBe(400);
    expect(badRole.json()).toMatchObject({ code: 'validation_failed', errors: [{ pointer: '#/role', location: 'body' }] });

    const weak = await api('POST', '/v1/users', admin, { email: 'x2@example.test', password: 'short', role: 'analyst' });
    expect(weak.statusCode).toBe(400);
    expect(weak.json()).toMatchObject({
      code: 'weak_password',
      detail: 'The password must have at least 12 characters.',
      errors: [{ pointer: '#/password', location: 'body', detail: 'must have at least 12 characters' }],
    });

    const containsEmail = await api('POST', '/v1/users', admin, { email: 'margaret@example.test', password: 'MARGARET-1234567', role: 'analyst' });
    expect(containsEmail.statusCode).toBe(400);
    expect(containsEmail.json()).toMatchObject({ code: 'weak_password' });

    const badEmail = await api('POST', '/v1/users', admin, { email: 'nope', password: 'long-enough-password-1', role: 'analyst' });
    expect(badEmail.statusCode).toBe(400);
    expect(badEmail.json()).toMatchObject({ code: 'validation_failed', errors: [{ pointer: '#/email' }] });

    const extra = await api('POST', '/v1/users', admin, {
      email: 'x3@example.test',
      password: 'long-enough-password-1',
      role: 'analyst',
      status: 'active',
    });
    expect(extra.statusCode).toBe(400);
    expect(extra.json()).toMatchObject({ code: 'validation_failed', errors: [{ pointer: '#/status', detail: 'unknown field' }] });

    const count = await t.db.database.db.selectFrom('users').select((eb) => eb.fn.countAll<bigint>().as('n')).executeTakeFirstOrThrow();
    expect(count.n).toBe(7n);
  });

  it('GET /v1/users/:id returns one user; unknown is 404 user_not_found; a non-uuid is 400', async () => {
    const u = byRole.get('auditor')!;
    const res = await api('GET', `/v1/users/${u.id}`, admin);
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ id: u.id, email: u.email, role: 'auditor', status: 'active', created_at: u.created_at, updated_at: u.updated_at });

    const missing = await api('GET', `/v1/users/${crypto.randomUUID()}`, admin);
    expect(missing.statusCode).toBe(404);
    expect(problemOf(missing)).toMatchObject({ status: 404, code: 'user_not_found', type: '/problems/user_not_found' });

    const bad = await api('GET', '/v1/users/123', admin);
    expect(bad.statusCode).toBe(400);
    expect(bad.json()).toMatchObject({ code: 'validation_failed', errors: [{ pointer: '#/id', location: 'path' }] });
  });

  it('GET /v1/users pages with limit / starting_after / has_more, in creation order, with no repeats or gaps', async () => {
    const all = await api('GET', '/v1/users', admin);
    expect(all.statusCode).toBe(200);
    const full = all.json<Page>();
    expect(full.has_more).toBe(false);
    expect(full.data).toHaveLength(7);
    expect(full.data[0]!.id).toBe(adminId);
    expect(full.data.slice(1).map((u) => u.role)).toEqual([...ROLES]);

    const pages: Page[] = [];
    let cursor: string | undefined;
    for (;;) {
      const res = await api('GET', `/v1/users?limit=2${cursor ? `&starting_after=${cursor}` : ''}`, admin);
      expect(res.statusCode).toBe(200);
      const page = res.json<Page>();
      pages.push(page);
      if (!page.has_more) break;
      cursor = page.data.at(-1)!.id;
      expect(pages.length).toBeLessThan(10);
    }
    expect(pages.map((p) => p.data.length)).toEqual([2, 2, 2, 1]);
    expect(pages.map((p) => p.has_more)).toEqual([true, true, true, false]);
    expect(pages.flatMap((p) => p.data.map((u) => u.id))).toEqual(full.data.map((u) => u.id));

    const exact = await api('GET', `/v1/users?limit=6&starting_after=${adminId}`, admin);
    expect(exact.json<Page>().data).toHaveLength(6);
    expect(exact.json<Page>().has_more).toBe(false);
  });

  it('GET /v1/users refuses a bad limit or an unknown cursor with 400', async () => {
    for (const q of ['limit=0', 'limit=101', 'limit=abc', `starting_after=${crypto.randomUUID()}`, 'starting_after=zzz', 'colour=red']) {
      const res = await api('GET', `/v1/users?${q}`, admin);
      expect(res.statusCode, q).toBe(400);
      expect(res.json<{ code: string }>().code, q).toBe('validation_failed');
    }
  });

  it('PATCH changes the role, effective at once for the user’s existing tokens', async () => {
    const u = byRole.get('underwriter')!;
    const token = await tokenOf(u.email, u.password);
    const before = await userRow(u.id);
    const res = await api('PATCH', `/v1/users/${u.id}`, admin, { role: 'analyst' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ id: u.id, role: 'analyst', status: 'active' });
    expect((await userRow(u.id)).role).toBe('analyst');
    expect((await userRow(u.id)).updated_at.getTime()).toBeGreaterThanOrEqual(before.updated_at.getTime());
    const me = await api('GET', '/v1/me', bearer(token));
    expect(me.statusCode).toBe(200);
    expect(me.json()).toMatchObject({ role: 'analyst' });

    // Promoted to admin, the same token may now list users; demoted again, it may not.
    expect((await api('PATCH', `/v1/users/${u.id}`, admin, { role: 'admin' })).statusCode).toBe(200);
    expect((await api('GET', '/v1/users', bearer(token))).statusCode).toBe(200);
    expect((await api('PATCH', `/v1/users/${u.id}`, admin, { role: 'underwriter' })).statusCode).toBe(200);
    expect((await api('GET', '/v1/users', bearer(token))).statusCode).toBe(403);
  });

  it('PATCH status disabled ends the user’s sessions and sign-in; re-enabling allows a new sign-in only', async () => {
    const u = byRole.get('borrower')!;
    const token = await tokenOf(u.email, u.password);
    const res = await api('PATCH', `/v1/users/${u.id}`, admin, { status: 'disabled' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ id: u.id, status: 'disabled', role: 'borrower' });
    expect((await api('GET', '/v1/me', bearer(token))).statusCode).toBe(401);
    const refused = await login(u.email, u.password);
    expect(refused.statusCode).toBe(401);
    expect(refused.json()).toMatchObject({ code: 'invalid_credentials' });
    const sessions = await t.db.database.db.selectFrom('sessions').select(['revoked_why']).where('user_id', '=', u.id).execute();
    expect(sessions.length).toBeGreaterThan(0);
    expect(sessions.every((s) => s.revoked_why === 'user_disabled')).toBe(true);
    // Still listed, as disabled.
    const listed = (await api('GET', '/v1/users', admin)).json<Page>().data.find((x) => x.id === u.id);
    expect(listed?.status).toBe('disabled');

    const enable = await api('PATCH', `/v1/users/${u.id}`, admin, { status: 'active' });
    expect(enable.statusCode).toBe(200);
    expect(enable.json()).toMatchObject({ status: 'active' });
    expect((await api('GET', '/v1/me', bearer(token))).statusCode).toBe(401);
    const fresh = await tokenOf(u.email, u.password);
    expect((await api('GET', '/v1/me', bearer(fresh))).statusCode).toBe(200);
  });

  it('PATCH needs role or status, and may not set status deleted', async () => {
    const u = byRole.get('auditor')!;
    for (const body of [{}, { status: 'deleted' }, { role: 'root' }, { email: 'x@example.test' }]) {
      const res = await api('PATCH', `/v1/users/${u.id}`, admin, body);
      expect(res.statusCode, JSON.stringify(body)).toBe(400);
      expect(res.json<{ code: string }>().code).toBe('validation_failed');
    }
    const missing = await api('PATCH', `/v1/users/${crypto.randomUUID()}`, admin, { role: 'analyst' });
    expect(missing.statusCode).toBe(404);
    expect(missing.json()).toMatchObject({ code: 'user_not_found' });
  });

  it('DELETE removes the user from the API (kept in the table for the audit trail) and ends their sessions', async () => {
    const u = byRole.get('auditor')!;
    const token = await tokenOf(u.email, u.password);
    const res = await api('DELETE', `/v1/users/${u.id}`, admin);
    expect(res.statusCode).toBe(204);
    expect(res.body).toBe('');
    expect((await userRow(u.id)).status).toBe('deleted');
    expect((await api('GET', `/v1/users/${u.id}`, admin)).statusCode).toBe(404);
    expect((await api('PATCH', `/v1/users/${u.id}`, admin, { status: 'active' })).statusCode).toBe(404);
    expect((await api('DELETE', `/v1/users/${u.id}`, admin)).statusCode).toBe(404);
    expect((await api('GET', '/v1/users', admin)).json<Page>().data.map((x) => x.id)).not.toContain(u.id);
    expect((await api('GET', '/v1/me', bearer(token))).statusCode).toBe(401);
    expect((await login(u.email, u.password)).statusCode).toBe(401);
  });

  it('a role that is not admin gets 403 problem+json on every /v1/users operation', async () => {
    const target = byRole.get('servicer')!;
    for (const role of ['borrower', 'analyst', 'underwriter', 'servicer'] as const) {
      const u = byRole.get(role)!;
      const h = bearer(await tokenOf(u.email, u.password));
      const calls: LightMyRequestResponse[] = [
        await api('GET', '/v1/users', h),
        await api('GET', `/v1/users/${target.id}`, h),
        await api('POST', '/v1/users', h, { email: 'sneaky@example.test', password: 'sneaky-long-password', role: 'admin' }),
        await api('PATCH', `/v1/users/${u.id}`, h, { role: 'admin' }),
        await api('DELETE', `/v1/users/${target.id}`, h),
      ];
      for (const res of calls) {
        expect(res.statusCode, role).toBe(403);
        expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
        expect(problemOf(res)).toEqual({
          type: '/problems/forbidden',
          title: 'Forbidden',
          status: 403,
          detail: `This operation is for admin; your role is ${role}.`,
          code: 'forbidden',
        });
      }
    }
    // Nothing changed.
    expect((await userRow(byRole.get('borrower')!.id)).role).toBe('borrower');
    expect((await userRow(target.id)).status).toBe('active');
  });

  it('/openapi.json lists the roles of each identity route as x-roles', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/openapi.json' });
    expect(res.statusCode).toBe(200);
    const paths = res.json<{ paths: Record<string, Record<string, { 'x-roles'?: string[]; security?: unknown[] }>> }>().paths;
    const roles = (path: string, method: string) => paths[path]?.[method]?.['x-roles'];
    expect(roles('/v1/users', 'get')).toEqual(['admin']);
    expect(roles('/v1/users', 'post')).toEqual(['admin']);
    expect(roles('/v1/users/{id}', 'get')).toEqual(['admin']);
    expect(roles('/v1/users/{id}', 'patch')).toEqual(['admin']);
    expect(roles('/v1/users/{id}', 'delete')).toEqual(['admin']);
    expect(roles('/v1/me', 'get')).toEqual([...ROLES]);
    expect(roles('/v1/auth/logout', 'post')).toEqual([...ROLES]);
    expect(roles('/v1/auth/token', 'post')).toEqual([]);
    expect(roles('/v1/auth/refresh', 'post')).toEqual([]);
    expect(paths['/v1/users']?.get?.security).toEqual([{ bearer: [] }]);
    expect(paths['/v1/auth/token']?.post?.security).toEqual([]);
  });

  describe('last-admin protection', () => {
    it('an admin may be demoted or disabled while another active admin remains', async () => {
      const second = byRole.get('admin')!;
      const demote = await api('PATCH', `/v1/users/${second.id}`, admin, { role: 'analyst' });
      expect(demote.statusCode).toBe(200);
      expect((await api('PATCH', `/v1/users/${second.id}`, admin, { role: 'admin' })).statusCode).toBe(200);
      const disable = await api('PATCH', `/v1/users/${second.id}`, admin, { status: 'disabled' });
      expect(disable.statusCode).toBe(200);
    });

    it('demoting, disabling or deleting the only active admin is 409 last_admin and changes nothing', async () => {
      // The second admin is disabled now, so it does not count.
      const expected = {
        type: '/problems/last_admin',
        title: 'Last active admin',
        status: 409,
        detail: 'Last active admin',
        code: 'last_admin',
      };
      const attempts = [
        await api('PATCH', `/v1/users/${adminId}`, admin, { role: 'borrower' }),
        await api('PATCH', `/v1/users/${adminId}`, admin, { status: 'disabled' }),
        await api('PATCH', `/v1/users/${adminId}`, admin, { role: 'analyst', status: 'active' }),
        await api('DELETE', `/v1/users/${adminId}`, admin),
      ];
      for (const res of attempts) {
        expect(res.statusCode).toBe(409);
        expect(problemOf(res)).toEqual(expected);
      }
      const row = await userRow(adminId);
      expect([row.role, row.status]).toEqual(['admin', 'active']);
      expect((await api('GET', '/v1/users', admin)).statusCode).toBe(200);
      // A no-op on the last admin is fine.
      expect((await api('PATCH', `/v1/users/${adminId}`, admin, { role: 'admin', status: 'active' })).statusCode).toBe(200);
    });

    it('once another admin is active again, the first may step down', async () => {
      const second = byRole.get('admin')!;
      expect((await api('PATCH', `/v1/users/${second.id}`, admin, { status: 'active' })).statusCode).toBe(200);
      const secondToken = bearer(await tokenOf(second.email, second.password));
      expect((await api('PATCH', `/v1/users/${adminId}`, secondToken, { role: 'auditor' })).statusCode).toBe(200);
      expect((await userRow(adminId)).role).toBe('auditor');
      // And now the second admin is the last one.
      const res = await api('PATCH', `/v1/users/${second.id}`, secondToken, { role: 'borrower' });
      expect(res.statusCode).toBe(409);
      expect(res.json()).toMatchObject({ code: 'last_admin' });
      expect((await api('PATCH', `/v1/users/${adminId}`, secondToken, { role: 'admin' })).statusCode).toBe(200);
    });
  });
});

describe.runIf(isPostgres)('last-admin protection under concurrency (postgres)', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await createTestApp();
  });
  afterAll(async () => t?.close());

  it('two admins demoting each other at the same time: exactly one succeeds, one active admin remains', async () => {
    const other = await t.userWithRole('admin');
    const first = bearer(await t.adminToken());
    const firstId = (await t.app.inject({ method: 'GET', url: '/v1/me', headers: first })).json<UserBody>().id;
    const results = await Promise.all([
      t.app.inject({ method: 'PATCH', url: `/v1/users/${other.id}`, headers: first, payload: { role: 'analyst' } }),
      t.app.inject({ method: 'PATCH', url: `/v1/users/${firstId}`, headers: bearer(other.token), payload: { status: 'disabled' } }),
    ]);
    const statuses = results.map((r) => r.statusCode).sort();
    // The loser either meets the lock and sees itself as the last admin (409), or was
    // already demoted by the winner before it was authorised (403/401).
    expect(statuses[0]).toBe(200);
    expect([401, 403, 409]).toContain(statuses[1]);
    const { rows } = await sql<{ n: string }>`select count(*)::text as n from users where role = 'admin' and status = 'active'`.execute(
      t.db.database.db,
    );
    expect(rows[0]!.n).toBe('1');
  });
});
