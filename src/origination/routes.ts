/** Origination HTTP routes: schemas and handlers only; the rules live in service.ts and pipeline.ts. */
import type { FastifyRequest } from 'fastify';
import { z } from 'zod';
import { formatMoney } from '../engine/index.js';
import { AppError } from '../platform/errors.js';
import type { App } from '../platform/http.js';
import { DECISION_OUTCOMES, type Offer } from './model.js';
import type { ApplicationRequest, ApplicationView, OriginationService, PolicyVersionView, RequestContext } from './service.js';

const APPLICANTS = ['borrower', 'admin', 'underwriter', 'servicer'] as const;
const READERS = ['admin', 'underwriter', 'auditor', 'servicer', 'analyst'] as const;
const WITH_BORROWER = [...READERS, 'borrower'] as const;
const REVIEWERS = ['admin', 'underwriter'] as const;
const ACCEPTORS = ['borrower', 'admin', 'servicer', 'underwriter'] as const;
const POLICY_READERS = ['admin', 'underwriter', 'auditor', 'analyst'] as const;
const tags = ['origination'];

/** A JSON number or a decimal string; at most 40 characters, no sign, no exponent. */
const decimal = (what: string) =>
  z
    .union([z.string().max(40), z.number().finite()])
    .transform((value) => (typeof value === 'number' ? String(value) : value))
    .refine((value) => /^\d{1,30}(\.\d{1,10})?$/.test(value), `must be a non-negative decimal number such as "1250.00" (${what}; no sign, no exponent)`);
const amount = decimal('major units of the currency');
const years = decimal('years').refine((v) => Number(v) <= 80, 'must be at most 80');
const repaymentScore = decimal('0 to 1').refine((v) => /^(0(\.\d+)?|1(\.0+)?)$/.test(v), 'must be between 0 and 1');
const existingLoans = z.number().int().min(0).max(1000);
const name = z.string().trim().min(1).max(200);
const company = z.string().max(200);

const creditHistory = z.strictObject({ existing_loans: existingLoans, repayment_score: repaymentScore });

/** Exactly the seed's payload (POST /loan/apply). */
const seedBody = z.strictObject({
  applicant_name: name,
  loan_amount: amount,
  monthly_income: amount,
  employment_years: years,
  credit_history: creditHistory,
  collateral_value: amount,
  company,
});

const v1Body = z.strictObject({
  ...seedBody.shape,
  currency: z.string().regex(/^[A-Z]{3}$/, 'must be an ISO 4217 code such as "USD"').optional().describe('default: the product\'s, else USD'),
  email: z.email().max(254).optional(),
  national_id: z.string().regex(/^[A-Za-z0-9 -]{4,32}$/, 'letters, digits, spaces and hyphens, 4 to 32').optional(),
  date_of_birth: z.iso.date().describe('YYYY-MM-DD; identity only, never scored').optional(),
  requested_term_months: z.number().int().min(1).max(480).optional(),
  purpose: z.string().min(1).max(200).optional(),
  product_id: z.uuid().optional(),
  monthly_debt_payments: amount.optional(),
  borrower_id: z.uuid().optional().describe('staff applying for a registered borrower; a borrower applies for themself'),
});

const money = z.string().describe('decimal string');
const reasonSchema = z.object({ code: z.string(), text: z.string() });
const offerSchema = z.object({ currency: z.string(), amount: money, term_months: z.number().int(), annual_rate: z.string(), apr: z.string(), monthly_payment: money }).meta({ id: 'Offer' });
const decisionSchema = z.object({
  id: z.uuid(),
  kind: z.enum(['automated', 'shadow', 'review']),
  policy: z.object({ id: z.uuid(), name: z.string(), version: z.number().int() }).nullable(),
  scorecard_version: z.string().nullable(),
  pricing_version: z.string().nullable(),
  input_hash: z.string(),
  outcome: z.enum(DECISION_OUTCOMES),
  result: z.record(z.string(), z.unknown()).describe('stage results, reasons and offer as recorded (amounts in minor units)'),
  result_hash: z.string(),
  timings_ms: z.record(z.string(), z.unknown()),
  decided_at: z.string(),
  decided_by: z.uuid().nullable(),
  note: z.string().nullable(),
});
const applicationSchema = z
  .object({
    id: z.uuid(),
    status: z.enum(['decided', 'in_review', 'accepted']),
    decision: z.enum(DECISION_OUTCOMES),
    borrower_id: z.uuid().nullable(),
    submitted_by: z.uuid(),
    channel: z.enum(['v1', 'loan_apply']),
    currency: z.string(),
    loan_amount: money,
    product_id: z.uuid().nullable(),
    loan_id: z.uuid().nullable(),
    reasons: z.array(reasonSchema).describe('adverse-action reasons (declined, counter_offer) or why it was referred'),
    offer: offerSchema.nullable(),
    applicant: z.object({ name: z.string(), email: z.string().nullable(), national_id: z.string().nullable(), date_of_birth: z.string().nullable() }).nullable().describe('for the applicant, admins and underwriters only'),
    decision_id: z.uuid(),
    created_at: z.string(),
    updated_at: z.string(),
    decisions: z.array(decisionSchema).optional().describe('staff: every decision record'),
    narrative: z.object({ status: z.string(), text: z.string().nullable() }).nullable().optional().describe('staff: the underwriters\' narrative (never part of the decision)'),
  })
  .meta({ id: 'Application' });

function offerView(o: Offer): z.infer<typeof offerSchema> {
  return { currency: o.currency, amount: formatMoney(o.amount, o.currency), term_months: o.termMonths, annual_rate: o.annualRate, apr: o.apr, monthly_payment: formatMoney(o.monthlyPayment, o.currency) };
}

function applicationView(a: ApplicationView): z.infer<typeof applicationSchema> {
  return {
    id: a.id,
    status: a.status,
    decision: a.outcome,
    borrower_id: a.borrowerId,
    submitted_by: a.submittedBy,
    channel: a.channel,
    currency: a.currency,
    loan_amount: formatMoney(a.amount, a.currency),
    product_id: a.productId,
    loan_id: a.loanId,
    reasons: a.reasons.map((r) => ({ code: r.code, text: r.text })),
    offer: a.offer === null ? null : offerView(a.offer),
    applicant: a.applicant === null ? null : { name: a.applicant.name, email: a.applicant.email, national_id: a.applicant.nationalId, date_of_birth: a.applicant.dateOfBirth },
    decision_id: a.decisionId,
    created_at: a.createdAt.toISOString(),
    updated_at: a.updatedAt.toISOString(),
    ...(a.decisions === undefined
      ? {}
      : {
          decisions: a.decisions.map((d) => ({
            id: d.id,
            kind: d.kind,
            policy: d.policy,
            scorecard_version: d.scorecardVersion,
            pricing_version: d.pricingVersion,
            input_hash: d.inputHash,
            outcome: d.outcome,
            result: d.result,
            result_hash: d.resultHash,
            timings_ms: d.timings,
            decided_at: d.decidedAt.toISOString(),
            decided_by: d.decidedBy,
            note: d.note,
          })),
          narrative: a.narrative ?? null,
        }),
  };
}

const policySchema = z
  .object({
    id: z.uuid(),
    name: z.string(),
    version: z.number().int(),
    description: z.string(),
    content_hash: z.string(),
    role: z.enum(['champion', 'challenger']).nullable(),
    created_at: z.string(),
    created_by: z.uuid().nullable(),
    content: z.record(z.string(), z.unknown()).optional().describe('the JDM decision graph'),
  })
  .meta({ id: 'PolicyVersion' });

function policyView(p: PolicyVersionView): z.infer<typeof policySchema> {
  return {
    id: p.id,
    name: p.name,
    version: p.version,
    description: p.description,
    content_hash: p.contentHash,
    role: p.role,
    created_at: p.createdAt.toISOString(),
    created_by: p.createdBy,
    ...(p.content === undefined ? {} : { content: p.content }),
  };
}

function context(request: FastifyRequest): RequestContext {
  const p = request.principal;
  if (!p) throw new AppError('unauthenticated');
  return { viewer: { userId: p.userId, role: p.role }, ip: request.ip, requestId: request.id };
}

function seedRequest(b: z.infer<typeof seedBody>): ApplicationRequest {
  return {
    channel: 'loan_apply',
    applicantName: b.applicant_name,
    loanAmount: b.loan_amount,
    monthlyIncome: b.monthly_income,
    employmentYears: b.employment_years,
    existingLoans: b.credit_history.existing_loans,
    repaymentScore: b.credit_history.repayment_score,
    collateralValue: b.collateral_value,
    company: b.company,
  };
}

const idParams = z.strictObject({ id: z.uuid() });
const page = { limit: z.coerce.number().int().min(1).max(100).default(20), starting_after: z.uuid().optional() };

export function registerOriginationRoutes(app: App, origination: OriginationService): void {
  const applyDescription =
    'Runs the decision pipeline (validation, company verification, collateral, scorecard, pricing, affordability, policy rules, decision) and records the application with its personal data encrypted. ' +
    'A provider anomaly refers the application to manual review; it never approves. Declines and counter-offers carry 1–4 adverse-action reasons.';
  app.post(
    '/v1/applications',
    {
      config: { auth: APPLICANTS, idempotency: 'required' },
      schema: { tags, summary: 'Apply for a loan', description: applyDescription, body: v1Body, response: { 201: applicationSchema } },
    },
    async (request, reply) => {
      const b = request.body;
      const view = await origination.apply(
        {
          ...seedRequest(b),
          channel: 'v1',
          currency: b.currency,
          email: b.email,
          nationalId: b.national_id,
          dateOfBirth: b.date_of_birth,
          requestedTermMonths: b.requested_term_months,
          purpose: b.purpose,
          productId: b.product_id,
          monthlyDebtPayments: b.monthly_debt_payments,
          borrowerId: b.borrower_id,
        },
        context(request),
      );
      return reply.code(201).header('location', `/v1/applications/${view.id}`).send(applicationView(view));
    },
  );
  app.post(
    '/loan/apply',
    {
      config: { auth: APPLICANTS, idempotency: 'required' },
      schema: { tags, summary: 'Apply for a loan (the seed\'s endpoint; exactly its payload)', description: applyDescription, body: seedBody, response: { 201: applicationSchema } },
    },
    async (request, reply) => {
      const view = await origination.apply(seedRequest(request.body), context(request));
      return reply.code(201).header('location', `/v1/applications/${view.id}`).send(applicationView(view));
    },
  );
  app.get(
    '/v1/applications',
    {
      config: { auth: WITH_BORROWER },
      schema: {
        tags,
        summary: 'Applications, newest first; a borrower sees their own',
        description: 'Admins and underwriters find a repeat applicant by `national_id` (or `email`, for applications made without a national id) through the blind index.',
        querystring: z.strictObject({
          ...page,
          status: z.enum(['decided', 'in_review', 'accepted']).optional(),
          decision: z.enum(DECISION_OUTCOMES).optional(),
          borrower_id: z.uuid().optional(),
          national_id: z.string().regex(/^[A-Za-z0-9 -]{4,32}$/).optional(),
          email: z.email().max(254).optional(),
        }),
        response: { 200: z.object({ data: z.array(applicationSchema), has_more: z.boolean() }) },
      },
    },
    async (request) => {
      const q = request.query;
      const result = await origination.applications(context(request).viewer, { status: q.status, outcome: q.decision, borrowerId: q.borrower_id, nationalId: q.national_id, email: q.email, limit: q.limit, startingAfter: q.starting_after });
      return { data: result.data.map(applicationView), has_more: result.hasMore };
    },
  );
  app.get(
    '/v1/applications/:id',
    { config: { auth: WITH_BORROWER }, schema: { tags, summary: 'An application and its decision (staff: every decision record with stage results and timings)', params: idParams, response: { 200: applicationSchema } } },
    async (request) => applicationView(await origination.application(request.params.id, context(request).viewer)),
  );
  app.post(
    '/v1/applications/:id/replay',
    {
      config: { auth: ['admin', 'underwriter', 'auditor'] },
      schema: {
        tags,
        summary: 'Re-run the automated decision on its recorded input, policy, scorecard and pricing versions and provider outcome',
        params: idParams,
        response: { 200: z.object({ application_id: z.uuid(), decision_id: z.uuid(), reproduced: z.boolean(), outcome: z.enum(DECISION_OUTCOMES), recorded_hash: z.string(), replayed_hash: z.string(), differences: z.array(z.string()).describe('JSON pointers where the replay differs') }) },
      },
    },
    async (request) => {
      const r = await origination.replay(request.params.id, context(request).viewer);
      return { application_id: r.applicationId, decision_id: r.decisionId, reproduced: r.reproduced, outcome: r.outcome, recorded_hash: r.recordedHash, replayed_hash: r.replayedHash, differences: [...r.differences] };
    },
  );
  app.get(
    '/v1/reviews',
    {
      config: { auth: REVIEWERS },
      schema: { tags, summary: 'The underwriters\' queue: referred applications and approvals awaiting a second underwriter, oldest first', querystring: z.strictObject(page), response: { 200: z.object({ data: z.array(applicationSchema), has_more: z.boolean() }) } },
    },
    async (request) => {
      const result = await origination.reviews(context(request).viewer, { limit: request.query.limit, startingAfter: request.query.starting_after });
      return { data: result.data.map(applicationView), has_more: result.hasMore };
    },
  );
  app.post(
    '/v1/applications/:id/review',
    {
      config: { auth: REVIEWERS, idempotency: 'optional' },
      schema: {
        tags,
        summary: 'An underwriter decides a referred application, or overrides a decision (four eyes)',
        description: 'Nobody decides an application they submitted or applied with; an approval above REVIEW_DUAL_APPROVAL_ABOVE needs a second, different underwriter.',
        params: idParams,
        body: z.strictObject({
          decision: z.enum(['approved', 'declined', 'counter_offer']),
          reasons: z.array(z.string().regex(/^[a-z][a-z0-9_]{0,63}$/)).max(4).default([]).describe('reason codes (1–4 for declined and counter_offer)'),
          note: z.string().trim().min(1).max(2000),
          amount: amount.optional().describe('counter-offer amount; default the requested amount'),
          term_months: z.number().int().min(1).max(480).optional(),
        }),
        response: { 200: applicationSchema },
      },
    },
    async (request) => {
      const b = request.body;
      return applicationView(await origination.review(request.params.id, { decision: b.decision, reasons: b.reasons, note: b.note, amount: b.amount, termMonths: b.term_months }, context(request)));
    },
  );
  app.post(
    '/v1/applications/:id/accept',
    {
      config: { auth: ACCEPTORS, idempotency: 'required' },
      schema: {
        tags,
        summary: 'Accept the offer: books the loan in servicing with the priced terms, exactly once',
        params: idParams,
        body: z.strictObject({ product_id: z.uuid().optional().describe('default: the application\'s'), borrower_id: z.uuid().optional().describe('when staff applied for someone without an account') }).default({}),
        response: { 201: z.object({ application: applicationSchema, loan_id: z.uuid() }) },
      },
    },
    async (request, reply) => {
      const r = await origination.accept(request.params.id, { productId: request.body.product_id, borrowerId: request.body.borrower_id }, context(request));
      return reply.code(201).header('location', `/v1/loans/${r.loanId}`).send({ application: applicationView(r.application), loan_id: r.loanId });
    },
  );

  // -- policies -------------------------------------------------------------
  app.post(
    '/v1/policies',
    {
      config: { auth: ['admin'], idempotency: 'optional' },
      schema: {
        tags,
        summary: 'Upload a policy version (a JDM decision graph, as the GoRules editor saves it)',
        description: 'The next version of the named policy; it decides nothing until activated.',
        body: z.strictObject({ name: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,63}$/, 'lower-case letters, digits, _ and -'), description: z.string().max(2000).default(''), content: z.record(z.string(), z.unknown()) }),
        response: { 201: policySchema },
      },
    },
    async (request, reply) => {
      const b = request.body;
      const p = await origination.uploadPolicy({ name: b.name, description: b.description, content: b.content }, context(request));
      return reply.code(201).header('location', `/v1/policies/${p.id}`).send(policyView(p));
    },
  );
  app.get(
    '/v1/policies',
    { config: { auth: POLICY_READERS }, schema: { tags, summary: 'Policy versions, newest first, with their role', querystring: z.strictObject(page), response: { 200: z.object({ data: z.array(policySchema), has_more: z.boolean() }) } } },
    async (request) => {
      const result = await origination.policies({ limit: request.query.limit, startingAfter: request.query.starting_after });
      return { data: result.data.map(policyView), has_more: result.hasMore };
    },
  );
  app.get(
    '/v1/policies/:id',
    { config: { auth: POLICY_READERS }, schema: { tags, summary: 'A policy version with its content', params: idParams, response: { 200: policySchema } } },
    async (request) => policyView(await origination.policy(request.params.id)),
  );
  app.post(
    '/v1/policies/:id/activation',
    {
      config: { auth: ['admin'] },
      schema: {
        tags,
        summary: 'Make a version the champion (it decides), the challenger (it runs in shadow on live traffic), or neither',
        params: idParams,
        body: z.strictObject({ role: z.enum(['champion', 'challenger', 'none']) }),
        response: { 200: policySchema },
      },
    },
    async (request) => policyView(await origination.activate(request.params.id, request.body.role, context(request))),
  );
  app.get(
    '/v1/policies/:id/comparison',
    {
      config: { auth: POLICY_READERS },
      schema: {
        tags,
        summary: 'Champion/challenger: how often this version, in shadow, agreed with the champion, and where it differed',
        params: idParams,
        querystring: z.strictObject({ limit: z.coerce.number().int().min(1).max(100).default(100) }),
        response: {
          200: z.object({
            policy_id: z.uuid(),
            compared: z.number().int(),
            agreed: z.number().int(),
            agreement_rate: z.string().nullable().describe('agreed / compared, 4 places, truncated'),
            matrix: z.record(z.string(), z.record(z.string(), z.number().int())).describe('champion outcome → challenger outcome → applications'),
            differences: z.array(z.object({ application_id: z.uuid(), champion: z.string(), challenger: z.string(), decided_at: z.string() })),
          }),
        },
      },
    },
    async (request) => {
      const c = await origination.comparison(request.params.id, request.query.limit);
      return {
        policy_id: c.policyId,
        compared: c.compared,
        agreed: c.agreed,
        agreement_rate: c.agreementRate,
        matrix: c.matrix,
        differences: c.differences.map((d) => ({ application_id: d.applicationId, champion: d.champion, challenger: d.challenger, decided_at: d.decidedAt.toISOString() })),
      };
    },
  );
}
