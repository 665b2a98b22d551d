import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, createTestApp, problemOf, type TestApp } from '../support/app.js';
import { vectorById } from '../support/vectors.js';

let t: TestApp;
let borrower: string;

beforeAll(async () => {
  t = await createTestApp();
  borrower = (await t.userWithRole('borrower')).token;
});
afterAll(async () => t.close());

async function post(url: string, payload: unknown, token = borrower) {
  return t.app.inject({ method: 'POST', url, payload: payload as Record<string, unknown>, headers: bearer(token) });
}

interface ScheduleBody {
  payment: string;
  currency: string;
  installments: { number: number; due_date: string; principal: string; interest: string; payment: string; balance: string }[];
  total_interest: string;
  total_payments: string;
  apr: string;
}

describe('POST /v1/calculators/schedule', () => {
  it('answers the 200k/6 %/360 vector to the cent, amounts as decimal strings, with the Appendix J APR', async () => {
    const v = vectorById('amort-200k-6pct-30y-cents');
    const res = await post('/v1/calculators/schedule', {
      principal: '200000.00',
      currency: 'USD',
      annual_rate: '0.06',
      term: 360,
      frequency: 'monthly',
      disbursement_date: '2026-01-15',
    });
    expect(res.statusCode).toBe(200);
    const body = res.json<ScheduleBody>();
    expect(body.payment).toBe('1199.10');
    expect(body.installments).toHaveLength(360);
    expect(body.installments[0]).toMatchObject({ number: 1, due_date: '2026-02-15', principal: '199.10', interest: '1000.00', payment: '1199.10', balance: '199800.90' });
    expect(body.installments[359]).toMatchObject({ payment: '1200.14', interest: '5.97', principal: '1194.17', balance: '0.00' });
    expect(body.total_interest).toBe((v.expected as { total_interest: number }).total_interest.toFixed(2));
    expect(body.total_payments).toBe('431677.04');
    // A regular monthly loan at a nominal 6 % has an APR of 6 % (to within the payment's rounding).
    expect(Math.abs(Number(body.apr) - 0.06)).toBeLessThan(1e-5);
    expect(body.apr).toMatch(/^0\.\d{10}$/);
  });

  it('takes JSON numbers for amounts and every option', async () => {
    const res = await post('/v1/calculators/schedule', {
      principal: 12000,
      currency: 'USD',
      annual_rate: 0.12,
      term: 12,
      frequency: 'monthly',
      disbursement_date: '2026-01-10',
      first_payment_date: '2026-03-01',
      interest_method: 'declining_balance',
      amortization: 'equal_principal',
      day_count: 'ACT/365F',
      rounding: 'half_even',
      payment_rounding: 'up',
      payment_increment: '0.01',
      interest_only_periods: 1,
      grace_principal_periods: 1,
      balloon: '1000.00',
      end_of_month: false,
    });
    expect(res.statusCode).toBe(200);
    const body = res.json<ScheduleBody>();
    expect(body.installments[0]).toMatchObject({ due_date: '2026-03-01', payment: '0.00' });
    expect(body.installments[11]!.balance).toBe('0.00');
  });

  it('JPY amounts have no decimals', async () => {
    const res = await post('/v1/calculators/schedule', { principal: '1000000', currency: 'JPY', annual_rate: '0.03', term: 12, frequency: 'monthly', disbursement_date: '2026-01-15' });
    expect(res.statusCode).toBe(200);
    expect(res.json<ScheduleBody>().payment).toBe('84694');
  });

  it.each([
    ['a negative term', { term: -1 }, '#/term'],
    ['a fractional term', { term: 1.5 }, '#/term'],
    ['an unknown frequency', { frequency: 'fortnightly' }, '#/frequency'],
    ['an unknown day count', { day_count: 'ACT/999' }, '#/day_count'],
    ['an exponent', { principal: '1e5' }, '#/principal'],
    ['a 10,000-digit principal', { principal: '9'.repeat(10_000) }, '#/principal'],
    ['NaN', { annual_rate: 'NaN' }, '#/annual_rate'],
    ['an unknown field', { colour: 'red' }, '#/colour'],
    ['a missing field', { disbursement_date: undefined }, '#/disbursement_date'],
    ['an impossible date', { disbursement_date: '2026-02-30' }, '#/disbursement_date'],
  ])('rejects %s with validation_failed naming the field', async (_name, patch, pointer) => {
    const res = await post('/v1/calculators/schedule', { principal: '1000.00', currency: 'USD', annual_rate: '0.05', term: 12, frequency: 'monthly', disbursement_date: '2026-01-15', ...patch });
    expect(res.statusCode).toBe(400);
    expect(res.headers['content-type']).toContain('application/problem+json');
    const problem = problemOf(res) as { code: string; errors: { pointer: string }[] };
    expect(problem.code).toBe('validation_failed');
    expect(problem.errors.map((e) => e.pointer)).toContain(pointer);
    expect(res.body).not.toMatch(/at .*\.ts:\d+/);
  });

  it.each([
    ['more decimals than the currency has', { principal: '10.001' }, 'validation_failed', '#/principal'],
    ['an unknown currency', { currency: 'XYZ' }, 'validation_failed', '#/currency'],
    ['a first payment before disbursement', { first_payment_date: '2026-01-01' }, 'date_order', '#/first_payment_date'],
    ['a balloon as large as the principal', { balloon: '1000.00' }, 'validation_failed', '#/balloon'],
    ['a negative rate', { annual_rate: '-0.01' }, 'validation_failed', '#/annual_rate'],
    ['an absurd rate', { annual_rate: '1000' }, 'validation_failed', '#/annual_rate'],
    ['no amortizing installment left', { interest_only_periods: 12 }, 'validation_failed', '#/interest_only_periods'],
  ])('rejects %s from the engine with a problem naming the field', async (_name, patch, code, pointer) => {
    const res = await post('/v1/calculators/schedule', { principal: '1000.00', currency: 'USD', annual_rate: '0.05', term: 12, frequency: 'monthly', disbursement_date: '2026-01-15', ...patch });
    expect(res.statusCode).toBe(400);
    const problem = problemOf(res) as { code: string; errors: { pointer: string }[] };
    expect(problem.code).toBe(code);
    expect(problem.errors[0]?.pointer).toBe(pointer);
  });

  it('needs a signed-in caller; every role may call it', async () => {
    const anonymous = await t.app.inject({ method: 'POST', url: '/v1/calculators/schedule', payload: {} });
    expect(anonymous.statusCode).toBe(401);
    const analyst = (await t.userWithRole('analyst')).token;
    const res = await post('/v1/calculators/day-count', { convention: 'ACT/360', start: '2026-01-01', end: '2026-01-31' }, analyst);
    expect(res.statusCode).toBe(200);
  });
});

describe('POST /v1/calculators/apr', () => {
  it('reproduces Appendix J (c)(1)(i): 5,000 advanced, 24 × 230 monthly → 9.69 %', async () => {
    const v = vectorById('regz-appj-c1-i');
    const inputs = v.inputs as { amount_advanced: number; advance_date: string; payment: number; payments: number; first_payment_date: string };
    const res = await post('/v1/calculators/apr', {
      advances: [{ date: inputs.advance_date, amount: String(inputs.amount_advanced) }],
      payment_series: [{ first_date: inputs.first_payment_date, amount: inputs.payment, count: inputs.payments, frequency: 'monthly' }],
    });
    expect(res.statusCode).toBe(200);
    const body = res.json<{ apr: string; apr_percent: string; unit_period: string; unit_periods_per_year: number; regular: boolean; tolerance_percentage_points: string }>();
    expect(Number(body.apr_percent).toFixed(2)).toBe((v.expected as { apr_percent: number }).apr_percent.toFixed(2));
    expect(body).toMatchObject({ unit_period: 'monthly', unit_periods_per_year: 12, regular: true, tolerance_percentage_points: '0.125' });
    expect(body.apr).toMatch(/^0\.\d{10}$/);
  });

  it('takes explicit payments and an explicit unit period', async () => {
    const payments = Array.from({ length: 12 }, (_, i) => ({ date: `2027-${String(i + 1).padStart(2, '0')}-01`, amount: '88.85' }));
    const res = await post('/v1/calculators/apr', { advances: [{ date: '2026-12-01', amount: '1000.00' }], payments, unit_period: 'monthly' });
    expect(res.statusCode).toBe(200);
    // 12 × 88.85 on 1,000 is a 12.0 % nominal rate (PMT(1 %, 12, 1000) = 88.85)
    expect(Math.abs(Number(res.json<{ apr: string }>().apr) - 0.12)).toBeLessThan(2e-4);
  });

  it('refuses payments that cannot repay the advance, and dates out of order', async () => {
    const short = await post('/v1/calculators/apr', { advances: [{ date: '2026-01-01', amount: '1000.00' }], payments: [{ date: '2026-02-01', amount: '500.00' }] });
    expect(short.statusCode).toBe(422);
    expect(problemOf(short).code).toBe('no_solution');
    const early = await post('/v1/calculators/apr', { advances: [{ date: '2026-01-01', amount: '1000.00' }], payments: [{ date: '2025-12-01', amount: '1100.00' }] });
    expect(early.statusCode).toBe(400);
    expect(['date_order', 'validation_failed']).toContain(problemOf(early).code);
    const none = await post('/v1/calculators/apr', { advances: [{ date: '2026-01-01', amount: '1000.00' }] });
    expect(none.statusCode).toBe(400);
    expect(problemOf(none).code).toBe('validation_failed');
    const unknown = await post('/v1/calculators/apr', { advances: [{ date: '2026-01-01', amount: '1000.00' }], payments: [{ date: '2026-02-01', amount: '1100.00' }], unit_period: 'hourly' });
    expect((problemOf(unknown) as { errors: { pointer: string }[] }).errors[0]?.pointer).toBe('#/unit_period');
  });
});

describe('POST /v1/calculators/xirr and /xnpv', () => {
  const v = vectorById('excel-xirr-example');
  const inputs = v.inputs as { values: number[]; dates: string[] };
  const cashflows = inputs.values.map((amount, i) => ({ date: inputs.dates[i], amount: String(amount) }));

  it('XIRR matches the Excel documentation example', async () => {
    const res = await post('/v1/calculators/xirr', { cashflows });
    expect(res.statusCode).toBe(200);
    expect(Math.abs(Number(res.json<{ rate: string }>().rate) - (v.expected as { xirr: number }).xirr)).toBeLessThan(1e-8);
  });

  it('XNPV matches the Excel documentation example', async () => {
    const x = vectorById('excel-xnpv-example');
    const res = await post('/v1/calculators/xnpv', { rate: '0.09', cashflows });
    expect(res.statusCode).toBe(200);
    expect(Math.abs(Number(res.json<{ npv: string }>().npv) - (x.expected as { xnpv: number }).xnpv)).toBeLessThan(5e-5);
  });

  it('cash flows of one sign have no XIRR: 422 no_solution', async () => {
    const res = await post('/v1/calculators/xirr', { cashflows: [{ date: '2026-01-01', amount: '100' }, { date: '2026-06-01', amount: '100' }] });
    expect(res.statusCode).toBe(422);
    expect(problemOf(res).code).toBe('no_solution');
  });
});

describe('POST /v1/calculators/day-count', () => {
  it('gives days and the exact year fraction', async () => {
    const res = await post('/v1/calculators/day-count', { convention: 'ACT/ACT ISDA', start: '2003-11-01', end: '2004-05-01' });
    expect(res.statusCode).toBe(200);
    const body = res.json<{ days: number; year_fraction: string; year_fraction_exact: string }>();
    // ISDA's own example (EMU and market conventions, 1998): 0.497724380567
    expect(body.days).toBe(182);
    expect(body.year_fraction).toMatch(/^0\.497724380567\d{3}$/);
    // 61 days of 2003 over 365 plus 121 days of 2004 over 366
    expect(body.year_fraction_exact).toBe(`${61 * 366 + 121 * 365}/${365 * 366}`);
  });

  it('30E/360 ISDA takes the termination date; ACT/ACT ISMA the reference period', async () => {
    const isda = await post('/v1/calculators/day-count', { convention: '30E/360 ISDA', start: '2007-08-31', end: '2008-02-29', termination_date: '2008-02-29' });
    expect(isda.json<{ days: number }>().days).toBe(179);
    const isma = await post('/v1/calculators/day-count', { convention: 'ACT/ACT ISMA', start: '2003-11-01', end: '2004-05-01', reference_start: '2003-11-01', reference_end: '2004-05-01', frequency: 2 });
    expect(isma.json<{ year_fraction: string }>().year_fraction).toBe('0.500000000000000');
  });

  it('an unknown convention is unknown_convention; an end before the start is date_order', async () => {
    const unknown = await post('/v1/calculators/day-count', { convention: 'ACT/999', start: '2026-01-01', end: '2026-02-01' });
    expect(unknown.statusCode).toBe(400);
    expect(problemOf(unknown)).toMatchObject({ code: 'unknown_convention', errors: [{ pointer: '#/convention', location: 'body' }] });
    const backwards = await post('/v1/calculators/day-count', { convention: 'ACT/360', start: '2026-02-01', end: '2026-01-01' });
    expect(backwards.statusCode).toBe(400);
    expect(problemOf(backwards)).toMatchObject({ code: 'date_order', errors: [{ pointer: '#/end' }] });
  });
});
