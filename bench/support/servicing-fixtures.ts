/**
 * What the servicing benches share: a scratch PostgreSQL database per run (created
 * beside BENCH_POSTGRES_URL's database, dropped afterwards), the application or its
 * services over it, a product and a template loan built by the real service, a book
 * cloned from that loan with set-based SQL, and the checks run after a bench (the
 * subledger equals the GL, the trial balance nets to zero).
 *
 * Cloning: every clone copies the template loan's row (terms, state, posted vector),
 * its transactions and its checkpoints under a new id and borrower, and the clones'
 * ledger is one journal entry per seeding (source_type 'servicing.bench_seed', no loan)
 * of count × the template's posted vector, so the reconciliation still balances.
 */
import { randomUUID } from 'node:crypto';
import { loadavg, userInfo } from 'node:os';
import { performance } from 'node:perf_hooks';
import { sql, type Kysely } from 'kysely';
import pg from 'pg';
import { buildApp, type AppDatabase, type BuiltApp } from '../../src/app.js';
import type { AccountCode } from '../../src/ledger/model.js';
import type { LedgerDb } from '../../src/ledger/repository.js';
import { createLedgerService, type LedgerService } from '../../src/ledger/service.js';
import { loadConfig, type Config } from '../../src/platform/config.js';
import { openDatabase, type Database } from '../../src/platform/database.js';
import { createLogger } from '../../src/platform/logger.js';
import { migrateUp } from '../../src/platform/migrate.js';
import { createEodService, type EodDeps, type EodService } from '../../src/servicing/eod.js';
import { glFromJson } from '../../src/servicing/loan-state-json.js';
import type { ProductTerms } from '../../src/servicing/model.js';
import { differenceLines } from '../../src/servicing/posting.js';
import * as repo from '../../src/servicing/repository.js';
import type { ServicingDb } from '../../src/servicing/repository.js';
import { createServicingService, type CommandContext, type ServicingDatabase, type ServicingService } from '../../src/servicing/service.js';

export const adminPostgresUrl = process.env.BENCH_POSTGRES_URL ?? `postgres://${userInfo().username}@127.0.0.1:5432/test`;
export const silent = createLogger({ level: 'silent' });

/** The acting servicer: any UUID (audit rows and created_by take ids, not users). */
export const ACTOR_ID = randomUUID();

export function commandContext(idempotencyKey: string = randomUUID()): CommandContext {
  return { viewer: { userId: ACTOR_ID, role: 'admin' }, ip: null, requestId: null, idempotencyKey };
}

/** A monthly consumer product: 30/360, equal installments, oldest due first, overpayments to a credit balance. */
export const PRODUCT_TERMS: ProductTerms = {
  currency: 'USD',
  interestMethod: 'declining_balance',
  amortization: 'equal_installments',
  dayCount: '30/360',
  frequency: 'monthly',
  interestRounding: 'half_up',
  paymentRounding: 'half_up',
  allocationStrategy: 'oldest_due_first',
  overpayment: 'credit_balance',
  originationFee: null,
  lateFee: { fee: { kind: 'fixed', amount: 2_500n }, graceDays: 10 },
  delinquencyBuckets: [
    { name: '1-30', minDays: 1 },
    { name: '31-60', minDays: 31 },
    { name: '61-90', minDays: 61 },
    { name: '91+', minDays: 91 },
  ],
  chargeOffDays: 180,
  minAmount: 10_000n,
  maxAmount: 100_000_000n,
  minTerm: 1,
  maxTerm: 480,
  minRate: '0',
  maxRate: '0.36',
  multiTranche: false,
};

export interface ScratchDatabase {
  readonly name: string;
  readonly url: string;
  drop(): Promise<void>;
}

async function admin<T>(work: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: adminPostgresUrl });
  await c.connect();
  try {
    return await work(c);
  } finally {
    await c.end();
  }
}

export async function scratchDatabase(prefix: string): Promise<ScratchDatabase> {
  const name = `lb_bench_${prefix}_${Date.now().toString(36)}`;
  await admin((c) => c.query(`create database ${name}`));
  const url = new URL(adminPostgresUrl);
  url.pathname = `/${name}`;
  return { name, url: url.toString(), drop: () => admin((c) => c.query(`drop database if exists ${name} with (force)`)).then(() => undefined) };
}

export function benchConfig(env: Record<string, string>): Config {
  return loadConfig({
    ENV: 'test',
    SECRET_KEY: 'bench-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz',
    ENCRYPTION_KEY: Buffer.from('0123456789abcdef0123456789ABCDEF').toString('base64'),
    DATA_DIR: '/nonexistent-bench-dir',
    RATE_LIMIT_REQUESTS: '1000000',
    ...env,
  });
}

export interface Bench {
  readonly scratch: ScratchDatabase;
  readonly config: Config;
  readonly database: Database<AppDatabase>;
  readonly db: Kysely<ServicingDatabase>;
  readonly ledger: LedgerService;
  readonly servicing: ServicingService;
  /** The application (routes, auth, idempotency), when asked for. */
  readonly built: BuiltApp | undefined;
  /** An end-of-day service over the bench database (chunk size and chunk callback of its own). */
  eod(options?: Pick<EodDeps, 'chunkSize' | 'onChunk' | 'lanes'>): EodService;
  close(): Promise<void>;
}

/**
 * A scratch database, migrated, with the servicing services over it. `app: true`
 * builds the whole application (buildApp) and uses its services; otherwise the
 * services are built directly, as buildApp builds them.
 */
export async function openBench(prefix: string, options: { poolMax: number; app?: boolean; statementTimeoutMs?: number }): Promise<Bench> {
  const scratch = await scratchDatabase(prefix);
  try {
    const config = benchConfig({
      DATABASE_URL: scratch.url,
      DB_POOL_MAX: String(options.poolMax),
      DB_STATEMENT_TIMEOUT_MS: String(options.statementTimeoutMs ?? 600_000),
    });
    const database = await openDatabase<AppDatabase>({ kind: 'postgres', location: scratch.url }, config.db, silent);
    await migrateUp(database.db as Kysely<unknown>);
    const db = database.db as unknown as Kysely<ServicingDatabase>;
    const clock = () => new Date();
    const built = options.app ? await buildApp({ config, logger: silent, database }) : undefined;
    const ledger = built?.ledger ?? createLedgerService({ db: db as unknown as Kysely<LedgerDb>, clock });
    const servicing = built?.servicing ?? createServicingService({ db, ledger, clock, logger: silent });
    return {
      scratch,
      config,
      database,
      db,
      ledger,
      servicing,
      built,
      eod: (o = {}) => createEodService({ db, ledger, clock, logger: silent, ...o }),
      async close() {
        if (built) await built.app.close();
        await database.close();
        await scratch.drop();
      },
    };
  } catch (error) {
    await scratch.drop();
    throw error;
  }
}

export async function setBusinessDate(bench: Bench, date: string): Promise<void> {
  const sdb = bench.db as unknown as Kysely<ServicingDb>;
  await repo.initBusinessDate(sdb, date);
  await repo.setBusinessDate(sdb, date);
}

export async function createProduct(bench: Bench, overrides: Partial<ProductTerms> = {}): Promise<string> {
  const product = await bench.servicing.createProduct({ code: `bench-${randomUUID().slice(0, 8)}`, name: 'Bench consumer loan', terms: { ...PRODUCT_TERMS, ...overrides } }, ACTOR_ID);
  return product.id;
}

/** A loan booked and disbursed (whole amount) through the service, on the business date. */
export async function disbursedLoan(bench: Bench, productId: string, loan: { principal: string; annualRate: string; term: number }): Promise<string> {
  const booked = await bench.servicing.createLoan({ productId, borrowerId: randomUUID(), ...loan }, commandContext());
  await bench.servicing.disburse(booked.id, {}, commandContext());
  return booked.id;
}

/**
 * Adds `count` copies of the template loan, in batches of `batch` (one statement each),
 * and one journal entry for all of them. Returns the seconds it took.
 */
export async function cloneLoan(bench: Bench, templateId: string, count: number, options: { batch?: number; onBatch?: (done: number) => void } = {}): Promise<number> {
  const started = performance.now();
  const batch = options.batch ?? 50_000;
  for (let done = 0; done < count; ) {
    const n = Math.min(batch, count - done);
    await sql`
      with template as (select * from loans where id = ${templateId}),
      clones as (
        insert into loans (id, borrower_id, product_id, product_version, status, currency, principal, terms, state, gl, last_seq, as_of,
                           principal_outstanding, days_past_due, delinquency_bucket, next_due_date, closed_through, booked_on, created_by)
        select gen_random_uuid(), gen_random_uuid(), t.product_id, t.product_version, t.status, t.currency, t.principal, t.terms, t.state, t.gl, t.last_seq, t.as_of,
               t.principal_outstanding, t.days_past_due, t.delinquency_bucket, t.next_due_date, t.closed_through, t.booked_on, t.created_by
        from template t, generate_series(1, ${n}) g
        returning id
      ),
      txs as (
        insert into loan_transactions (id, loan_id, seq, type, value_date, amount, currency, details, effect, reversed_at, reversal_reason, journal_entry_id, idempotency_key, created_by)
        select gen_random_uuid(), c.id, x.seq, x.type, x.value_date, x.amount, x.currency, x.details, x.effect, x.reversed_at, x.reversal_reason, x.journal_entry_id, null, x.created_by
        from clones c, loan_transactions x where x.loan_id = ${templateId}
      )
      insert into loan_checkpoints (loan_id, seq, value_date, state)
      select c.id, k.seq, k.value_date, k.state from clones c, loan_checkpoints k where k.loan_id = ${templateId}`.execute(bench.db);
    done += n;
    options.onBatch?.(done);
  }
  const template = await bench.db.selectFrom('loans').select(['gl', 'currency', 'as_of']).where('id', '=', templateId).executeTakeFirstOrThrow();
  const scaled = Object.fromEntries(Object.entries(glFromJson(template.gl)).map(([k, v]) => [k, v * BigInt(count)])) as Record<AccountCode, bigint>;
  const lines = differenceLines({}, scaled, template.currency);
  if (lines.length > 0) {
    await bench.ledger.post({ entryDate: template.as_of ?? '2026-01-01', description: `Bench seed: ${count} copies of loan ${templateId}`, sourceType: 'servicing.bench_seed', sourceId: templateId, lines });
  }
  await sql`analyze loans`.execute(bench.db);
  await sql`analyze loan_transactions`.execute(bench.db);
  return (performance.now() - started) / 1000;
}

export interface BooksCheck {
  /** Loans' posted vectors equal the GL in every account, and the servicing GL nets to zero. */
  readonly reconciled: boolean;
  /** The whole trial balance: debits equal credits in every currency. */
  readonly trialBalanced: boolean;
  readonly breaks: number;
}

export async function checkBooks(bench: Bench): Promise<BooksCheck> {
  const reconciliation = await bench.eod().reconcile();
  const trial = await bench.ledger.trialBalance();
  return {
    reconciled: reconciliation.balanced,
    trialBalanced: trial.totals.every((t) => t.debits === t.credits),
    breaks: reconciliation.breaks.length,
  };
}

export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] as number;
}

export const median = (values: readonly number[]): number => quantile(values, 0.5);

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export function books(check: BooksCheck): string {
  return `subledger = GL ${check.reconciled ? 'yes' : `NO (${check.breaks} breaks)`}, trial balance nets to zero ${check.trialBalanced ? 'yes' : 'NO'}`;
}

/** The machine's 1-minute load average: benches on a shared machine say how busy it was. */
export function load(): string {
  return loadavg()[0]?.toFixed(1) ?? '?';
}
