/**
 * Deterministic simulation of the servicing lifecycle. A seed fixes everything: the
 * product, the loans, the business dates and every command (book, disburse, pay
 * partial / installment / full / over, backdated pay, reverse, fee, advance the
 * business date, charge-off, write-off, recover, cancel). Each command runs against the
 * real service and database, and after every step the invariants below are checked
 * against a small reference model that knows only what the commands said and returned.
 *
 * No Math.random, no wall clock: the run of a seed depends on the seed and the step
 * count only, so a failure prints a seed that replays exactly
 * (`SIM_SEED=<n> SIM_STEPS=<k> npx vitest run test/servicing/simulation.test.ts`, or
 * `npx tsx scripts/simulate.ts --seed <n> --steps <k>`).
 *
 * Used by test/servicing/simulation.test.ts (CI) and scripts/simulate.ts (thousands of
 * seeds on demand); it imports nothing from vitest so that the script can run it.
 */
import { sql, type Kysely } from 'kysely';
import {
  ALLOCATION_STRATEGY_NAMES,
  COMPONENTS,
  OVERPAYMENT_MODES,
  dayNumber,
  divRound,
  formatMoney,
  isoDate,
  parseDecimal,
  parseMoney,
  type Component,
  type DayCountConvention,
  type Frequency,
  type OverpaymentMode,
} from '../../src/engine/index.js';
import { AppError } from '../../src/platform/errors.js';
import {
  advance,
  applyEvent,
  balancesOf,
  capitalizesInterest,
  compareEvents,
  eventFromTransaction,
  glOf,
  newLoanState,
  outstandingOf,
  replay,
  type ComponentTotals,
  type EventEffect,
  type LoanState,
} from '../../src/servicing/loan-state.js';
import { glFromJson, stateFromJson, stateToJson } from '../../src/servicing/loan-state-json.js';
import type { FeeRule, LoanStatus, LoanTerms, ProductTerms, TransactionType } from '../../src/servicing/model.js';
import { createEodService, type EodService } from '../../src/servicing/eod.js';
import { loanTermsFromJson } from '../../src/servicing/products.js';
import * as repo from '../../src/servicing/repository.js';
import type { LoanRow, ServicingDb } from '../../src/servicing/repository.js';
import { createServicingService, type CommandContext, type CommandResult, type ServicingDatabase, type ServicingService } from '../../src/servicing/service.js';
import type { TestApp } from '../support/app.js';
import { silentLogger } from '../support/db.js';

// ---------------------------------------------------------------------------
// Seeds and the PRNG
// ---------------------------------------------------------------------------

/** The fixed base seed when FC_SEED is not set, so a local run without it is reproducible too. */
export const DEFAULT_BASE_SEED = 20_260_115;

/** FC_SEED when set (CI sets it from the commit), else the fixed default. */
export function baseSeed(env: Readonly<Record<string, string | undefined>>): number {
  const text = env.FC_SEED;
  if (text === undefined || text === '') return DEFAULT_BASE_SEED;
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new Error(`FC_SEED must be an integer, got ${text}`);
  return Math.abs(n);
}

/** mulberry32, seeded through a splitmix-style scramble so that neighbouring seeds diverge at once. */
export class Rng {
  private a: number;

  constructor(seed: number) {
    let h = (seed % 0x1_0000_0000) >>> 0;
    h = Math.imul(h ^ (h >>> 16), 0x85eb_ca6b) >>> 0;
    h = Math.imul(h ^ (h >>> 13), 0xc2b2_ae35) >>> 0;
    this.a = (h ^ (h >>> 16)) >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.a = (this.a + 0x6d2b_79f5) >>> 0;
    let t = this.a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  }

  /** Integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  /** bigint in [lo, hi] (hi − lo < 2^53). */
  big(lo: bigint, hi: bigint): bigint {
    if (hi <= lo) return lo;
    return lo + BigInt(Math.floor(this.next() * Number(hi - lo + 1n)));
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from an empty list');
    return items[Math.floor(this.next() * items.length)] as T;
  }

  /** One key by weight (weights ≤ 0 never win). */
  weighted<K extends string>(weights: Readonly<Partial<Record<K, number>>>): K {
    const entries = (Object.entries(weights) as [K, number][]).filter(([, w]) => w > 0);
    let total = 0;
    for (const [, w] of entries) total += w;
    let r = this.next() * total;
    for (const [k, w] of entries) {
      r -= w;
      if (r < 0) return k;
    }
    return (entries.at(-1) as [K, number])[0];
  }
}

// ---------------------------------------------------------------------------
// Failures
// ---------------------------------------------------------------------------

export class SimulationFailure extends Error {
  override readonly name = 'SimulationFailure';

  constructor(
    readonly seed: number,
    readonly steps: number,
    /** 1-based step the failure was found at; 0 = while setting the seed up. */
    readonly step: number,
    /** The invariant (or unexpected error) that failed, without the log. */
    readonly reason: string,
    readonly log: readonly string[],
  ) {
    super(
      [
        `simulation seed ${seed} failed at step ${step} of ${steps}:`,
        `  ${reason.replace(/\n/g, '\n  ')}`,
        `replay: SIM_SEED=${seed} SIM_STEPS=${steps} npx vitest run test/servicing/simulation.test.ts`,
        `    or: npx tsx scripts/simulate.ts --seed ${seed} --steps ${steps}`,
        'command log:',
        ...log.map((line) => `  ${line}`),
      ].join('\n'),
    );
  }
}

/** An invariant that does not hold. */
class Violation extends Error {
  override readonly name = 'Violation';
}

function check(condition: boolean, message: () => string): asserts condition {
  if (!condition) throw new Violation(message());
}

function show(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v));
}

/** The first path at which two JSON-able values differ, with both sides. */
function firstDifference(a: unknown, b: unknown, path = '$'): string | null {
  if (typeof a === 'bigint' || typeof b === 'bigint' || a === null || b === null || typeof a !== 'object' || typeof b !== 'object') {
    return a === b ? null : `${path}: ${show(a)} ≠ ${show(b)}`;
  }
  if (Array.isArray(a) !== Array.isArray(b)) return `${path}: ${show(a)} ≠ ${show(b)}`;
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  for (const key of keys) {
    const d = firstDifference((a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key], `${path}.${key}`);
    if (d !== null) return d;
  }
  return null;
}

function expectSame(actual: unknown, expected: unknown, what: string): void {
  const d = firstDifference(actual, expected);
  check(d === null, () => `${what}: ${d ?? ''}`);
}

// ---------------------------------------------------------------------------
// Dates and money
// ---------------------------------------------------------------------------

const addDays = (date: string, days: number): string => isoDate(dayNumber(date) + days);
const before = (a: string, b: string): boolean => dayNumber(a) < dayNumber(b);
const between = (rng: Rng, from: string, to: string): string => isoDate(rng.int(dayNumber(from), Math.max(dayNumber(from), dayNumber(to))));

const ZERO: ComponentTotals = { principal: 0n, interest: 0n, fee: 0n, penalty: 0n };
const sumOf = (t: ComponentTotals): bigint => t.principal + t.interest + t.fee + t.penalty;
const minus = (a: ComponentTotals, b: ComponentTotals): ComponentTotals => ({ principal: a.principal - b.principal, interest: a.interest - b.interest, fee: a.fee - b.fee, penalty: a.penalty - b.penalty });
const plus = (a: ComponentTotals, b: ComponentTotals): ComponentTotals => ({ principal: a.principal + b.principal, interest: a.interest + b.interest, fee: a.fee + b.fee, penalty: a.penalty + b.penalty });

/** A money string of the effect JSON (or its absence) back to minor units. */
function minorOf(value: unknown, currency: string): bigint | undefined {
  return typeof value === 'string' ? parseMoney(value, currency) : undefined;
}

// ---------------------------------------------------------------------------
// The reference model
// ---------------------------------------------------------------------------

interface ModelTransaction {
  readonly id: string;
  readonly seq: number;
  readonly type: TransactionType;
  readonly date: string;
  readonly amount: bigint;
  live: boolean;
}

/** What the simulation knows of one loan: what its commands said and returned, and what it last observed. */
interface ModelLoan {
  readonly label: string;
  readonly id: string;
  readonly terms: LoanTerms;
  readonly bookedOn: string;
  disbursed: bigint;
  firstDisbursementDate: string | null;
  /** Origination fee, as the product's rule gives it on the first disbursement. */
  originationFee: bigint;
  readonly transactions: ModelTransaction[];
  // Observed after the last step (used only to choose commands and predict refusals).
  status: LoanStatus;
  state: LoanState;
  /** loans.version when last observed. */
  version: number;
}

const LIVE_CASH_TYPES: ReadonlySet<TransactionType> = new Set(['repayment', 'recovery']);
const REVERSIBLE: ReadonlySet<TransactionType> = new Set(['repayment', 'recovery', 'fee', 'late_fee']);
const REVERSIBLE_STATUSES: ReadonlySet<LoanStatus> = new Set(['active', 'paid_off', 'overpaid', 'charged_off']);

function feeOf(rule: FeeRule | null, base: bigint, terms: LoanTerms): bigint {
  if (rule === null) return 0n;
  if (rule.kind === 'fixed') return rule.amount;
  const rate = parseDecimal(rule.rate);
  return divRound(base * rate.num, rate.den, terms.interestRounding);
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

type PayIntent = 'partial' | 'installment' | 'full' | 'over' | 'backdated' | 'future' | 'early' | 'recovery' | 'refused';

type Command =
  | { readonly kind: 'book'; readonly principal: bigint; readonly rate: string; readonly term: number; readonly firstPaymentDate?: string | undefined }
  | { readonly kind: 'disburse'; readonly loan: ModelLoan; readonly amount?: bigint | undefined; readonly date?: string | undefined }
  | { readonly kind: 'pay'; readonly loan: ModelLoan; readonly intent: PayIntent; readonly amount: bigint; readonly date?: string | undefined; readonly overpayment?: OverpaymentMode | undefined }
  | { readonly kind: 'fee'; readonly loan: ModelLoan; readonly amount: bigint; readonly date?: string | undefined }
  | { readonly kind: 'advance'; readonly mode: 'daily' | 'jump_eod' | 'jump'; readonly days: number }
  | { readonly kind: 'charge_off'; readonly loan: ModelLoan; readonly date?: string | undefined; readonly policy: boolean }
  | { readonly kind: 'write_off'; readonly loan: ModelLoan; readonly date?: string | undefined }
  | { readonly kind: 'reverse'; readonly loan: ModelLoan; readonly target: ModelTransaction }
  | { readonly kind: 'cancel'; readonly loan: ModelLoan }
  /** The same request again with its Idempotency-Key (changed: with a different body). */
  | { readonly kind: 'retry'; readonly loan: ModelLoan; readonly original: Keyed; readonly changed: boolean };

/** A money command that succeeded under an Idempotency-Key. */
interface Keyed {
  readonly step: number;
  readonly cmd: Extract<Command, { kind: 'disburse' | 'pay' | 'fee' | 'charge_off' | 'write_off' | 'reverse' }>;
  readonly key: string;
  readonly transactionId: string;
  readonly seq: number;
}

const KEYED_KINDS: ReadonlySet<Command['kind']> = new Set(['disburse', 'pay', 'fee', 'charge_off', 'write_off', 'reverse']);

function describe(cmd: Command, currency: string): string {
  const m = (v: bigint) => formatMoney(v, currency);
  const d = (date: string | undefined) => (date === undefined ? 'date=today' : `date=${date}`);
  switch (cmd.kind) {
    case 'book':
      return `book principal=${m(cmd.principal)} rate=${cmd.rate} term=${cmd.term}${cmd.firstPaymentDate ? ` first_payment=${cmd.firstPaymentDate}` : ''}`;
    case 'disburse':
      return `disburse ${cmd.loan.label} amount=${cmd.amount === undefined ? 'rest' : m(cmd.amount)} ${d(cmd.date)}`;
    case 'pay':
      return `pay(${cmd.intent}) ${cmd.loan.label} amount=${m(cmd.amount)} ${d(cmd.date)}${cmd.overpayment ? ` overpayment=${cmd.overpayment}` : ''}`;
    case 'fee':
      return `fee ${cmd.loan.label} amount=${m(cmd.amount)} ${d(cmd.date)}`;
    case 'advance':
      return cmd.mode === 'daily' ? `end of day × ${cmd.days}` : cmd.mode === 'jump_eod' ? `advance ${cmd.days} days (jump, then end of day)` : `advance ${cmd.days} days (no end of day)`;
    case 'charge_off':
      return `charge_off ${cmd.loan.label} ${d(cmd.date)}${cmd.policy ? ' policy' : ''}`;
    case 'write_off':
      return `write_off ${cmd.loan.label} ${d(cmd.date)}`;
    case 'reverse':
      return `reverse ${cmd.loan.label} seq=${cmd.target.seq} (${cmd.target.type} ${m(cmd.target.amount)} on ${cmd.target.date}${cmd.target.live ? '' : ', already reversed'})`;
    case 'cancel':
      return `cancel ${cmd.loan.label}`;
    case 'retry':
      return `retry step ${cmd.original.step} with its key${cmd.changed ? ' and a different body' : ''} (${describe(cmd.original.cmd, currency)})`;
  }
}

// ---------------------------------------------------------------------------
// Products
// ---------------------------------------------------------------------------

const CURRENCIES = ['USD', 'USD', 'USD', 'USD', 'JPY', 'KWD'] as const;
const DAY_COUNTS: readonly DayCountConvention[] = ['30/360', '30/360', 'ACT/365F', 'ACT/360', 'ACT/ACT ISDA'];
const FREQS: readonly Frequency[] = ['monthly', 'monthly', 'monthly', 'biweekly', 'weekly', 'quarterly'];

function drawProduct(rng: Rng): ProductTerms {
  const currency = rng.pick(CURRENCIES);
  const unit = parseMoney('1', currency);
  const feeRule = (): FeeRule => (rng.chance(0.5) ? { kind: 'fixed', amount: unit * BigInt(rng.int(1, 50)) } : { kind: 'percent', rate: rng.pick(['0.01', '0.015', '0.02', '0.035']) });
  return {
    currency,
    interestMethod: rng.chance(0.8) ? 'declining_balance' : 'flat',
    amortization: rng.chance(0.75) ? 'equal_installments' : 'equal_principal',
    dayCount: rng.pick(DAY_COUNTS),
    frequency: rng.pick(FREQS),
    interestRounding: rng.pick(['half_up', 'half_even'] as const),
    paymentRounding: 'half_up',
    allocationStrategy: rng.pick(ALLOCATION_STRATEGY_NAMES),
    overpayment: rng.pick(OVERPAYMENT_MODES),
    originationFee: rng.chance(0.4) ? feeRule() : null,
    lateFee: rng.chance(0.5) ? { fee: feeRule(), graceDays: rng.int(0, 15) } : null,
    delinquencyBuckets: [
      { name: '1-30', minDays: 1 },
      { name: '31-60', minDays: 31 },
      { name: '61-90', minDays: 61 },
      { name: '90+', minDays: 91 },
    ],
    chargeOffDays: rng.pick([null, 30, 90, 180]),
    minAmount: unit,
    maxAmount: unit * 10_000_000n,
    minTerm: 1,
    maxTerm: 480,
    minRate: '0',
    maxRate: '0.36',
    multiTranche: rng.chance(0.35),
  };
}

function productSummary(p: ProductTerms): string {
  const fee = (f: FeeRule | null) => (f === null ? 'none' : f.kind === 'fixed' ? `fixed ${formatMoney(f.amount, p.currency)}` : `${f.rate}`);
  return [
    `product ${p.currency} ${p.interestMethod}/${p.amortization} ${p.dayCount} ${p.frequency} rounding=${p.interestRounding}`,
    `allocation=${p.allocationStrategy} overpayment=${p.overpayment} origination_fee=${fee(p.originationFee)}`,
    `late_fee=${p.lateFee === null ? 'none' : `${fee(p.lateFee.fee)} grace ${p.lateFee.graceDays}`} charge_off_days=${p.chargeOffDays ?? 'never'} multi_tranche=${p.multiTranche}`,
  ].join(' ');
}

// ---------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------

export interface SeedOptions {
  /** Commands per seed. */
  readonly steps: number;
  /** Called after each step's invariants held (tests tamper with the books here to prove the checks bite). */
  readonly afterStep?: (step: number, loans: readonly { readonly id: string; readonly label: string }[]) => Promise<void>;
}

/** What a run explored: command outcomes and the situations it reached, summed over seeds. */
export type Coverage = Record<string, number>;

export interface SeedReport {
  readonly seed: number;
  readonly steps: number;
  readonly log: readonly string[];
  readonly coverage: Coverage;
}

export function mergeCoverage(into: Coverage, from: Coverage): Coverage {
  for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
  return into;
}

interface Snapshot {
  readonly loanVersion: number;
  readonly loanTransactions: number;
  readonly journalSeq: string;
  readonly outbox: string;
  readonly audit: string;
  readonly checkpoints: number;
}

export interface Simulation {
  runSeed(seed: number, options: SeedOptions): Promise<SeedReport>;
  /** Book-wide: the trial balance nets to zero per currency; GL per account = Σ loans' posted vectors. */
  checkBooks(): Promise<void>;
}

const CHECKPOINT_CHOICES = [1, 2, 3, 5, 25] as const;
const EOD_CHUNK_CHOICES = [1, 2, 500] as const;

/**
 * One simulation over a test app's database. Seeds run one after another on it; each
 * sets the business date itself, touches only the loans it books, and at its end
 * writes off the loans it left active (an ordinary command), so no later seed's end of
 * day ever picks them up: a seed runs the same alone or after a thousand others.
 */
export async function createSimulation(t: TestApp): Promise<Simulation> {
  const db = t.db.database.db as unknown as Kysely<ServicingDatabase>;
  const sdb = db as unknown as Kysely<ServicingDb>;
  const servicer = await t.userWithRole('servicer');
  const borrower = await t.userWithRole('borrower');
  const ctx: CommandContext = { viewer: { userId: servicer.id, role: 'servicer' }, ip: null, requestId: null };
  // A clock that never reads the wall clock: it only stamps audit rows and postings.
  let tick = Date.UTC(2026, 0, 1);
  const clock = () => new Date((tick += 1));
  const services = new Map<number, ServicingService>();
  const serviceFor = (every: number): ServicingService => {
    let s = services.get(every);
    if (!s) {
      s = every === 25 ? t.servicing : createServicingService({ db, ledger: t.ledger, clock, logger: silentLogger, checkpointEvery: every });
      services.set(every, s);
    }
    return s;
  };
  const eods = new Map<number, EodService>();
  const eodFor = (chunkSize: number): EodService => {
    let e = eods.get(chunkSize);
    if (!e) {
      e = createEodService({ db, ledger: t.ledger, clock, logger: silentLogger, chunkSize });
      eods.set(chunkSize, e);
    }
    return e;
  };
  let products = 0;

  async function setBusinessDate(date: string): Promise<void> {
    await repo.initBusinessDate(sdb, date);
    await repo.setBusinessDate(sdb, date);
  }

  async function snapshot(loanId: string): Promise<Snapshot> {
    const r = await sql<{ v: number | null; tx: string; je: string | null; ob: string | null; au: string | null; cp: string }>`
      select (select version from loans where id = ${loanId}) as v,
             (select count(*) from loan_transactions where loan_id = ${loanId})::text as tx,
             (select max(seq) from journal_entries)::text as je,
             (select max(id) from outbox_events)::text as ob,
             (select max(id) from audit_log)::text as au,
             (select count(*) from loan_checkpoints where loan_id = ${loanId})::text as cp`.execute(db);
    const row = r.rows[0] as (typeof r.rows)[number];
    return { loanVersion: row.v ?? -1, loanTransactions: Number(row.tx), journalSeq: row.je ?? '', outbox: row.ob ?? '', audit: row.au ?? '', checkpoints: Number(row.cp) };
  }

  const nonZero = (v: Readonly<Record<string, bigint>>) => Object.fromEntries(Object.entries(v).filter(([, x]) => x !== 0n).sort(([a], [b]) => a.localeCompare(b)));

  async function checkBooks(): Promise<void> {
    const tb = await t.ledger.trialBalance();
    for (const total of tb.totals) check(total.debits === total.credits, () => `trial balance: ${total.currency} debits ${total.debits} ≠ credits ${total.credits}`);
    const gl = await sql<{ k: string; total: string }>`
      select l.currency || ':' || l.account_code as k, sum(l.amount)::text as total from journal_lines l join journal_entries e on e.id = l.entry_id
      where e.source_type like 'servicing.%' group by l.currency, l.account_code`.execute(db);
    const sub = await sql<{ k: string; total: string }>`
      select currency || ':' || key as k, sum(value::bigint)::text as total from loans, jsonb_each_text(gl) group by currency, key`.execute(db);
    const vector = (rows: readonly { k: string; total: string }[]) => nonZero(Object.fromEntries(rows.map((r) => [r.k, BigInt(r.total)])));
    expectSame(vector(sub.rows), vector(gl.rows), 'book-wide reconciliation: Σ loans.gl (subledger) vs servicing journal lines (GL)');
  }

  async function runSeed(seed: number, options: SeedOptions): Promise<SeedReport> {
    const rng = new Rng(seed);
    const checkpointEvery = rng.pick(CHECKPOINT_CHOICES);
    const eodChunk = rng.pick(EOD_CHUNK_CHOICES);
    const svc = serviceFor(checkpointEvery);
    const eod = eodFor(eodChunk);
    const log: string[] = [];
    const coverage: Coverage = {};
    const count = (key: string) => (coverage[key] = (coverage[key] ?? 0) + 1);
    const loans: ModelLoan[] = [];
    const keyedDone: Keyed[] = [];
    let keys = 0;
    let step = 0;
    let today = isoDate(dayNumber('2026-01-01') + rng.int(0, 400));
    const productTerms = drawProduct(rng);
    const currency = productTerms.currency;
    const unit = parseMoney('1', currency);
    const money = (v: bigint) => formatMoney(v, currency);
    log.push(`seed ${seed}: checkpointEvery=${checkpointEvery} eodChunk=${eodChunk} start=${today}`, productSummary(productTerms));

    try {
      // One end-of-day run per date is the rule of an installation; every seed is a
      // fresh installation's timeline, so the runs of earlier seeds are forgotten.
      await sql`delete from eod_runs`.execute(db);
      await setBusinessDate(today);
      const firstEntry = await sql<{ seq: string | null }>`select max(seq)::text as seq from journal_entries`.execute(db);
      const seedFromSeq = firstEntry.rows[0]?.seq ?? '0';
      const product = await svc.createProduct({ code: `sim-${seed}-${++products}`, name: `Simulation ${seed}`, terms: productTerms }, servicer.id);

      // -- checking ------------------------------------------------------------------

      /** Reads one loan and checks every per-loan invariant; returns the replay's effects by seq. */
      async function observe(loan: ModelLoan): Promise<ReadonlyMap<number, EventEffect>> {
        const [found, txs, checkpoints] = await Promise.all([
          sql<LoanRow & { po: string }>`select *, principal_outstanding::text as po from loans where id = ${loan.id}`.execute(db),
          repo.listTransactions(sdb, loan.id, { limit: 100_000 }),
          sql<{ seq: number; value_date: string; state: unknown }>`select seq, value_date::text as value_date, state from loan_checkpoints where loan_id = ${loan.id}`.execute(db),
        ]);
        const row = found.rows[0];
        check(row !== undefined, () => `${loan.label}: the loan row is gone`);
        const terms = loanTermsFromJson(row.terms);
        const state = stateFromJson(row.state);
        const where = `${loan.label} (${row.status}, as of ${state.asOf ?? 'never'}, business date ${today})`;

        // Transactions end of day added are the model's too (it did not command them).
        for (const x of txs) {
          if (x.seq > (loan.transactions.at(-1)?.seq ?? 0)) {
            check(x.type === 'late_fee' || x.type === 'charge_off', () => `${where}: transaction seq ${x.seq} (${x.type}) appeared without a command`);
            loan.transactions.push({ id: x.id, seq: x.seq, type: x.type, date: x.value_date, amount: x.amount, live: true });
            count(`eod:${x.type}`);
          }
        }

        // The row agrees with its own state.
        check(row.status === state.status, () => `${where}: row status ${row.status} ≠ state status ${state.status}`);
        check(row.as_of === state.asOf, () => `${where}: row as_of ${row.as_of} ≠ state asOf ${state.asOf}`);
        check(row.last_seq === (txs.at(-1)?.seq ?? 0), () => `${where}: last_seq ${row.last_seq} ≠ last transaction seq ${txs.at(-1)?.seq ?? 0}`);

        // Transactions: exactly the ones the model's successful commands (and end of day) recorded, reversed exactly where reversed.
        expectSame(
          txs.map((x) => ({ seq: x.seq, type: x.type, date: x.value_date, amount: x.amount, live: x.reversed_at === null })),
          loan.transactions.map((x) => ({ seq: x.seq, type: x.type, date: x.date, amount: x.amount, live: x.live })),
          `${where}: recorded transactions vs the commands that succeeded`,
        );

        // The posted vector (what the journal holds for the loan) is the vector of its state.
        const posted = glFromJson(row.gl);
        const gl = glOf(state, terms);
        expectSame(nonZero(posted), nonZero(gl), `${where}: loans.gl (posted) vs glOf(state)`);
        let net = 0n;
        for (const v of Object.values(gl)) net += v;
        check(net === 0n, () => `${where}: the loan's ledger vector nets to ${net}`);

        // The strongest one: the stored state is a full replay, from nothing, of the live transactions.
        const events = txs.filter((x) => x.reversed_at === null).map(eventFromTransaction);
        const scratch = replay(newLoanState(), terms, events, state.asOf);
        // Cancelling is the one change that is not a transaction: it only sets the status.
        const replayed = state.status === 'cancelled' && scratch.state.status === 'pending_disbursement' ? { ...scratch.state, status: state.status } : scratch.state;
        expectSame(stateToJson(state), stateToJson(replayed), `${where}: stored state vs replay from scratch of ${events.length} live transactions`);

        // Allocations = payments, event by event, re-read from the replay (a backdated
        // payment or a reversal changes earlier allocations).
        let s = newLoanState();
        let creditApplied = ZERO;
        let allocated = ZERO;
        let feesApplied = 0n;
        const unmatched = new Map(checkpoints.rows.map((c) => [`${c.value_date}/${c.seq}`, c.state]));
        for (const event of [...events].sort(compareEvents)) {
          const a = advance(s, terms, event.date);
          const fromCredit = minus(a.paid, s.paid);
          check(sumOf(fromCredit) === s.credit - a.credit && a.received === s.received, () => `${where}: advancing to ${event.date} paid ${show(fromCredit)} but the credit went from ${s.credit} to ${a.credit}`);
          creditApplied = plus(creditApplied, fromCredit);
          const { state: next, effect } = applyEvent(a, terms, event);
          const paid = minus(next.paid, a.paid);
          const tag = `${where}: seq ${event.seq} ${event.type}${'amount' in event ? ` of ${money(event.amount)}` : ''} on ${event.date} (replayed on a ${a.status} loan)`;
          // Money received follows the loan's state at its value date, whatever the
          // transaction's type: allocated while active, recovered once charged off,
          // a credit once paid off. The effect says which.
          const cash = event.type === 'repayment' || event.type === 'recovery';
          if (cash && effect.totals !== undefined) {
            const totals = effect.totals;
            const credit = effect.creditBalance ?? 0n;
            const used = effect.creditApplied ?? 0n;
            check(sumOf(totals) + credit === event.amount + used, () => `${tag}: allocated ${show(totals)} + credit ${credit} ≠ amount + credit used ${used}`);
            expectSame(paid, { principal: totals.principal, interest: totals.interest, fee: totals.fee, penalty: totals.penalty }, `${tag}: state.paid moved by (vs the allocation totals)`);
            check(next.credit - a.credit === credit - used, () => `${tag}: credit moved by ${next.credit - a.credit}, the effect says +${credit} −${used}`);
            const byLines: Record<Component, bigint> = { penalty: 0n, fee: 0n, interest: 0n, principal: 0n };
            for (const l of effect.lines ?? []) {
              check(l.amount > 0n, () => `${tag}: allocation line of ${l.amount}`);
              byLines[l.component] += l.amount;
            }
            for (const c of COMPONENTS) check(byLines[c] === totals[c], () => `${tag}: lines pay ${byLines[c]} of ${c}, totals say ${totals[c]}`);
            allocated = plus(allocated, totals);
          } else {
            check(sumOf(paid) === 0n, () => `${tag}: a ${event.type} moved state.paid by ${show(paid)}`);
          }
          if (cash && effect.totals === undefined) {
            check(next.recovered - a.recovered + (next.credit - a.credit) === event.amount, () => `${tag}: recovered ${next.recovered - a.recovered} + credit ${next.credit - a.credit} ≠ amount`);
            check((effect.creditBalance ?? 0n) === next.credit - a.credit, () => `${tag}: credit moved by ${next.credit - a.credit}, the effect says ${effect.creditBalance}`);
          }
          if (cash) check(effect.applied, () => `${tag}: money received was not applied`);
          if (event.type === 'late_fee' || event.type === 'fee') {
            check(next.feesCharged - a.feesCharged === (effect.applied ? effect.amount : 0n), () => `${tag}: fees charged moved by ${next.feesCharged - a.feesCharged}, the effect says ${effect.applied ? effect.amount : 0n}`);
            if (event.type === 'fee' && effect.applied) check(effect.amount === event.amount, () => `${tag}: charged ${effect.amount}`);
            if (effect.applied) feesApplied += effect.amount;
          }
          if (event.type === 'disbursement') check(next.disbursed - a.disbursed === event.amount, () => `${tag}: disbursed moved by ${next.disbursed - a.disbursed}`);
          check(next.received - a.received === (event.type === 'repayment' || event.type === 'recovery' ? event.amount : 0n), () => `${tag}: received moved by ${next.received - a.received}`);
          // A replay checkpoint is the state right after its transaction: the fold's own, exactly.
          const checkpoint = unmatched.get(`${event.date}/${event.seq}`);
          if (checkpoint !== undefined) {
            expectSame(stateToJson(stateFromJson(checkpoint)), stateToJson(next), `${tag}: the checkpoint after it vs the replay from scratch`);
            unmatched.delete(`${event.date}/${event.seq}`);
            count('checkpoint:verified');
          }
          s = next;
        }
        check(unmatched.size === 0, () => `${where}: checkpoints at ${[...unmatched.keys()].join(', ')} are after no live transaction`);
        const end = state.asOf === null ? s : advance(s, terms, state.asOf);
        creditApplied = plus(creditApplied, minus(end.paid, s.paid));
        expectSame(stateToJson(end), stateToJson(scratch.state), `${where}: event-by-event fold vs replay()`);

        // The reference model: what the commands moved, against the posted ledger.
        let cashIn = 0n;
        // Fees: the origination fee by the product's rule, plus every live fee or late fee that still applies on its date.
        const fees = loan.originationFee + feesApplied;
        for (const x of loan.transactions) if (x.live && LIVE_CASH_TYPES.has(x.type)) cashIn += x.amount;
        check(state.disbursed === loan.disbursed, () => `${where}: state.disbursed ${state.disbursed} ≠ disbursed by commands ${loan.disbursed}`);
        check(state.firstDisbursementDate === loan.firstDisbursementDate, () => `${where}: first disbursement ${state.firstDisbursementDate} ≠ ${loan.firstDisbursementDate}`);
        check((posted.cash_clearing ?? 0n) === cashIn - loan.disbursed, () => `${where}: GL cash_clearing ${posted.cash_clearing ?? 0n} ≠ cash received ${cashIn} − disbursed ${loan.disbursed}`);
        check(state.received === cashIn, () => `${where}: state.received ${state.received} ≠ live repayments and recoveries ${cashIn}`);
        check(-(posted.fee_income ?? 0n) === fees, () => `${where}: GL fee income ${-(posted.fee_income ?? 0n)} ≠ origination fee ${loan.originationFee} + live fees that apply ${feesApplied}`);
        check(state.received === sumOf(state.paid) + state.credit + state.recovered, () => `${where}: received ${state.received} ≠ paid ${sumOf(state.paid)} + credit ${state.credit} + recovered ${state.recovered}`);
        expectSame(state.paid, plus(allocated, creditApplied), `${where}: state.paid vs Σ live payments' allocations + credit applied on due dates`);
        const glPrincipal = posted.loans_receivable_principal ?? 0n;
        const expectedPrincipal = loan.disbursed - allocated.principal - creditApplied.principal - state.chargedOff.principal;
        check(glPrincipal === expectedPrincipal, () => `${where}: GL principal ${glPrincipal} ≠ disbursed ${loan.disbursed} − allocated ${allocated.principal} − from credit ${creditApplied.principal} − charged off ${state.chargedOff.principal}`);
        check(BigInt(row.po) === glPrincipal, () => `${where}: loans.principal_outstanding ${row.po} ≠ GL principal ${glPrincipal}`);
        let scheduled = 0n;
        for (const i of state.installments) scheduled += outstandingOf(i).principal;
        if (state.status !== 'pending_disbursement' && state.status !== 'cancelled') {
          check(scheduled === glPrincipal + state.chargedOff.principal, () => `${where}: Σ installments' outstanding principal ${scheduled} ≠ GL principal ${glPrincipal} + charged off ${state.chargedOff.principal}`);
        }

        // No negative bucket anywhere.
        for (const i of state.installments) {
          const o = outstandingOf(i);
          for (const [k, v] of Object.entries({ ...i, ...Object.fromEntries(Object.entries(o).map(([c, x]) => [`outstanding.${c}`, x])) })) {
            if (typeof v === 'bigint') check(v >= 0n, () => `${where}: installment ${i.number} ${k} = ${v}`);
          }
        }
        for (const [k, v] of Object.entries({ ...state.paid, credit: state.credit, disbursed: state.disbursed, received: state.received, recovered: state.recovered, feesCharged: state.feesCharged, ...state.chargedOff })) {
          check(v >= 0n, () => `${where}: state ${k} = ${v}`);
        }
        const b = balancesOf(state, terms, today);
        for (const [k, v] of Object.entries({ principalOutstanding: b.principalOutstanding, interestOutstanding: b.interestOutstanding, feesOutstanding: b.feesOutstanding, penaltiesOutstanding: b.penaltiesOutstanding, credit: b.credit, ...b.due })) {
          check(v >= 0n, () => `${where}: balance ${k} = ${v}`);
        }
        for (const k of ['loans_receivable_principal', 'interest_receivable', 'fees_receivable', 'charge_off_losses'] as const) {
          check(gl[k] >= 0n, () => `${where}: GL ${k} = ${gl[k]} (a debit-normal account went credit)`);
        }
        for (const k of ['borrower_credit_balances', 'interest_income', 'fee_income', 'recoveries'] as const) {
          check(gl[k] <= 0n, () => `${where}: GL ${k} = ${gl[k]} (a credit-normal account went debit)`);
        }
        check(gl.suspense === 0n, () => `${where}: GL suspense = ${gl.suspense}`);

        // The status agrees with the balances.
        const receivables = { principal: gl.loans_receivable_principal, interest: gl.interest_receivable, fees: gl.fees_receivable };
        if (state.status === 'paid_off' || state.status === 'overpaid' || state.status === 'charged_off' || state.status === 'written_off') {
          check(sumOf({ ...ZERO, ...receivables }) === 0n, () => `${where}: a ${state.status} loan still has receivables ${show(receivables)}`);
        }
        if (state.status === 'paid_off') check(state.credit === 0n, () => `${where}: paid_off with a credit of ${state.credit}`);
        if (state.status === 'overpaid') check(state.credit > 0n, () => `${where}: overpaid without a credit`);
        if (state.status === 'active') check(state.installments.some((i) => sumOf(outstandingOf(i)) > 0n), () => `${where}: active but no installment owes anything`);

        loan.status = state.status;
        loan.state = state;
        loan.version = row.version;
        return scratch.effects;
      }

      /**
       * Subledger = GL over the seed's own window: the journal lines posted since the seed
       * began (its commands and its end-of-day runs, whose interest entries name no loan)
       * sum, per currency and account, to the seed's loans' posted vectors, and net to zero.
       */
      async function checkWindow(): Promise<void> {
        if (loans.length === 0) return;
        const both = await sql<{ side: string; k: string; total: string }>`
          select 'gl' as side, l.currency || ':' || l.account_code as k, sum(l.amount)::text as total from journal_lines l join journal_entries e on e.id = l.entry_id
          where e.seq > ${seedFromSeq}::bigint group by l.currency, l.account_code
          union all
          select 'sub' as side, currency || ':' || key as k, sum(value::bigint)::text as total from loans, jsonb_each_text(gl)
          where id in (${sql.join(loans.map((l) => l.id))}) group by currency, key`.execute(db);
        const vector = (side: string) => nonZero(Object.fromEntries(both.rows.filter((r) => r.side === side).map((r) => [r.k, BigInt(r.total)])));
        const g = vector('gl');
        let net = 0n;
        for (const v of Object.values(g)) net += v;
        check(net === 0n, () => `the journal lines of this seed net to ${net}: an unbalanced posting`);
        expectSame(vector('sub'), g, "reconciliation over this seed's postings: Σ loans.gl (subledger) vs journal lines (GL)");
      }

      /** The loans a step did not command must not have moved. */
      async function expectUntouched(others: readonly ModelLoan[]): Promise<void> {
        if (others.length === 0) return;
        const rows = await sql<{ id: string; version: number }>`select id, version from loans where id in (${sql.join(others.map((l) => l.id))})`.execute(db);
        for (const loan of others) {
          const r = rows.rows.find((x) => x.id === loan.id);
          check(r !== undefined && r.version === loan.version, () => `${loan.label} moved although the step did not command it (version ${r?.version} vs ${loan.version})`);
        }
      }

      // -- one command ---------------------------------------------------------------

      function reasonsToRefuse(cmd: Command): string[] {
        if (cmd.kind === 'book' || cmd.kind === 'advance') return [];
        const loan = cmd.loan;
        const st = loan.status;
        const reasons: string[] = [];
        // A backdated change (before the date the loan has reached) may not reach back before a further tranche.
        const trancheDates = loan.transactions.filter((x) => x.type === 'disbursement' && x.live).map((x) => x.date).sort();
        const lastTranche = trancheDates.length > 1 ? trancheDates.at(-1) : undefined;
        const pastTranche = (d: string) => loan.state.asOf !== null && before(d, loan.state.asOf) && lastTranche !== undefined && before(d, lastTranche);
        const dated = (date: string | undefined, isDisbursement = false) => {
          const d = date ?? today;
          if (before(today, d)) reasons.push('future_value_date');
          if (!isDisbursement && loan.firstDisbursementDate !== null && before(d, loan.firstDisbursementDate)) reasons.push('value_date_too_early');
          if (pastTranche(d)) reasons.push('value_date_too_early');
        };
        switch (cmd.kind) {
          case 'disburse': {
            if (!(st === 'pending_disbursement' || (st === 'active' && loan.terms.multiTranche))) reasons.push('invalid_loan_state');
            const left = loan.terms.principal - loan.disbursed;
            const amount = cmd.amount ?? left;
            if (amount <= 0n || amount > left) reasons.push('amount_exceeds_limit');
            const d = cmd.date ?? today;
            if (loan.firstDisbursementDate !== null && before(d, loan.firstDisbursementDate)) reasons.push('value_date_too_early');
            const lastDue = loan.state.installments.at(-1)?.dueDate;
            if (lastDue !== undefined && !before(d, lastDue)) reasons.push('value_date_too_early');
            // The problem catalogue: "a disbursement [cannot take effect] before the loan was booked".
            if (before(d, loan.bookedOn)) reasons.push('value_date_too_early');
            if (st === 'pending_disbursement' && amount > 0n && amount <= left && capitalizesInterest(loan.terms, amount, d)) reasons.push('schedule_capitalizes');
            dated(cmd.date, true);
            break;
          }
          case 'pay':
            if (st !== 'active' && st !== 'charged_off') reasons.push('invalid_loan_state');
            dated(cmd.date);
            break;
          case 'fee':
          case 'charge_off':
            if (st !== 'active') reasons.push('invalid_loan_state');
            dated(cmd.date);
            break;
          case 'write_off':
            if (st !== 'active' && st !== 'charged_off') reasons.push('invalid_loan_state');
            dated(cmd.date);
            break;
          case 'reverse':
            // Reversed once, a transaction cannot be reversed again: only a retry of that same
            // reversal (its own Idempotency-Key, the 'retry' command) answers with what it did.
            if (!cmd.target.live || !REVERSIBLE.has(cmd.target.type)) reasons.push('not_reversible');
            if (!REVERSIBLE_STATUSES.has(st)) reasons.push('invalid_loan_state');
            if (lastTranche !== undefined && before(cmd.target.date, lastTranche)) reasons.push('value_date_too_early');
            break;
          case 'cancel':
            if (st !== 'pending_disbursement') reasons.push('invalid_loan_state');
            break;
          case 'retry':
            // Same key, same body: the stored answer. Same key, another body: refused (a reversal is refused as already reversed).
            if (cmd.changed) reasons.push('idempotency_key_reused');
            break;
        }
        return reasons;
      }

      /** Moves the business date: end of day on each day, a jump then end of day, or a bare jump (days without an end of day). */
      async function advanceDays(cmd: Extract<Command, { kind: 'advance' }>): Promise<string> {
        const closeDay = async () => {
          const run = await eod.run({ actorId: servicer.id });
          check(run.status === 'completed' && run.businessDate === today, () => `end of day for ${today}: ${show({ status: run.status, date: run.businessDate, error: run.error })}`);
          check(run.reconciliation?.balanced === true, () => `end of day for ${today}: its own reconciliation is not balanced: ${show(run.reconciliation)}`);
          const next = await eod.businessDate();
          check(next === addDays(today, 1), () => `end of day for ${today} moved the business date to ${next}`);
          count('eod:run');
          today = next;
        };
        if (cmd.mode === 'daily') {
          for (let i = 0; i < cmd.days; i++) await closeDay();
        } else {
          today = addDays(today, cmd.mode === 'jump_eod' ? cmd.days - 1 : cmd.days);
          await setBusinessDate(today);
          if (cmd.mode === 'jump_eod') await closeDay();
        }
        return today;
      }

      async function execute(cmd: Command, key: string | undefined): Promise<CommandResult | { booked: ModelLoan } | null> {
        const keyed: CommandContext = key === undefined ? ctx : { ...ctx, idempotencyKey: key };
        switch (cmd.kind) {
          case 'book': {
            const details = await svc.createLoan(
              { productId: product.id, borrowerId: borrower.id, principal: money(cmd.principal), annualRate: cmd.rate, term: cmd.term, firstPaymentDate: cmd.firstPaymentDate },
              ctx,
            );
            const loan: ModelLoan = {
              label: `L${loans.length + 1}`,
              id: details.id,
              terms: details.terms,
              bookedOn: today,
              disbursed: 0n,
              firstDisbursementDate: null,
              originationFee: 0n,
              transactions: [],
              status: details.status,
              state: details.state,
              version: -1,
            };
            loans.push(loan);
            return { booked: loan };
          }
          case 'advance':
            await advanceDays(cmd);
            return null;
          case 'disburse':
            return svc.disburse(cmd.loan.id, { amount: cmd.amount === undefined ? undefined : money(cmd.amount), date: cmd.date }, keyed);
          case 'pay':
            return svc.pay(cmd.loan.id, { amount: money(cmd.amount), date: cmd.date, overpayment: cmd.overpayment }, keyed);
          case 'fee':
            return svc.charge(cmd.loan.id, { amount: money(cmd.amount), date: cmd.date, description: 'simulated fee' }, keyed);
          case 'charge_off':
            return svc.chargeOff(cmd.loan.id, { date: cmd.date, reason: 'simulated', policy: cmd.policy }, keyed);
          case 'write_off':
            return svc.writeOff(cmd.loan.id, { date: cmd.date, reason: 'simulated' }, keyed);
          case 'reverse':
            return svc.reverse(cmd.loan.id, cmd.target.id, { reason: 'simulated' }, keyed);
          case 'cancel':
            await svc.cancel(cmd.loan.id, ctx);
            return null;
          case 'retry': {
            const o = cmd.original;
            if (!cmd.changed) return execute(o.cmd, o.key);
            const k: CommandContext = { ...ctx, idempotencyKey: o.key };
            switch (o.cmd.kind) {
              case 'disburse':
                return svc.disburse(o.cmd.loan.id, { amount: money((o.cmd.amount ?? 0n) + 1n), date: o.cmd.date }, k);
              case 'pay':
                return svc.pay(o.cmd.loan.id, { amount: money(o.cmd.amount + 1n), date: o.cmd.date, overpayment: o.cmd.overpayment }, k);
              case 'fee':
                return svc.charge(o.cmd.loan.id, { amount: money(o.cmd.amount + 1n), date: o.cmd.date, description: 'simulated fee' }, k);
              case 'charge_off':
                return svc.chargeOff(o.cmd.loan.id, { date: o.cmd.date, reason: 'simulated, again', policy: o.cmd.policy }, k);
              case 'write_off':
                return svc.writeOff(o.cmd.loan.id, { date: o.cmd.date, reason: 'simulated, again' }, k);
              case 'reverse':
                return svc.reverse(o.cmd.loan.id, o.cmd.target.id, { reason: 'simulated, again' }, k);
            }
          }
        }
      }

      /**
       * Runs one command, checks it was refused exactly when the model says so (and that a
       * refusal changed nothing), folds its result into the model and checks what it must
       * have done.
       */
      async function perform(cmd: Command): Promise<string> {
        const loan = 'loan' in cmd ? cmd.loan : null;
        const reasons = reasonsToRefuse(cmd);
        const before = loan ? await snapshot(loan.id) : null;
        const statusBefore = loan?.status;
        let quote: { parts: bigint; credit: bigint } | null = null;
        if (cmd.kind === 'pay' && (cmd.intent === 'full' || cmd.intent === 'over') && loan?.status === 'active') {
          const q = await svc.payoffQuote(loan.id, ctx.viewer, today);
          quote = { parts: q.principal + q.interest + q.fees + q.penalties, credit: q.credit };
        }
        // Half the money commands carry an Idempotency-Key (deterministic: the seed and a counter name it).
        // A reversal of an already reversed transaction mostly carries none: with a key it
        // is also the check that a *new* key does not pass for a retry (see reasonsToRefuse).
        const keyChance = cmd.kind === 'reverse' && !cmd.target.live ? 0.2 : 0.5;
        const key = KEYED_KINDS.has(cmd.kind) && rng.chance(keyChance) ? `sim-${seed}-${++keys}` : undefined;
        let result: Awaited<ReturnType<typeof execute>>;
        try {
          result = await execute(cmd, key);
        } catch (error) {
          if (!(error instanceof AppError)) throw error;
          count(`refused:${cmd.kind}:${error.code}`);
          check(reasons.includes(error.code), () => `${describe(cmd, currency)} was refused with ${error.code} (${error.detail}); the model expected ${reasons.length === 0 ? 'success' : reasons.join(' or ')}`);
          if (loan && before) expectSame(await snapshot(loan.id), before, `refused ${describe(cmd, currency)} changed something`);
          return `refused ${error.code}`;
        }
        check(reasons.length === 0, () => `${describe(cmd, currency)} succeeded; the model expected a refusal (${reasons.join(' or ')})`);
        count(`ok:${cmd.kind}${cmd.kind === 'pay' ? `:${cmd.intent}` : cmd.kind === 'advance' ? `:${cmd.mode}` : ''}`);
        if (result === null) {
          if (cmd.kind === 'cancel') {
            await observe(cmd.loan);
            check(cmd.loan.status === 'cancelled', () => `cancel left the loan ${cmd.loan.status}`);
          }
          return 'ok';
        }
        if ('booked' in result) {
          await observe(result.booked);
          return `ok ${result.booked.label}`;
        }
        const x = result.transaction;
        if (loan === null) throw new Error('a loan command without a loan');
        if (cmd.kind === 'retry') {
          // The stored answer, and nothing else: no new transaction, posting, event or audit row.
          check(result.replayed && x.id === cmd.original.transactionId && x.seq === cmd.original.seq, () => `the retry answered ${show({ replayed: result.replayed, seq: x.seq })}, expected the stored answer for seq ${cmd.original.seq}`);
          if (before) expectSame(await snapshot(loan.id), before, `the retry of step ${cmd.original.step} changed something`);
          return `ok replayed seq=${x.seq}`;
        }
        check(!result.replayed, () => `a first request answered as a replay`);
        if (key !== undefined && (cmd.kind === 'disburse' || cmd.kind === 'pay' || cmd.kind === 'fee' || cmd.kind === 'charge_off' || cmd.kind === 'write_off' || cmd.kind === 'reverse')) {
          keyedDone.push({ step, cmd, key, transactionId: x.id, seq: x.seq });
        }
        if (cmd.kind === 'reverse') {
          check(x.id === cmd.target.id && x.reversedAt !== null, () => `reverse answered with transaction ${x.seq} (reversed ${x.reversedAt !== null})`);
          cmd.target.live = false;
          count(`reverse:${cmd.target.type}`);
        } else {
          const expectedSeq = (loan.transactions.at(-1)?.seq ?? 0) + 1;
          check(x.seq === expectedSeq, () => `new transaction has seq ${x.seq}, expected ${expectedSeq}`);
          loan.transactions.push({ id: x.id, seq: x.seq, type: x.type, date: x.valueDate, amount: x.amount, live: true });
          check(x.valueDate === (('date' in cmd ? cmd.date : undefined) ?? today), () => `transaction value date ${x.valueDate}`);
          const expectedType: TransactionType =
            cmd.kind === 'disburse' ? 'disbursement' : cmd.kind === 'pay' ? (statusBefore === 'charged_off' ? 'recovery' : 'repayment') : cmd.kind === 'fee' ? 'fee' : (cmd.kind as 'charge_off' | 'write_off');
          check(x.type === expectedType, () => `${cmd.kind} on a ${statusBefore} loan recorded a ${x.type}, expected a ${expectedType}`);
          if (cmd.kind === 'disburse') {
            if (loan.firstDisbursementDate === null) {
              loan.firstDisbursementDate = x.valueDate;
              loan.originationFee = feeOf(loan.terms.originationFee, x.amount, loan.terms);
            } else count('tranche');
            loan.disbursed += x.amount;
          }
        }
        if (result.backdated) count(before !== null && before.checkpoints > 0 ? 'backdated:from_checkpoint' : 'backdated:from_start');
        const effects = await observe(loan);
        // The effect the command answered with is the one a replay from scratch gives it.
        if (cmd.kind !== 'reverse') checkAnsweredEffect(loan, x.seq, x.effect, effects);
        const after = loan.state;

        // What the command must have done, by the model's own rules.
        if (cmd.kind === 'charge_off' && !cmd.policy) check(after.status === 'charged_off', () => `charge-off left the loan ${after.status}`);
        if (cmd.kind === 'write_off') check(after.status === 'written_off', () => `write-off left the loan ${after.status}`);
        if (cmd.kind === 'disburse') check(after.status === 'active', () => `disbursement left the loan ${after.status}`);
        // Dated today, nothing can come after them: they act on the loan as it is.
        const onToday = !('date' in cmd) || cmd.date === undefined || cmd.date === today;
        if (cmd.kind === 'pay' && statusBefore === 'charged_off' && onToday) check(after.status === 'charged_off', () => `a recovery left the loan ${after.status}`);
        if (cmd.kind === 'fee' && onToday) check(after.status === 'active', () => `a fee left the loan ${after.status}`);
        if (cmd.kind === 'pay' && quote !== null && (cmd.date === undefined || cmd.date === today)) {
          // Paying the quoted total (or more) on the quote's date pays the loan off; the rest is a credit.
          const owed = quote.parts - quote.credit;
          const credit = cmd.amount - owed;
          check(after.status === (credit > 0n ? 'overpaid' : 'paid_off'), () => `paying ${money(cmd.amount)} against a payoff quote of ${money(owed > 0n ? owed : 0n)} (credit ${money(quote?.credit ?? 0n)}) left the loan ${after.status}`);
          check(after.credit === credit, () => `after paying off, the credit is ${money(after.credit)}, expected ${money(credit)}`);
          count(`payoff:${credit > 0n ? 'overpaid' : 'paid_off'}`);
        }
        if (after.credit > 0n) count(`credit:${after.status}`);
        if (after.status !== statusBefore) count(`status:${statusBefore}->${after.status}`);
        const effect = x.effect as { prepayment?: unknown };
        if (effect.prepayment !== undefined && effect.prepayment !== null) count('prepayment');
        return `ok seq=${x.seq}${result.backdated ? ' backdated' : ''} → ${after.status}`;
      }

      function checkAnsweredEffect(loan: ModelLoan, seq: number, answered: Record<string, unknown>, effects: ReadonlyMap<number, EventEffect>): void {
        const expected = effects.get(seq);
        check(expected !== undefined, () => `${loan.label} seq ${seq}: not among the live transactions`);
        const totals = answered.totals as Record<string, string> | undefined;
        const used = expected.creditApplied ?? 0n;
        expectSame(
          {
            applied: answered.applied,
            amount: minorOf(answered.amount, currency),
            totals: totals === undefined ? undefined : Object.fromEntries(COMPONENTS.map((c) => [c, minorOf(totals[c], currency)])),
            creditBalance: minorOf(answered.credit_balance, currency),
            creditApplied: minorOf(answered.credit_applied, currency) ?? 0n,
            payoff: answered.payoff,
          },
          {
            applied: expected.applied,
            amount: expected.amount,
            totals: expected.totals === undefined ? undefined : Object.fromEntries(COMPONENTS.map((c) => [c, (expected.totals as Record<Component, bigint>)[c]])),
            creditBalance: expected.creditBalance,
            creditApplied: used,
            payoff: expected.payoff,
          },
          `${loan.label} seq ${seq}: the effect the command answered with vs its effect in a replay from scratch`,
        );
      }

      // -- choosing a command ----------------------------------------------------------

      function drawBook(): Command {
        const principal = rng.big(100n, 50_000n) * unit + (currency === 'JPY' ? 0n : rng.big(0n, unit - 1n));
        const rate = rng.chance(0.1) ? '0' : `0.${String(rng.int(1, 3600)).padStart(4, '0')}`;
        const term = rng.int(1, productTerms.frequency === 'monthly' ? 36 : 26);
        const firstPaymentDate = rng.chance(0.2) ? addDays(today, rng.int(5, 60)) : undefined;
        return { kind: 'book', principal, rate, term, firstPaymentDate };
      }

      const backdate = (loan: ModelLoan): string => between(rng, loan.firstDisbursementDate ?? addDays(today, -30), today);
      const maybeToday = (): string | undefined => (rng.chance(0.3) ? undefined : today);
      const overpaymentOverride = (): OverpaymentMode | undefined => (rng.chance(0.2) ? rng.pick(OVERPAYMENT_MODES) : undefined);

      function partialAmount(loan: ModelLoan): bigint {
        const b = balancesOf(loan.state, loan.terms, today);
        const dueNow = sumOf(b.due);
        const next = b.nextDue?.amount ?? 0n;
        const outstanding = b.principalOutstanding + b.interestOutstanding + b.feesOutstanding + b.penaltiesOutstanding;
        const base = rng.pick([dueNow, next, outstanding, 1000n * unit].filter((v) => v > 0n));
        switch (rng.int(0, 3)) {
          case 0:
            return rng.big(1n, 100n);
          case 1:
            return (base * BigInt(rng.int(1, 99))) / 100n || 1n;
          case 2:
            return dueNow > 0n ? dueNow : next > 0n ? next : base;
          default:
            return (base * BigInt(rng.int(100, 180))) / 100n || 1n;
        }
      }

      function drawAdvance(): Command {
        const mode = rng.weighted({ daily: 3, jump_eod: 5, jump: 2 } as const);
        const days = mode === 'daily' ? rng.int(1, 3) : rng.chance(0.1) ? rng.int(41, 200) : rng.int(1, 40);
        return { kind: 'advance', mode, days };
      }

      function drawCommand(): Command {
        const loan = loans.length === 0 ? null : rng.chance(0.75) ? (loans.at(-1) as ModelLoan) : rng.pick(loans);
        const canBook = loans.length < 3 ? 1 : 0;
        if (loan === null) return drawBook();
        const live = loan.transactions.filter((x) => x.live && REVERSIBLE.has(x.type));
        const anyTx = loan.transactions.length > 0 ? 1 : 0;
        const retries = keyedDone.filter((k) => k.cmd.loan === loan);
        if (retries.length > 0 && rng.chance(0.05)) return { kind: 'retry', loan, original: rng.pick(retries), changed: rng.chance(0.3) };
        let choice: string;
        switch (loan.status) {
          case 'pending_disbursement':
            choice = rng.weighted({ disburse: 40, backdated_disburse: 1, advance: 5, pay: 3, fee: 2, cancel: 2, charge_off: 1, book: canBook });
            break;
          case 'active':
            choice = rng.weighted({
              partial: 14, installment: 8, full: 4, over: 3, backdated: 10, reverse: live.length > 0 ? 10 : 1, fee: 5, advance: 16,
              charge_off: 2, policy_charge_off: 1, write_off: 1, tranche: loan.terms.multiTranche ? 4 : 1, future: 1, early: 1, book: canBook,
            });
            break;
          case 'charged_off':
            choice = rng.weighted({ recovery: 20, backdated_recovery: 5, reverse: 12 * anyTx, advance: 8, write_off: 3, fee: 2, charge_off: 1, book: 3 * canBook });
            break;
          case 'paid_off':
          case 'overpaid':
            choice = rng.weighted({ reverse: 25 * anyTx, advance: 6, pay: 4, fee: 2, write_off: 1, book: 6 * canBook });
            break;
          default:
            choice = rng.weighted({ book: 15 * canBook, reverse: 5 * anyTx, pay: 3, advance: 3 });
        }
        switch (choice) {
          case 'book':
            return drawBook();
          case 'advance':
            return drawAdvance();
          case 'cancel':
            return { kind: 'cancel', loan };
          case 'disburse': {
            const left = loan.terms.principal - loan.disbursed;
            const amount = loan.terms.multiTranche && rng.chance(0.5) ? (left * BigInt(rng.int(10, 90))) / 100n || left : rng.chance(0.5) ? undefined : left;
            return { kind: 'disburse', loan, amount, date: maybeToday() };
          }
          case 'backdated_disburse':
            return { kind: 'disburse', loan, date: addDays(today, -rng.int(0, 20)) };
          case 'tranche': {
            const left = loan.terms.principal - loan.disbursed;
            const amount = rng.chance(0.1) ? left + rng.big(1n, 100n) : left > 0n ? rng.big(1n, left) : 1n;
            return { kind: 'disburse', loan, amount, date: rng.chance(0.5) ? maybeToday() : backdate(loan) };
          }
          case 'partial':
          case 'pay':
            return { kind: 'pay', loan, intent: choice === 'pay' ? 'refused' : 'partial', amount: partialAmount(loan), date: maybeToday(), overpayment: overpaymentOverride() };
          case 'installment': {
            const b = balancesOf(loan.state, loan.terms, today);
            const amount = sumOf(b.due) > 0n ? sumOf(b.due) : (b.nextDue?.amount ?? unit);
            return { kind: 'pay', loan, intent: 'installment', amount: amount > 0n ? amount : unit, date: maybeToday() };
          }
          case 'full':
          case 'over':
            // The amount is fixed from the payoff quote just before the command runs (settleAmount); this is the extra for 'over'.
            return { kind: 'pay', loan, intent: choice, amount: choice === 'over' ? rng.big(1n, 10_000n) : 0n, date: maybeToday(), overpayment: overpaymentOverride() };
          case 'backdated':
            return { kind: 'pay', loan, intent: 'backdated', amount: partialAmount(loan), date: backdate(loan), overpayment: overpaymentOverride() };
          case 'future':
            return { kind: 'pay', loan, intent: 'future', amount: partialAmount(loan), date: addDays(today, rng.int(1, 30)) };
          case 'early':
            return { kind: 'pay', loan, intent: 'early', amount: partialAmount(loan), date: addDays(loan.firstDisbursementDate ?? today, -rng.int(1, 30)) };
          case 'recovery':
          case 'backdated_recovery': {
            const co = loan.state.chargedOff;
            const open = co.principal + co.interest + co.fees - loan.state.recovered;
            const amount = rng.chance(0.15) ? open + rng.big(1n, 10_000n) : open > 1n ? rng.big(1n, open) : rng.big(1n, 10_000n);
            return { kind: 'pay', loan, intent: 'recovery', amount, date: choice === 'recovery' ? maybeToday() : backdate(loan) };
          }
          case 'reverse':
            return { kind: 'reverse', loan, target: live.length > 0 && rng.chance(0.85) ? rng.pick(live) : rng.pick(loan.transactions) };
          case 'fee':
            return { kind: 'fee', loan, amount: rng.big(1n, 100n) * (unit > 1n ? unit / 10n : 1n) + rng.big(0n, 9n), date: rng.chance(0.7) ? maybeToday() : backdate(loan) };
          case 'charge_off':
          case 'policy_charge_off':
            return { kind: 'charge_off', loan, date: rng.chance(0.7) ? maybeToday() : backdate(loan), policy: choice === 'policy_charge_off' };
          case 'write_off':
            return { kind: 'write_off', loan, date: rng.chance(0.7) ? maybeToday() : backdate(loan) };
          default:
            throw new Error(`no command for ${choice}`);
        }
      }

      /** Fixes a payoff payment's amount from the current quote (deterministic: so is the quote). */
      async function settleAmount(cmd: Command): Promise<Command> {
        if (cmd.kind !== 'pay' || (cmd.intent !== 'full' && cmd.intent !== 'over')) return cmd;
        if (cmd.loan.status !== 'active') return { ...cmd, amount: cmd.amount > 0n ? cmd.amount : unit };
        const q = await svc.payoffQuote(cmd.loan.id, ctx.viewer, today);
        const owed = q.principal + q.interest + q.fees + q.penalties - q.credit;
        const base = owed > 0n ? owed : 0n;
        const amount = cmd.intent === 'over' ? base + cmd.amount : base;
        return { ...cmd, amount: amount > 0n ? amount : 1n, intent: amount > 0n ? cmd.intent : 'over' };
      }

      // -- the run -------------------------------------------------------------------------

      const run = async (cmd: Command, label: string) => {
        const line = cmd.kind === 'advance' ? `${label} ${describe(cmd, currency)}` : `${label} [${today}] ${describe(cmd, currency)}`;
        log.push(line);
        const outcome = await perform(cmd);
        log[log.length - 1] = cmd.kind === 'advance' ? `${line} → ${today}` : `${line} → ${outcome}`;
        // A new business date moves every loan (end of day): check them all. Otherwise
        // the commanded loan was checked in full and the others must not have moved.
        if (cmd.kind === 'advance') for (const loan of loans) await observe(loan);
        else await expectUntouched(loans.filter((l) => !('loan' in cmd) || l !== cmd.loan).filter((l) => cmd.kind !== 'book' || l !== loans.at(-1)));
        await checkWindow();
      };

      for (step = 1; step <= options.steps; step++) {
        await run(await settleAmount(drawCommand()), `${String(step).padStart(2)}.`);
        await options.afterStep?.(step, loans.map((l) => ({ id: l.id, label: l.label })));
      }
      // Every loan once more in full, whatever the last steps touched.
      for (const loan of loans) await observe(loan);
      for (const loan of loans) count(`final:${loan.status}`);
      // Retire the seed's active loans (an ordinary write-off), so that no later seed's end of day touches them.
      step = options.steps;
      for (const loan of loans) {
        if (loan.status === 'active') await run({ kind: 'write_off', loan }, 'end');
        check(loan.status !== 'active', () => `${loan.label} is still active after its write-off`);
      }
      await checkBooks();
      count('seeds');
      return { seed, steps: options.steps, log, coverage };
    } catch (error) {
      const reason = error instanceof Violation ? error.message : error instanceof AppError ? `unexpected ${error.code}: ${error.detail}` : error instanceof Error ? (error.stack ?? error.message) : String(error);
      // Best effort, after the fact: write off what the failed seed left active, so that
      // the end of day of the seeds after it does not pick its loans up.
      for (const loan of loans) await svc.writeOff(loan.id, { reason: 'simulation failed' }, ctx).catch(() => undefined);
      throw new SimulationFailure(seed, options.steps, step, reason, log);
    }
  }

  return { runSeed, checkBooks };
}

/** Seeds `from`, `from + 1`, … (`count` of them). */
export function seedRange(from: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => from + i);
}
