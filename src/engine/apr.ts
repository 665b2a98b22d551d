import { type Frequency, shiftPeriods } from './calendar.js';
import { type YearMonthDay, addMonthsToAnchor, daysInMonth, formatDate, isLastDayOfMonth, parseDate, toDayNumber } from './dates.js';
import { EngineError } from './errors.js';
import { type Ratio, compare, parseDecimal, sub } from './ratio.js';

/**
 * Annual percentage rate of a closed-end credit transaction by the actuarial
 * method of Regulation Z (12 CFR 1026), Appendix J, implemented to the text:
 *
 *  (b)(1)  APR = unit-period rate × unit-periods per year (nominal, not compounded).
 *  (b)(2)  The term begins on the first advance (this API has no separate
 *          consummation or finance-charge-earned date) and ends on the last
 *          payment or advance.
 *  (b)(3)  Months are all equal and run from a date to the same date of another
 *          month; a series on the last day of each month runs last day to last
 *          day; a series on the 29th or 30th uses the last day of February.
 *  (b)(4)  The unit-period is the common period that occurs most often (ties: the
 *          shorter); with no common period, the average period rounded to the
 *          nearest standard interval (ties: the shorter). A single-advance,
 *          single-payment transaction uses its term, up to one year.
 *  (b)(5)  Whole unit-periods are counted from each cash flow back to the start
 *          of the term; the remainder is a fraction of a unit-period:
 *          (ii) month: remaining days / 30; (iii) semimonth and multiples of a
 *          month: (30 × months + days) / 15 or / (30 × months per unit);
 *          (iv) day and weeks: days / days per unit (365 days a year, 52 weeks);
 *          (v) year: remaining months / 12, or remaining days / 365;
 *          (vi)–(vii) single advance, single payment under a year: one unit-period,
 *          12 / months (whole months) or 365 / days unit-periods per year.
 *  (b)(6)  A fraction of a unit-period earns that fraction of the unit-period rate
 *          (simple interest): the factor is (1 + f·i), never (1 + i)^f.
 *  (b)(8)  Σ A_k / ((1 + e_k·i)(1 + i)^q_k) = Σ P_j / ((1 + f_j·i)(1 + i)^t_j).
 *  (b)(9)  Solved here by Newton's method (bracketed bisection as a fallback) to
 *          |Δi| ≤ 1e-12, far tighter than the 2 decimals (b)(9) asks for.
 *
 * The equation is solved in binary floating point: the result is a rate, not
 * money of record. Amounts stay bigint until they are scaled for the solver.
 *
 * Decisions:
 *  - Payments that total exactly the amount advanced give an APR of exactly 0.
 *  - Payments that total less than the amount advanced have no non-negative
 *    rate; that is reported as EngineError('no_root', field 'payments') rather
 *    than as a negative APR, which Regulation Z does not contemplate.
 *  - Standard intervals are limited to the unit periods this module names; a
 *    schedule whose (b)(4)(i)(B) average is nearest, say, three weeks is given
 *    the nearest named unit period instead.
 */

export const UNIT_PERIODS = ['monthly', 'semimonthly', 'biweekly', 'weekly', 'four_weekly', 'bimonthly', 'quarterly', 'semiannual', 'annual', 'daily'] as const;
export type UnitPeriod = (typeof UNIT_PERIODS)[number];
/** A unit period, or the whole term of a single-advance, single-payment transaction ((b)(4)(ii)). */
export type AprUnitPeriod = UnitPeriod | 'term';

export function isUnitPeriod(value: unknown): value is UnitPeriod {
  return typeof value === 'string' && (UNIT_PERIODS as readonly string[]).includes(value);
}

export interface DatedAmount {
  /** YYYY-MM-DD */
  readonly date: string;
  /** Minor units, > 0. */
  readonly amount: bigint;
}

/** `count` equal payments from `firstDate`, stepped by the calendar (monthly: same day of month, clamped). */
export interface PaymentSeries {
  readonly firstDate: string;
  readonly amount: bigint;
  readonly count: number;
  /** Any unit period but 'daily'. */
  readonly frequency: UnitPeriod;
}

export interface AprInput {
  readonly advances: readonly DatedAmount[];
  readonly payments?: readonly DatedAmount[] | undefined;
  readonly paymentSeries?: readonly PaymentSeries[] | undefined;
  /** Default: chosen by Appendix J (b)(4). */
  readonly unitPeriod?: UnitPeriod | undefined;
}

export interface AprResult {
  /** The APR as an annual fraction (0.0969 is 9.69 %), rounded to 12 decimals (denominator 10^12). */
  readonly apr: Ratio;
  /** The same APR as a float, unrounded. */
  readonly aprNumber: number;
  readonly unitPeriod: AprUnitPeriod;
  /** 12 for months, 365 / days for a single payment due in 255 days, … */
  readonly unitPeriodsPerYear: number;
  /** i, the rate per unit period. */
  readonly unitPeriodRate: number;
  /**
   * Regular for the accuracy tolerance of §1026.22(a)(2) (1/8 point): a single
   * advance, equal payments (first and final may differ) at regular intervals
   * (the first period may be odd). Otherwise irregular, §1026.22(a)(3) (1/4 point).
   */
  readonly regular: boolean;
  readonly iterations: number;
}

/** One cash flow placed on the Appendix J time line: t whole unit-periods and a fraction f of one. */
export interface AppendixJCashFlow {
  readonly kind: 'advance' | 'payment';
  readonly date: string;
  readonly amount: bigint;
  readonly t: number;
  readonly f: Ratio;
}

export interface AppendixJSchedule {
  readonly termStart: string;
  readonly unitPeriod: AprUnitPeriod;
  readonly unitPeriodsPerYear: number;
  readonly regular: boolean;
  /** Advances then payments, each in date order. */
  readonly cashFlows: readonly AppendixJCashFlow[];
}

// ---------------------------------------------------------------------------
// Unit periods

interface UnitRule {
  readonly name: UnitPeriod;
  /** 'days': a day or a multiple of a week; 'months': a multiple of a month; 'semimonth'. */
  readonly kind: 'days' | 'months' | 'semimonth';
  readonly days: number;
  readonly months: number;
  readonly perYear: number;
  /** Nominal length in days, for ordering and for the (b)(4)(i)(B) average. */
  readonly nominalDays: number;
}

const RULES: Readonly<Record<UnitPeriod, UnitRule>> = {
  daily: { name: 'daily', kind: 'days', days: 1, months: 0, perYear: 365, nominalDays: 1 },
  weekly: { name: 'weekly', kind: 'days', days: 7, months: 0, perYear: 52, nominalDays: 7 },
  biweekly: { name: 'biweekly', kind: 'days', days: 14, months: 0, perYear: 26, nominalDays: 14 },
  semimonthly: { name: 'semimonthly', kind: 'semimonth', days: 0, months: 0, perYear: 24, nominalDays: 365 / 24 },
  four_weekly: { name: 'four_weekly', kind: 'days', days: 28, months: 0, perYear: 13, nominalDays: 28 },
  monthly: { name: 'monthly', kind: 'months', days: 0, months: 1, perYear: 12, nominalDays: 365 / 12 },
  bimonthly: { name: 'bimonthly', kind: 'months', days: 0, months: 2, perYear: 6, nominalDays: 365 / 6 },
  quarterly: { name: 'quarterly', kind: 'months', days: 0, months: 3, perYear: 4, nominalDays: 365 / 4 },
  semiannual: { name: 'semiannual', kind: 'months', days: 0, months: 6, perYear: 2, nominalDays: 365 / 2 },
  annual: { name: 'annual', kind: 'months', days: 0, months: 12, perYear: 1, nominalDays: 365 },
};

/** Shortest first: (b)(4)(i)(A) and (B) break ties towards the shorter period. */
const BY_LENGTH: readonly UnitRule[] = UNIT_PERIODS.map((u) => RULES[u]).sort((a, b) => a.nominalDays - b.nominalDays);
const SEMIMONTH_RANK = BY_LENGTH.indexOf(RULES.semimonthly);
/** Rank (in BY_LENGTH) of the unit period lasting `index` days, else −1. */
const RANK_BY_DAYS = new Int8Array(29).fill(-1);
/** Rank of the unit period lasting `index` months, else −1. */
const RANK_BY_MONTHS = new Int8Array(13).fill(-1);
BY_LENGTH.forEach((rule, rank) => {
  if (rule.kind === 'days') RANK_BY_DAYS[rule.days] = rank;
  if (rule.kind === 'months') RANK_BY_MONTHS[rule.months] = rank;
});

/** Calendar-stepped payment frequencies (the calendar has no daily frequency). */
const SERIES_FREQUENCIES: ReadonlySet<string> = new Set(UNIT_PERIODS.filter((u) => u !== 'daily'));

const MAX_CASH_FLOWS = 20_000;

// ---------------------------------------------------------------------------
// Dated cash flows

interface DatedFlow {
  readonly ymd: YearMonthDay;
  readonly day: number;
  /** year × 12 + month, for counting months. */
  readonly monthIndex: number;
  readonly amount: bigint;
  /** The amount as a float, for the solver. */
  readonly value: number;
  /** The scheduled day of month this date stands for ((b)(3)(iv)): 31 for a month-end series, else its own day. */
  anchor: number;
  /** Where the flow came from, to name the field at fault: 'payments' and its index, or 'payment_series[s]' and −1. */
  readonly source: string;
  readonly index: number;
}

function dateField(flow: DatedFlow): string {
  return flow.index < 0 ? `${flow.source}.first_date` : `${flow.source}[${flow.index}].date`;
}

function flowAt(ymd: YearMonthDay, amount: bigint, value: number, source: string, index: number): DatedFlow {
  return { ymd, day: toDayNumber(ymd), monthIndex: ymd.year * 12 + ymd.month, amount, value, anchor: ymd.day, source, index };
}

function checkAmount(amount: unknown, field: () => string): bigint {
  if (typeof amount !== 'bigint' || amount <= 0n) {
    const name = field();
    throw new EngineError('invalid_amount', `${name} must be a positive amount in minor units (bigint)`, name);
  }
  return amount;
}

/** parseDate, naming the field only when the date is bad (names cost a string per cash flow). */
function checkDate(text: unknown, field: () => string): YearMonthDay {
  try {
    return parseDate(String(text));
  } catch {
    return parseDate(String(text), field());
  }
}

/** Validated flows of one list, and their total. */
interface Group {
  readonly flows: DatedFlow[];
  readonly total: bigint;
}

function datedFlows(list: unknown, name: 'advances' | 'payments'): Group {
  if (!Array.isArray(list)) throw new EngineError('invalid_argument', `${name} must be a list of { date, amount }`, name);
  const flows: DatedFlow[] = [];
  let total = 0n;
  for (let k = 0; k < list.length; k++) {
    const item = list[k] as Partial<DatedAmount> | null | undefined;
    if (typeof item !== 'object' || item === null) {
      throw new EngineError('invalid_argument', `${name}[${k}] must be an object { date, amount }`, `${name}[${k}]`);
    }
    const ymd = checkDate(item.date, () => `${name}[${k}].date`);
    const amount = checkAmount(item.amount, () => `${name}[${k}].amount`);
    flows.push(flowAt(ymd, amount, Number(amount), name, k));
    total += amount;
  }
  return { flows, total };
}

function seriesFlows(list: unknown): Group[] {
  if (!Array.isArray(list)) throw new EngineError('invalid_argument', 'payment_series must be a list', 'payment_series');
  const groups: Group[] = [];
  for (let s = 0; s < list.length; s++) {
    const item = list[s] as Partial<PaymentSeries> | null | undefined;
    const at = `payment_series[${s}]`;
    if (typeof item !== 'object' || item === null) throw new EngineError('invalid_argument', `${at} must be an object`, at);
    const first = checkDate(item.firstDate, () => `${at}.first_date`);
    const amount = checkAmount(item.amount, () => `${at}.amount`);
    const count = item.count;
    if (typeof count !== 'number' || !Number.isInteger(count) || count < 1 || count > MAX_CASH_FLOWS) {
      throw new EngineError('invalid_argument', `${at}.count must be an integer from 1 to ${MAX_CASH_FLOWS}`, `${at}.count`);
    }
    const frequency = item.frequency;
    if (typeof frequency !== 'string' || !SERIES_FREQUENCIES.has(frequency)) {
      throw new EngineError('unknown_frequency', `${at}.frequency must be one of ${[...SERIES_FREQUENCIES].join(', ')}`, `${at}.frequency`);
    }
    const flows: DatedFlow[] = [];
    const value = Number(amount);
    for (let k = 0; k < count; k++) {
      const ymd = shiftPeriods(first, frequency as Frequency, k);
      if (ymd.year > 9999) throw new EngineError('invalid_argument', `${at} runs past the year 9999`, `${at}.count`);
      flows.push(flowAt(ymd, amount, value, at, -1));
    }
    groups.push({ flows, total: amount * BigInt(count) });
  }
  return groups;
}

/**
 * (b)(3)(iv): a date on the last day of a short month stands for the series' own
 * day (the 29th, 30th or 31st) when the series it belongs to has such a day.
 */
function inferAnchors(group: DatedFlow[]): void {
  let maxDay = 0;
  for (const flow of group) if (flow.ymd.day > maxDay) maxDay = flow.ymd.day;
  for (const flow of group) flow.anchor = isLastDayOfMonth(flow.ymd) ? Math.max(flow.ymd.day, maxDay) : flow.ymd.day;
}

function sortByDay(list: DatedFlow[]): void {
  for (let k = 1; k < list.length; k++) {
    if ((list[k] as DatedFlow).day < (list[k - 1] as DatedFlow).day) {
      list.sort((a, b) => a.day - b.day);
      return;
    }
  }
}

// ---------------------------------------------------------------------------
// (b)(3) and (b)(5): measuring time

/**
 * (b)(5)(ii)–(iii): whole months are measured back from each cash flow's date,
 * stepping on its scheduled day, as far as the start of the term allows. Every
 * date stepped back into the start's month lands on the same day there, so the
 * last whole month and the odd days before it depend only on the scheduled day:
 * they are worked out once per day of month.
 */
class MonthsBack {
  /** Per scheduled day: 1 when the whole months stop in the month after the start's, else 0; −1 unknown. */
  private readonly shift = new Int8Array(32).fill(-1);
  private readonly odd = new Int32Array(32);
  months = 0;
  remainder = 0;

  constructor(private readonly start: DatedFlow) {}

  measure(flow: DatedFlow): void {
    const anchor = flow.anchor;
    if (this.shift[anchor] === -1) {
      const s = this.start.ymd;
      const inStartMonth = toDayNumber(addMonthsToAnchor(s, 0, anchor));
      if (inStartMonth >= this.start.day) {
        this.shift[anchor] = 0;
        this.odd[anchor] = inStartMonth - this.start.day;
      } else {
        this.shift[anchor] = 1;
        this.odd[anchor] = toDayNumber(addMonthsToAnchor(s, 1, anchor)) - this.start.day;
      }
    }
    this.months = flow.monthIndex - this.start.monthIndex - (this.shift[anchor] as number);
    this.remainder = this.odd[anchor] as number;
  }
}

/** Whole unit-periods t and fraction num / den from the start of the term to a cash flow ((b)(5)). */
interface Count {
  t: number;
  num: number;
  den: number;
}

function countUnitPeriods(rule: UnitRule, flow: DatedFlow, start: DatedFlow, months: MonthsBack, out: Count): void {
  if (rule.kind === 'days') {
    // (b)(5)(iv): days divided by the days in the unit-period.
    const days = flow.day - start.day;
    out.t = Math.floor(days / rule.days);
    out.num = days - out.t * rule.days;
    out.den = rule.days;
    return;
  }
  months.measure(flow);
  if (rule.months === 1) {
    // (b)(5)(ii): months measured back from the later date; remaining days / 30.
    out.t = months.months;
    out.num = months.remainder;
    out.den = 30;
  } else if (rule.months === 12) {
    // (b)(5)(v): full years back; the rest is months / 12 when whole, else days / 365.
    const years = Math.floor(months.months / 12);
    out.t = years;
    if (months.remainder === 0) {
      out.num = months.months - years * 12;
      out.den = 12;
    } else {
      out.num = toDayNumber(addMonthsToAnchor(flow.ymd, -12 * years, flow.anchor)) - start.day;
      out.den = 365;
    }
  } else {
    // (b)(5)(iii): 30 days per whole month plus the remaining days, divided by 15
    // (semimonth) or by 30 × the months in the unit-period.
    const days = 30 * months.months + months.remainder;
    const per = rule.kind === 'semimonth' ? 15 : 30 * rule.months;
    out.t = Math.floor(days / per);
    out.num = days - out.t * per;
    out.den = per;
  }
}

// ---------------------------------------------------------------------------
// (b)(4): choosing the unit period

/** Whether a → b is exactly `months` months under (b)(3)(iv) (same date, or clamped to a month end). */
function isMonths(a: DatedFlow, b: DatedFlow, months: number): boolean {
  if (b.monthIndex - a.monthIndex !== months) return false;
  const ad = a.ymd.day;
  const bd = b.ymd.day;
  if (ad === bd) return true;
  if (ad > bd) return bd === daysInMonth(b.ymd.year, b.ymd.month);
  return ad === daysInMonth(a.ymd.year, a.ymd.month);
}

/** Whether a → b is half of the month that starts at a: both halves 13 to 17 days. */
function isSemimonth(a: DatedFlow, b: DatedFlow): boolean {
  const first = b.day - a.day;
  if (first < 13 || first > 17) return false;
  const second = toDayNumber(addMonthsToAnchor(a.ymd, 1, a.ymd.day)) - b.day;
  return second >= 13 && second <= 17;
}

function isOneUnit(rule: UnitRule, a: DatedFlow, b: DatedFlow): boolean {
  if (rule.kind === 'days') return b.day - a.day === rule.days;
  if (rule.kind === 'semimonth') return isSemimonth(a, b);
  return isMonths(a, b, rule.months);
}

/**
 * (b)(4)(i): the unit-period of a transaction with more than one advance or payment.
 * Periods ((b)(3)(i)) run between advances, between payments, and from the start
 * of the term to the first payment; each counts for every unit period it equals
 * (a 28-day February is both a month and four weeks).
 */
function chooseUnitPeriod(start: DatedFlow, advances: DatedFlow[], payments: DatedFlow[]): UnitRule {
  const counts = new Int32Array(BY_LENGTH.length);
  let total = 0;
  let periods = 0;
  for (const list of [advances, payments]) {
    let a = start;
    for (const b of list) {
      const days = b.day - a.day;
      if (days <= 0) continue;
      total += days;
      periods++;
      const byDays = days < RANK_BY_DAYS.length ? (RANK_BY_DAYS[days] as number) : -1;
      if (byDays >= 0) counts[byDays] = (counts[byDays] as number) + 1;
      if (days >= 13 && days <= 17 && isSemimonth(a, b)) counts[SEMIMONTH_RANK] = (counts[SEMIMONTH_RANK] as number) + 1;
      const months = b.monthIndex - a.monthIndex;
      const byMonths = months > 0 && months < RANK_BY_MONTHS.length ? (RANK_BY_MONTHS[months] as number) : -1;
      if (byMonths >= 0 && isMonths(a, b, months)) counts[byMonths] = (counts[byMonths] as number) + 1;
      a = b;
    }
  }
  // The most frequent common period (one that occurs more than once, (b)(3)(ii)); ties go to the shorter.
  let best = -1;
  let bestCount = 1;
  for (let k = 0; k < counts.length; k++) {
    if ((counts[k] as number) > bestCount) {
      best = k;
      bestCount = counts[k] as number;
    }
  }
  if (best >= 0) return BY_LENGTH[best] as UnitRule;
  // (b)(4)(i)(B): no common period: the average period, rounded to the nearest standard interval.
  const average = periods > 0 ? total / periods : 0;
  let nearest = BY_LENGTH[0] as UnitRule;
  for (const rule of BY_LENGTH) {
    if (Math.abs(rule.nominalDays - average) < Math.abs(nearest.nominalDays - average)) nearest = rule;
  }
  return nearest;
}

/**
 * §1026.22(a)(3): irregular means multiple advances, irregular payment periods,
 * or irregular payment amounts, other than an irregular first period or an
 * irregular first or final payment.
 */
function isRegular(rule: UnitRule, payments: DatedFlow[], singleAdvance: boolean): boolean {
  if (!singleAdvance) return false;
  const n = payments.length;
  const level = n > 2 ? (payments[1] as DatedFlow).amount : 0n;
  for (let j = 2; j < n - 1; j++) if ((payments[j] as DatedFlow).amount !== level) return false;
  for (let j = 1; j < n; j++) if (!isOneUnit(rule, payments[j - 1] as DatedFlow, payments[j] as DatedFlow)) return false;
  return true;
}

// ---------------------------------------------------------------------------
// Preparing the equation

interface Prepared {
  readonly start: DatedFlow;
  /** Advances and payments merged in date order, so that t never decreases. */
  readonly flows: DatedFlow[];
  readonly unit: AprUnitPeriod;
  readonly perYear: number;
  readonly regular: boolean;
  readonly advanced: bigint;
  readonly repaid: bigint;
  readonly n: number;
  /**
   * Per cash flow k, in blocks of n: [0] signed amount / amount advanced
   * (payments positive), [n] t, [2n] f, [3n] f's numerator, [4n] f's denominator.
   */
  readonly data: Float64Array;
}

function prepare(input: AprInput): Prepared {
  if (typeof input !== 'object' || input === null) throw new EngineError('invalid_argument', 'the APR input must be an object', 'advances');
  const advanceGroup = datedFlows(input.advances, 'advances');
  const advances = advanceGroup.flows;
  if (advances.length === 0) throw new EngineError('invalid_argument', 'at least one advance is required', 'advances');
  const groups: Group[] = [];
  if (input.payments !== undefined) groups.push(datedFlows(input.payments, 'payments'));
  if (input.paymentSeries !== undefined) groups.push(...seriesFlows(input.paymentSeries));
  if (input.unitPeriod !== undefined && !isUnitPeriod(input.unitPeriod)) {
    throw new EngineError('unknown_frequency', `unit_period must be one of ${UNIT_PERIODS.join(', ')}`, 'unit_period');
  }
  inferAnchors(advances);
  let repaid = 0n;
  let paymentCount = 0;
  for (const group of groups) {
    inferAnchors(group.flows);
    repaid += group.total;
    paymentCount += group.flows.length;
  }
  if (paymentCount === 0) throw new EngineError('invalid_argument', 'at least one payment (payments or payment_series) is required', 'payments');
  if (paymentCount + advances.length > MAX_CASH_FLOWS) {
    throw new EngineError('invalid_argument', `at most ${MAX_CASH_FLOWS} cash flows are accepted`, 'payments');
  }
  const payments = groups.length === 1 ? (groups[0] as Group).flows : ([] as DatedFlow[]).concat(...groups.map((g) => g.flows));
  sortByDay(advances);
  sortByDay(payments);
  const start = advances[0] as DatedFlow;
  for (const payment of payments) {
    if (payment.day < start.day) {
      throw new EngineError('date_order', `a payment (${formatDate(payment.ymd)}) falls before the first advance (${formatDate(start.ymd)})`, dateField(payment));
    }
  }

  const lastPayment = payments[payments.length - 1] as DatedFlow;
  const singleAdvance = (advances[advances.length - 1] as DatedFlow).day === start.day;
  const singlePayment = lastPayment.day === (payments[0] as DatedFlow).day;
  const months = new MonthsBack(start);

  let unit: AprUnitPeriod;
  let rule: UnitRule = RULES.annual;
  let perYear: number;
  let regular: boolean;
  if (input.unitPeriod === undefined && singleAdvance && singlePayment) {
    // (b)(4)(ii): the unit-period is the term, up to one year; (b)(5)(vi)–(vii).
    // (b)(3): a month runs to the same date of a later month, or to its last day when
    // that date does not exist there (29 January → 28 February is one whole month).
    if (isLastDayOfMonth(lastPayment.ymd)) lastPayment.anchor = Math.max(lastPayment.anchor, start.ymd.day);
    months.measure(lastPayment);
    const days = lastPayment.day - start.day;
    regular = true;
    if (months.months >= 12) {
      unit = 'annual';
      perYear = 1;
    } else {
      unit = 'term';
      perYear = months.remainder === 0 && months.months > 0 ? 12 / months.months : days > 0 ? 365 / days : 1;
    }
  } else {
    rule = input.unitPeriod === undefined ? chooseUnitPeriod(start, advances, payments) : RULES[input.unitPeriod];
    unit = rule.name;
    perYear = rule.perYear;
    regular = isRegular(rule, payments, singleAdvance);
  }

  const n = advances.length + payments.length;
  const flows: DatedFlow[] = new Array<DatedFlow>(n);
  const data = new Float64Array(5 * n);
  const scale = Number(advanceGroup.total);
  const count: Count = { t: 0, num: 0, den: 1 };
  let ai = 0;
  let pi = 0;
  for (let k = 0; k < n; k++) {
    const takeAdvance = pi >= payments.length || (ai < advances.length && (advances[ai] as DatedFlow).day <= (payments[pi] as DatedFlow).day);
    const flow = takeAdvance ? (advances[ai++] as DatedFlow) : (payments[pi++] as DatedFlow);
    flows[k] = flow;
    if (unit === 'term') {
      // (b)(5)(vi)–(vii): the single payment is one unit-period from the advance.
      count.t = flow.day > start.day ? 1 : 0;
      count.num = 0;
      count.den = 1;
    } else {
      countUnitPeriods(rule, flow, start, months, count);
    }
    const amount = flow.value / scale;
    data[k] = takeAdvance ? -amount : amount;
    data[n + k] = count.t;
    data[2 * n + k] = count.num / count.den;
    data[3 * n + k] = count.num;
    data[4 * n + k] = count.den;
  }
  return { start, flows, unit, perYear, regular, advanced: advanceGroup.total, repaid, n, data };
}

// ---------------------------------------------------------------------------
// (b)(8)–(b)(9): the general equation and its solution

let valueF = 0;
let valueDF = 0;
/**
 * F(i) = Σ P/((1+f·i)(1+i)^t) − Σ A/((1+e·i)(1+i)^q) and dF/di, amounts scaled by
 * the sum advanced. t never decreases, so (1+i)^−t is extended from the previous flow.
 */
function evaluate(i: number, data: Float64Array, n: number): void {
  const v = 1 / (1 + i);
  let power = 1;
  let at = 0;
  let sum = 0;
  let slope = 0;
  for (let k = 0; k < n; k++) {
    const tk = data[n + k] as number;
    if (tk !== at) {
      power = tk - at === 1 ? power * v : power * Math.pow(v, tk - at);
      at = tk;
    }
    const fk = data[2 * n + k] as number;
    const simple = 1 + fk * i;
    const term = ((data[k] as number) * power) / simple;
    sum += term;
    slope -= term * (fk / simple + tk * v);
  }
  valueF = sum;
  valueDF = slope;
}

const TOLERANCE = 1e-12;
const MAX_NEWTON = 60;

function solve(p: Prepared): { rate: number; iterations: number } {
  const { data, n } = p;
  evaluate(0, data, n);
  let iterations = 0;
  if (valueDF < 0) {
    // Newton from i = 0. For a loan (advances before payments) F is convex and
    // decreasing, so the iterates rise monotonically to the root.
    let i = 0;
    while (iterations < MAX_NEWTON) {
      iterations++;
      const next = i - valueF / valueDF;
      // The root sought is positive (the payments exceed the advances); leave Newton if it strays.
      if (!Number.isFinite(next) || next < 0) break;
      if (Math.abs(next - i) <= TOLERANCE) return { rate: next, iterations };
      i = next;
      evaluate(i, data, n);
      if (!(valueDF < 0) || !Number.isFinite(valueF)) break;
    }
  }
  // Fallback: bracket a sign change above 0 (F(0) > 0 here) and bisect it.
  let lo = 0;
  let hi = 1;
  for (;;) {
    evaluate(hi, data, n);
    iterations++;
    if (valueF < 0) break;
    if (!Number.isFinite(valueF) || hi > 1e9) {
      throw new EngineError('no_root', 'no unit-period rate balances these advances and payments', 'payments');
    }
    lo = hi;
    hi *= 2;
  }
  while (hi - lo > TOLERANCE) {
    const mid = lo + (hi - lo) / 2;
    if (mid <= lo || mid >= hi) break;
    evaluate(mid, data, n);
    iterations++;
    if (valueF > 0) lo = mid;
    else hi = mid;
  }
  return { rate: lo + (hi - lo) / 2, iterations };
}

const APR_SCALE = 10n ** 12n;

/** The APR rounded to 12 decimals, as an exact ratio. */
function aprRatio(apr: number): Ratio {
  const scaled = Math.round(apr * 1e12);
  return Number.isSafeInteger(scaled) ? { num: BigInt(scaled), den: APR_SCALE } : parseDecimal(apr.toFixed(12), 'apr');
}

/**
 * The APR of a closed-end credit transaction by Regulation Z Appendix J.
 * Throws EngineError with the offending field (snake_case: 'advances',
 * 'payments[2].date', 'payment_series[0].count', 'unit_period').
 */
export function appendixJApr(input: AprInput): AprResult {
  const p = prepare(input);
  const base = { unitPeriod: p.unit, unitPeriodsPerYear: p.perYear, regular: p.regular };
  if (p.repaid === p.advanced) {
    return { ...base, apr: { num: 0n, den: 1n }, aprNumber: 0, unitPeriodRate: 0, iterations: 0 };
  }
  if (p.repaid < p.advanced) {
    throw new EngineError('no_root', 'the payments total less than the amount advanced, so no non-negative rate exists', 'payments');
  }
  let elapses = false;
  for (let k = 0; k < p.n; k++) if ((p.data[p.n + k] as number) > 0 || (p.data[2 * p.n + k] as number) > 0) elapses = true;
  if (!elapses) throw new EngineError('no_root', 'every cash flow falls at the start of the term, so no rate applies', 'payments');
  const { rate, iterations } = solve(p);
  const aprNumber = rate * p.perYear;
  return { ...base, apr: aprRatio(aprNumber), aprNumber, unitPeriodRate: rate, iterations };
}

/** The Appendix J time line of a transaction: the unit period chosen and each cash flow's t and f. */
export function appendixJSchedule(input: AprInput): AppendixJSchedule {
  const p = prepare(input);
  const { n, data } = p;
  const flows: AppendixJCashFlow[] = p.flows.map((flow, k) => ({
    kind: (data[k] as number) > 0 ? 'payment' : 'advance',
    date: formatDate(flow.ymd),
    amount: flow.amount,
    t: data[n + k] as number,
    f: { num: BigInt(data[3 * n + k] as number), den: BigInt(data[4 * n + k] as number) },
  }));
  const cashFlows = [...flows.filter((x) => x.kind === 'advance'), ...flows.filter((x) => x.kind === 'payment')];
  return { termStart: formatDate(p.start.ymd), unitPeriod: p.unit, unitPeriodsPerYear: p.perYear, regular: p.regular, cashFlows };
}

// ---------------------------------------------------------------------------
// §1026.22(a)(2)–(3): accuracy tolerance

const REGULAR_TOLERANCE: Ratio = { num: 1n, den: 800n }; // 1/8 of a percentage point, as a fraction
const IRREGULAR_TOLERANCE: Ratio = { num: 1n, den: 400n }; // 1/4 of a percentage point

function asRatio(value: Ratio | string, field: string): Ratio {
  if (typeof value === 'string') return parseDecimal(value, field);
  if (typeof value === 'object' && value !== null && typeof value.num === 'bigint' && typeof value.den === 'bigint' && value.den > 0n) return value;
  throw new EngineError('invalid_argument', `${field} must be a decimal string or a ratio`, field);
}

/**
 * Whether a disclosed APR is accurate against the actual one: within 1/8 of a
 * percentage point for a regular transaction (§1026.22(a)(2)), 1/4 for an
 * irregular one (§1026.22(a)(3)). Both are annual fractions ("0.0969" is
 * 9.69 %); the comparison is exact and the boundary is inclusive.
 */
export function aprWithinTolerance(disclosed: Ratio | string, actual: Ratio | string, transaction: 'regular' | 'irregular'): boolean {
  const d = asRatio(disclosed, 'disclosed');
  const a = asRatio(actual, 'actual');
  let tolerance: Ratio;
  if (transaction === 'regular') tolerance = REGULAR_TOLERANCE;
  else if (transaction === 'irregular') tolerance = IRREGULAR_TOLERANCE;
  else throw new EngineError('invalid_argument', 'transaction must be "regular" or "irregular"', 'transaction');
  const difference = sub(d, a);
  const magnitude = difference.num < 0n ? { num: -difference.num, den: difference.den } : difference;
  return compare(magnitude, tolerance) <= 0;
}
