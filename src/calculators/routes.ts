/**
 * Calculator endpoints: the engine over HTTP, for any signed-in user. Nothing is
 * stored; every answer is a pure function of the request body. Amounts are
 * decimal strings (JSON numbers are accepted on input), rates are annual
 * fractions ("0.06" is 6 %).
 */
import { z } from 'zod';
import type { App } from '../platform/http.js';
import { ROLES } from '../identity/model.js';
import {
  AMORTIZATIONS,
  DAY_COUNT_CONVENTIONS,
  FREQUENCIES,
  INTEREST_METHODS,
  ROUNDING_MODES,
  UNIT_PERIODS,
  appendixJApr,
  buildSchedule,
  dayCount,
  formatMoney,
  parseDecimal,
  parseMoney,
  toDecimalString,
  xirr,
  xnpv,
  EngineError,
  type Schedule,
} from '../engine/index.js';
import { withEngine } from './errors.js';

const EVERYONE = ROLES;
const tags = ['calculators'];

/** A decimal given as a string or a JSON number; bounded so a 10,000-digit value is refused before any arithmetic. */
const decimal = z
  .union([z.string().max(40), z.number().finite()])
  .transform((value) => (typeof value === 'number' ? String(value) : value))
  .refine((value) => /^-?\d+(\.\d+)?$/.test(value), 'must be a decimal number such as "1250.00" (no exponent)');
const amount = decimal.describe('decimal string, e.g. "1250.00"');
const rate = decimal.describe('annual fraction as a decimal string: "0.06" is 6 %');
const isoDate = z.iso.date().describe('YYYY-MM-DD');
const currency = z.string().regex(/^[A-Z]{3}$/, 'must be an ISO 4217 code such as "USD"');
const count = (max: number) => z.number().int().min(0).max(max);

const money = z.string().describe('decimal string in the currency\'s minor units');

const scheduleBody = z.strictObject({
  principal: amount,
  currency,
  annual_rate: rate,
  term: z.number().int().min(1).max(1200).describe('number of installments'),
  frequency: z.enum(FREQUENCIES),
  disbursement_date: isoDate,
  first_payment_date: isoDate.optional().describe('default: one regular period after disbursement; another date makes an odd first period'),
  interest_method: z.enum(INTEREST_METHODS).default('declining_balance'),
  amortization: z.enum(AMORTIZATIONS).default('equal_installments'),
  day_count: z.enum(DAY_COUNT_CONVENTIONS).default('30/360'),
  rounding: z.enum(ROUNDING_MODES).default('half_up').describe('rounding of each period\'s interest'),
  payment_rounding: z.enum(ROUNDING_MODES).default('half_up').describe('rounding of the level payment'),
  payment_increment: amount.optional().describe('round the payment to a multiple of this amount (e.g. "1.00"); default one minor unit'),
  interest_only_periods: count(1200).default(0),
  grace_principal_periods: count(1200).default(0).describe('payment holiday at the start; its interest is capitalized'),
  balloon: amount.default('0').describe('principal left for the last installment'),
  end_of_month: z.boolean().default(true).describe('keep due dates on the last day of the month when the first one is'),
});

const installmentSchema = z.object({
  number: z.number().int(),
  kind: z.enum(['grace', 'interest_only', 'amortizing']),
  period_start: z.string(),
  due_date: z.string(),
  days: z.number().int().describe('day count numerator of the period'),
  principal: money,
  interest: money,
  capitalized_interest: money,
  payment: money,
  balance: money,
});

const scheduleResponse = z
  .object({
    currency: z.string(),
    payment: money.describe('the regular installment'),
    installments: z.array(installmentSchema),
    total_principal: money,
    total_interest: money,
    total_payments: money,
    apr: z.string().describe('Regulation Z Appendix J APR of the schedule, annual fraction'),
  })
  .meta({ id: 'Schedule' });

const datedAmount = z.strictObject({ date: isoDate, amount });

const aprBody = z
  .strictObject({
    currency: currency.default('USD').describe('the currency of the amounts (for their decimal places)'),
    advances: z.array(datedAmount).min(1).max(1000),
    payments: z.array(datedAmount).max(5000).default([]),
    payment_series: z
      .array(z.strictObject({ first_date: isoDate, amount, count: z.number().int().min(1).max(5000), frequency: z.enum(UNIT_PERIODS).exclude(['daily']) }))
      .max(100)
      .default([]),
    unit_period: z.enum(UNIT_PERIODS).optional().describe('default: chosen by Appendix J (b)(4)'),
  })
  .refine((body) => body.payments.length + body.payment_series.length > 0, { message: 'give payments or payment_series', path: ['payments'] });

const signedFlow = z.strictObject({ date: isoDate, amount });
const cashflows = z.array(signedFlow).min(2).max(10_000);

function view(schedule: Schedule): Omit<z.infer<typeof scheduleResponse>, 'apr'> {
  const c = schedule.currency;
  return {
    currency: c,
    payment: formatMoney(schedule.payment, c),
    installments: schedule.installments.map((i) => ({
      number: i.number,
      kind: i.kind,
      period_start: i.periodStart,
      due_date: i.dueDate,
      days: i.days,
      principal: formatMoney(i.principal, c),
      interest: formatMoney(i.interest, c),
      capitalized_interest: formatMoney(i.capitalizedInterest, c),
      payment: formatMoney(i.payment, c),
      balance: formatMoney(i.balance, c),
    })),
    total_principal: formatMoney(schedule.totalPrincipal, c),
    total_interest: formatMoney(schedule.totalInterest, c),
    total_payments: formatMoney(schedule.totalPayments, c),
  };
}

/** A float result as a decimal string; never "NaN" or an exponent. */
function floatString(value: number, places: number): string {
  return value.toFixed(places);
}

export function registerCalculatorRoutes(app: App): void {
  app.post(
    '/v1/calculators/schedule',
    {
      config: { auth: EVERYONE },
      schema: {
        tags,
        summary: 'Repayment schedule of a loan, exact to the minor unit, with its Appendix J APR',
        body: scheduleBody,
        response: { 200: scheduleResponse },
      },
    },
    async (request) => {
      const b = request.body;
      return withEngine(() => {
        const principal = parseMoney(b.principal, b.currency, 'principal');
        const rateValue = parseDecimal(b.annual_rate, 'annual_rate');
        if (rateValue.num > rateValue.den * 10n) throw new EngineError('invalid_rate', 'annual_rate must be at most 10 (1,000 %)', 'annual_rate');
        const schedule = buildSchedule({
          principal,
          currency: b.currency,
          annualRate: rateValue,
          term: b.term,
          frequency: b.frequency,
          disbursementDate: b.disbursement_date,
          firstPaymentDate: b.first_payment_date,
          interestMethod: b.interest_method,
          amortization: b.amortization,
          dayCount: b.day_count,
          interestRounding: b.rounding,
          paymentRounding: b.payment_rounding,
          paymentIncrement: b.payment_increment === undefined ? undefined : parseMoney(b.payment_increment, b.currency, 'payment_increment'),
          interestOnlyPeriods: b.interest_only_periods,
          gracePrincipalPeriods: b.grace_principal_periods,
          balloon: parseMoney(b.balloon, b.currency, 'balloon'),
          endOfMonth: b.end_of_month,
        });
        const payments = schedule.installments.filter((i) => i.payment > 0n).map((i) => ({ date: i.dueDate, amount: i.payment }));
        const apr = appendixJApr({ advances: [{ date: b.disbursement_date, amount: principal }], payments });
        return { ...view(schedule), apr: toDecimalString(apr.apr, 10) };
      });
    },
  );

  app.post(
    '/v1/calculators/apr',
    {
      config: { auth: EVERYONE },
      schema: {
        tags,
        summary: 'APR by the Regulation Z Appendix J actuarial method',
        description:
          'Advances and payments are dated amounts; `payment_series` expands equal payments on a calendar. The unit period is chosen per Appendix J (b)(4) unless given. `regular` tells which §1026.22(a) tolerance applies (1/8 point regular, 1/4 point irregular).',
        body: aprBody,
        response: {
          200: z
            .object({
              apr: z.string().describe('annual fraction, 10 decimals'),
              apr_percent: z.string().describe('the APR in percent, 8 decimals'),
              unit_period: z.string(),
              unit_periods_per_year: z.number(),
              unit_period_rate: z.string(),
              regular: z.boolean(),
              tolerance_percentage_points: z.string().describe('"0.125" regular, "0.25" irregular'),
            })
            .meta({ id: 'Apr' }),
        },
      },
    },
    async (request) => {
      const b = request.body;
      return withEngine(() => {
        const result = appendixJApr({
          advances: b.advances.map((a, i) => ({ date: a.date, amount: parseMoney(a.amount, b.currency, `advances[${i}].amount`) })),
          payments: b.payments.map((p, i) => ({ date: p.date, amount: parseMoney(p.amount, b.currency, `payments[${i}].amount`) })),
          paymentSeries: b.payment_series.map((s, i) => ({
            firstDate: s.first_date,
            amount: parseMoney(s.amount, b.currency, `payment_series[${i}].amount`),
            count: s.count,
            frequency: s.frequency,
          })),
          unitPeriod: b.unit_period,
        });
        return {
          apr: toDecimalString(result.apr, 10),
          apr_percent: toDecimalString({ num: result.apr.num * 100n, den: result.apr.den }, 8),
          unit_period: result.unitPeriod,
          unit_periods_per_year: result.unitPeriodsPerYear,
          unit_period_rate: floatString(result.unitPeriodRate, 12),
          regular: result.regular,
          tolerance_percentage_points: result.regular ? '0.125' : '0.25',
        };
      });
    },
  );

  app.post(
    '/v1/calculators/xirr',
    {
      config: { auth: EVERYONE },
      schema: {
        tags,
        summary: 'XIRR with Excel semantics: the annual rate at which the dated cash flows have zero XNPV (ACT/365 from the first date)',
        description: 'A float analytic, not money of record. Signed amounts: advances negative, receipts positive (or the reverse).',
        body: z.strictObject({ cashflows, guess: decimal.optional() }),
        response: { 200: z.object({ rate: z.string().describe('annual fraction, 10 decimals') }).meta({ id: 'Xirr' }) },
      },
    },
    async (request) =>
      withEngine(() => {
        const flows = request.body.cashflows.map((f) => ({ date: f.date, amount: Number(f.amount) }));
        const guess = request.body.guess === undefined ? undefined : Number(request.body.guess);
        return { rate: floatString(xirr(flows, guess), 10) };
      }),
  );

  app.post(
    '/v1/calculators/xnpv',
    {
      config: { auth: EVERYONE },
      schema: {
        tags,
        summary: 'XNPV with Excel semantics: cash flows discounted at an annual rate over ACT/365 from the first date',
        description: 'A float analytic, not money of record.',
        body: z.strictObject({ rate, cashflows }),
        response: { 200: z.object({ npv: z.string().describe('6 decimals') }).meta({ id: 'Xnpv' }) },
      },
    },
    async (request) =>
      withEngine(() => {
        const flows = request.body.cashflows.map((f) => ({ date: f.date, amount: Number(f.amount) }));
        return { npv: floatString(xnpv(Number(request.body.rate), flows), 6) };
      }),
  );

  app.post(
    '/v1/calculators/day-count',
    {
      config: { auth: EVERYONE },
      schema: {
        tags,
        summary: 'Days and year fraction between two dates under an ISDA 2006 §4.16 day count convention',
        body: z.strictObject({
          convention: z.string().max(40).describe(DAY_COUNT_CONVENTIONS.join(', ')),
          start: isoDate,
          end: isoDate,
          termination_date: isoDate.optional().describe('30E/360 ISDA: the termination date'),
          reference_start: isoDate.optional().describe('ACT/ACT ISMA: start of the regular period'),
          reference_end: isoDate.optional().describe('ACT/ACT ISMA: end of the regular period'),
          frequency: z.number().int().optional().describe('ACT/ACT ISMA: regular periods per year (1, 2, 3, 4, 6, 12)'),
        }),
        response: {
          200: z
            .object({
              convention: z.string(),
              days: z.number().int(),
              year_fraction: z.string().describe('15 decimals, rounded half-even'),
              year_fraction_exact: z.string().describe('the exact fraction, "numerator/denominator"'),
            })
            .meta({ id: 'DayCount' }),
        },
      },
    },
    async (request) =>
      withEngine(() => {
        const b = request.body;
        const result = dayCount(b.convention, b.start, b.end, {
          terminationDate: b.termination_date,
          referenceStart: b.reference_start,
          referenceEnd: b.reference_end,
          frequency: b.frequency,
        });
        return {
          convention: b.convention,
          days: result.days,
          year_fraction: toDecimalString(result.yearFraction, 15),
          year_fraction_exact: `${result.yearFraction.num}/${result.yearFraction.den}`,
        };
      }),
  );
}
