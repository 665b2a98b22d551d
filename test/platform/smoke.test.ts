import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, createTestApp, type TestApp } from '../support/app.js';
import { dbTarget } from '../support/db.js';

describe(`smoke (${dbTarget})`, () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await createTestApp();
  });
  afterAll(async () => t?.close());

  it('signs in the bootstrap admin and reads /v1/me', async () => {
    const token = await t.adminToken();
    const res = await t.app.inject({ method: 'GET', url: '/v1/me', headers: bearer(token) });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ email: 'admin@example.test', role: 'admin', status: 'active' });
  });
});
