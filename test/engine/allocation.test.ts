import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  ALLOCATION_ORDERS,
  ALLOCATION_STRATEGIES,
  ALLOCATION_STRATEGY_NAMES,
  COMPONENTS,
  DUE_STATUSES,
  OVERPAYMENT_MODES,
  allocatePayment,
  checkAllocationRule,
  dueStatusOf,
  isAllocationStrategyName,
  type AllocationInput,
  type AllocationLine,
  type AllocationResult,
  type AllocationRule,
  type AllocationStep,
  type AllocationStrategyName,
  type Component,
  type DueStatus,
  type InstallmentDue,
  type OverpaymentMode,
} from '../../src/engine/allocation.js';
import { dayNumber, isoDate } from '../../src/engine/dates.js';
import { EngineError } from '../../src/engine/errors.js';

/** Lines as short strings ('#2 interest 18') so an expectation reads like the hand computation above it. */
const show = (lines: readonly AllocationLine[]): string[] => lines.map((l) => `#${l.installment} ${l.component} ${l.amount}`);

function inst(number: number, dueDate: string, penalty: bigint, fee: bigint, interest: bigint, principal: bigint): InstallmentDue {
  return { number, dueDate, penalty, fee, interest, principal };
}

/**
 * The loan most examples use, on 2024-03-01 (amounts in cents):
 *
 *   #  due         status       penalty  fee  interest  principal   total
 *   1  2024-01-01  past_due           5   10        20        100     135
 *   2  2024-02-01  past_due           5    0        18        102     125
 *   3  2024-03-01  due                0   10        16        104     130
 *   4  2024-04-01  not_yet_due        0    0        14        106     120
 *   5  2024-05-01  not_yet_due        0    0        12        108     120
 *
 * Past due and due together owe 390: penalty 10, fee 20, interest 54, principal 306.
 * Future principal is 214.
 */
const AS_OF = '2024-03-01';
const LOAN: readonly InstallmentDue[] = [
  inst(1, '2024-01-01', 5n, 10n, 20n, 100n),
  inst(2, '2024-02-01', 5n, 0n, 18n, 102n),
  inst(3, '2024-03-01', 0n, 10n, 16n, 104n),
  inst(4, '2024-04-01', 0n, 0n, 14n, 106n),
  inst(5, '2024-05-01', 0n, 0n, 12n, 108n),
];

function pay(rule: AllocationRule | AllocationStrategyName, amount: bigint, extra: Partial<AllocationInput> = {}): AllocationResult {
  const resolved = typeof rule === 'string' ? ALLOCATION_STRATEGIES[rule] : rule;
  return allocatePayment({ asOf: AS_OF, amount, installments: LOAN, rule: resolved, ...extra });
}

function remainingOf(result: AllocationResult, number: number): InstallmentDue | undefined {
  return result.remaining.find((r) => r.number === number);
}

interface Example {
  preset: AllocationStrategyName;
  amount: bigint;
  why: string;
  lines: string[];
  prepaid?: string[];
  credit?: bigint;
}

// Every expectation below is worked by hand from the LOAN table.
const EXAMPLES: Example[] = [
  {
    preset: 'oldest_due_first',
    amount: 200n,
    why: '#1 in full (5+10+20+100 = 135), then #2 penalty 5 and interest 18 (158); the last 42 goes to #2 principal',
    lines: ['#1 penalty 5', '#1 fee 10', '#1 interest 20', '#1 principal 100', '#2 penalty 5', '#2 interest 18', '#2 principal 42'],
  },
  {
    preset: 'fineract_mifos_standard',
    amount: 200n,
    why: 'same order as oldest_due_first: penalty, fee, interest, principal per installment',
    lines: ['#1 penalty 5', '#1 fee 10', '#1 interest 20', '#1 principal 100', '#2 penalty 5', '#2 interest 18', '#2 principal 42'],
  },
  {
    preset: 'fineract_creocore',
    amount: 200n,
    why: 'Fineract’s creocore code pays in the mifos-standard order',
    lines: ['#1 penalty 5', '#1 fee 10', '#1 interest 20', '#1 principal 100', '#2 penalty 5', '#2 interest 18', '#2 principal 42'],
  },
  {
    preset: 'interest_principal_fees',
    amount: 125n,
    why: '#1 interest 20 + principal 100 = 120; the last 5 goes to #1 fee (10 owed) before its penalty',
    lines: ['#1 interest 20', '#1 principal 100', '#1 fee 5'],
  },
  {
    preset: 'fineract_interest_principal_penalties_fees',
    amount: 125n,
    why: '#1 interest 20 + principal 100 = 120; the last 5 goes to #1 penalty (penalties before fees)',
    lines: ['#1 interest 20', '#1 principal 100', '#1 penalty 5'],
  },
  {
    preset: 'principal_interest_fees',
    amount: 350n,
    why: 'component by component: all principal 100+102+104 = 306, then interest #1 20, #2 18 (344), #3 gets the last 6',
    lines: ['#1 principal 100', '#2 principal 102', '#3 principal 104', '#1 interest 20', '#2 interest 18', '#3 interest 6'],
  },
  {
    preset: 'fineract_principal_interest_penalties_fees',
    amount: 350n,
    why: 'installment by installment: #1 100+20+5+10 = 135, #2 102+18+5 = 125 (260), #3 principal gets the last 90 of 104',
    lines: ['#1 principal 100', '#1 interest 20', '#1 penalty 5', '#1 fee 10', '#2 principal 102', '#2 interest 18', '#2 penalty 5', '#3 principal 90'],
  },
  {
    preset: 'fineract_heavensfamily',
    amount: 450n,
    why: 'all 390 past due and due (principal first in each), then 60 to the next installment’s principal; its interest is not collected',
    lines: [
      '#1 principal 100', '#1 interest 20', '#1 fee 10', '#1 penalty 5',
      '#2 principal 102', '#2 interest 18', '#2 penalty 5',
      '#3 principal 104', '#3 interest 16', '#3 fee 10',
      '#4 principal 60',
    ],
  },
  {
    preset: 'fineract_early_repayment',
    amount: 450n,
    why: 'all 390 past due and due (interest, principal, penalty, fee), then 60 to the next installment’s principal only',
    lines: [
      '#1 interest 20', '#1 principal 100', '#1 penalty 5', '#1 fee 10',
      '#2 interest 18', '#2 principal 102', '#2 penalty 5',
      '#3 interest 16', '#3 principal 104', '#3 fee 10',
      '#4 principal 60',
    ],
  },
  {
    preset: 'fineract_rbi_india',
    amount: 150n,
    why: 'penalties, fees and interest of #1–#3 first (35 + 23 + 26 = 84), then principal oldest first: #1 gets 66',
    lines: ['#1 penalty 5', '#1 fee 10', '#1 interest 20', '#2 penalty 5', '#2 interest 18', '#3 fee 10', '#3 interest 16', '#1 principal 66'],
  },
  {
    preset: 'fineract_advanced_payment_allocation',
    amount: 500n,
    why: 'past due #1 (5+10+100+20) and #2 (5+102+18), principal before interest: 260; due #3 10+104+16: 390; the 110 left shortens the term: #5 principal 108, then #4 principal 2',
    lines: [
      '#1 penalty 5', '#1 fee 10', '#1 principal 100', '#1 interest 20',
      '#2 penalty 5', '#2 principal 102', '#2 interest 18',
      '#3 fee 10', '#3 principal 104', '#3 interest 16',
    ],
    prepaid: ['#5 principal 108', '#4 principal 2'],
  },
];

describe('presets: worked examples', () => {
  it.each(EXAMPLES)('$preset pays $amount: $why', ({ preset, amount, lines, prepaid, credit }) => {
    const result = pay(preset, amount);
    expect(show(result.lines)).toEqual(lines);
    expect(result.prepayment === null ? [] : show(result.prepayment.lines)).toEqual(prepaid ?? []);
    expect(result.creditBalance).toBe(credit ?? 0n);
  });

  it('every preset has a worked example, is a valid rule and is frozen', () => {
    expect(new Set(EXAMPLES.map((e) => e.preset))).toEqual(new Set(ALLOCATION_STRATEGY_NAMES));
    for (const name of ALLOCATION_STRATEGY_NAMES) {
      const rule = ALLOCATION_STRATEGIES[name];
      expect(rule.name).toBe(name);
      expect(() => checkAllocationRule(rule)).not.toThrow();
      expect(Object.isFrozen(rule) && Object.isFrozen(rule.steps) && rule.steps.every((s) => Object.isFrozen(s.components))).toBe(true);
      expect(isAllocationStrategyName(name)).toBe(true);
    }
    expect(isAllocationStrategyName('horizontal')).toBe(false);
  });

  it('no preset collects interest of an installment that is not yet due', () => {
    for (const rule of Object.values(ALLOCATION_STRATEGIES)) {
      const collected = rule.steps.filter((s) => s.statuses.includes('not_yet_due')).flatMap((s) => s.components);
      expect(collected.filter((c) => c !== 'principal')).toEqual([]);
    }
  });

  it('rbi-india: the example of Fineract’s RBI strategy (MIFOS-5636) — 40 against two installments of 200 + 20 pays both interests first', () => {
    // One installment overdue, one due today, each 200.00 principal + 20.00 interest; a partial payment of 40.00
    // pays 20.00 interest on #1 and 20.00 interest on #2, leaving both principals at 200.00.
    const result = allocatePayment({
      asOf: '2024-02-01',
      amount: 4000n,
      installments: [inst(1, '2024-01-01', 0n, 0n, 2000n, 20000n), inst(2, '2024-02-01', 0n, 0n, 2000n, 20000n)],
      rule: ALLOCATION_STRATEGIES.fineract_rbi_india,
    });
    expect(show(result.lines)).toEqual(['#1 interest 2000', '#2 interest 2000']);
    expect(result.remaining.map((r) => r.principal)).toEqual([20000n, 20000n]);
  });

  it('advanced allocation: a partial payment pays past-due principal before past-due interest', () => {
    // #1 5+10+100+20 = 135; #2 penalty 5 (140); the last 60 goes to #2 principal, #2 interest stays unpaid.
    const result = pay('fineract_advanced_payment_allocation', 200n);
    expect(show(result.lines)).toEqual(['#1 penalty 5', '#1 fee 10', '#1 principal 100', '#1 interest 20', '#2 penalty 5', '#2 principal 60']);
    expect(remainingOf(result, 2)).toMatchObject({ interest: 18n, principal: 42n });
    expect(result.prepayment).toBeNull();
  });
});

describe('by_installment versus by_component on the same payment', () => {
  const steps = (order: AllocationStep['order'], installmentOrder?: AllocationStep['installmentOrder']): AllocationRule => ({
    steps: [{ statuses: ['past_due', 'due'], components: ['penalty', 'fee', 'interest', 'principal'], order, installmentOrder }],
    overpayment: 'credit_balance',
  });

  it('by_installment finishes installment #1 before touching #2', () => {
    // #1 5+10+20+100 = 135; #2 penalty 5 (140); the last 10 to #2 interest (18 owed).
    const result = pay(steps('by_installment'), 150n);
    expect(show(result.lines)).toEqual(['#1 penalty 5', '#1 fee 10', '#1 interest 20', '#1 principal 100', '#2 penalty 5', '#2 interest 10']);
    expect(result.totals).toEqual({ penalty: 10n, fee: 10n, interest: 30n, principal: 100n });
  });

  it('by_component pays every penalty, then every fee, then every interest before any principal', () => {
    // penalties 5+5 = 10; fees #1 10, #3 10 (30); interest 20+18+16 (84); the last 66 to #1 principal.
    const result = pay(steps('by_component'), 150n);
    expect(show(result.lines)).toEqual([
      '#1 penalty 5', '#2 penalty 5', '#1 fee 10', '#3 fee 10', '#1 interest 20', '#2 interest 18', '#3 interest 16', '#1 principal 66',
    ]);
    expect(result.totals).toEqual({ penalty: 10n, fee: 20n, interest: 54n, principal: 66n });
  });

  it('newest_first walks the installments from the latest due date back', () => {
    // #3 0+10+16+104 = 130; then #2 penalty 5 (135) and 15 of its 18 interest.
    const result = pay(steps('by_installment', 'newest_first'), 150n);
    expect(show(result.lines)).toEqual(['#3 fee 10', '#3 interest 16', '#3 principal 104', '#2 penalty 5', '#2 interest 15']);
  });
});

describe('overpayment', () => {
  // oldest_due_first pays the 390 past due and due; a payment of 500 leaves 110.
  it('credit_balance keeps the 110 as a credit and leaves the future installments alone', () => {
    const result = pay('oldest_due_first', 500n);
    expect(result.creditBalance).toBe(110n);
    expect(result.prepayment).toBeNull();
    expect(result.remaining.slice(3)).toEqual(LOAN.slice(3));
    expect(result.explanation.at(-1)).toBe('Overpayment of 110 kept as a credit balance.');
  });

  it('prepay_shorten_term pays principal from the last installment backwards', () => {
    // #5 principal 108 in full, then 2 of #4's 106. Their interest (14, 12) is left for the caller to re-amortize.
    const result = pay('oldest_due_first', 500n, { overpayment: 'prepay_shorten_term' });
    expect(result.prepayment).toMatchObject({ mode: 'shorten_term', amount: 110n });
    expect(show(result.prepayment?.lines ?? [])).toEqual(['#5 principal 108', '#4 principal 2']);
    expect(result.creditBalance).toBe(0n);
    expect(remainingOf(result, 5)).toEqual(inst(5, '2024-05-01', 0n, 0n, 12n, 0n));
    expect(remainingOf(result, 4)).toEqual(inst(4, '2024-04-01', 0n, 0n, 14n, 104n));
    expect(result.totals.principal).toBe(306n + 110n);
  });

  it('prepay_reduce_installment spreads the principal in proportion to what each future installment owes', () => {
    // Weights 106 and 108 (214). Exact shares 110·106/214 = 54.48… and 110·108/214 = 55.51…;
    // floors 54 + 55 = 109, and the one unit left goes to the larger remainder (#5): 54 and 56.
    const result = pay('oldest_due_first', 500n, { overpayment: 'prepay_reduce_installment' });
    expect(result.prepayment).toMatchObject({ mode: 'reduce_installment', amount: 110n });
    expect(show(result.prepayment?.lines ?? [])).toEqual(['#4 principal 54', '#5 principal 56']);
    expect(result.remaining.map((r) => r.principal)).toEqual([0n, 0n, 0n, 52n, 52n]);
  });

  it('stays exact beyond 2^53 minor units', () => {
    // Nothing due; 10^20 + 1 prepaid over future principals 2·10^20 and 10^20 (weights 2 : 1):
    // exact shares 66666666666666666667.33… and 33333333333333333333.66…; floors sum to 10^20, the unit left goes to #2.
    const big = 10n ** 20n;
    const result = allocatePayment({
      asOf: '2024-01-01',
      amount: big + 1n,
      installments: [inst(1, '2024-02-01', 0n, 0n, 0n, 2n * big), inst(2, '2024-03-01', 0n, 0n, 0n, big)],
      rule: ALLOCATION_STRATEGIES.oldest_due_first,
      overpayment: 'prepay_reduce_installment',
    });
    expect(show(result.prepayment?.lines ?? [])).toEqual(['#1 principal 66666666666666666667', '#2 principal 33333333333333333334']);
  });

  it('a payment’s override wins over the rule’s mode', () => {
    const result = pay('fineract_advanced_payment_allocation', 500n, { overpayment: 'credit_balance' });
    expect(result.prepayment).toBeNull();
    expect(result.creditBalance).toBe(110n);
  });

  it('more than all future principal: the excess over 214 is kept as a credit in both prepayment modes', () => {
    // 700 − 390 = 310 over; 214 prepays #4 and #5 in full, 96 stays as credit.
    for (const overpayment of ['prepay_shorten_term', 'prepay_reduce_installment'] as const) {
      const result = pay('oldest_due_first', 700n, { overpayment });
      expect(result.prepayment?.amount).toBe(214n);
      expect(result.creditBalance).toBe(96n);
      expect(result.remaining.map((r) => r.principal)).toEqual([0n, 0n, 0n, 0n, 0n]);
    }
  });

  it('a prepayment with no future installment left becomes a credit balance, and says so', () => {
    const result = allocatePayment({
      asOf: '2024-06-01',
      amount: 1000n,
      installments: LOAN,
      rule: ALLOCATION_STRATEGIES.oldest_due_first,
      overpayment: 'prepay_shorten_term',
    });
    // Everything is past due on 2024-06-01: 390 + 120 + 120 = 630 paid, 370 over, nothing to prepay.
    expect(result.prepayment).toBeNull();
    expect(result.creditBalance).toBe(370n);
    expect(result.explanation.at(-1)).toBe('Overpayment of 370: no future principal is outstanding to prepay; 370 kept as a credit balance.');
  });
});

describe('partial payments and delinquency', () => {
  // Three installments past due on 2024-04-15, each with a 15 late penalty; #4 is due that day; #5 is later.
  const delinquent = [
    inst(1, '2024-01-15', 15n, 0n, 10n, 90n),
    inst(2, '2024-02-15', 15n, 0n, 10n, 90n),
    inst(3, '2024-03-15', 15n, 0n, 10n, 90n),
    inst(4, '2024-04-15', 0n, 0n, 10n, 90n),
    inst(5, '2024-05-15', 0n, 0n, 10n, 90n),
  ];
  const payDelinquent = (rule: AllocationStrategyName, amount: bigint): AllocationResult =>
    allocatePayment({ asOf: '2024-04-15', amount, installments: delinquent, rule: ALLOCATION_STRATEGIES[rule], currency: 'USD' });

  it('oldest_due_first cures the oldest installments first', () => {
    // #1 15+10+90 = 115, #2 115 (230), #3 penalty 15 (245) and 5 of its 10 interest.
    const result = payDelinquent('oldest_due_first', 250n);
    expect(show(result.lines)).toEqual([
      '#1 penalty 15', '#1 interest 10', '#1 principal 90',
      '#2 penalty 15', '#2 interest 10', '#2 principal 90',
      '#3 penalty 15', '#3 interest 5',
    ]);
    expect(result.lines.every((l) => l.status === 'past_due')).toBe(true);
    expect(remainingOf(result, 3)).toMatchObject({ penalty: 0n, interest: 5n, principal: 90n });
    expect(remainingOf(result, 4)).toEqual(delinquent[3]);
    expect(result.explanation[1]).toBe(
      'Step 1 (past due and due installments; penalty → fee → interest → principal; installment by installment, oldest first): ' +
        'paid 2.50 of 4.45 owed (1.95 still owed): #1 penalty 0.15, #1 interest 0.10, #1 principal 0.90, #2 penalty 0.15, ' +
        '#2 interest 0.10, #2 principal 0.90, #3 penalty 0.15, #3 interest 0.05.',
    );
  });

  it('rbi-india takes every penalty and interest (including the due #4) before any principal', () => {
    // Penalties and interest of #1–#3: 3 × 25 = 75, #4 interest 10 (85); principal #1 90 (175), #2 gets the last 75.
    const result = payDelinquent('fineract_rbi_india', 250n);
    expect(show(result.lines)).toEqual([
      '#1 penalty 15', '#1 interest 10', '#2 penalty 15', '#2 interest 10', '#3 penalty 15', '#3 interest 10', '#4 interest 10',
      '#1 principal 90', '#2 principal 75',
    ]);
  });

  it('a payment smaller than the first bucket pays part of it', () => {
    const result = payDelinquent('oldest_due_first', 3n);
    expect(show(result.lines)).toEqual(['#1 penalty 3']);
    expect(remainingOf(result, 1)?.penalty).toBe(12n);
  });

  it('a zero payment allocates nothing and changes nothing', () => {
    const result = payDelinquent('oldest_due_first', 0n);
    expect(result.lines).toEqual([]);
    expect(result.totals).toEqual({ penalty: 0n, fee: 0n, interest: 0n, principal: 0n });
    expect(result.creditBalance).toBe(0n);
    expect(result.prepayment).toBeNull();
    expect(result.remaining).toEqual(delinquent);
    expect(result.explanation).toEqual([
      'Payment of 0.00 on 2024-04-15 under rule oldest_due_first.',
      'Step 1 (past due and due installments; penalty → fee → interest → principal; installment by installment, oldest first): ' +
        '4.45 owed, nothing paid because the payment was used up.',
    ]);
  });

  it('a payment when nothing is due goes straight to the overpayment', () => {
    // On 2023-12-01 no installment is due yet: oldest_due_first has nothing to pay, so 50 is credit.
    const result = allocatePayment({ asOf: '2023-12-01', amount: 50n, installments: LOAN, rule: ALLOCATION_STRATEGIES.oldest_due_first });
    expect(result.lines).toEqual([]);
    expect(result.creditBalance).toBe(50n);
    expect(result.explanation[1]).toMatch(/: nothing owed\.$/);
  });

  it('the input order of installments does not matter; remaining keeps it', () => {
    const shuffled = [LOAN[3]!, LOAN[0]!, LOAN[4]!, LOAN[2]!, LOAN[1]!];
    const result = allocatePayment({ asOf: AS_OF, amount: 200n, installments: shuffled, rule: ALLOCATION_STRATEGIES.oldest_due_first });
    expect(show(result.lines)).toEqual(show(pay('oldest_due_first', 200n).lines));
    expect(result.remaining.map((r) => r.number)).toEqual([4, 1, 5, 3, 2]);
  });
});

describe('dueStatusOf', () => {
  it('is past_due before as_of, due on it, not_yet_due after', () => {
    expect(dueStatusOf('2024-02-29', '2024-03-01')).toBe('past_due');
    expect(dueStatusOf('2024-03-01', '2024-03-01')).toBe('due');
    expect(dueStatusOf('2024-03-02', '2024-03-01')).toBe('not_yet_due');
  });
});

describe('validation', () => {
  function failure(run: () => unknown): EngineError {
    try {
      run();
    } catch (error) {
      if (error instanceof EngineError) return error;
      throw error;
    }
    throw new Error('expected an EngineError');
  }
  const withRule = (rule: unknown): (() => unknown) => () => pay(rule as AllocationRule, 10n);
  const fullStep: AllocationStep = { statuses: ['past_due', 'due'], components: ['penalty', 'fee', 'interest', 'principal'], order: 'by_installment' };

  it('rejects a negative payment', () => {
    expect(failure(() => pay('oldest_due_first', -1n))).toMatchObject({ code: 'invalid_amount', field: 'amount' });
  });

  it('rejects a negative bucket and names it', () => {
    const installments = LOAN.map((i) => (i.number === 4 ? { ...i, interest: -1n } : i));
    expect(failure(() => pay('oldest_due_first', 10n, { installments }))).toMatchObject({
      code: 'invalid_amount',
      field: 'installments[3].interest',
    });
  });

  it('rejects money given as a number', () => {
    const installments = [{ ...LOAN[0]!, fee: 10 as unknown as bigint }];
    expect(failure(() => pay('oldest_due_first', 10n, { installments }))).toMatchObject({ field: 'installments[0].fee' });
  });

  it('rejects unknown components and statuses', () => {
    const unknownComponent = { steps: [fullStep, { statuses: ['not_yet_due'], components: ['principal', 'tax'], order: 'by_installment' }], overpayment: 'credit_balance' };
    expect(failure(withRule(unknownComponent))).toMatchObject({ code: 'invalid_argument', field: 'rule.steps[1].components' });
    const unknownStatus = { steps: [{ ...fullStep, statuses: ['overdue'] }], overpayment: 'credit_balance' };
    expect(failure(withRule(unknownStatus))).toMatchObject({ code: 'invalid_argument', field: 'rule.steps[0].statuses' });
  });

  it('rejects a (status, component) pair in two steps', () => {
    const rule = { steps: [fullStep, { statuses: ['due'], components: ['principal'], order: 'by_component' }], overpayment: 'credit_balance' };
    const error = failure(withRule(rule));
    expect(error).toMatchObject({ code: 'invalid_argument', field: 'rule.steps[1].components' });
    expect(error.message).toContain('due principal is already paid by step 0');
  });

  it('rejects a component listed twice in one step', () => {
    const rule = { steps: [{ ...fullStep, components: ['penalty', 'fee', 'interest', 'principal', 'fee'] }], overpayment: 'credit_balance' };
    expect(failure(withRule(rule))).toMatchObject({ field: 'rule.steps[0].components' });
  });

  it('rejects a rule that leaves something due unpaid', () => {
    const rule = { steps: [{ ...fullStep, statuses: ['past_due'] }], overpayment: 'credit_balance' };
    const error = failure(withRule(rule));
    expect(error).toMatchObject({ code: 'invalid_argument', field: 'rule.steps' });
    expect(error.message).toContain('missing: due penalty, due fee, due interest, due principal');
  });

  it('rejects "horizontal" and "vertical" and says which order each source means', () => {
    const error = failure(withRule({ steps: [{ ...fullStep, order: 'horizontal' }], overpayment: 'credit_balance' }));
    expect(error).toMatchObject({ code: 'invalid_argument', field: 'rule.steps[0].order' });
    expect(error.message).toContain('by_installment is Fineract\'s HORIZONTAL');
  });

  it('rejects empty steps, unknown installment orders and unknown overpayment modes', () => {
    expect(failure(withRule({ steps: [], overpayment: 'credit_balance' }))).toMatchObject({ field: 'rule.steps' });
    expect(failure(withRule({ steps: [{ ...fullStep, installmentOrder: 'random' }], overpayment: 'credit_balance' }))).toMatchObject({
      field: 'rule.steps[0].installment_order',
    });
    expect(failure(withRule({ steps: [fullStep], overpayment: 'refund' }))).toMatchObject({ field: 'rule.overpayment' });
    expect(failure(() => pay('oldest_due_first', 10n, { overpayment: 'refund' as OverpaymentMode }))).toMatchObject({ field: 'overpayment' });
  });

  it('rejects duplicate installment numbers, bad dates and unknown currencies', () => {
    expect(failure(() => pay('oldest_due_first', 10n, { installments: [LOAN[0]!, LOAN[0]!] }))).toMatchObject({ field: 'installments[1].number' });
    expect(failure(() => pay('oldest_due_first', 10n, { installments: [{ ...LOAN[0]!, dueDate: '2024-02-30' }] }))).toMatchObject({
      code: 'invalid_date',
      field: 'installments[0].due_date',
    });
    expect(failure(() => pay('oldest_due_first', 10n, { asOf: '1 March 2024' }))).toMatchObject({ code: 'invalid_date', field: 'as_of' });
    expect(failure(() => pay('oldest_due_first', 10n, { currency: 'XXX' }))).toMatchObject({ code: 'unknown_currency' });
  });
});

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

const ASOF_DAY = dayNumber(AS_OF);

const bucketArb = fc.oneof(fc.constant(0n), fc.bigInt({ min: 0n, max: 1_000n }));
const installmentsArb = fc
  .array(
    fc.record({
      // Clustered offsets so that due, past_due and not_yet_due all occur, with shared due dates sometimes.
      offset: fc.oneof(fc.constantFrom(-60, -30, -1, 0, 0, 1, 30, 60), fc.integer({ min: -400, max: 400 })),
      penalty: bucketArb,
      fee: bucketArb,
      interest: bucketArb,
      principal: bucketArb,
    }),
    { maxLength: 8 },
  )
  .chain((rows) =>
    fc.shuffledSubarray(
      rows.map((row, i) => inst(i + 1, isoDate(ASOF_DAY + row.offset), row.penalty, row.fee, row.interest, row.principal)),
      { minLength: rows.length, maxLength: rows.length },
    ),
  );

const stepArb: fc.Arbitrary<AllocationStep> = fc.record({
  statuses: fc.subarray([...DUE_STATUSES], { minLength: 1 }),
  components: fc.shuffledSubarray([...COMPONENTS], { minLength: 1 }),
  order: fc.constantFrom(...ALLOCATION_ORDERS),
  installmentOrder: fc.constantFrom(undefined, 'oldest_first' as const, 'newest_first' as const),
});

/** Random steps, skipping any that would pay a pair twice, then steps that cover whatever past_due / due pair is left. */
const customRuleArb: fc.Arbitrary<AllocationRule> = fc
  .record({
    candidates: fc.array(stepArb, { maxLength: 5 }),
    fillOrder: fc.shuffledSubarray([...COMPONENTS], { minLength: 4, maxLength: 4 }),
    fillWalk: fc.constantFrom(...ALLOCATION_ORDERS),
    fillFirst: fc.boolean(),
    overpayment: fc.constantFrom(...OVERPAYMENT_MODES),
  })
  .map(({ candidates, fillOrder, fillWalk, fillFirst, overpayment }) => {
    const covered = new Set<string>();
    const chosen: AllocationStep[] = [];
    for (const step of candidates) {
      const pairs = step.statuses.flatMap((s) => step.components.map((c) => `${s}:${c}`));
      if (pairs.some((p) => covered.has(p))) continue;
      pairs.forEach((p) => covered.add(p));
      chosen.push(step);
    }
    const fill: AllocationStep[] = [];
    for (const status of ['past_due', 'due'] as const) {
      const missing = fillOrder.filter((c) => !covered.has(`${status}:${c}`));
      if (missing.length > 0) fill.push({ statuses: [status], components: missing, order: fillWalk });
    }
    return { steps: fillFirst ? [...fill, ...chosen] : [...chosen, ...fill], overpayment };
  });

const ruleArb = fc.oneof(fc.constantFrom(...Object.values(ALLOCATION_STRATEGIES)), customRuleArb);

const caseArb = fc
  .record({ installments: installmentsArb, rule: ruleArb, override: fc.constantFrom(undefined, ...OVERPAYMENT_MODES) })
  .chain((c) => {
    const owed = c.installments.reduce((sum, i) => sum + i.penalty + i.fee + i.interest + i.principal, 0n);
    return fc.record({
      installments: fc.constant(c.installments),
      rule: fc.constant(c.rule),
      override: fc.constant(c.override),
      amount: fc.oneof(fc.bigInt({ min: 0n, max: owed + owed / 2n + 10n }), fc.constant(owed), fc.constant(0n)),
    });
  });

type Key = string;
const keyOf = (installment: number, component: Component): Key => `${installment}:${component}`;

function statusIn(i: InstallmentDue): DueStatus {
  const day = dayNumber(i.dueDate);
  return day < ASOF_DAY ? 'past_due' : day === ASOF_DAY ? 'due' : 'not_yet_due';
}

/** The buckets each step visits, in the order the rule says it visits them. Written from the rule's definition. */
function walk(rule: AllocationRule, installments: readonly InstallmentDue[]): { step: number; key: Key }[] {
  const byDate = [...installments].sort((a, b) => dayNumber(a.dueDate) - dayNumber(b.dueDate) || a.number - b.number);
  return rule.steps.flatMap((step, index) => {
    const chosen = byDate.filter((i) => step.statuses.includes(statusIn(i)));
    if (step.installmentOrder === 'newest_first') chosen.reverse();
    const keys =
      step.order === 'by_installment'
        ? chosen.flatMap((i) => step.components.map((c) => keyOf(i.number, c)))
        : step.components.flatMap((c) => chosen.map((i) => keyOf(i.number, c)));
    return keys.map((key) => ({ step: index, key }));
  });
}

function sumLines(lines: readonly AllocationLine[]): Map<Key, bigint> {
  const sums = new Map<Key, bigint>();
  for (const l of lines) sums.set(keyOf(l.installment, l.component), (sums.get(keyOf(l.installment, l.component)) ?? 0n) + l.amount);
  return sums;
}

describe('properties', () => {
  it('every minor unit is accounted for, no bucket is overpaid or negative, and the order is respected', () => {
    fc.assert(
      fc.property(caseArb, ({ installments, rule, override, amount }) => {
        const snapshot = structuredClone(installments);
        const result = allocatePayment({ asOf: AS_OF, amount, installments, rule, overpayment: override });
        const mode = override ?? rule.overpayment;
        const prepaidLines = result.prepayment?.lines ?? [];
        const all = [...result.lines, ...prepaidLines];
        const owed = new Map(installments.flatMap((i) => COMPONENTS.map((c) => [keyOf(i.number, c), i[c]] as const)));
        const status = new Map(installments.map((i) => [i.number, statusIn(i)]));

        // The payment is exactly lines + prepayment + credit, and nothing is negative.
        const linesTotal = result.lines.reduce((s, l) => s + l.amount, 0n);
        const prepaid = result.prepayment?.amount ?? 0n;
        expect(linesTotal + prepaid + result.creditBalance).toBe(amount);
        expect(prepaidLines.reduce((s, l) => s + l.amount, 0n)).toBe(prepaid);
        expect(result.creditBalance >= 0n).toBe(true);
        expect(all.every((l) => l.amount > 0n)).toBe(true);
        for (const c of COMPONENTS) expect(result.totals[c]).toBe(all.filter((l) => l.component === c).reduce((s, l) => s + l.amount, 0n));

        // remaining = original − everything paid, per bucket; nothing paid beyond what was owed; input untouched.
        const paid = sumLines(all);
        expect(result.remaining.map((r) => r.number)).toEqual(installments.map((i) => i.number));
        for (const r of result.remaining) {
          for (const c of COMPONENTS) {
            const key = keyOf(r.number, c);
            expect(r[c]).toBe((owed.get(key) ?? 0n) - (paid.get(key) ?? 0n));
            expect(r[c] >= 0n).toBe(true);
          }
        }
        expect(installments).toEqual(snapshot);

        // Each line carries the status of its installment, and its step covers that status and component.
        for (const l of result.lines) {
          expect(l.status).toBe(status.get(l.installment));
          const step = rule.steps[l.step ?? -1];
          expect(step?.statuses.includes(l.status) && step.components.includes(l.component)).toBe(true);
        }

        // Order: along the rule's walk, buckets are paid in full up to one, partly at most that one, and not at all after it.
        const order = walk(rule, installments);
        expect(new Set(order.map((o) => o.key)).size).toBe(order.length);
        const stepPaid = sumLines(result.lines);
        const firstShort = order.findIndex((o) => (stepPaid.get(o.key) ?? 0n) < (owed.get(o.key) ?? 0n));
        if (firstShort >= 0) {
          for (const o of order.slice(firstShort + 1)) expect(stepPaid.get(o.key) ?? 0n).toBe(0n);
          expect(prepaid + result.creditBalance).toBe(0n);
        }
        // …and the lines come out in walk order.
        const position = new Map(order.map((o, i) => [`${o.step}|${o.key}`, i]));
        const positions = result.lines.map((l) => position.get(`${l.step}|${keyOf(l.installment, l.component)}`) ?? -1);
        expect(positions.every((p, i) => p >= 0 && (i === 0 || p > positions[i - 1]!))).toBe(true);

        // Money is left over only once everything past due and due is paid.
        if (prepaid + result.creditBalance > 0n) {
          for (const r of result.remaining) {
            if (status.get(r.number) !== 'not_yet_due') expect(COMPONENTS.every((c) => r[c] === 0n)).toBe(true);
          }
        }

        // The overpayment follows its mode.
        expect(prepaidLines.every((l) => l.status === 'not_yet_due' && l.component === 'principal' && l.step === null)).toBe(true);
        const future = installments
          .filter((i) => status.get(i.number) === 'not_yet_due')
          .sort((a, b) => dayNumber(a.dueDate) - dayNumber(b.dueDate) || a.number - b.number)
          .map((i) => ({ number: i.number, before: i.principal - (stepPaid.get(keyOf(i.number, 'principal')) ?? 0n) }));
        const futureLeft = future.reduce((s, f) => s + f.before, 0n);
        const prepaidTo = (n: number): bigint => sumLines(prepaidLines).get(keyOf(n, 'principal')) ?? 0n;
        if (mode === 'credit_balance') {
          expect(result.prepayment).toBeNull();
        } else {
          expect(result.prepayment?.mode ?? null).toBe(prepaid > 0n ? mode.replace('prepay_', '') : null);
          // Credit only once all future principal is prepaid.
          if (result.creditBalance > 0n) expect(prepaid).toBe(futureLeft);
          if (mode === 'prepay_shorten_term') {
            // Newest first: full, full, …, at most one partial, then nothing.
            const newest = [...future].reverse();
            const short = newest.findIndex((f) => prepaidTo(f.number) < f.before);
            if (short >= 0) for (const f of newest.slice(short + 1)) expect(prepaidTo(f.number)).toBe(0n);
          } else if (prepaid < futureLeft) {
            // Within one minor unit of the exact proportional share.
            for (const f of future) {
              const gap = prepaidTo(f.number) * futureLeft - prepaid * f.before;
              expect(gap < futureLeft && -gap < futureLeft).toBe(true);
            }
          }
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('paying a then b allocates like paying a + b at once (greedy modes)', () => {
    const greedy = caseArb.filter((c) => (c.override ?? c.rule.overpayment) !== 'prepay_reduce_installment');
    fc.assert(
      fc.property(greedy, fc.integer({ min: 0, max: 1000 }), ({ installments, rule, override, amount }, perMille) => {
        const first = (amount * BigInt(perMille)) / 1000n;
        const once = allocatePayment({ asOf: AS_OF, amount, installments, rule, overpayment: override });
        const a = allocatePayment({ asOf: AS_OF, amount: first, installments, rule, overpayment: override });
        const b = allocatePayment({ asOf: AS_OF, amount: amount - first, installments: a.remaining, rule, overpayment: override });
        expect(b.remaining).toEqual(once.remaining);
        expect(a.creditBalance + b.creditBalance).toBe(once.creditBalance);
      }),
      { numRuns: 1000 },
    );
  });
});
