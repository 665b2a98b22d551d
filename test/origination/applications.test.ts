/**
 * Origination end to end through HTTP: intake (the seed's payload on both endpoints),
 * validation that names the field and writes nothing, PII encrypted at rest, role
 * scoping, the velocity rule, replay, policies with champion/challenger, manual review
 * with four eyes, acceptance booking exactly one loan, metrics and the audit chain.
 * Company verification talks to a loopback server speaking Serper's protocol.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { sql, type Kysely } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REASON_CATALOGUE } from '../../src/origination/reasons.js';
import { verifyAuditChain } from '../../src/platform/audit.js';
import { bearer, createTestApp, problemOf, type TestApp } from '../support/app.js';
import { dbTarget } from '../support/db.js';
import { createProduct, setBusinessDate } from '../support/servicing.js';

/** A loopback Serper: `mode` decides the next answers. */
interface FakeSerper {
  readonly url: string;
  mode: 'found' | 'error';
  requests: number;
  close(): Promise<void>;
}

async function startFakeSerper(): Promise<FakeSerper> {
  const state = { mode: 'found' as 'found' | 'error', requests: 0 };
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      state.requests++;
      if (state.mode === 'error' || req.headers['x-api-key'] !== 'serper-test-key') {
        res.writeHead(500, { 'content-type': 'application/json' }).end('{"message":"upstream broke"}');
        return;
      }
      const parsed = JSON.parse(body) as { q?: unknown };
      const q = typeof parsed.q === 'string' ? parsed.q : '';
      const name = q.replace(/\s+company$/i, '');
      res.writeHead(200, { 'content-type': 'application/json' }).end(
        JSON.stringify({
          searchParameters: { q, type: 'search', engine: 'google' },
          knowledgeGraph: { title: name, type: 'Technology company', website: 'https://example.com', description: `${name} is a company.` },
          organic: [{ title: `${name} - Official site`, link: 'https://example.com', snippet: `${name} builds things.`, position: 1 }],
        }),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    get mode() {
      return state.mode;
    },
    set mode(m) {
      state.mode = m;
    },
    get requests() {
      return state.requests;
    },
    set requests(n) {
      state.requests = n;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** A loopback Gemini generateContent endpoint that records the prompts it was sent. */
async function startFakeGemini(): Promise<{ url: string; prompts: string[]; close(): Promise<void> }> {
  const prompts: string[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      if (!/^\/v1beta\/models\/[a-z0-9.-]+:generateContent$/.test(req.url ?? '') || req.headers['x-goog-api-key'] !== 'gemini-test-key') {
        res.writeHead(404).end();
        return;
      }
      const parsed = JSON.parse(body) as { contents: { parts: { text: string }[] }[] };
      prompts.push(parsed.contents.map((c) => c.parts.map((p) => p.text).join('')).join('\n'));
      res.writeHead(200, { 'content-type': 'application/json' }).end(
        JSON.stringify({ candidates: [{ content: { role: 'model', parts: [{ text: 'Referred: the employer could not be verified; income supports the amount.' }] }, finishReason: 'STOP' }] }),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, prompts, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

const SEED = {
  applicant_name: 'Test User',
  loan_amount: 250000,
  monthly_income: 10000,
  employment_years: 7,
  credit_history: { existing_loans: 2, repayment_score: 0.92 },
  collateral_value: 350000,
  company: 'Microsoft',
};

let t: TestApp;
let serper: FakeSerper;
let gemini: Awaited<ReturnType<typeof startFakeGemini>>;
let admin: string;
let underwriter: { id: string; token: string };
let underwriter2: { id: string; token: string };
let analyst: string;
let borrower: { id: string; token: string };
let other: { id: string; token: string };
let product: { id: string };

interface ApplicationBody {
  id: string;
  status: string;
  decision: string;
  borrower_id: string | null;
  loan_amount: string;
  reasons: { code: string; text: string }[];
  offer: { amount: string; term_months: number; annual_rate: string; apr: string; monthly_payment: string } | null;
  applicant: { name: string; email: string | null; national_id: string | null } | null;
  decision_id: string;
  loan_id: string | null;
  decisions?: { kind: string; outcome: string; policy: { id: string } | null; result: Record<string, unknown>; timings_ms: Record<string, number> }[];
}

beforeAll(async () => {
  serper = await startFakeSerper();
  gemini = await startFakeGemini();
  t = await createTestApp({ env: { SERPER_API_KEY: 'serper-test-key', SERPER_URL: serper.url, GEMINI_API_KEY: 'gemini-test-key', GEMINI_URL: gemini.url, APPLICATIONS_PER_DAY: '3', REVIEW_DUAL_APPROVAL_ABOVE: '20000.00' } });
  admin = await t.adminToken();
  underwriter = await t.userWithRole('underwriter');
  underwriter2 = await t.userWithRole('underwriter');
  analyst = (await t.userWithRole('analyst')).token;
  borrower = await t.userWithRole('borrower');
  other = await t.userWithRole('borrower');
  await setBusinessDate(t, '2026-01-15');
  product = await createProduct(t, admin);
});
afterAll(async () => {
  await t.close();
  await serper.close();
  await gemini.close();
});

const db = () => t.db.database.db as unknown as Kysely<unknown>;
const apply = (token: string, payload: unknown, url = '/v1/applications', key: string = randomUUID()) =>
  t.app.inject({ method: 'POST', url, headers: { ...bearer(token), 'idempotency-key': key }, payload: payload as Record<string, unknown> });
const get = (url: string, token: string) => t.app.inject({ method: 'GET', url, headers: bearer(token) });
const post = (url: string, token: string, payload: Record<string, unknown> = {}, key: string = randomUUID()) =>
  t.app.inject({ method: 'POST', url, headers: { ...bearer(token), 'idempotency-key': key }, payload });

/** A distinct applicant per call, so the velocity rule does not interfere. */
const person = () => ({ national_id: `ID-${randomUUID().slice(0, 8)}`, applicant_name: `Applicant ${randomUUID().slice(0, 6)}` });

async function counts() {
  const r = await sql<{ apps: string; decisions: string; audit: string; outbox: string }>`
    select (select count(*) from applications)::text as apps, (select count(*) from application_decisions)::text as decisions,
           (select count(*) from audit_log)::text as audit, (select count(*) from outbox_events)::text as outbox`.execute(db());
  return r.rows[0];
}

describe(`applications (${dbTarget})`, () => {
  it('takes the seed payload on POST /loan/apply and on POST /v1/applications, numbers or decimal strings, and decides', async () => {
    const seed = await apply(borrower.token, SEED, '/loan/apply');
    expect(seed.statusCode, seed.body).toBe(201);
    const a = seed.json<ApplicationBody>();
    expect(['approved', 'declined', 'referred', 'counter_offer']).toContain(a.decision);
    expect(a.borrower_id).toBe(borrower.id);
    expect(a.loan_amount).toBe('250000.00');
    const strings = await apply(borrower.token, { ...SEED, ...person(), loan_amount: '250000.00', monthly_income: '10000', employment_years: '7', credit_history: { existing_loans: 2, repayment_score: '0.92' }, collateral_value: '350000.00' });
    expect(strings.statusCode, strings.body).toBe(201);
    const b = strings.json<ApplicationBody>();
    // The same facts decide the same way, whichever way the numbers were written.
    expect(b.decision).toBe(a.decision);
    expect(b.offer).toEqual(a.offer);
    expect(b.reasons).toEqual(a.reasons);
    // The seed's alias takes exactly the seed payload.
    const extra = await apply(borrower.token, { ...SEED, email: 'x@example.test' }, '/loan/apply');
    expect(extra.statusCode).toBe(400);
    expect(problemOf(extra).errors).toEqual(expect.arrayContaining([expect.objectContaining({ pointer: '#/email' })]));
  });

  it('requires authentication and an Idempotency-Key; the same key replays the same decision', async () => {
    expect((await t.app.inject({ method: 'POST', url: '/loan/apply', payload: SEED })).statusCode).toBe(401);
    const noKey = await t.app.inject({ method: 'POST', url: '/v1/applications', headers: bearer(borrower.token), payload: { ...SEED, ...person() } });
    expect(noKey.statusCode).toBe(400);
    expect(problemOf(noKey).code).toBe('idempotency_key_missing');
    const key = randomUUID();
    const body = { ...SEED, ...person() };
    const first = await apply(borrower.token, body, '/v1/applications', key);
    const again = await apply(borrower.token, body, '/v1/applications', key);
    expect(first.statusCode).toBe(201);
    expect(again.statusCode).toBe(201);
    expect(again.json<ApplicationBody>().id).toBe(first.json<ApplicationBody>().id);
  });

  it.each([
    ['negative amount', { loan_amount: -5 }, '#/loan_amount'],
    ['absurd amount', { loan_amount: '900000000000' }, '#/loan_amount'],
    ['10,000-digit number as a string', { loan_amount: '9'.repeat(10_000) }, '#/loan_amount'],
    ['NaN string', { monthly_income: 'NaN' }, '#/monthly_income'],
    ['exponent', { monthly_income: '1e5' }, '#/monthly_income'],
    ['repayment score above 1', { credit_history: { existing_loans: 2, repayment_score: 1.5 } }, '#/credit_history/repayment_score'],
    ['fractional loan count', { credit_history: { existing_loans: 1.5, repayment_score: 0.9 } }, '#/credit_history/existing_loans'],
    ['unknown field', { favourite_colour: 'blue' }, '#/favourite_colour'],
    ['more minor units than the currency has', { loan_amount: '100.001' }, '#/loan_amount'],
  ])('refuses %s with problem+json naming the field, and writes nothing', async (_label, change, pointer) => {
    const before = await counts();
    const res = await apply(borrower.token, { ...SEED, ...person(), ...change });
    expect(res.statusCode, res.body).toBe(400);
    expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
    const p = problemOf(res);
    expect(p.code).toBe('validation_failed');
    expect(p.errors).toEqual(expect.arrayContaining([expect.objectContaining({ pointer })]));
    expect(res.body).not.toMatch(/at .*\.ts:\d+/);
    expect(await counts()).toEqual(before);
  });

  it('refuses a 10,000-digit JSON number and a missing field', async () => {
    const huge = await t.app.inject({
      method: 'POST',
      url: '/v1/applications',
      headers: { ...bearer(borrower.token), 'idempotency-key': randomUUID(), 'content-type': 'application/json' },
      payload: JSON.stringify({ ...SEED, ...person() }).replace('"loan_amount":250000', `"loan_amount":${'9'.repeat(10_000)}`),
    });
    expect(huge.statusCode).toBe(400);
    expect(problemOf(huge).errors).toEqual(expect.arrayContaining([expect.objectContaining({ pointer: '#/loan_amount' })]));
    const { monthly_income: _m, ...missing } = SEED;
    const res = await apply(borrower.token, missing);
    expect(res.statusCode).toBe(400);
    expect(problemOf(res).errors).toEqual(expect.arrayContaining([expect.objectContaining({ pointer: '#/monthly_income' })]));
  });

  it('stores personal data encrypted, finds it by blind index, and shows it only to the applicant and underwriters', async () => {
    const nid = `NID-${randomUUID().slice(0, 8)}`;
    const res = await apply(borrower.token, { ...SEED, applicant_name: 'Ada Lovelace', email: 'ada@example.test', national_id: nid, date_of_birth: '1985-12-10' });
    expect(res.statusCode, res.body).toBe(201);
    const id = res.json<ApplicationBody>().id;
    const raw = await sql<Record<string, string>>`select applicant_name, email, national_id, date_of_birth, input::text as input from applications where id = ${id}`.execute(db());
    const row = raw.rows[0] as Record<string, string>;
    for (const [column, plain] of [['applicant_name', 'Ada Lovelace'], ['email', 'ada@example.test'], ['national_id', nid], ['date_of_birth', '1985-12-10']] as const) {
      expect(row[column]).toMatch(/^v1\./);
      expect(row[column]).not.toContain(plain);
    }
    expect(row.input).not.toMatch(/Ada|Lovelace|ada@|NID-/);
    expect((await get(`/v1/applications/${id}`, borrower.token)).json<ApplicationBody>().applicant).toEqual(expect.objectContaining({ name: 'Ada Lovelace', email: 'ada@example.test', national_id: nid }));
    expect((await get(`/v1/applications/${id}`, underwriter.token)).json<ApplicationBody>().applicant?.name).toBe('Ada Lovelace');
    expect((await get(`/v1/applications/${id}`, analyst)).json<ApplicationBody>().applicant).toBeNull();
    // Another borrower's application is the same 404 as one that does not exist.
    const foreign = await get(`/v1/applications/${id}`, other.token);
    const missing = await get(`/v1/applications/${randomUUID()}`, other.token);
    expect(foreign.statusCode).toBe(404);
    expect(problemOf(foreign)).toEqual(problemOf(missing));
    const mine = (await get('/v1/applications?limit=100', other.token)).json<{ data: ApplicationBody[] }>().data;
    expect(mine.map((a) => a.id)).not.toContain(id);
  });

  it('finds a repeat applicant by national id through the blind index (admins and underwriters only)', async () => {
    const nid = `REP-${randomUUID().slice(0, 8)}`;
    const ids = [];
    for (const name of ['Grace Hopper', 'GRACE  HOPPER']) ids.push((await apply(borrower.token, { ...SEED, applicant_name: name, national_id: nid })).json<ApplicationBody>().id);
    await apply(borrower.token, { ...SEED, ...person() });
    const found = await get(`/v1/applications?national_id=${nid.toLowerCase()}`, underwriter.token);
    expect(found.statusCode, found.body).toBe(200);
    expect(found.json<{ data: ApplicationBody[] }>().data.map((a) => a.id).sort()).toEqual([...ids].sort());
    expect((await get(`/v1/applications?national_id=${nid}`, analyst)).statusCode).toBe(403);
  });

  it('caps applications per applicant per 24 hours (the blind index finds them however the name is written)', async () => {
    const nid = `VEL-${randomUUID().slice(0, 8)}`;
    for (let i = 0; i < 3; i++) expect((await apply(borrower.token, { ...SEED, national_id: nid, applicant_name: i % 2 ? 'JANE DOE' : 'jane doe' })).statusCode).toBe(201);
    const before = await counts();
    const fourth = await apply(borrower.token, { ...SEED, national_id: ` ${nid.toLowerCase()}`.trim().toUpperCase() });
    expect(fourth.statusCode).toBe(429);
    expect(problemOf(fourth).code).toBe('application_velocity_exceeded');
    expect(fourth.headers['retry-after']).toBeDefined();
    expect(await counts()).toEqual(before);
  });

  it('holds the velocity cap under concurrent applications of one applicant', async () => {
    const nid = `PAR-${randomUUID().slice(0, 8)}`;
    const results = await Promise.all(Array.from({ length: 8 }, () => apply(borrower.token, { ...SEED, national_id: nid })));
    const codes = results.map((r) => r.statusCode).sort();
    expect(codes).toEqual([201, 201, 201, 429, 429, 429, 429, 429]);
    const stored = await sql<{ n: string }>`select count(*)::text as n from applications a where a.id = any(${results.filter((r) => r.statusCode === 201).map((r) => r.json<ApplicationBody>().id)}::uuid[])`.execute(db());
    expect(stored.rows[0]?.n).toBe('3');
  });

  it('declines with 1–4 specific reasons, and the replay reproduces the decision exactly', async () => {
    const res = await apply(borrower.token, { ...SEED, ...person(), credit_history: { existing_loans: 9, repayment_score: 0.2 }, monthly_income: 1500 });
    expect(res.statusCode, res.body).toBe(201);
    const a = res.json<ApplicationBody>();
    expect(a.decision).toBe('declined');
    expect(a.reasons.length).toBeGreaterThanOrEqual(1);
    expect(a.reasons.length).toBeLessThanOrEqual(4);
    for (const r of a.reasons) {
      expect(r.text.length).toBeGreaterThan(10);
      expect(r.text.toLowerCase()).not.toContain('internal policy');
    }
    for (const id of [a.id, (await apply(borrower.token, { ...SEED, ...person() })).json<ApplicationBody>().id]) {
      const replay = await post(`/v1/applications/${id}/replay`, underwriter.token);
      expect(replay.statusCode, replay.body).toBe(200);
      expect(replay.json()).toEqual(expect.objectContaining({ reproduced: true, differences: [] }));
    }
    // A borrower may not replay.
    expect((await post(`/v1/applications/${a.id}/replay`, borrower.token)).statusCode).toBe(403);
  });

  it('records every stage with its timing, the policy version and the trace of the rule that fired', async () => {
    const a = (await apply(borrower.token, { ...SEED, ...person() })).json<ApplicationBody>();
    const full = (await get(`/v1/applications/${a.id}`, underwriter.token)).json<ApplicationBody>();
    const automated = full.decisions?.find((d) => d.kind === 'automated');
    expect(automated?.policy).not.toBeNull();
    const stages = automated?.result.stages as Record<string, unknown>;
    for (const stage of ['company_verification', 'collateral', 'scorecard', 'pricing', 'affordability', 'policy']) expect(stages[stage], stage).toBeDefined();
    expect((stages.company_verification as { status: string }).status).toBe('verified');
    expect(Array.isArray((stages.policy as { hits: unknown[] }).hits)).toBe(true);
    expect(Object.keys(automated?.timings_ms ?? {})).toEqual(expect.arrayContaining(['validation', 'scorecard', 'policy', 'decision']));
  });

  it('a verification provider that fails refers the application to manual review, never approves', async () => {
    serper.mode = 'error';
    try {
      const res = await apply(borrower.token, { ...SEED, ...person(), company: `Unknown Co ${randomUUID().slice(0, 4)}` });
      expect(res.statusCode, res.body).toBe(201);
      const a = res.json<ApplicationBody>();
      expect(a.decision).toBe('referred');
      expect(a.status).toBe('in_review');
      const queue = (await get('/v1/reviews?limit=100', underwriter.token)).json<{ data: ApplicationBody[] }>().data;
      expect(queue.map((q) => q.id)).toContain(a.id);
      // The underwriters' narrative arrives after the decision, never changes it, and its prompt holds no personal data.
      let narrative: { status: string; text: string | null } | null | undefined;
      for (let i = 0; i < 100 && !narrative; i++) {
        narrative = (await get(`/v1/applications/${a.id}`, underwriter.token)).json<{ narrative?: { status: string; text: string | null } | null }>().narrative;
        if (!narrative) await new Promise((resolve) => setTimeout(resolve, 20));
      }
      expect(narrative?.status).toBe('written');
      expect(narrative?.text).toContain('Referred');
      const full = (await get(`/v1/applications/${a.id}`, underwriter.token)).json<ApplicationBody>();
      expect(full.decision).toBe('referred');
      const applicant = full.applicant?.name ?? '';
      expect(applicant).not.toBe('');
      expect(gemini.prompts.length).toBeGreaterThan(0);
      for (const prompt of gemini.prompts) {
        expect(prompt).not.toContain(applicant);
        expect(prompt).not.toMatch(/ID-[0-9a-f]{8}/);
      }
    } finally {
      serper.mode = 'found';
    }
  });
});

describe(`review and booking (${dbTarget})`, () => {
  async function referred(submitter: string, amount = 15000) {
    serper.mode = 'error';
    try {
      const res = await apply(submitter, { ...SEED, ...person(), loan_amount: amount, company: `Flaky ${randomUUID().slice(0, 4)}` });
      expect(res.statusCode, res.body).toBe(201);
      const a = res.json<ApplicationBody>();
      expect(a.decision).toBe('referred');
      return a;
    } finally {
      serper.mode = 'found';
    }
  }

  it('nobody decides an application they submitted; another underwriter approves; the borrower accepts and exactly one loan is booked', async () => {
    // An underwriter applies for the borrower (on behalf), so may not review it.
    serper.mode = 'error';
    const res = await apply(underwriter.token, { ...SEED, ...person(), loan_amount: 15000, borrower_id: borrower.id, product_id: product.id, company: 'Flaky Ltd' });
    serper.mode = 'found';
    expect(res.statusCode, res.body).toBe(201);
    const a = res.json<ApplicationBody>();
    expect(a.decision).toBe('referred');
    const own = await post(`/v1/applications/${a.id}/review`, underwriter.token, { decision: 'approved', note: 'looks fine' });
    expect(own.statusCode).toBe(403);
    expect(problemOf(own).code).toBe('maker_checker');
    const ok = await post(`/v1/applications/${a.id}/review`, underwriter2.token, { decision: 'approved', note: 'employer confirmed by phone' });
    expect(ok.statusCode, ok.body).toBe(200);
    const reviewed = ok.json<ApplicationBody>();
    expect(reviewed).toEqual(expect.objectContaining({ status: 'decided', decision: 'approved' }));
    expect(reviewed.offer?.amount).toBe('15000.00');

    // The other borrower cannot accept it (404), the borrower can, once.
    expect((await post(`/v1/applications/${a.id}/accept`, other.token)).statusCode).toBe(404);
    const [first, second] = await Promise.all([post(`/v1/applications/${a.id}/accept`, borrower.token), post(`/v1/applications/${a.id}/accept`, borrower.token)]);
    const statuses = [first.statusCode, second.statusCode].sort();
    expect(statuses).toEqual([201, 409]);
    const winner = first.statusCode === 201 ? first : second;
    const loanId = winner.json<{ loan_id: string }>().loan_id;
    const loans = await sql<{ n: string }>`select count(*)::text as n from loans where borrower_id = ${borrower.id} and principal = 1500000`.execute(db());
    expect(loans.rows[0]?.n).toBe('1');
    const loan = (await get(`/v1/loans/${loanId}`, borrower.token)).json<{ status: string; principal: string; annual_rate: string; term: number }>();
    expect(loan).toEqual(expect.objectContaining({ status: 'pending_disbursement', principal: '15000.00', annual_rate: reviewed.offer?.annual_rate, term: reviewed.offer?.term_months }));
    expect((await get(`/v1/applications/${a.id}`, borrower.token)).json<ApplicationBody>()).toEqual(expect.objectContaining({ status: 'accepted', loan_id: loanId }));
  });

  it('an approval above the dual-approval threshold needs a second, different underwriter', async () => {
    const a = await referred(borrower.token, 30000);
    const firstApproval = await post(`/v1/applications/${a.id}/review`, underwriter.token, { decision: 'approved', note: 'first look' });
    expect(firstApproval.statusCode, firstApproval.body).toBe(200);
    expect(firstApproval.json<ApplicationBody>()).toEqual(expect.objectContaining({ status: 'in_review', decision: 'referred' }));
    const same = await post(`/v1/applications/${a.id}/review`, underwriter.token, { decision: 'approved', note: 'again' });
    expect(same.statusCode).toBe(403);
    expect((await post(`/v1/applications/${a.id}/accept`, borrower.token, { product_id: product.id })).statusCode).toBe(409);
    const second = await post(`/v1/applications/${a.id}/review`, underwriter2.token, { decision: 'approved', note: 'second look' });
    expect(second.statusCode, second.body).toBe(200);
    expect(second.json<ApplicationBody>()).toEqual(expect.objectContaining({ status: 'decided', decision: 'approved' }));
  });

  it('approving over an automated decline is an override: it needs a second underwriter, never the same one', async () => {
    const res = await apply(borrower.token, { ...SEED, ...person(), loan_amount: 5000, credit_history: { existing_loans: 1, repayment_score: 0.3 } });
    const a = res.json<ApplicationBody>();
    expect(a.decision).toBe('declined');
    const first = await post(`/v1/applications/${a.id}/review`, underwriter.token, { decision: 'approved', note: 'old delinquency, since cured' });
    expect(first.statusCode, first.body).toBe(200);
    expect(first.json<ApplicationBody>()).toEqual(expect.objectContaining({ status: 'in_review', decision: 'declined' }));
    const self = await post(`/v1/applications/${a.id}/review`, underwriter.token, { decision: 'approved', note: 'confirming my own override' });
    expect(self.statusCode).toBe(403);
    expect(problemOf(self).code).toBe('maker_checker');
    const second = await post(`/v1/applications/${a.id}/review`, underwriter2.token, { decision: 'approved', note: 'agreed' });
    expect(second.statusCode, second.body).toBe(200);
    expect(second.json<ApplicationBody>()).toEqual(expect.objectContaining({ status: 'decided', decision: 'approved' }));
    const audit = await sql<{ action: string; override: boolean }>`select action, (details->>'override')::boolean as override from audit_log where subject_id = ${a.id} order by id`.execute(db());
    expect(audit.rows).toEqual([
      { action: 'application.decided', override: null },
      { action: 'application.review.first_approval', override: true },
      { action: 'application.reviewed', override: true },
    ]);
  });

  it('a review decline carries catalogued reasons; an unknown code is refused', async () => {
    const a = await referred(borrower.token);
    const bad = await post(`/v1/applications/${a.id}/review`, underwriter.token, { decision: 'declined', reasons: ['because'], note: 'no' });
    expect(bad.statusCode).toBe(400);
    expect(problemOf(bad).errors).toEqual(expect.arrayContaining([expect.objectContaining({ pointer: '#/reasons/0' })]));
    const none = await post(`/v1/applications/${a.id}/review`, underwriter.token, { decision: 'declined', note: 'no' });
    expect(none.statusCode).toBe(400);
    const code = Object.keys(REASON_CATALOGUE)[0] as string;
    const ok = await post(`/v1/applications/${a.id}/review`, underwriter.token, { decision: 'declined', reasons: [code], note: 'could not confirm' });
    expect(ok.statusCode, ok.body).toBe(200);
    const declined = ok.json<ApplicationBody>();
    expect(declined).toEqual(expect.objectContaining({ status: 'decided', decision: 'declined', offer: null }));
    expect(declined.reasons).toEqual([{ code, text: REASON_CATALOGUE[code as keyof typeof REASON_CATALOGUE] }]);
    // A declined application has nothing to accept.
    expect(problemOf(await post(`/v1/applications/${a.id}/accept`, borrower.token, { product_id: product.id })).code).toBe('no_offer');
  });

  it('every decision, review and booking is in the audit chain, and the chain verifies', async () => {
    const actions = await sql<{ action: string }>`select distinct action from audit_log where subject_type = 'application'`.execute(db());
    expect(actions.rows.map((r) => r.action)).toEqual(expect.arrayContaining(['application.decided', 'application.reviewed', 'application.accepted', 'application.review.first_approval']));
    expect((await verifyAuditChain(db() as never)).ok).toBe(true);
  });
});

describe(`policies, champion and challenger (${dbTarget})`, () => {
  it('ships a default champion; a malformed upload is refused naming what is wrong', async () => {
    const list = (await get('/v1/policies', admin)).json<{ data: { id: string; name: string; role: string | null }[] }>().data;
    expect(list.find((p) => p.role === 'champion')?.name).toBe('default');
    const bad = await post('/v1/policies', admin, { name: 'broken', content: { nodes: [{ id: 'x', type: 'nonsense' }], edges: [] } });
    expect(bad.statusCode).toBe(422);
    expect(problemOf(bad).code).toBe('invalid_policy');
    expect((await post('/v1/policies', underwriter.token, { name: 'mine', content: {} })).statusCode).toBe(403);
  });

  it('a challenger runs in shadow on live traffic and the comparison reports agreement and differences', async () => {
    const champion = (await get('/v1/policies', admin)).json<{ data: { id: string; role: string | null }[] }>().data.find((p) => p.role === 'champion');
    const content = (await get(`/v1/policies/${champion?.id}`, admin)).json<{ content: Record<string, unknown> }>().content;
    // The challenger: the same graph with every repayment-score threshold made stricter.
    const stricter = JSON.parse(JSON.stringify(content).replace(/< ?0\.5\b/g, '< 0.95')) as Record<string, unknown>;
    expect(JSON.stringify(stricter)).not.toBe(JSON.stringify(content));
    const up = await post('/v1/policies', admin, { name: 'strict', description: 'declines more', content: stricter });
    expect(up.statusCode, up.body).toBe(201);
    const challenger = up.json<{ id: string; version: number }>();
    expect(challenger.version).toBe(1);
    expect((await post(`/v1/policies/${challenger.id}/activation`, admin, { role: 'challenger' })).statusCode).toBe(200);
    const outcomes: string[] = [];
    for (const score of [0.92, 0.97, 0.6]) {
      const res = await apply(borrower.token, { ...SEED, ...person(), credit_history: { existing_loans: 1, repayment_score: score } });
      outcomes.push(res.json<ApplicationBody>().decision);
      const full = (await get(`/v1/applications/${res.json<ApplicationBody>().id}`, underwriter.token)).json<ApplicationBody>();
      expect(full.decisions?.map((d) => d.kind).sort()).toEqual(['automated', 'shadow']);
    }
    const cmp = await get(`/v1/policies/${challenger.id}/comparison`, analyst);
    expect(cmp.statusCode, cmp.body).toBe(200);
    const c = cmp.json<{ compared: number; agreed: number; agreement_rate: string; matrix: Record<string, Record<string, number>>; differences: { champion: string; challenger: string }[] }>();
    expect(c.compared).toBe(3);
    expect(c.agreed + c.differences.length).toBe(3);
    // Repayment 0.92 and 0.6 pass the champion's knockout (< 0.5) but not the challenger's (< 0.95); 0.97 passes both.
    expect(c.differences.length).toBe(2);
    expect(c.differences.every((d) => d.challenger === 'declined' && d.champion !== 'declined')).toBe(true);
    expect(c.agreement_rate).toBe('0.3333');
    expect(Object.values(c.matrix).flatMap((m) => Object.values(m)).reduce((x, y) => x + y, 0)).toBe(3);
    // Stopping the shadow: the next application has no shadow record.
    expect((await post(`/v1/policies/${challenger.id}/activation`, admin, { role: 'none' })).statusCode).toBe(200);
    const after = (await apply(borrower.token, { ...SEED, ...person() })).json<ApplicationBody>();
    const full = (await get(`/v1/applications/${after.id}`, underwriter.token)).json<ApplicationBody>();
    expect(full.decisions?.map((d) => d.kind)).toEqual(['automated']);
  });
});

describe(`origination metrics (${dbTarget})`, () => {
  it('exports the seed\'s metric names with their labels', async () => {
    const text = (await t.app.inject({ method: 'GET', url: '/metrics' })).body;
    expect(text).toMatch(/loan_applications_total\{status="success",decision="(approved|declined|referred|counter_offer)"\} \d+/);
    expect(text).toMatch(/loan_processing_duration_seconds_bucket\{le="[^"]+",stage="scorecard"\}/);
    expect(text).toMatch(/loan_processing_duration_seconds_count\{stage="total"\} \d+/);
    expect(text).toMatch(/loanbook_decisions_total\{kind="automated",policy="default@1",outcome="[a-z_]+"\} \d+/);
  });
});
