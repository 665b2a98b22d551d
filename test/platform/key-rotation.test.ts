/**
 * Rotating SECRET_KEY and ENCRYPTION_KEY without an outage: while the old keys are listed
 * as *_PREVIOUS, tokens they signed verify and values they encrypted decrypt and are found
 * by their blind index; `keys reencrypt` (reencryptTable over every module's encrypted
 * columns) moves every value and index to the new key, after which the old key can go.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IDENTITY_ENCRYPTED } from '../../src/identity/encrypted-columns.js';
import { ORIGINATION_ENCRYPTED } from '../../src/origination/encrypted-columns.js';
import { loadConfig } from '../../src/platform/config.js';
import { createFieldCipher } from '../../src/platform/crypto.js';
import { reencryptTable } from '../../src/platform/reencrypt.js';
import { bearer, createTestApp, type TestApp } from '../support/app.js';
import { dbTarget } from '../support/db.js';

const keyA = randomBytes(32);
const keyB = randomBytes(32);
const secretA = `old-signing-key-${randomUUID()}`;
const secretB = `new-signing-key-${randomUUID()}`;
const SPECS = [...IDENTITY_ENCRYPTED, ...ORIGINATION_ENCRYPTED];

let before: TestApp;
let borrower: { id: string; email: string; password: string; token: string };
let applicationId: string;
const nationalId = `NID-${randomUUID().slice(0, 8)}`;

beforeAll(async () => {
  before = await createTestApp({ env: { ENCRYPTION_KEY: keyA.toString('base64'), SECRET_KEY: secretA } });
  borrower = await before.userWithRole('borrower');
  const res = await before.app.inject({
    method: 'POST',
    url: '/v1/applications',
    headers: { ...bearer(borrower.token), 'idempotency-key': randomUUID() },
    payload: {
      applicant_name: 'Rotation Applicant',
      national_id: nationalId,
      loan_amount: 10000,
      monthly_income: 8000,
      employment_years: 4,
      credit_history: { existing_loans: 0, repayment_score: 0.9 },
      collateral_value: 0,
      company: 'Acme',
    },
  });
  expect(res.statusCode, res.body).toBe(201);
  applicationId = res.json<{ id: string }>().id;
});
afterAll(async () => {
  await before.close();
});

/** An app over the same database with other keys (the database is closed by `before`). */
async function appWith(env: Record<string, string>): Promise<TestApp> {
  return createTestApp({ db: before.db, env });
}

const db = () => before.db.database.db as unknown as Kysely<unknown>;

async function keyIdsInUse(): Promise<string[]> {
  const r = await sql<{ kid: string }>`
    select distinct split_part(email_encrypted, '.', 2) as kid from users
    union select distinct split_part(applicant_name, '.', 2) from applications
    union select distinct split_part(national_id, '.', 2) from applications where national_id is not null`.execute(db());
  return r.rows.map((x) => x.kid).sort();
}

describe(`key rotation (${dbTarget})`, () => {
  it('during the rotation the previous keys still verify tokens, decrypt values and match blind indexes', async () => {
    const during = await appWith({
      ENCRYPTION_KEY: keyB.toString('base64'),
      ENCRYPTION_KEY_PREVIOUS: keyA.toString('base64'),
      SECRET_KEY: secretB,
      SECRET_KEY_PREVIOUS: secretA,
    });
    try {
      // A token signed with the old SECRET_KEY before the rollout still works.
      const own = await during.app.inject({ method: 'GET', url: `/v1/applications/${applicationId}`, headers: bearer(borrower.token) });
      expect(own.statusCode, own.body).toBe(200);
      // The value encrypted with the old key decrypts.
      expect(own.json<{ applicant: { name: string; national_id: string } }>().applicant).toMatchObject({ name: 'Rotation Applicant', national_id: nationalId });
      // Sign-in finds the user by the email's index under the old key.
      const token = await during.token(borrower.email, borrower.password);
      // The repeat-applicant search finds the application indexed under the old key.
      const admin = await during.adminToken();
      const found = await during.app.inject({ method: 'GET', url: `/v1/applications?national_id=${nationalId}`, headers: bearer(admin) });
      expect(found.json<{ data: { id: string }[] }>().data.map((a) => a.id)).toEqual([applicationId]);
      // New tokens are signed with the new key (and say so), so they survive dropping the old one.
      const header = JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString()) as { kid?: string };
      expect(header.kid).toMatch(/^[0-9a-f]{16}$/);
    } finally {
      await during.close();
    }
  });

  it('reencrypt moves every value and index to the current key, is resumable, and the old key can then be dropped', async () => {
    const cipher = createFieldCipher(keyB, [keyA]);
    const cipherA = createFieldCipher(keyA);
    expect(await keyIdsInUse()).toEqual([cipherA.keyId]);

    // Batches of 1: every row is its own transaction, as an interrupted run would leave them.
    const first = await Promise.all(SPECS.map((spec) => reencryptTable(db(), cipher, spec, { batchSize: 1 })));
    const users = first.find((r) => r.table === 'users')!;
    const applications = first.find((r) => r.table === 'applications')!;
    expect(users.reencrypted).toBe(users.rows);
    expect(users.rows).toBeGreaterThanOrEqual(2); // the bootstrap admin and the borrower
    expect(applications).toMatchObject({ rows: 1, reencrypted: 1 });
    expect(await keyIdsInUse()).toEqual([cipher.keyId]);

    const again = await Promise.all(SPECS.map((spec) => reencryptTable(db(), cipher, spec)));
    expect(again.map((r) => r.reencrypted)).toEqual(SPECS.map(() => 0));

    const after = await appWith({ ENCRYPTION_KEY: keyB.toString('base64'), SECRET_KEY: secretB });
    try {
      const token = await after.token(borrower.email, borrower.password);
      const own = await after.app.inject({ method: 'GET', url: `/v1/applications/${applicationId}`, headers: bearer(token) });
      expect(own.json<{ applicant: { name: string; national_id: string } }>().applicant).toMatchObject({ name: 'Rotation Applicant', national_id: nationalId });
      const admin = await after.adminToken();
      const found = await after.app.inject({ method: 'GET', url: `/v1/applications?national_id=${nationalId}`, headers: bearer(admin) });
      expect(found.json<{ data: { id: string }[] }>().data.map((a) => a.id)).toEqual([applicationId]);
      // With SECRET_KEY_PREVIOUS gone, a token the old key signed is refused.
      const old = await after.app.inject({ method: 'GET', url: `/v1/applications/${applicationId}`, headers: bearer(borrower.token) });
      expect(old.statusCode).toBe(401);
    } finally {
      await after.close();
    }
  });
});

describe('rotation settings', () => {
  const base = { ENV: 'test', SECRET_KEY: secretB, ENCRYPTION_KEY: keyB.toString('base64'), DATA_DIR: '/nonexistent-test-data-dir' };

  it('takes comma-separated previous keys', () => {
    const other = randomBytes(32).toString('base64');
    const cfg = loadConfig({ ...base, SECRET_KEY_PREVIOUS: `${secretA}, ${secretB}x`, ENCRYPTION_KEY_PREVIOUS: `${keyA.toString('base64')},${other}` });
    expect(cfg.previousSecretKeys).toEqual([secretA, `${secretB}x`]);
    expect(cfg.previousEncryptionKeys.map((k) => k.toString('base64'))).toEqual([keyA.toString('base64'), other]);
  });

  it('refuses a weak or malformed previous key, naming the variable and the entry', () => {
    expect(() => loadConfig({ ...base, SECRET_KEY_PREVIOUS: `${secretA},short` })).toThrow(/SECRET_KEY_PREVIOUS \(entry 2\) is too short/);
    expect(() => loadConfig({ ...base, ENCRYPTION_KEY_PREVIOUS: 'bm90LTMyLWJ5dGVz' })).toThrow(/ENCRYPTION_KEY_PREVIOUS \(entry 1\) must decode to exactly 32 bytes/);
  });

  it('an unknown key id in a token is refused, a missing one is read as the current key', async () => {
    const { createTokenSigner } = await import('../../src/identity/tokens.js');
    const claims = { userId: randomUUID(), sessionId: randomUUID(), role: 'admin' };
    const now = new Date();
    const old = createTokenSigner(secretA, 15);
    const current = createTokenSigner(secretB, 15, [secretA]);
    const { token } = await old.signAccess(claims, now);
    expect(await current.verifyAccess(token, now)).toEqual(claims);
    expect(await createTokenSigner(secretB, 15).verifyAccess(token, now)).toBeNull();
    // The same key under a forged kid header: refused (no key has that id).
    const [, payload, signature] = token.split('.');
    const forged = `${Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT', kid: 'ffffffffffffffff' })).toString('base64url')}.${payload}.${signature}`;
    expect(await current.verifyAccess(forged, now)).toBeNull();
    // Issued before tokens carried a kid: verified with the current key only.
    const { SignJWT } = await import('jose');
    const legacy = (key: string) =>
      new SignJWT({ sid: claims.sessionId, role: claims.role })
        .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
        .setSubject(claims.userId)
        .setIssuer('loanbook')
        .setAudience('loanbook-api')
        .setIssuedAt()
        .setExpirationTime('15m')
        .setJti(randomUUID())
        .sign(new TextEncoder().encode(key));
    expect(await current.verifyAccess(await legacy(secretB), now)).toEqual(claims);
    expect(await current.verifyAccess(await legacy(secretA), now)).toBeNull();
  });
});
