/** Servicing HTTP routes: schemas and handlers only; the rules live in service.ts and loan-state.ts. */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import {
  ALLOCATION_STRATEGY_NAMES,
  AMORTIZATIONS,
  DAY_COUNT_CONVENTIONS,
  FREQUENCIES,
  INTEREST_METHODS,
  OVERPAYMENT_MODES,
  ROUNDING_MODES,
  formatMoney,
  isEngineError,
  parseMoney,
} from '../engine/index.js';
import { AppError } from '../platform/errors.js';
import type { App } from '../platform/http.js';
import { outstandingOf, type LoanBalances } from './loan-state.js';
import { LOAN_STATUSES, type FeeRule, type Product, type ProductTerms } from './model.js';
import type { CommandContext, CommandResult, LoanDetails, ServicingService, TransactionView, Viewer } from './service.js';

const ADMIN = ['admin'] as const;
const STAFF = ['admin', 'servicer'] as const;
const READERS = ['admin', 'servicer', 'auditor', 'analyst', 'underwriter'] as const;
const WITH_BORROWER = [...READERS, 'borrower'] as const;
const PAYERS = ['admin', 'servicer', 'borrower'] as const;
const tags = ['servicing'];

const decimal = z
  .union([z.string().max(40), z.number().finite()])
  .transform((value) => (typeof value === 'number' ? String(value) : value))
  .refine((value) => /^\d+(\.\d+)?$/.test(value), 'must be a non-negative decimal number such as "1250.00" (no sign, no exponent)');
const amount = decimal.describe('decimal string in the loan currency, e.g. "1250.00"');
const rate = decimal.describe('annual fraction: "0.06" is 6 %');
const isoDate = z.iso.date().describe('YYYY-MM-DD');
const money = z.string().describe('decimal string');
const reason = z.string().min(1).max(500);

const feeRule = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('fixed'), amount }),
  z.strictObject({ kind: z.literal('percent'), rate: decimal.describe('fraction of the base: "0.05" is 5 %') }),
]);

const productTermsBody = {
  currency: z.string().regex(/^[A-Z]{3}$/, 'must be an ISO 4217 code such as "USD"'),
  interest_method: z.enum(INTEREST_METHODS).default('declining_balance'),
  amortization: z.enum(AMORTIZATIONS).default('equal_installments'),
  day_count: z.enum(DAY_COUNT_CONVENTIONS).default('30/360'),
  frequency: z.enum(FREQUENCIES).default('monthly'),
  interest_rounding: z.enum(ROUNDING_MODES).default('half_up'),
  payment_rounding: z.enum(ROUNDING_MODES).default('half_up'),
  allocation_strategy: z.enum(ALLOCATION_STRATEGY_NAMES).default('oldest_due_first'),
  overpayment: z.enum(OVERPAYMENT_MODES).default('credit_balance').describe('what a payment above what is due does: credit balance, or prepay (shorten the term or lower the installment)'),
  origination_fee: feeRule.nullable().default(null).describe('charged with the first disbursement, due with installment 1; percent of the amount disbursed'),
  late_fee: z.strictObject({ fee: feeRule, grace_days: z.number().int().min(0).max(365) }).nullable().default(null).describe('once per installment still unpaid grace_days after its due date; percent of its overdue principal and interest'),
  delinquency_buckets: z
    .array(z.strictObject({ name: z.string().regex(/^[a-z0-9_+-]{1,40}$/), min_days: z.number().int().min(1).max(10_000) }))
    .max(20)
    .default([
      { name: '1-30', min_days: 1 },
      { name: '31-60', min_days: 31 },
      { name: '61-90', min_days: 61 },
      { name: '90+', min_days: 91 },
    ]),
  charge_off_days: z.number().int().min(1).max(10_000).nullable().default(180).describe('days past due at which end of day charges the loan off; null: never by policy'),
  min_amount: amount,
  max_amount: amount,
  min_term: z.number().int().min(1).max(1200),
  max_term: z.number().int().min(1).max(1200),
  min_rate: rate,
  max_rate: rate,
  multi_tranche: z.boolean().default(false),
};
const productBody = z.strictObject({ code: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,63}$/, 'lower-case letters, digits, _ and -'), name: z.string().min(1).max(200), ...productTermsBody });
const versionBody = z.strictObject({ name: z.string().min(1).max(200), ...productTermsBody });

const feeView = z.union([z.object({ kind: z.literal('fixed'), amount: money }), z.object({ kind: z.literal('percent'), rate: z.string() })]);
const productSchema = z
  .object({
    id: z.uuid(),
    version: z.number().int(),
    code: z.string(),
    name: z.string(),
    currency: z.string(),
    interest_method: z.string(),
    amortization: z.string(),
    day_count: z.string(),
    frequency: z.string(),
    interest_rounding: z.string(),
    payment_rounding: z.string(),
    allocation_strategy: z.string(),
    overpayment: z.string(),
    origination_fee: feeView.nullable(),
    late_fee: z.object({ fee: feeView, grace_days: z.number().int() }).nullable(),
    delinquency_buckets: z.array(z.object({ name: z.string(), min_days: z.number().int() })),
    charge_off_days: z.number().int().nullable(),
    min_amount: money,
    max_amount: money,
    min_term: z.number().int(),
    max_term: z.number().int(),
    min_rate: z.string(),
    max_rate: z.string(),
    multi_tranche: z.boolean(),
    created_at: z.string(),
  })
  .meta({ id: 'LoanProduct' });

/** Engine parse errors as validation problems naming the field. */
function parseField(text: string, currency: string, pointer: string): bigint {
  try {
    return parseMoney(text, currency, pointer.slice(2));
  } catch (error) {
    if (!isEngineError(error)) throw error;
    throw new AppError('validation_failed', { detail: error.message, errors: [{ pointer, location: 'body', detail: error.message }] });
  }
}

function feeFromBody(fee: z.infer<typeof feeRule>, currency: string, pointer: string): FeeRule {
  return fee.kind === 'fixed' ? { kind: 'fixed', amount: parseField(fee.amount, currency, `${pointer}/amount`) } : { kind: 'percent', rate: fee.rate };
}

function termsFromBody(b: z.infer<typeof versionBody>): ProductTerms {
  return {
    currency: b.currency,
    interestMethod: b.interest_method,
    amortization: b.amortization,
    dayCount: b.day_count,
    frequency: b.frequency,
    interestRounding: b.interest_rounding,
    paymentRounding: b.payment_rounding,
    allocationStrategy: b.allocation_strategy,
    overpayment: b.overpayment,
    originationFee: b.origination_fee === null ? null : feeFromBody(b.origination_fee, b.currency, '#/origination_fee'),
    lateFee: b.late_fee === null ? null : { fee: feeFromBody(b.late_fee.fee, b.currency, '#/late_fee/fee'), graceDays: b.late_fee.grace_days },
    delinquencyBuckets: b.delinquency_buckets.map((x) => ({ name: x.name, minDays: x.min_days })),
    chargeOffDays: b.charge_off_days,
    minAmount: parseField(b.min_amount, b.currency, '#/min_amount'),
    maxAmount: parseField(b.max_amount, b.currency, '#/max_amount'),
    minTerm: b.min_term,
    maxTerm: b.max_term,
    minRate: b.min_rate,
    maxRate: b.max_rate,
    multiTranche: b.multi_tranche,
  };
}

function feeOut(fee: FeeRule, currency: string) {
  return fee.kind === 'fixed' ? { kind: 'fixed' as const, amount: formatMoney(fee.amount, currency) } : { kind: 'percent' as const, rate: fee.rate };
}

function productView(p: Product): z.infer<typeof productSchema> {
  const t = p.terms;
  return {
    id: p.id,
    version: p.version,
    code: p.code,
    name: p.name,
    currency: t.currency,
    interest_method: t.interestMethod,
    amortization: t.amortization,
    day_count: t.dayCount,
    frequency: t.frequency,
    interest_rounding: t.interestRounding,
    payment_rounding: t.paymentRounding,
    allocation_strategy: t.allocationStrategy,
    overpayment: t.overpayment,
    origination_fee: t.originationFee === null ? null : feeOut(t.originationFee, t.currency),
    late_fee: t.lateFee === null ? null : { fee: feeOut(t.lateFee.fee, t.currency), grace_days: t.lateFee.graceDays },
    delinquency_buckets: t.delinquencyBuckets.map((b) => ({ name: b.name, min_days: b.minDays })),
    charge_off_days: t.chargeOffDays,
    min_amount: formatMoney(t.minAmount, t.currency),
    max_amount: formatMoney(t.maxAmount, t.currency),
    min_term: t.minTerm,
    max_term: t.maxTerm,
    min_rate: t.minRate,
    max_rate: t.maxRate,
    multi_tranche: t.multiTranche,
    created_at: p.createdAt.toISOString(),
  };
}

const balancesSchema = z.object({
  principal_outstanding: money,
  interest_outstanding: money.describe('interest recognized and unpaid'),
  fees_outstanding: money,
  penalties_outstanding: money,
  due: z.object({ principal: money, interest: money, fee: money, penalty: money, total: money }).describe('due on or before the business date and unpaid'),
  credit_balance: money,
});

const loanSchema = z
  .object({
    id: z.uuid(),
    borrower_id: z.uuid(),
    product_id: z.uuid(),
    product_version: z.number().int(),
    status: z.enum(LOAN_STATUSES),
    currency: z.string(),
    principal: money,
    annual_rate: z.string(),
    term: z.number().int(),
    disbursed: money,
    disbursement_date: z.string().nullable(),
    business_date: z.string(),
    balances: balancesSchema,
    days_past_due: z.number().int(),
    delinquency_bucket: z.string(),
    next_due: z.object({ installment: z.number().int(), due_date: z.string(), amount: money }).nullable(),
    created_at: z.string(),
    updated_at: z.string(),
  })
  .meta({ id: 'Loan' });

function balancesView(b: LoanBalances, currency: string): z.infer<typeof balancesSchema> {
  const m = (v: bigint) => formatMoney(v, currency);
  return {
    principal_outstanding: m(b.principalOutstanding),
    interest_outstanding: m(b.interestOutstanding),
    fees_outstanding: m(b.feesOutstanding),
    penalties_outstanding: m(b.penaltiesOutstanding),
    due: { principal: m(b.due.principal), interest: m(b.due.interest), fee: m(b.due.fee), penalty: m(b.due.penalty), total: m(b.due.principal + b.due.interest + b.due.fee + b.due.penalty) },
    credit_balance: m(b.credit),
  };
}

function loanView(l: LoanDetails): z.infer<typeof loanSchema> {
  const c = l.terms.currency;
  return {
    id: l.id,
    borrower_id: l.borrowerId,
    product_id: l.productId,
    product_version: l.productVersion,
    status: l.status,
    currency: c,
    principal: formatMoney(l.terms.principal, c),
    annual_rate: l.terms.annualRate,
    term: l.terms.term,
    disbursed: formatMoney(l.state.disbursed, c),
    disbursement_date: l.state.firstDisbursementDate,
    business_date: l.businessDate,
    balances: balancesView(l.balances, c),
    days_past_due: l.balances.daysPastDue,
    delinquency_bucket: l.balances.bucket,
    next_due: l.balances.nextDue === null ? null : { installment: l.balances.nextDue.installment, due_date: l.balances.nextDue.dueDate, amount: formatMoney(l.balances.nextDue.amount, c) },
    created_at: l.createdAt.toISOString(),
    updated_at: l.updatedAt.toISOString(),
  };
}

const transactionSchema = z
  .object({
    id: z.uuid(),
    loan_id: z.uuid(),
    seq: z.number().int(),
    type: z.string(),
    value_date: z.string(),
    amount: money,
    currency: z.string(),
    details: z.record(z.string(), z.unknown()),
    effect: z.record(z.string(), z.unknown()).describe('what the transaction did when posted: allocation lines, totals, credit balance, prepayment and a plain-language explanation'),
    reversed: z.boolean(),
    reversed_at: z.string().nullable(),
    reversal_reason: z.string().nullable(),
    created_at: z.string(),
  })
  .meta({ id: 'LoanTransaction' });

function transactionView(t: TransactionView): z.infer<typeof transactionSchema> {
  return {
    id: t.id,
    loan_id: t.loanId,
    seq: t.seq,
    type: t.type,
    value_date: t.valueDate,
    amount: formatMoney(t.amount, t.currency),
    currency: t.currency,
    details: t.details,
    effect: t.effect,
    reversed: t.reversedAt !== null,
    reversed_at: t.reversedAt?.toISOString() ?? null,
    reversal_reason: t.reversalReason,
    created_at: t.createdAt.toISOString(),
  };
}

const commandResponse = z
  .object({ transaction: transactionSchema, loan: loanSchema, journal_entry_ids: z.array(z.uuid()), backdated: z.boolean() })
  .meta({ id: 'LoanCommandResult' });

function commandView(r: CommandResult): z.infer<typeof commandResponse> {
  return { transaction: transactionView(r.transaction), loan: loanView(r.loan), journal_entry_ids: [...r.journalEntryIds], backdated: r.backdated };
}

/** 201 with the result; a result the service found already done under the same key says so like the platform's replays. */
function sendCommand(reply: FastifyReply, result: CommandResult) {
  if (result.replayed) void reply.header('idempotent-replayed', 'true');
  return reply.code(201).send(commandView(result));
}

function viewer(request: FastifyRequest): Viewer {
  const p = request.principal;
  if (!p) throw new AppError('unauthenticated');
  return { userId: p.userId, role: p.role };
}

function context(request: FastifyRequest): CommandContext {
  const key = request.headers['idempotency-key'];
  return { viewer: viewer(request), ip: request.ip, requestId: request.id, idempotencyKey: typeof key === 'string' ? key : undefined };
}

const idParams = z.strictObject({ id: z.uuid() });
const page = { limit: z.coerce.number().int().min(1).max(100).default(20), starting_after: z.uuid().optional() };
const moneyMoving = (roles: readonly string[]) => ({ auth: roles, idempotency: 'required' as const });

export function registerServicingRoutes(app: App, servicing: ServicingService): void {
  // -- products -------------------------------------------------------------
  app.post(
    '/v1/products',
    { config: { auth: ADMIN, idempotency: 'optional' }, schema: { tags, summary: 'Create a loan product (version 1)', body: productBody, response: { 201: productSchema } } },
    async (request, reply) => {
      const { code, name, ...rest } = request.body;
      const product = await servicing.createProduct({ code, name, terms: termsFromBody({ name, ...rest }) }, viewer(request).userId);
      return reply.code(201).header('location', `/v1/products/${product.id}`).send(productView(product));
    },
  );
  app.get(
    '/v1/products',
    { config: { auth: WITH_BORROWER }, schema: { tags, summary: 'Loan products, latest version of each, by code', querystring: z.strictObject(page), response: { 200: z.object({ data: z.array(productSchema), has_more: z.boolean() }) } } },
    async (request) => {
      const result = await servicing.products({ limit: request.query.limit, startingAfter: request.query.starting_after });
      return { data: result.data.map(productView), has_more: result.hasMore };
    },
  );
  app.get(
    '/v1/products/:id',
    { config: { auth: WITH_BORROWER }, schema: { tags, summary: 'A product: its latest version, or ?version=', params: idParams, querystring: z.strictObject({ version: z.coerce.number().int().min(1).optional() }), response: { 200: productSchema } } },
    async (request) => productView(await servicing.product(request.params.id, request.query.version)),
  );
  app.get(
    '/v1/products/:id/versions',
    { config: { auth: READERS }, schema: { tags, summary: 'Every version of a product', params: idParams, response: { 200: z.object({ data: z.array(productSchema) }) } } },
    async (request) => ({ data: (await servicing.productVersions(request.params.id)).map(productView) }),
  );
  app.post(
    '/v1/products/:id/versions',
    { config: { auth: ADMIN, idempotency: 'optional' }, schema: { tags, summary: 'Publish a new version of a product; booked loans keep theirs', params: idParams, body: versionBody, response: { 201: productSchema } } },
    async (request, reply) => {
      const product = await servicing.newProductVersion(request.params.id, { name: request.body.name, terms: termsFromBody(request.body) }, viewer(request).userId);
      return reply.code(201).send(productView(product));
    },
  );

  // -- loans ----------------------------------------------------------------
  app.post(
    '/v1/loans',
    {
      config: { auth: [...STAFF, 'underwriter', 'borrower'], idempotency: 'required' },
      schema: {
        tags,
        summary: 'Book a loan on a product version (pending disbursement)',
        description: 'A borrower books for themself only; staff name the borrower.',
        body: z.strictObject({
          product_id: z.uuid(),
          product_version: z.number().int().min(1).optional().describe('default: the latest'),
          borrower_id: z.uuid().optional().describe('default: the caller (borrowers)'),
          principal: amount,
          annual_rate: rate,
          term: z.number().int().min(1).max(1200).describe('installments'),
          first_payment_date: isoDate.optional(),
        }),
        response: { 201: loanSchema },
      },
    },
    async (request, reply) => {
      const b = request.body;
      const ctx = context(request);
      const borrowerId = b.borrower_id ?? ctx.viewer.userId;
      const loan = await servicing.createLoan({ productId: b.product_id, productVersion: b.product_version, borrowerId, principal: b.principal, annualRate: b.annual_rate, term: b.term, firstPaymentDate: b.first_payment_date }, ctx);
      return reply.code(201).header('location', `/v1/loans/${loan.id}`).send(loanView(loan));
    },
  );
  app.get(
    '/v1/loans',
    {
      config: { auth: WITH_BORROWER },
      schema: {
        tags,
        summary: 'Loans, oldest first; a borrower sees their own',
        querystring: z.strictObject({ ...page, status: z.enum(LOAN_STATUSES).optional(), borrower_id: z.uuid().optional() }),
        response: { 200: z.object({ data: z.array(loanSchema), has_more: z.boolean() }) },
      },
    },
    async (request) => {
      const q = request.query;
      const result = await servicing.loans(viewer(request), { status: q.status, borrowerId: q.borrower_id, limit: q.limit, startingAfter: q.starting_after });
      return { data: result.data.map(loanView), has_more: result.hasMore };
    },
  );
  app.get(
    '/v1/loans/:id',
    { config: { auth: WITH_BORROWER }, schema: { tags, summary: 'A loan: status, balances by bucket, days past due, next due', params: idParams, response: { 200: loanSchema } } },
    async (request) => loanView(await servicing.loan(request.params.id, viewer(request))),
  );
  app.get(
    '/v1/loans/:id/schedule',
    {
      config: { auth: WITH_BORROWER },
      schema: {
        tags,
        summary: 'The installments with what each owes and has been paid',
        params: idParams,
        response: {
          200: z.object({
            loan_id: z.uuid(),
            currency: z.string(),
            installments: z.array(
              z.object({
                number: z.number().int(),
                period_start: z.string(),
                due_date: z.string(),
                principal: money,
                interest: money,
                fee: money,
                penalty: money,
                paid: z.object({ principal: money, interest: money, fee: money, penalty: money }),
                outstanding: money,
              }),
            ),
          }),
        },
      },
    },
    async (request) => {
      const loan = await servicing.loan(request.params.id, viewer(request));
      const m = (v: bigint) => formatMoney(v, loan.terms.currency);
      return {
        loan_id: loan.id,
        currency: loan.terms.currency,
        installments: loan.state.installments.map((i) => {
          const o = outstandingOf(i);
          return {
            number: i.number,
            period_start: i.periodStart,
            due_date: i.dueDate,
            principal: m(i.principal),
            interest: m(i.interest),
            fee: m(i.fee),
            penalty: m(i.penalty),
            paid: { principal: m(i.paidPrincipal), interest: m(i.paidInterest), fee: m(i.paidFee), penalty: m(i.paidPenalty) },
            outstanding: m(o.principal + o.interest + o.fee + o.penalty),
          };
        }),
      };
    },
  );
  app.post(
    '/v1/loans/:id/cancellation',
    { config: { auth: STAFF, idempotency: 'optional' }, schema: { tags, summary: 'Cancel a loan not yet disbursed', params: idParams, response: { 200: loanSchema } } },
    async (request) => loanView(await servicing.cancel(request.params.id, context(request))),
  );

  // -- money ------------------------------------------------------------------
  app.post(
    '/v1/loans/:id/disbursements',
    {
      config: moneyMoving(STAFF),
      schema: {
        tags,
        summary: 'Disburse the loan (or a further tranche, when the product allows)',
        params: idParams,
        body: z.strictObject({ amount: amount.optional().describe('default: the whole amount left'), date: isoDate.optional().describe('value date; default the business date') }),
        response: { 201: commandResponse },
      },
    },
    async (request, reply) => sendCommand(reply, await servicing.disburse(request.params.id, request.body, context(request))),
  );
  app.post(
    '/v1/loans/:id/payments',
    {
      config: moneyMoving(PAYERS),
      schema: {
        tags,
        summary: 'Post a payment; the answer explains where every cent went',
        description: 'On a charged-off loan the payment is a recovery. A value date before the date the loan has reached replays the loan from its nearest checkpoint and posts the difference.',
        params: idParams,
        body: z.strictObject({
          amount,
          date: isoDate.optional().describe('value date; default the business date'),
          overpayment: z.enum(OVERPAYMENT_MODES).optional().describe("what to do with money above what is due; default the product's"),
        }),
        response: { 201: commandResponse },
      },
    },
    async (request, reply) => sendCommand(reply, await servicing.pay(request.params.id, request.body, context(request))),
  );
  app.post(
    '/v1/loans/:id/charges',
    {
      config: moneyMoving(STAFF),
      schema: { tags, summary: 'Charge a fee to the loan', params: idParams, body: z.strictObject({ amount, date: isoDate.optional(), description: reason }), response: { 201: commandResponse } },
    },
    async (request, reply) => sendCommand(reply, await servicing.charge(request.params.id, request.body, context(request))),
  );
  app.post(
    '/v1/loans/:id/charge-off',
    { config: moneyMoving(STAFF), schema: { tags, summary: 'Charge the loan off', params: idParams, body: z.strictObject({ date: isoDate.optional(), reason }), response: { 201: commandResponse } } },
    async (request, reply) => sendCommand(reply, await servicing.chargeOff(request.params.id, request.body, context(request))),
  );
  app.post(
    '/v1/loans/:id/write-off',
    { config: moneyMoving(ADMIN), schema: { tags, summary: 'Write the loan off (final; no recoveries)', params: idParams, body: z.strictObject({ date: isoDate.optional(), reason }), response: { 201: commandResponse } } },
    async (request, reply) => sendCommand(reply, await servicing.writeOff(request.params.id, request.body, context(request))),
  );
  app.post(
    '/v1/loans/:id/transactions/:transaction_id/reversal',
    {
      config: moneyMoving(STAFF),
      schema: {
        tags,
        summary: 'Reverse a repayment, recovery or fee',
        description: 'The loan is replayed without the transaction from the checkpoint before it; the difference is posted as a new journal entry.',
        params: z.strictObject({ id: z.uuid(), transaction_id: z.uuid() }),
        body: z.strictObject({ reason }),
        response: { 201: commandResponse },
      },
    },
    async (request, reply) => sendCommand(reply, await servicing.reverse(request.params.id, request.params.transaction_id, request.body, context(request))),
  );
  app.get(
    '/v1/loans/:id/transactions',
    {
      config: { auth: WITH_BORROWER },
      schema: { tags, summary: 'The loan’s transactions in posting order', params: idParams, querystring: z.strictObject(page), response: { 200: z.object({ data: z.array(transactionSchema), has_more: z.boolean() }) } },
    },
    async (request) => {
      const result = await servicing.transactions(request.params.id, viewer(request), { limit: request.query.limit, startingAfter: request.query.starting_after });
      return { data: result.data.map(transactionView), has_more: result.hasMore };
    },
  );
  app.get(
    '/v1/loans/:id/payoff-quote',
    {
      config: { auth: WITH_BORROWER },
      schema: {
        tags,
        summary: 'What pays the loan off on a date',
        params: idParams,
        querystring: z.strictObject({ as_of: isoDate.optional().describe('default: the business date') }),
        response: { 200: z.object({ loan_id: z.uuid(), as_of: z.string(), currency: z.string(), principal: money, interest: money, fees: money, penalties: money, credit_balance: money, total: money }) },
      },
    },
    async (request) => {
      const q = await servicing.payoffQuote(request.params.id, viewer(request), request.query.as_of);
      const m = (v: bigint) => formatMoney(v, q.currency);
      return { loan_id: request.params.id, as_of: q.asOf, currency: q.currency, principal: m(q.principal), interest: m(q.interest), fees: m(q.fees), penalties: m(q.penalties), credit_balance: m(q.credit), total: m(q.total) };
    },
  );
}
