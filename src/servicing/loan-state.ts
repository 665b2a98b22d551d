/**
 * A loan account as a pure fold over its transactions. Every amount comes from the
 * engine (schedule, accrual, allocation, rounding); this module only decides which
 * engine call applies when, and keeps the running totals the ledger is posted from.
 *
 * Semantics (the replay and the incremental path both follow them, so a replay from a
 * checkpoint gives exactly the state the original postings assumed):
 *  - Transactions apply in (value date, sequence) order. Before one applies, the loan
 *    is advanced to its value date: interest is recognized up to that date and any
 *    credit balance pays installments falling due on the way.
 *  - Interest is recognized installment by installment: all of an installment's
 *    interest once its due date is reached, and the engine's cumulative accrual
 *    (`accruedInterest`, on the installment's interest basis) inside its period.
 *  - The ledger is posted from `glOf(state)`: the loan's signed balance in every
 *    account. A command posts the difference between the new and the already posted
 *    vector, so a replay posts only what changed and never edits an entry.
 */
import {
  ALLOCATION_STRATEGIES,
  type AccrualTerms,
  type AllocationLine,
  type AllocationResult,
  type Component,
  type InstallmentDue,
  type OverpaymentMode,
  type ScheduleTerms,
  accruedInterest,
  allocatePayment,
  buildSchedule,
  compareDates,
  divRound,
  formatMoney,
  parseDate,
  parseDecimal,
  toDayNumber,
} from '../engine/index.js';
import type { AccountCode } from '../ledger/model.js';
import type { FeeRule, LoanStatus, LoanTerms, TransactionType } from './model.js';

export interface InstallmentState {
  readonly number: number;
  readonly periodStart: string;
  readonly dueDate: string;
  readonly days: number;
  /** The balance the period's interest is computed on (the original principal under the flat method). */
  readonly basis: bigint;
  readonly principal: bigint;
  readonly interest: bigint;
  readonly fee: bigint;
  readonly penalty: bigint;
  readonly paidPrincipal: bigint;
  readonly paidInterest: bigint;
  readonly paidFee: bigint;
  readonly paidPenalty: bigint;
  readonly lateFeeCharged: boolean;
}

export interface ComponentTotals {
  readonly principal: bigint;
  readonly interest: bigint;
  readonly fee: bigint;
  readonly penalty: bigint;
}

export interface LoanState {
  readonly status: LoanStatus;
  readonly disbursed: bigint;
  readonly firstDisbursementDate: string | null;
  readonly installments: readonly InstallmentState[];
  /** The date the loan has been advanced to (the latest transaction or end of day). */
  readonly asOf: string | null;
  /** Set when interest stops (paid off, charged off, written off): recognized up to here. */
  readonly accrualEnd: string | null;
  /** Cash received: repayments and recoveries. */
  readonly received: bigint;
  /** Applied to the installments, from cash or from the credit balance. */
  readonly paid: ComponentTotals;
  /** Fees and penalties charged. */
  readonly feesCharged: bigint;
  readonly chargedOff: { readonly principal: bigint; readonly interest: bigint; readonly fees: bigint };
  /** Recovered after charge-off (recovery income). */
  readonly recovered: bigint;
  /** Money the lender owes the borrower (overpayments). */
  readonly credit: bigint;
}

export type LoanEvent =
  | { readonly type: 'disbursement'; readonly seq: number; readonly date: string; readonly amount: bigint }
  | { readonly type: 'repayment'; readonly seq: number; readonly date: string; readonly amount: bigint; readonly overpayment?: OverpaymentMode | undefined }
  | { readonly type: 'fee'; readonly seq: number; readonly date: string; readonly amount: bigint }
  | { readonly type: 'late_fee'; readonly seq: number; readonly date: string; readonly installment: number }
  | { readonly type: 'charge_off'; readonly seq: number; readonly date: string; readonly policy: boolean }
  | { readonly type: 'write_off'; readonly seq: number; readonly date: string }
  | { readonly type: 'recovery'; readonly seq: number; readonly date: string; readonly amount: bigint };

/** What a transaction did, for its response and its history. */
export interface EventEffect {
  /** False when a conditional transaction (a late fee, a policy charge-off) no longer applies. */
  readonly applied: boolean;
  readonly amount: bigint;
  /** Applied per component (repayments, recoveries). */
  readonly totals?: Readonly<Record<Component, bigint>>;
  readonly lines?: readonly AllocationLine[];
  /** Overpayment of this transaction kept as a credit balance. */
  readonly creditBalance?: bigint;
  /** Credit balance the loan already had that this transaction used (a payoff); totals = amount + creditApplied − creditBalance. */
  readonly creditApplied?: bigint;
  readonly prepayment?: { readonly mode: string; readonly amount: bigint } | null;
  readonly payoff?: boolean;
  readonly explanation: readonly string[];
}

const ZERO_TOTALS: ComponentTotals = { principal: 0n, interest: 0n, fee: 0n, penalty: 0n };

export function newLoanState(): LoanState {
  return {
    status: 'pending_disbursement',
    disbursed: 0n,
    firstDisbursementDate: null,
    installments: [],
    asOf: null,
    accrualEnd: null,
    received: 0n,
    paid: ZERO_TOTALS,
    feesCharged: 0n,
    chargedOff: { principal: 0n, interest: 0n, fees: 0n },
    recovered: 0n,
    credit: 0n,
  };
}

// ---------------------------------------------------------------------------
// Terms
// ---------------------------------------------------------------------------

function scheduleTerms(terms: LoanTerms, principal: bigint, start: string, term: number, firstPaymentDate: string | undefined): ScheduleTerms {
  return {
    principal,
    currency: terms.currency,
    annualRate: parseDecimal(terms.annualRate, 'annual_rate'),
    term,
    frequency: terms.frequency,
    disbursementDate: start,
    firstPaymentDate,
    interestMethod: terms.interestMethod,
    amortization: terms.amortization,
    dayCount: terms.dayCount,
    interestRounding: terms.interestRounding,
    paymentRounding: terms.paymentRounding,
  };
}

const accrualTermsOf = new WeakMap<LoanTerms, AccrualTerms>();

/** The engine's accrual terms of a loan, parsed once per terms object (a fold calls this per installment). */
function accrualTerms(terms: LoanTerms): AccrualTerms {
  let parsed = accrualTermsOf.get(terms);
  if (parsed === undefined) {
    parsed = { annualRate: parseDecimal(terms.annualRate, 'annual_rate'), dayCount: terms.dayCount, rounding: terms.interestRounding };
    accrualTermsOf.set(terms, parsed);
  }
  return parsed;
}

/** A fee under its rule, on a base amount, rounded like interest. */
export function feeAmount(rule: FeeRule, base: bigint, terms: LoanTerms): bigint {
  if (rule.kind === 'fixed') return rule.amount;
  const rate = parseDecimal(rule.rate, 'rate');
  return divRound(base * rate.num, rate.den, terms.interestRounding);
}

/**
 * Whether the first schedule, disbursed on `date`, capitalizes interest (a first period so
 * long that its interest exceeds the installment). Servicing refuses such a disbursement:
 * the fold keeps capitalized interest out of principal, so it cannot service one yet.
 */
export function capitalizesInterest(terms: LoanTerms, amount: bigint, date: string): boolean {
  const first = terms.firstPaymentDate !== null && day(terms.firstPaymentDate) > day(date) ? terms.firstPaymentDate : undefined;
  return buildSchedule(scheduleTerms(terms, amount, date, terms.term, first)).totalCapitalizedInterest > 0n;
}

function scheduleInstallments(terms: LoanTerms, principal: bigint, start: string, term: number, firstPaymentDate: string | undefined, firstNumber: number): InstallmentState[] {
  const schedule = buildSchedule(scheduleTerms(terms, principal, start, term, firstPaymentDate));
  const flat = terms.interestMethod === 'flat';
  let basis = principal;
  return schedule.installments.map((row) => {
    const installment: InstallmentState = {
      number: firstNumber + row.number - 1,
      periodStart: row.periodStart,
      dueDate: row.dueDate,
      days: row.days,
      basis: flat ? principal : basis,
      principal: row.principal,
      interest: row.interest,
      fee: 0n,
      penalty: 0n,
      paidPrincipal: 0n,
      paidInterest: 0n,
      paidFee: 0n,
      paidPenalty: 0n,
      lateFeeCharged: false,
    };
    basis = row.balance;
    return installment;
  });
}

// ---------------------------------------------------------------------------
// Derived figures
// ---------------------------------------------------------------------------

/** Day numbers of 'YYYY-MM-DD' strings, memoized: a book shares a few thousand dates, parsed millions of times. */
const dayNumbers = new Map<string, number>();
function day(date: string): number {
  let n = dayNumbers.get(date);
  if (n === undefined) {
    n = toDayNumber(parseDate(date));
    if (dayNumbers.size > 50_000) dayNumbers.clear();
    dayNumbers.set(date, n);
  }
  return n;
}

export function outstandingOf(i: InstallmentState): ComponentTotals {
  return { principal: i.principal - i.paidPrincipal, interest: i.interest - i.paidInterest, fee: i.fee - i.paidFee, penalty: i.penalty - i.paidPenalty };
}

function owes(i: InstallmentState): boolean {
  const o = outstandingOf(i);
  return o.principal > 0n || o.interest > 0n || o.fee > 0n || o.penalty > 0n;
}

/** Interest of one installment recognized through `date`. */
function recognizedOf(i: InstallmentState, terms: LoanTerms, date: string): bigint {
  const d = day(date);
  if (day(i.dueDate) <= d) return i.interest;
  if (day(i.periodStart) >= d) return 0n;
  return accruedInterest(i.basis, accrualTerms(terms), { start: i.periodStart, end: i.dueDate, days: i.days, frequency: terms.frequency }, date);
}

/** The date interest has been recognized through. */
export function accrualDate(state: LoanState): string | null {
  return state.accrualEnd ?? state.asOf;
}

export function recognizedInterest(state: LoanState, terms: LoanTerms): bigint {
  const through = accrualDate(state);
  if (through === null) return 0n;
  let total = 0n;
  for (const i of state.installments) total += recognizedOf(i, terms, through);
  return total;
}

/** The loan's balance in every account it touches: debits positive, credits negative; sums to zero. */
export function glOf(state: LoanState, terms: LoanTerms): Record<AccountCode, bigint> {
  const recognized = recognizedInterest(state, terms);
  const co = state.chargedOff;
  return {
    cash_clearing: state.received - state.disbursed,
    loans_receivable_principal: state.disbursed - state.paid.principal - co.principal,
    interest_receivable: recognized - state.paid.interest - co.interest,
    fees_receivable: state.feesCharged - state.paid.fee - state.paid.penalty - co.fees,
    borrower_credit_balances: -state.credit,
    suspense: 0n,
    interest_income: -recognized,
    fee_income: -state.feesCharged,
    recoveries: -state.recovered,
    charge_off_losses: co.principal + co.interest + co.fees,
  };
}

export function principalOutstanding(state: LoanState): bigint {
  return state.disbursed - state.paid.principal - state.chargedOff.principal;
}

/** Days the oldest unpaid installment is past due on `date` (0 when nothing is). */
export function daysPastDue(state: LoanState, date: string): number {
  if (state.status !== 'active') return 0;
  const d = day(date);
  for (const i of state.installments) {
    const due = day(i.dueDate);
    if (due >= d) break;
    if (owes(i)) return d - due;
  }
  return 0;
}

export function delinquencyBucket(terms: LoanTerms, dpd: number): string {
  let bucket = 'current';
  for (const b of [...terms.delinquencyBuckets].sort((a, c) => a.minDays - c.minDays)) if (dpd >= b.minDays) bucket = b.name;
  return bucket;
}

export interface LoanBalances {
  readonly principalOutstanding: bigint;
  /** Recognized and unpaid interest. */
  readonly interestOutstanding: bigint;
  readonly feesOutstanding: bigint;
  readonly penaltiesOutstanding: bigint;
  /** Everything due on or before the date and unpaid, per component. */
  readonly due: ComponentTotals;
  readonly credit: bigint;
  readonly daysPastDue: number;
  readonly bucket: string;
  readonly nextDue: { readonly installment: number; readonly dueDate: string; readonly amount: bigint } | null;
}

export function balancesOf(state: LoanState, terms: LoanTerms, date: string): LoanBalances {
  const d = day(date);
  let due = ZERO_TOTALS;
  let fees = 0n;
  let penalties = 0n;
  let nextDue: LoanBalances['nextDue'] = null;
  const open = state.status === 'active';
  for (const i of state.installments) {
    const o = outstandingOf(i);
    fees += o.fee;
    penalties += o.penalty;
    if (day(i.dueDate) <= d) {
      due = { principal: due.principal + o.principal, interest: due.interest + o.interest, fee: due.fee + o.fee, penalty: due.penalty + o.penalty };
    } else if (nextDue === null && open && owes(i)) {
      nextDue = { installment: i.number, dueDate: i.dueDate, amount: o.principal + o.interest + o.fee + o.penalty };
    }
  }
  const gl = glOf(state, terms);
  const dpd = daysPastDue(state, date);
  const chargedOff = state.status === 'charged_off' || state.status === 'written_off';
  return {
    principalOutstanding: gl.loans_receivable_principal,
    interestOutstanding: gl.interest_receivable,
    feesOutstanding: chargedOff ? 0n : fees,
    penaltiesOutstanding: chargedOff ? 0n : penalties,
    due: chargedOff ? ZERO_TOTALS : due,
    credit: state.credit,
    daysPastDue: dpd,
    bucket: delinquencyBucket(terms, dpd),
    nextDue,
  };
}

export interface PayoffQuote {
  readonly asOf: string;
  readonly principal: bigint;
  /** Unpaid interest of due installments plus interest accrued in the current period. */
  readonly interest: bigint;
  readonly fees: bigint;
  readonly penalties: bigint;
  /** The credit balance is netted off the total. */
  readonly credit: bigint;
  readonly total: bigint;
}

/** What pays the loan off on `date` (the loan advanced to `date` first). */
export function payoffQuote(state: LoanState, terms: LoanTerms, date: string): PayoffQuote {
  const advanced = state.status === 'active' && state.asOf !== null && day(date) > day(state.asOf) ? advance(state, terms, date) : state;
  const parts = payoffParts(advanced, terms, date);
  const sum = parts.principal + parts.interest + parts.fee + parts.penalty;
  return {
    asOf: date,
    principal: parts.principal,
    interest: parts.interest,
    fees: parts.fee,
    penalties: parts.penalty,
    credit: advanced.credit,
    total: sum > advanced.credit ? sum - advanced.credit : 0n,
  };
}

/** Per component, what a payoff on `date` settles (interest of later periods is not owed). */
function payoffParts(state: LoanState, terms: LoanTerms, date: string): ComponentTotals {
  if (state.status !== 'active') return ZERO_TOTALS;
  let principal = 0n;
  let interest = 0n;
  let fee = 0n;
  let penalty = 0n;
  for (const i of state.installments) {
    const o = outstandingOf(i);
    principal += o.principal;
    fee += o.fee;
    penalty += o.penalty;
    interest += recognizedOf(i, terms, date) - i.paidInterest;
  }
  return { principal, interest, fee, penalty };
}

// ---------------------------------------------------------------------------
// Transitions
// ---------------------------------------------------------------------------

function withInstallments(state: LoanState, installments: InstallmentState[]): LoanState {
  return { ...state, installments };
}

function addTotals(a: ComponentTotals, b: Readonly<Record<Component, bigint>>): ComponentTotals {
  return { principal: a.principal + b.principal, interest: a.interest + b.interest, fee: a.fee + b.fee, penalty: a.penalty + b.penalty };
}

function dueView(i: InstallmentState): InstallmentDue {
  const o = outstandingOf(i);
  return { number: i.number, dueDate: i.dueDate, principal: o.principal, interest: o.interest, fee: o.fee, penalty: o.penalty };
}

/** Applies an allocation's `remaining` back onto the installments. */
function settle(installments: readonly InstallmentState[], result: AllocationResult): InstallmentState[] {
  const remaining = new Map(result.remaining.map((r) => [r.number, r]));
  return installments.map((i) => {
    const left = remaining.get(i.number);
    if (left === undefined) return i;
    return {
      ...i,
      paidPrincipal: i.principal - left.principal,
      paidInterest: i.interest - left.interest,
      paidFee: i.fee - left.fee,
      paidPenalty: i.penalty - left.penalty,
    };
  });
}

function allocationRule(terms: LoanTerms) {
  return ALLOCATION_STRATEGIES[terms.allocationStrategy];
}

/**
 * What an allocation on `date` can touch: installments still owing, and of those not yet
 * due only when the rule or the overpayment mode pays them (prepayment). Installments left
 * out receive nothing either way, so the result is the same; a long loan's payment no
 * longer walks all its future installments.
 */
function allocatable(state: LoanState, terms: LoanTerms, date: string, mode: OverpaymentMode): InstallmentDue[] {
  const rule = allocationRule(terms);
  const future = mode !== 'credit_balance' || rule.steps.some((step) => step.statuses.includes('not_yet_due'));
  const d = day(date);
  const out: InstallmentDue[] = [];
  for (const i of state.installments) {
    if (!future && day(i.dueDate) > d) break;
    if (owes(i)) out.push(dueView(i));
  }
  return out;
}

/** Closes the loan when nothing is owed any more. */
function closeIfSettled(state: LoanState, date: string): LoanState {
  if (state.status !== 'active' || state.installments.some(owes)) return state;
  return { ...state, status: state.credit > 0n ? 'overpaid' : 'paid_off', accrualEnd: date };
}

/**
 * Moves the loan to `date`: interest is recognized up to it (implicitly, through
 * `asOf`), and a credit balance pays every installment that falls due on the way,
 * on its due date. Going backwards is a no-op; the caller replays instead.
 */
export function advance(state: LoanState, terms: LoanTerms, date: string): LoanState {
  if (state.asOf !== null && day(date) <= day(state.asOf)) return state;
  let next: LoanState = state;
  if (state.status === 'active' && state.credit > 0n) {
    const from = state.asOf === null ? -Infinity : day(state.asOf);
    const to = day(date);
    for (const i of state.installments) {
      const due = day(i.dueDate);
      if (due <= from) continue;
      if (due > to || next.credit === 0n) break;
      next = applyCredit(next, terms, i.dueDate);
    }
  }
  return { ...next, asOf: date };
}

function applyCredit(state: LoanState, terms: LoanTerms, date: string): LoanState {
  const result = allocatePayment({ asOf: date, amount: state.credit, installments: allocatable(state, terms, date, 'credit_balance'), rule: allocationRule(terms), overpayment: 'credit_balance', currency: terms.currency });
  const applied = state.credit - result.creditBalance;
  if (applied === 0n) return state;
  return closeIfSettled({ ...state, installments: settle(state.installments, result), paid: addTotals(state.paid, result.totals), credit: result.creditBalance }, date);
}

/**
 * Rebuilds the installments after the current one (the first due after `date`) from
 * their outstanding principal plus `extraPrincipal`, through the engine's schedule:
 * `reduce_installment` keeps their number and lowers the payment; `shorten_term` keeps
 * the payment and drops installments from the end. The current installment keeps its
 * interest, so the interest already recognized is never restated.
 */
function reamortize(state: LoanState, terms: LoanTerms, date: string, mode: 'shorten_term' | 'reduce_installment', extraPrincipal = 0n): LoanState {
  const d = day(date);
  const currentIndex = state.installments.findIndex((i) => day(i.dueDate) > d);
  if (currentIndex < 0) return state;
  const current = state.installments[currentIndex] as InstallmentState;
  const later = state.installments.slice(currentIndex + 1);
  const kept = state.installments.slice(0, currentIndex + 1);
  if (later.length === 0) {
    if (extraPrincipal === 0n) return state;
    kept[currentIndex] = { ...current, principal: current.principal + extraPrincipal };
    return withInstallments(state, kept);
  }
  let remaining = extraPrincipal;
  let fees = 0n;
  let penalties = 0n;
  for (const i of later) {
    const o = outstandingOf(i);
    remaining += o.principal;
    fees += o.fee;
    penalties += o.penalty;
  }
  // Paid amounts of the replaced installments are kept in the loan's totals; the new ones start unpaid.
  const rebuilt: InstallmentState[] = [];
  if (remaining > 0n) {
    const first = later[0] as InstallmentState;
    let term = later.length;
    if (mode === 'shorten_term') {
      const level = first.principal + first.interest;
      let lo = 1;
      let hi = later.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        const s = buildSchedule(scheduleTerms(terms, remaining, current.dueDate, mid, first.dueDate));
        if (s.payment <= level) hi = mid;
        else lo = mid + 1;
      }
      term = lo;
    }
    rebuilt.push(...scheduleInstallments(terms, remaining, current.dueDate, term, first.dueDate, current.number + 1));
  }
  if (rebuilt.length > 0) {
    const head = rebuilt[0] as InstallmentState;
    rebuilt[0] = { ...head, fee: head.fee + fees, penalty: head.penalty + penalties };
  } else if (fees > 0n || penalties > 0n) {
    kept[currentIndex] = { ...current, fee: current.fee + fees, penalty: current.penalty + penalties };
  }
  return withInstallments(state, [...kept, ...rebuilt]);
}

function disburse(state: LoanState, terms: LoanTerms, date: string, amount: bigint): { state: LoanState; effect: EventEffect } {
  const fmt = (v: bigint) => formatMoney(v, terms.currency);
  if (state.status === 'pending_disbursement') {
    const first = terms.firstPaymentDate !== null && day(terms.firstPaymentDate) > day(date) ? terms.firstPaymentDate : undefined;
    const installments = scheduleInstallments(terms, amount, date, terms.term, first, 1);
    const fee = terms.originationFee === null ? 0n : feeAmount(terms.originationFee, amount, terms);
    if (fee > 0n) installments[0] = { ...(installments[0] as InstallmentState), fee };
    return {
      state: { ...state, status: 'active', disbursed: amount, firstDisbursementDate: date, installments, feesCharged: state.feesCharged + fee, asOf: date },
      effect: {
        applied: true,
        amount,
        explanation: [
          `Disbursed ${fmt(amount)} on ${date}; ${installments.length} installments from ${installments[0]?.dueDate ?? date}.`,
          ...(fee > 0n ? [`Origination fee ${fmt(fee)} added to installment 1.`] : []),
        ],
      },
    };
  }
  // A further tranche: the installments after the current one are re-amortized over the larger balance.
  const next = reamortize({ ...state, disbursed: state.disbursed + amount }, terms, date, 'reduce_installment', amount);
  return { state: next, effect: { applied: true, amount, explanation: [`Tranche of ${fmt(amount)} disbursed on ${date}; later installments re-amortized.`] } };
}

function repay(state: LoanState, terms: LoanTerms, date: string, amount: bigint, overpayment: OverpaymentMode | undefined): { state: LoanState; effect: EventEffect } {
  const fmt = (v: bigint) => formatMoney(v, terms.currency);
  const received = { ...state, received: state.received + amount };
  // A payoff needs at least the principal outstanding; below that, skip computing the payoff amount.
  const parts = amount + state.credit >= principalOutstanding(state) ? payoffParts(state, terms, date) : null;
  const payoff = parts === null ? 0n : parts.principal + parts.interest + parts.fee + parts.penalty;
  // A credit balance the borrower already has counts towards a payoff.
  if (parts !== null && amount + state.credit >= payoff) {
    const creditApplied = payoff > amount ? payoff - amount : 0n;
    // Payoff: every installment is settled; the current period's interest stops at `date`
    // and later periods owe none. The rest is a credit balance.
    const lines: AllocationLine[] = [];
    const installments = state.installments.map((i) => {
      const interest = recognizedOf(i, terms, date);
      const o = { ...outstandingOf(i), interest: interest - i.paidInterest };
      for (const component of ['penalty', 'fee', 'interest', 'principal'] as const) {
        if (o[component] > 0n) lines.push({ installment: i.number, dueDate: i.dueDate, status: day(i.dueDate) < day(date) ? 'past_due' : day(i.dueDate) === day(date) ? 'due' : 'not_yet_due', component, amount: o[component], step: null });
      }
      return { ...i, interest, paidPrincipal: i.principal, paidInterest: interest, paidFee: i.fee, paidPenalty: i.penalty };
    });
    const credit = state.credit + amount - payoff;
    const next: LoanState = { ...received, installments, paid: addTotals(state.paid, parts), credit, status: credit > 0n ? 'overpaid' : 'paid_off', accrualEnd: date };
    return {
      state: next,
      effect: {
        applied: true,
        amount,
        totals: parts,
        lines,
        creditBalance: amount > payoff ? amount - payoff : 0n,
        creditApplied,
        prepayment: null,
        payoff: true,
        explanation: [
          `Payment of ${fmt(amount)} on ${date}${creditApplied > 0n ? ` with ${fmt(creditApplied)} of credit balance` : ''} pays the loan off (payoff amount ${fmt(payoff)}: principal ${fmt(parts.principal)}, interest to date ${fmt(parts.interest)}, fees ${fmt(parts.fee)}, penalties ${fmt(parts.penalty)}).`,
          ...(amount > payoff ? [`Overpayment of ${fmt(amount - payoff)} kept as a credit balance.`] : []),
        ],
      },
    };
  }
  const mode = overpayment ?? terms.overpayment;
  const result = allocatePayment({ asOf: date, amount, installments: allocatable(state, terms, date, mode), rule: allocationRule(terms), overpayment: mode, currency: terms.currency });
  let next: LoanState = { ...received, installments: settle(state.installments, result), paid: addTotals(state.paid, result.totals), credit: state.credit + result.creditBalance };
  if (result.prepayment !== null) next = reamortize(next, terms, date, result.prepayment.mode);
  next = closeIfSettled(next, date);
  return {
    state: next,
    effect: {
      applied: true,
      amount,
      totals: result.totals,
      lines: [...result.lines, ...(result.prepayment?.lines ?? [])],
      creditBalance: result.creditBalance,
      prepayment: result.prepayment === null ? null : { mode: result.prepayment.mode, amount: result.prepayment.amount },
      payoff: false,
      explanation: [...result.explanation, ...(result.prepayment !== null ? [`Installments after the current one re-amortized (${result.prepayment.mode.replace('_', ' ')}).`] : [])],
    },
  };
}

function chargeOff(state: LoanState, terms: LoanTerms, date: string, status: 'charged_off' | 'written_off'): LoanState {
  if (state.status === 'charged_off') return { ...state, status };
  const gl = glOf(state, terms);
  return {
    ...state,
    status,
    accrualEnd: date,
    chargedOff: { principal: gl.loans_receivable_principal, interest: gl.interest_receivable, fees: gl.fees_receivable },
  };
}

/** Applies one transaction on its value date (≥ the state's asOf; the caller replays otherwise). */
export function applyEvent(state: LoanState, terms: LoanTerms, event: LoanEvent): { state: LoanState; effect: EventEffect } {
  const fmt = (v: bigint) => formatMoney(v, terms.currency);
  const at = advance(state, terms, event.date);
  switch (event.type) {
    case 'disbursement':
      return disburse(at, terms, event.date, event.amount);
    case 'repayment':
      return cashIn(at, terms, event.date, event.amount, event.overpayment);
    case 'fee': {
      if (at.status !== 'active') return { state: at, effect: { applied: false, amount: 0n, explanation: [`No fee on ${event.date}: the loan is ${at.status.replace('_', ' ')} by then.`] } };
      const d = day(event.date);
      let index = at.installments.findIndex((i) => day(i.dueDate) >= d);
      if (index < 0) index = at.installments.length - 1;
      const installments = [...at.installments];
      const target = installments[index] as InstallmentState;
      installments[index] = { ...target, fee: target.fee + event.amount };
      return {
        state: { ...at, installments, feesCharged: at.feesCharged + event.amount },
        effect: { applied: true, amount: event.amount, explanation: [`Fee of ${fmt(event.amount)} charged to installment ${target.number} (due ${target.dueDate}).`] },
      };
    }
    case 'late_fee': {
      const index = at.installments.findIndex((i) => i.number === event.installment);
      const target = at.installments[index];
      const rule = terms.lateFee;
      const overdue = target === undefined ? 0n : outstandingOf(target).principal + outstandingOf(target).interest;
      if (at.status !== 'active' || rule === null || target === undefined || target.lateFeeCharged || overdue === 0n || day(event.date) < day(target.dueDate) + rule.graceDays) {
        return { state: at, effect: { applied: false, amount: 0n, explanation: [`No late fee for installment ${event.installment} on ${event.date}: it is not overdue past the grace period.`] } };
      }
      const amount = feeAmount(rule.fee, overdue, terms);
      const installments = [...at.installments];
      installments[index] = { ...target, penalty: target.penalty + amount, lateFeeCharged: true };
      return {
        state: { ...at, installments, feesCharged: at.feesCharged + amount },
        effect: { applied: amount > 0n, amount, explanation: [`Late fee of ${fmt(amount)} on installment ${target.number} (${fmt(overdue)} overdue since ${target.dueDate}).`] },
      };
    }
    case 'charge_off': {
      if (at.status !== 'active' || (event.policy && (terms.chargeOffDays === null || daysPastDue(at, event.date) < terms.chargeOffDays))) {
        return { state: at, effect: { applied: false, amount: 0n, explanation: [`No charge-off on ${event.date}: the loan no longer meets the policy.`] } };
      }
      const next = chargeOff(at, terms, event.date, 'charged_off');
      const total = next.chargedOff.principal + next.chargedOff.interest + next.chargedOff.fees;
      return { state: next, effect: { applied: true, amount: total, explanation: [`Charged off ${fmt(total)} on ${event.date}${event.policy ? ' by policy' : ''}.`] } };
    }
    case 'write_off': {
      if (at.status !== 'active' && at.status !== 'charged_off') return { state: at, effect: { applied: false, amount: 0n, explanation: [`No write-off on ${event.date}: the loan is ${at.status.replace('_', ' ')} by then.`] } };
      const next = chargeOff(at, terms, event.date, 'written_off');
      const total = next.chargedOff.principal + next.chargedOff.interest + next.chargedOff.fees;
      return { state: next, effect: { applied: true, amount: total, explanation: [`Written off on ${event.date} (${fmt(total)} charged off in all).`] } };
    }
    case 'recovery':
      return cashIn(at, terms, event.date, event.amount, undefined);
  }
}

/**
 * Money received, whatever the loan's state by then: a repayment while it is active, a
 * recovery once it is charged off or written off, a credit balance once it is paid off.
 * A replay may move a transaction past a state change (a backdated charge-off before a
 * later payment), so the state decides, not the transaction's type.
 */
function cashIn(at: LoanState, terms: LoanTerms, date: string, amount: bigint, overpayment: OverpaymentMode | undefined): { state: LoanState; effect: EventEffect } {
  const fmt = (v: bigint) => formatMoney(v, terms.currency);
  if (at.status === 'active') return repay(at, terms, date, amount, overpayment);
  if (at.status === 'charged_off' || at.status === 'written_off') {
    const open = at.chargedOff.principal + at.chargedOff.interest + at.chargedOff.fees - at.recovered;
    const recovered = amount < open ? amount : open;
    const extra = amount - recovered;
    return {
      state: { ...at, received: at.received + amount, recovered: at.recovered + recovered, credit: at.credit + extra },
      effect: {
        applied: true,
        amount,
        creditBalance: extra,
        explanation: [`Recovery of ${fmt(recovered)} on a charged-off loan${extra > 0n ? `; ${fmt(extra)} above the charged-off balance kept as a credit` : ''}.`],
      },
    };
  }
  // Paid off (or not yet disbursed): nothing is owed, so it is all owed back.
  return {
    state: { ...at, received: at.received + amount, credit: at.credit + amount, status: at.status === 'paid_off' ? 'overpaid' : at.status },
    effect: { applied: true, amount, creditBalance: amount, explanation: [`Payment of ${fmt(amount)} on ${date}: nothing is owed, kept as a credit balance.`] },
  };
}

/** A stored transaction (a loan_transactions row) as the event the fold applies. */
export function eventFromTransaction(row: { seq: number; type: string; value_date: string; amount: bigint; details: unknown }): LoanEvent {
  const details = (typeof row.details === 'string' ? JSON.parse(row.details) : row.details) as Record<string, unknown>;
  const base = { seq: row.seq, date: row.value_date };
  switch (row.type as TransactionType) {
    case 'disbursement':
    case 'fee':
    case 'recovery':
      return { ...base, type: row.type as 'disbursement' | 'fee' | 'recovery', amount: row.amount };
    case 'repayment':
      return { ...base, type: 'repayment', amount: row.amount, overpayment: details.overpayment as OverpaymentMode | undefined };
    case 'late_fee':
      return { ...base, type: 'late_fee', installment: Number(details.installment) };
    case 'charge_off':
      return { ...base, type: 'charge_off', policy: details.policy === true };
    case 'write_off':
      return { ...base, type: 'write_off' };
  }
}

/** Order of application: value date, then sequence. */
export function compareEvents(a: { date: string; seq: number }, b: { date: string; seq: number }): number {
  return compareDates(parseDate(a.date), parseDate(b.date)) || a.seq - b.seq;
}

/**
 * Folds transactions (any order) over a state, then advances to `through` when given.
 * With `checkpointEvery`, also returns the state after every that many transactions
 * (keyed by the transaction's date and sequence), for a replay to leave checkpoints behind.
 */
export function replay(
  from: LoanState,
  terms: LoanTerms,
  events: readonly LoanEvent[],
  through?: string | null,
  checkpointEvery?: number,
): { state: LoanState; effects: Map<number, EventEffect>; checkpoints: { seq: number; date: string; state: LoanState }[] } {
  let state = from;
  const effects = new Map<number, EventEffect>();
  const checkpoints: { seq: number; date: string; state: LoanState }[] = [];
  [...events].sort(compareEvents).forEach((event, index) => {
    const step = applyEvent(state, terms, event);
    state = step.state;
    effects.set(event.seq, step.effect);
    if (checkpointEvery !== undefined && (index + 1) % checkpointEvery === 0) checkpoints.push({ seq: event.seq, date: event.date, state });
  });
  if (through !== undefined && through !== null) state = advance(state, terms, through);
  return { state, effects, checkpoints };
}

// ---------------------------------------------------------------------------
// End of day
// ---------------------------------------------------------------------------

export interface EndOfDay {
  /** The loan advanced to the date: interest recognized, credit applied. */
  readonly advanced: LoanState;
  /** After the day's own transactions (late fees, a charge-off by policy). */
  readonly state: LoanState;
  /** The transactions end of day adds, with their effects, in order. */
  readonly events: readonly { readonly event: LoanEvent; readonly effect: EventEffect }[];
}

/**
 * Closes `date` for one loan: advances it, charges a late fee on every installment
 * unpaid `graceDays` after its due date (once each), and charges it off when it is
 * `chargeOffDays` past due. The added transactions are ordinary ones, so a later
 * replay re-evaluates them (a backdated payment that cures the arrears undoes them).
 */
export function endOfDay(state: LoanState, terms: LoanTerms, date: string, nextSeq: number): EndOfDay {
  const advanced = advance(state, terms, date);
  let current = advanced;
  let seq = nextSeq;
  const events: { event: LoanEvent; effect: EventEffect }[] = [];
  const push = (event: LoanEvent) => {
    const step = applyEvent(current, terms, event);
    if (!step.effect.applied) return;
    current = step.state;
    events.push({ event, effect: step.effect });
    seq++;
  };
  if (current.status === 'active' && terms.lateFee !== null) {
    const d = day(date);
    for (const i of current.installments) {
      if (day(i.dueDate) + terms.lateFee.graceDays > d) break;
      if (!i.lateFeeCharged && (i.principal > i.paidPrincipal || i.interest > i.paidInterest)) push({ type: 'late_fee', seq, date, installment: i.number });
    }
  }
  if (current.status === 'active' && terms.chargeOffDays !== null && daysPastDue(current, date) >= terms.chargeOffDays) {
    push({ type: 'charge_off', seq, date, policy: true });
  }
  return { advanced, state: current, events };
}
