/**
 * Properties of the loan fold (pure, no database): the ledger vector always balances,
 * no bucket goes negative, principal agrees three ways, advancing in steps equals
 * advancing at once (end of day may skip days), and a payoff quote pays off.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ALLOCATION_STRATEGY_NAMES, OVERPAYMENT_MODES, addDays, formatDate, parseDate } from '../../src/engine/index.js';
import {
  advance,
  applyEvent,
  endOfDay,
  glOf,
  newLoanState,
  outstandingOf,
  payoffQuote,
  principalOutstanding,
  type LoanEvent,
  type LoanState,
} from '../../src/servicing/loan-state.js';
import { stateFromJson, stateJsonText } from '../../src/servicing/loan-state-json.js';
import type { LoanTerms } from '../../src/servicing/model.js';

const START = '2026-01-15';
const dateAt = (offset: number) => formatDate(addDays(parseDate(START), offset));

const termsArb: fc.Arbitrary<LoanTerms> = fc.record({
  principal: fc.bigInt({ min: 10_000n, max: 100_000_000n }),
  rate: fc.integer({ min: 0, max: 3000 }),
  term: fc.integer({ min: 1, max: 36 }),
  strategy: fc.constantFrom(...ALLOCATION_STRATEGY_NAMES),
  overpayment: fc.constantFrom(...OVERPAYMENT_MODES),
  dayCount: fc.constantFrom('30/360' as const, 'ACT/365F' as const, 'ACT/ACT ISDA' as const),
  lateFee: fc.option(fc.integer({ min: 0, max: 15 }), { nil: null }),
  origination: fc.boolean(),
}).map((r) => ({
  currency: 'USD',
  interestMethod: 'declining_balance',
  amortization: 'equal_installments',
  dayCount: r.dayCount,
  frequency: 'monthly',
  interestRounding: 'half_even',
  paymentRounding: 'half_up',
  allocationStrategy: r.strategy,
  overpayment: r.overpayment,
  originationFee: r.origination ? { kind: 'percent', rate: '0.01' } : null,
  lateFee: r.lateFee === null ? null : { fee: { kind: 'fixed', amount: 2500n }, graceDays: r.lateFee },
  delinquencyBuckets: [{ name: '1-30', minDays: 1 }],
  chargeOffDays: 120,
  minAmount: 1n,
  maxAmount: 10n ** 12n,
  minTerm: 1,
  maxTerm: 480,
  minRate: '0',
  maxRate: '1',
  multiTranche: false,
  principal: r.principal,
  annualRate: (r.rate / 10_000).toString(),
  term: r.term,
  firstPaymentDate: null,
}));

type Step = { kind: 'pay'; days: number; share: number } | { kind: 'fee'; days: number; amount: bigint } | { kind: 'eod'; days: number } | { kind: 'charge_off'; days: number };
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('pay' as const), days: fc.integer({ min: 0, max: 45 }), share: fc.integer({ min: 1, max: 2000 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('fee' as const), days: fc.integer({ min: 0, max: 30 }), amount: fc.bigInt({ min: 1n, max: 10_000n }) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('eod' as const), days: fc.integer({ min: 1, max: 40 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('charge_off' as const), days: fc.integer({ min: 0, max: 10 }) }) },
);

function checkInvariants(state: LoanState, terms: LoanTerms): void {
  expect(stateFromJson(JSON.parse(stateJsonText(state)))).toEqual(state);
  const gl = glOf(state, terms);
  expect(Object.values(gl).reduce((a, b) => a + b, 0n)).toBe(0n);
  expect(state.credit >= 0n).toBe(true);
  for (const account of ['loans_receivable_principal', 'interest_receivable', 'fees_receivable'] as const) expect(gl[account] >= 0n, account).toBe(true);
  for (const i of state.installments) {
    const o = outstandingOf(i);
    for (const [k, v] of Object.entries(o)) expect(v >= 0n, `installment ${i.number} ${k}`).toBe(true);
  }
  expect(gl.loans_receivable_principal).toBe(principalOutstanding(state));
  if (state.status === 'active' || state.status === 'paid_off' || state.status === 'overpaid') {
    const scheduled = state.installments.reduce((sum, i) => sum + outstandingOf(i).principal, 0n);
    expect(scheduled).toBe(gl.loans_receivable_principal);
  }
  // Cash: disbursed out, received in; what was received is applied, recovered or owed back.
  expect(gl.cash_clearing).toBe(state.received - state.disbursed);
  const paid = state.paid.principal + state.paid.interest + state.paid.fee + state.paid.penalty;
  expect(state.received).toBe(paid + state.recovered + state.credit);
}

function run(terms: LoanTerms, steps: readonly Step[]): LoanState {
  let seq = 1;
  let state = applyEvent(newLoanState(), terms, { type: 'disbursement', seq: seq++, date: START, amount: terms.principal }).state;
  let day = 0;
  checkInvariants(state, terms);
  for (const step of steps) {
    day += step.days;
    const date = dateAt(day);
    let event: LoanEvent | null = null;
    if (step.kind === 'eod') {
      state = endOfDay(state, terms, date, seq).state;
      seq = 1_000 + seq;
    } else if (state.status === 'active') {
      if (step.kind === 'pay') event = { type: 'repayment', seq: seq++, date, amount: (terms.principal * BigInt(step.share)) / 10_000n + 1n };
      else if (step.kind === 'fee') event = { type: 'fee', seq: seq++, date, amount: step.amount };
      else event = { type: 'charge_off', seq: seq++, date, policy: false };
    } else if (state.status === 'charged_off' && step.kind === 'pay') {
      event = { type: 'recovery', seq: seq++, date, amount: 1_000n * BigInt(step.share) };
    }
    if (event !== null) state = applyEvent(state, terms, event).state;
    checkInvariants(state, terms);
  }
  return state;
}

describe('loan state (pure fold)', () => {
  it('balances, never goes negative, and agrees on principal after every step of random histories', () => {
    fc.assert(fc.property(termsArb, fc.array(stepArb, { maxLength: 40 }), (terms, steps) => void run(terms, steps)), { numRuns: 300 });
  });

  it('advancing in steps equals advancing at once, so end of day may skip days', () => {
    fc.assert(
      fc.property(termsArb, fc.array(stepArb, { maxLength: 15 }), fc.integer({ min: 1, max: 200 }), fc.integer({ min: 1, max: 200 }), (terms, steps, a, b) => {
        const state = run(terms, steps);
        if (state.asOf === null) return;
        const from = parseDate(state.asOf);
        const mid = formatDate(addDays(from, a));
        const end = formatDate(addDays(from, a + b));
        expect(advance(advance(state, terms, mid), terms, end)).toEqual(advance(state, terms, end));
      }),
      { numRuns: 200 },
    );
  });

  it('paying the payoff quote pays the loan off, to the cent', () => {
    fc.assert(
      fc.property(termsArb, fc.array(stepArb, { maxLength: 15 }), fc.integer({ min: 0, max: 60 }), (terms, steps, later) => {
        const state = run(terms, steps);
        if (state.status !== 'active' || state.asOf === null) return;
        const date = formatDate(addDays(parseDate(state.asOf), later));
        const quote = payoffQuote(state, terms, date);
        if (quote.total === 0n) return;
        const after = applyEvent(state, terms, { type: 'repayment', seq: 9_999, date, amount: quote.total }).state;
        expect(after.status).toBe('paid_off');
        const gl = glOf(after, terms);
        expect([gl.loans_receivable_principal, gl.interest_receivable, gl.fees_receivable, after.credit]).toEqual([0n, 0n, 0n, 0n]);
      }),
      { numRuns: 200 },
    );
  });
});
