import { parseDate, toDayNumber } from './dates.js';
import { EngineError } from './errors.js';
import { allocateProportionally, formatMoney, sumMinor } from './money.js';

/**
 * Payment allocation: which of a loan's outstanding buckets a payment pays, in
 * what order, and what happens to the money left over.
 *
 * A bucket is one component (penalty, fee, interest, principal) of one
 * installment. Each installment has a due status relative to the payment's
 * `as_of` date: `past_due` (due date before as_of), `due` (due date equal to
 * as_of) or `not_yet_due` (due date after as_of). A rule is data only: an
 * ordered list of steps, each naming the statuses and the components it pays
 * and how it walks them, plus what to do with an overpayment.
 *
 * A step walks its buckets in one of two orders:
 *
 * - `by_installment`: installment by installment (oldest first unless the step
 *   says newest_first), paying each installment's listed components in the
 *   listed order before moving to the next installment. Apache Fineract calls
 *   this HORIZONTAL schedule processing (a schedule row at a time), and every
 *   one of its pre-2023 strategies works this way.
 * - `by_component`: component by component, paying the first listed component
 *   of every selected installment (oldest first) before the second component.
 *   Fineract calls this VERTICAL schedule processing (a schedule column at a
 *   time).
 *
 * The names avoid "horizontal" and "vertical" on purpose: texts use them both
 * ways round (Fineract's HORIZONTAL is installment by installment; others call
 * that vertical), so a rule that says either would be read wrongly by someone.
 *
 * Money is paid greedily in step order: a bucket receives money only when every
 * bucket before it in the walk is fully paid. Every (status, component) pair of
 * `past_due` and `due` must belong to exactly one step, so money is never left
 * over while something due is unpaid. `not_yet_due` pairs are optional: paying
 * future principal ahead of schedule is a product choice, and collecting
 * interest that has not yet accrued is one that the presets below never make.
 *
 * What is left after the last step is the overpayment:
 *
 * - `credit_balance`: kept as a credit on the loan (a suspense balance the
 *   servicing layer owns; it may apply it when the next installment falls due,
 *   refund it, or keep it).
 * - `prepay_shorten_term`: paid to the outstanding principal of not-yet-due
 *   installments from the last installment backwards, so the last installments
 *   disappear first.
 * - `prepay_reduce_installment`: paid to the outstanding principal of all
 *   not-yet-due installments in proportion to it (exact, largest remainder), so
 *   every future installment shrinks.
 *
 * Any prepayment beyond the total outstanding future principal is kept as a
 * credit balance. What the engine does and what it leaves to the caller:
 *
 * - The engine applies the prepayment to the principal buckets it names and
 *   returns the reduced buckets in `remaining`. It never changes a future
 *   installment's interest, fees or penalties, and it does not reschedule.
 * - The caller (servicing) re-amortizes through the schedule module from the
 *   new outstanding principal: for `shorten_term` it keeps the installment
 *   amount and lets the term shrink; for `reduce_installment` it keeps the due
 *   dates and recomputes a lower installment. Future interest changes only then.
 *
 * The result accounts for every minor unit: the step lines, the prepayment
 * lines and the credit balance sum exactly to the payment.
 */

export const COMPONENTS = ['penalty', 'fee', 'interest', 'principal'] as const;
export type Component = (typeof COMPONENTS)[number];

export const DUE_STATUSES = ['past_due', 'due', 'not_yet_due'] as const;
export type DueStatus = (typeof DUE_STATUSES)[number];

export const ALLOCATION_ORDERS = ['by_installment', 'by_component'] as const;
export type AllocationOrder = (typeof ALLOCATION_ORDERS)[number];

export const INSTALLMENT_ORDERS = ['oldest_first', 'newest_first'] as const;
export type InstallmentOrder = (typeof INSTALLMENT_ORDERS)[number];

export const OVERPAYMENT_MODES = ['credit_balance', 'prepay_shorten_term', 'prepay_reduce_installment'] as const;
export type OverpaymentMode = (typeof OVERPAYMENT_MODES)[number];

export type PrepaymentMode = 'shorten_term' | 'reduce_installment';

/** What one installment still owes, per component, in minor units (each ≥ 0). */
export interface InstallmentDue {
  readonly number: number;
  /** 'YYYY-MM-DD'. */
  readonly dueDate: string;
  readonly penalty: bigint;
  readonly fee: bigint;
  readonly interest: bigint;
  readonly principal: bigint;
}

export interface AllocationStep {
  /** Which installments the step pays, by due status. */
  readonly statuses: readonly DueStatus[];
  /** Which components it pays, in this order. */
  readonly components: readonly Component[];
  readonly order: AllocationOrder;
  /** Default oldest_first (by due date, then installment number). */
  readonly installmentOrder?: InstallmentOrder | undefined;
}

export interface AllocationRule {
  readonly name?: string | undefined;
  readonly description?: string | undefined;
  readonly steps: readonly AllocationStep[];
  /** What happens to money left after the last step; a payment may override it. */
  readonly overpayment: OverpaymentMode;
}

export interface AllocationInput {
  /** The payment's value date, 'YYYY-MM-DD': due statuses are relative to it. */
  readonly asOf: string;
  /** The payment, in minor units (≥ 0). */
  readonly amount: bigint;
  /** Outstanding amounts per installment; any order, unique numbers. */
  readonly installments: readonly InstallmentDue[];
  readonly rule: AllocationRule;
  /** Per-payment override of rule.overpayment. */
  readonly overpayment?: OverpaymentMode | undefined;
  /** ISO 4217 code; only used to write amounts as decimals in `explanation`. */
  readonly currency?: string | undefined;
}

export interface AllocationLine {
  readonly installment: number;
  readonly dueDate: string;
  readonly status: DueStatus;
  readonly component: Component;
  /** > 0. */
  readonly amount: bigint;
  /** Index into rule.steps of the step that paid it; null for a prepayment line. */
  readonly step: number | null;
}

export interface Prepayment {
  readonly mode: PrepaymentMode;
  /** Sum of `lines`. */
  readonly amount: bigint;
  /** Principal of not-yet-due installments paid by the overpayment, in the order applied. */
  readonly lines: readonly AllocationLine[];
}

export interface AllocationResult {
  /** Money paid by the rule's steps, in the order it was applied. */
  readonly lines: readonly AllocationLine[];
  /** Everything applied to the loan (step lines and prepayment lines), per component. */
  readonly totals: Readonly<Record<Component, bigint>>;
  /** Overpayment kept as a credit on the loan. */
  readonly creditBalance: bigint;
  /** Overpayment applied to future principal, or null when none was. */
  readonly prepayment: Prepayment | null;
  /** What each installment owes after the payment, in the input's order. */
  readonly remaining: readonly InstallmentDue[];
  /** One sentence per step and one for the overpayment. */
  readonly explanation: readonly string[];
}

/** Due status of an installment on `asOf`. */
export function dueStatusOf(dueDate: string, asOf: string): DueStatus {
  return statusOf(toDayNumber(parseDate(dueDate, 'due_date')), toDayNumber(parseDate(asOf, 'as_of')));
}

function statusOf(dueDay: number, asOfDay: number): DueStatus {
  if (dueDay < asOfDay) return 'past_due';
  return dueDay === asOfDay ? 'due' : 'not_yet_due';
}

// ---------------------------------------------------------------------------
// Presets
// ---------------------------------------------------------------------------

const ALL_DUE: readonly DueStatus[] = ['past_due', 'due'];

function preset(name: string, description: string, steps: AllocationStep[], overpayment: OverpaymentMode): AllocationRule {
  return Object.freeze({
    name,
    description,
    steps: Object.freeze(
      steps.map((step) => Object.freeze({ ...step, statuses: Object.freeze([...step.statuses]), components: Object.freeze([...step.components]) })),
    ),
    overpayment,
  });
}

export const ALLOCATION_STRATEGY_NAMES = [
  'oldest_due_first',
  'interest_principal_fees',
  'principal_interest_fees',
  'fineract_mifos_standard',
  'fineract_creocore',
  'fineract_heavensfamily',
  'fineract_rbi_india',
  'fineract_principal_interest_penalties_fees',
  'fineract_interest_principal_penalties_fees',
  'fineract_early_repayment',
  'fineract_advanced_payment_allocation',
] as const;
export type AllocationStrategyName = (typeof ALLOCATION_STRATEGY_NAMES)[number];

export function isAllocationStrategyName(value: unknown): value is AllocationStrategyName {
  return typeof value === 'string' && (ALLOCATION_STRATEGY_NAMES as readonly string[]).includes(value);
}

/**
 * Named rules. None collects interest of an installment that is not yet due;
 * each keeps an overpayment as a credit balance unless its source applies it
 * to principal. The `fineract_*` presets follow the repayment strategies of
 * Apache Fineract (fineract-loan, package
 * org.apache.fineract.portfolio.loanaccount.domain.transactionprocessor.impl),
 * whose legacy processors walk the schedule installment by installment and
 * classify each installment as late (due date before the transaction: our
 * past_due), on time (due date on it: due) or in advance (not_yet_due).
 * Where Fineract pays a future installment's interest in advance, the preset
 * stops at the due installments and leaves the rest to the overpayment mode;
 * a product that wants Fineract's exact behaviour adds a not_yet_due step.
 */
export const ALLOCATION_STRATEGIES: Readonly<Record<AllocationStrategyName, AllocationRule>> = Object.freeze({
  oldest_due_first: preset(
    'oldest_due_first',
    'Oldest installment first; within it penalty, fee, interest, principal.',
    [{ statuses: ALL_DUE, components: ['penalty', 'fee', 'interest', 'principal'], order: 'by_installment' }],
    'credit_balance',
  ),
  interest_principal_fees: preset(
    'interest_principal_fees',
    'Oldest installment first; within it interest, principal, fee, penalty.',
    [{ statuses: ALL_DUE, components: ['interest', 'principal', 'fee', 'penalty'], order: 'by_installment' }],
    'credit_balance',
  ),
  principal_interest_fees: preset(
    'principal_interest_fees',
    'Principal of every past-due and due installment first (oldest first), then their interest, fees, penalties.',
    [{ statuses: ALL_DUE, components: ['principal', 'interest', 'fee', 'penalty'], order: 'by_component' }],
    'credit_balance',
  ),
  // FineractStyleLoanRepaymentScheduleTransactionProcessor, "mifos-standard-strategy"
  // ("Penalties, Fees, Interest, Principal order"): late, on-time and in-advance
  // payments all pay penalty, fee, interest, principal per installment.
  fineract_mifos_standard: preset(
    'fineract_mifos_standard',
    'Fineract mifos-standard-strategy: per installment, oldest first, penalty, fee, interest, principal.',
    [{ statuses: ALL_DUE, components: ['penalty', 'fee', 'interest', 'principal'], order: 'by_installment' }],
    'credit_balance',
  ),
  // CreocoreLoanRepaymentScheduleTransactionProcessor, "creocore-strategy": its
  // class comment says interest then principal, but its code pays penalty, fee,
  // interest, principal for late, on-time and in-advance payments alike, the
  // same as mifos-standard. We follow the code.
  fineract_creocore: preset(
    'fineract_creocore',
    'Fineract creocore-strategy (same order as mifos-standard in Fineract’s code).',
    [{ statuses: ALL_DUE, components: ['penalty', 'fee', 'interest', 'principal'], order: 'by_installment' }],
    'credit_balance',
  ),
  // HeavensFamilyLoanRepaymentScheduleTransactionProcessor, "heavensfamily-strategy":
  // late and on-time payments pay principal, interest, fee, penalty (the code;
  // the class comment says interest first); payments in advance go to principal.
  // Fineract also waives the interest of an installment whose principal was
  // prepaid in full; a waiver is a servicing transaction, not an allocation.
  fineract_heavensfamily: preset(
    'fineract_heavensfamily',
    'Fineract heavensfamily-strategy: per installment principal, interest, fee, penalty; then future principal, next installment first.',
    [
      { statuses: ALL_DUE, components: ['principal', 'interest', 'fee', 'penalty'], order: 'by_installment' },
      { statuses: ['not_yet_due'], components: ['principal'], order: 'by_installment' },
    ],
    'credit_balance',
  ),
  // RBILoanRepaymentScheduleTransactionProcessor, "rbi-india-strategy"
  // ("Overdue/Due Fee/Int,Principal", MIFOS-5636): per RBI rules all overdue and
  // current penalties, fees and interest are paid before any principal; the rest
  // then pays principal of every installment in order, future ones included.
  fineract_rbi_india: preset(
    'fineract_rbi_india',
    'Fineract rbi-india-strategy: penalty, fee, interest of every past-due and due installment before any principal; then principal oldest first.',
    [
      { statuses: ALL_DUE, components: ['penalty', 'fee', 'interest'], order: 'by_installment' },
      { statuses: ['past_due', 'due', 'not_yet_due'], components: ['principal'], order: 'by_installment' },
    ],
    'credit_balance',
  ),
  // PrincipalInterestPenaltyFeesOrderLoanRepaymentScheduleTransactionProcessor,
  // "principal-interest-penalties-fees-order-strategy".
  fineract_principal_interest_penalties_fees: preset(
    'fineract_principal_interest_penalties_fees',
    'Fineract principal-interest-penalties-fees-order-strategy: per installment principal, interest, penalty, fee.',
    [{ statuses: ALL_DUE, components: ['principal', 'interest', 'penalty', 'fee'], order: 'by_installment' }],
    'credit_balance',
  ),
  // InterestPrincipalPenaltyFeesOrderLoanRepaymentScheduleTransactionProcessor,
  // "interest-principal-penalties-fees-order-strategy".
  fineract_interest_principal_penalties_fees: preset(
    'fineract_interest_principal_penalties_fees',
    'Fineract interest-principal-penalties-fees-order-strategy: per installment interest, principal, penalty, fee.',
    [{ statuses: ALL_DUE, components: ['interest', 'principal', 'penalty', 'fee'], order: 'by_installment' }],
    'credit_balance',
  ),
  // EarlyPaymentLoanRepaymentScheduleTransactionProcessor, "early-repayment-strategy":
  // late and on-time payments pay interest, principal, penalty, fee; payments in
  // advance pay principal only.
  fineract_early_repayment: preset(
    'fineract_early_repayment',
    'Fineract early-repayment-strategy: per installment interest, principal, penalty, fee; then future principal, next installment first.',
    [
      { statuses: ALL_DUE, components: ['interest', 'principal', 'penalty', 'fee'], order: 'by_installment' },
      { statuses: ['not_yet_due'], components: ['principal'], order: 'by_installment' },
    ],
    'credit_balance',
  ),
  // AdvancedPaymentScheduleTransactionProcessor, "advanced-payment-allocation-strategy",
  // with the allocation order Fineract's own tests use as the default
  // (PAST_DUE_PENALTY, PAST_DUE_FEE, PAST_DUE_PRINCIPAL, PAST_DUE_INTEREST, then
  // the same for DUE) and the default HORIZONTAL processing (a due-type group
  // installment by installment). The IN_ADVANCE part with the LAST_INSTALLMENT
  // future-installment rule becomes prepay_shorten_term, principal only.
  fineract_advanced_payment_allocation: preset(
    'fineract_advanced_payment_allocation',
    'Fineract advanced payment allocation, default order: past due then due, each per installment penalty, fee, principal, interest; overpayment shortens the term.',
    [
      { statuses: ['past_due'], components: ['penalty', 'fee', 'principal', 'interest'], order: 'by_installment' },
      { statuses: ['due'], components: ['penalty', 'fee', 'principal', 'interest'], order: 'by_installment' },
    ],
    'prepay_shorten_term',
  ),
});

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

function invalid(message: string, field: string): EngineError {
  return new EngineError('invalid_argument', message, field);
}

function isOneOf<T extends string>(values: readonly T[], value: unknown): value is T {
  return typeof value === 'string' && (values as readonly string[]).includes(value);
}

/**
 * Checks that a rule is well formed: known statuses, components and orders; no
 * (status, component) pair in two steps; every past_due and due pair covered.
 * Throws {@link EngineError} naming the field at fault (`${field}.steps[1].components`).
 */
export function checkAllocationRule(rule: AllocationRule, field = 'rule'): void {
  if (typeof rule !== 'object' || rule === null) throw invalid('the allocation rule must be an object', field);
  if (!isOneOf(OVERPAYMENT_MODES, rule.overpayment)) {
    throw invalid(`overpayment must be one of ${OVERPAYMENT_MODES.join(', ')}`, `${field}.overpayment`);
  }
  if (!Array.isArray(rule.steps) || rule.steps.length === 0) throw invalid('a rule needs at least one step', `${field}.steps`);
  const owner = new Map<string, number>();
  rule.steps.forEach((step: AllocationStep, index) => {
    const at = `${field}.steps[${index}]`;
    if (typeof step !== 'object' || step === null) throw invalid('a step must be an object', at);
    if (!Array.isArray(step.statuses) || step.statuses.length === 0) throw invalid('a step needs at least one due status', `${at}.statuses`);
    for (const status of step.statuses) {
      if (!isOneOf(DUE_STATUSES, status)) throw invalid(`unknown due status ${JSON.stringify(status)}; use ${DUE_STATUSES.join(', ')}`, `${at}.statuses`);
    }
    if (new Set(step.statuses).size !== step.statuses.length) throw invalid('a due status is listed twice', `${at}.statuses`);
    if (!Array.isArray(step.components) || step.components.length === 0) throw invalid('a step needs at least one component', `${at}.components`);
    for (const component of step.components) {
      if (!isOneOf(COMPONENTS, component)) throw invalid(`unknown component ${JSON.stringify(component)}; use ${COMPONENTS.join(', ')}`, `${at}.components`);
    }
    if (new Set(step.components).size !== step.components.length) throw invalid('a component is listed twice', `${at}.components`);
    if (!isOneOf(ALLOCATION_ORDERS, step.order)) {
      const order: unknown = step.order;
      const hint = order === 'horizontal' || order === 'vertical'
        ? ' ("horizontal" and "vertical" are used both ways round; by_installment is Fineract\'s HORIZONTAL, by_component its VERTICAL)'
        : '';
      throw invalid(`order must be by_installment or by_component${hint}`, `${at}.order`);
    }
    if (step.installmentOrder !== undefined && !isOneOf(INSTALLMENT_ORDERS, step.installmentOrder)) {
      throw invalid(`installment_order must be ${INSTALLMENT_ORDERS.join(' or ')}`, `${at}.installment_order`);
    }
    for (const status of step.statuses) {
      for (const component of step.components) {
        const earlier = owner.get(`${status}:${component}`);
        if (earlier !== undefined) {
          throw invalid(`${status} ${component} is already paid by step ${earlier}; each pair may appear in one step only`, `${at}.components`);
        }
        owner.set(`${status}:${component}`, index);
      }
    }
  });
  const missing = ALL_DUE.flatMap((status) => COMPONENTS.filter((c) => !owner.has(`${status}:${c}`)).map((c) => `${status} ${c}`));
  if (missing.length > 0) {
    throw invalid(`every past_due and due component must be paid by some step; missing: ${missing.join(', ')}`, `${field}.steps`);
  }
}

function checkMoney(value: unknown, field: string): bigint {
  if (typeof value !== 'bigint') throw new EngineError('invalid_amount', `${field} must be an amount in minor units (bigint)`, field);
  if (value < 0n) throw new EngineError('invalid_amount', `${field} must not be negative`, field);
  return value;
}

// ---------------------------------------------------------------------------
// Allocation
// ---------------------------------------------------------------------------

interface Slot {
  readonly index: number; // position in the input
  readonly input: InstallmentDue;
  readonly day: number;
  readonly status: DueStatus;
  readonly owed: Record<Component, bigint>;
}

function bySchedule(a: Slot, b: Slot): number {
  return a.day - b.day || a.input.number - b.input.number;
}

function zeroTotals(): Record<Component, bigint> {
  return { penalty: 0n, fee: 0n, interest: 0n, principal: 0n };
}

/** Allocates one payment over a loan's outstanding installments under a rule. */
export function allocatePayment(input: AllocationInput): AllocationResult {
  const asOfDay = toDayNumber(parseDate(input.asOf, 'as_of'));
  const amount = checkMoney(input.amount, 'amount');
  checkAllocationRule(input.rule);
  const mode = input.overpayment ?? input.rule.overpayment;
  if (!isOneOf(OVERPAYMENT_MODES, mode)) throw invalid(`overpayment must be one of ${OVERPAYMENT_MODES.join(', ')}`, 'overpayment');
  if (input.currency !== undefined) formatMoney(0n, input.currency);
  if (!Array.isArray(input.installments)) throw invalid('installments must be a list', 'installments');

  const numbers = new Set<number>();
  const slots: Slot[] = input.installments.map((inst: InstallmentDue, index) => {
    const at = `installments[${index}]`;
    if (typeof inst !== 'object' || inst === null) throw invalid('an installment must be an object', at);
    if (!Number.isSafeInteger(inst.number) || inst.number < 1) throw invalid('number must be a positive integer', `${at}.number`);
    if (numbers.has(inst.number)) throw invalid(`installment number ${inst.number} appears twice`, `${at}.number`);
    numbers.add(inst.number);
    const day = toDayNumber(parseDate(inst.dueDate, `${at}.due_date`));
    const owed = zeroTotals();
    for (const component of COMPONENTS) owed[component] = checkMoney(inst[component], `${at}.${component}`);
    return { index, input: inst, day, status: statusOf(day, asOfDay), owed };
  });
  const schedule = [...slots].sort(bySchedule);

  const fmt = (minor: bigint): string => (input.currency === undefined ? minor.toString() : formatMoney(minor, input.currency));
  const totals = zeroTotals();
  const lines: AllocationLine[] = [];
  let left = amount;

  const pay = (slot: Slot, component: Component, step: number | null, max: bigint, into: AllocationLine[]): bigint => {
    const paid = max < slot.owed[component] ? max : slot.owed[component];
    if (paid === 0n) return 0n;
    slot.owed[component] -= paid;
    totals[component] += paid;
    into.push({ installment: slot.input.number, dueDate: slot.input.dueDate, status: slot.status, component, amount: paid, step });
    return paid;
  };

  const explanation: string[] = [
    `Payment of ${fmt(amount)} on ${input.asOf}${input.rule.name === undefined ? '' : ` under rule ${input.rule.name}`}.`,
  ];

  input.rule.steps.forEach((step, stepIndex) => {
    const selected = schedule.filter((slot) => step.statuses.includes(slot.status));
    if (step.installmentOrder === 'newest_first') selected.reverse();
    const owedBefore = sumMinor(selected.flatMap((slot) => step.components.map((c) => slot.owed[c])));
    const first = lines.length;
    if (step.order === 'by_installment') {
      for (const slot of selected) for (const component of step.components) left -= pay(slot, component, stepIndex, left, lines);
    } else {
      for (const component of step.components) for (const slot of selected) left -= pay(slot, component, stepIndex, left, lines);
    }
    explanation.push(explainStep(step, stepIndex, owedBefore, lines.slice(first), fmt));
  });

  let prepayment: Prepayment | null = null;
  let creditBalance = 0n;
  if (left > 0n) {
    const overpayment = left;
    if (mode === 'credit_balance') {
      creditBalance = left;
      explanation.push(`Overpayment of ${fmt(overpayment)} kept as a credit balance.`);
    } else {
      const future = schedule.filter((slot) => slot.status === 'not_yet_due' && slot.owed.principal > 0n);
      const prepaid: AllocationLine[] = [];
      if (mode === 'prepay_shorten_term') {
        for (const slot of [...future].reverse()) left -= pay(slot, 'principal', null, left, prepaid);
      } else {
        const outstanding = sumMinor(future.map((slot) => slot.owed.principal));
        const share = left >= outstanding ? future.map((slot) => slot.owed.principal) : allocateProportionally(left, future.map((slot) => slot.owed.principal));
        // Each share is at most the principal it is paid to: with left < outstanding
        // every floor share is below its weight, so floor + 1 still fits.
        future.forEach((slot, i) => (left -= pay(slot, 'principal', null, share[i] ?? 0n, prepaid)));
      }
      creditBalance = left;
      const prepaidAmount = overpayment - left;
      const kind: PrepaymentMode = mode === 'prepay_shorten_term' ? 'shorten_term' : 'reduce_installment';
      if (prepaidAmount > 0n) prepayment = { mode: kind, amount: prepaidAmount, lines: prepaid };
      explanation.push(explainOverpayment(overpayment, kind, prepaid, creditBalance, fmt));
    }
  }

  const remaining = slots.map((slot) => ({ ...slot.input, ...slot.owed }));
  return { lines, totals, creditBalance, prepayment, remaining, explanation };
}

// ---------------------------------------------------------------------------
// Explanation
// ---------------------------------------------------------------------------

const STATUS_WORDS: Record<DueStatus, string> = { past_due: 'past due', due: 'due', not_yet_due: 'not yet due' };

function describeStep(step: AllocationStep): string {
  const walk = step.order === 'by_installment' ? 'installment by installment' : 'component by component';
  const direction = step.installmentOrder === 'newest_first' ? 'newest first' : 'oldest first';
  return `${step.statuses.map((s) => STATUS_WORDS[s]).join(' and ')} installments; ${step.components.join(' → ')}; ${walk}, ${direction}`;
}

function describeLines(lines: readonly AllocationLine[], fmt: (minor: bigint) => string): string {
  return lines.map((line) => `#${line.installment} ${line.component} ${fmt(line.amount)}`).join(', ');
}

function explainStep(step: AllocationStep, index: number, owed: bigint, lines: readonly AllocationLine[], fmt: (minor: bigint) => string): string {
  const head = `Step ${index + 1} (${describeStep(step)})`;
  if (owed === 0n) return `${head}: nothing owed.`;
  const paid = sumMinor(lines.map((line) => line.amount));
  if (paid === 0n) return `${head}: ${fmt(owed)} owed, nothing paid because the payment was used up.`;
  const rest = paid === owed ? 'paid in full' : `${fmt(owed - paid)} still owed`;
  return `${head}: paid ${fmt(paid)} of ${fmt(owed)} owed (${rest}): ${describeLines(lines, fmt)}.`;
}

function explainOverpayment(
  overpayment: bigint,
  mode: PrepaymentMode,
  prepaid: readonly AllocationLine[],
  credit: bigint,
  fmt: (minor: bigint) => string,
): string {
  const how = mode === 'shorten_term' ? 'to shorten the term, last installment first' : 'in proportion, to lower the installments';
  const parts: string[] = [];
  if (prepaid.length > 0) parts.push(`prepaid future principal ${how}: ${describeLines(prepaid, fmt)}`);
  else parts.push('no future principal is outstanding to prepay');
  if (credit > 0n) parts.push(`${fmt(credit)} kept as a credit balance`);
  return `Overpayment of ${fmt(overpayment)}: ${parts.join('; ')}.`;
}
