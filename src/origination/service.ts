/**
 * Origination: applications in, decisions out, accepted offers booked as loans.
 *
 * An application is decided before anything is written: the pipeline (pipeline.ts) runs
 * outside any database transaction (a provider may take its full timeout), with the
 * champion policy and, when one is assigned, the challenger beside it in shadow on the
 * same recorded provider outcome. Then one transaction re-checks the velocity rule under
 * the applicant's lock and records the application (personal data encrypted), the
 * immutable decision records, the audit row and the outbox event together.
 *
 * No model or provider output approves by itself: a provider anomaly refers the
 * application to manual review (pipeline.ts), the narrative is written after the
 * decision commits and never changes it, and an underwriter's approval is four-eyes.
 */
import { randomUUID } from 'node:crypto';
import type { Kysely, Transaction } from 'kysely';
import { formatMoney, isEngineError, parseMoney } from '../engine/index.js';
import { appendAudit } from '../platform/audit.js';
import { canonicalJson } from '../platform/canonical-json.js';
import type { FieldCipher } from '../platform/crypto.js';
import { AppError } from '../platform/errors.js';
import type { Logger } from '../platform/logger.js';
import { appendOutbox } from '../platform/outbox.js';
import type { PlatformTables } from '../platform/schema.js';
import { hashJson, jsonDifferences, offerFromJson, recordedInputFromJson, recordedInputJson, resultJson, type RecordedInput } from './decision-json.js';
import type { OriginationMetricsPort } from './metrics.js';
import type {
  AdverseReason,
  CompanyVerification,
  CompanyVerifier,
  DecisionInput,
  DecisionOutcome,
  DecisionResult,
  NarrativeWriter,
  Offer,
  StageTimings,
} from './model.js';
import { compilePolicy, PolicyContentError, type CompiledPolicy } from './policy.js';
import { DEFAULT_PRICING_VERSION, DEFAULT_SCORECARD_VERSION, loadDefaultPolicyContent, runPipeline } from './pipeline.js';
import { offerFor } from './pricing.js';
import { isReasonCode, reasonText } from './reasons.js';
import * as repo from './repository.js';
import type { ApplicationRow, OriginationDb } from './repository.js';

export type OriginationDatabase = OriginationDb & PlatformTables;

/** Who is asking. */
export interface Viewer {
  readonly userId: string;
  readonly role: string;
}

export interface RequestContext {
  readonly viewer: Viewer;
  readonly ip: string | null;
  readonly requestId: string | null;
}

/**
 * Booking in servicing, as origination needs it (composed in app.ts, so origination does
 * not import servicing). `book` runs inside origination's transaction: the loan and the
 * accepted application commit together, exactly once.
 */
export interface LoanBookingPort {
  /** The product's currency; throws the servicing problem when there is no such product. */
  productCurrency(productId: string): Promise<string>;
  book(
    trx: Transaction<OriginationDatabase>,
    request: { productId: string; borrowerId: string; principal: string; annualRate: string; term: number },
    ctx: RequestContext,
  ): Promise<{ loanId: string }>;
}

export interface OriginationDeps {
  readonly db: Kysely<OriginationDatabase>;
  readonly cipher: FieldCipher;
  readonly clock: () => Date;
  readonly logger: Logger;
  readonly verifier: CompanyVerifier;
  readonly narrator: NarrativeWriter;
  readonly booking: LoanBookingPort;
  readonly metrics?: OriginationMetricsPort;
  readonly applicationsPerDay: number;
  /** Approvals above this amount (decimal, major units of the application's currency) need two underwriters. */
  readonly dualApprovalAbove: string;
  /** Monotonic milliseconds for stage timings (default performance.now). */
  readonly now?: () => number;
}

/** An application as submitted; amounts are decimal strings in major units. */
export interface ApplicationRequest {
  readonly channel: 'v1' | 'loan_apply';
  readonly applicantName: string;
  readonly email?: string | undefined;
  readonly nationalId?: string | undefined;
  readonly dateOfBirth?: string | undefined;
  readonly borrowerId?: string | undefined;
  readonly productId?: string | undefined;
  readonly currency?: string | undefined;
  readonly loanAmount: string;
  readonly monthlyIncome: string;
  readonly monthlyDebtPayments?: string | undefined;
  readonly employmentYears: string;
  readonly existingLoans: number;
  readonly repaymentScore: string;
  readonly collateralValue: string;
  readonly company: string;
  readonly requestedTermMonths?: number | undefined;
  readonly purpose?: string | undefined;
}

export interface DecisionView {
  readonly id: string;
  readonly kind: 'automated' | 'shadow' | 'review';
  readonly policy: { readonly id: string; readonly name: string; readonly version: number } | null;
  readonly scorecardVersion: string | null;
  readonly pricingVersion: string | null;
  readonly inputHash: string;
  readonly outcome: DecisionOutcome;
  readonly result: Record<string, unknown>;
  readonly resultHash: string;
  readonly timings: Record<string, unknown>;
  readonly decidedAt: Date;
  readonly decidedBy: string | null;
  readonly note: string | null;
}

export interface ApplicationView {
  readonly id: string;
  readonly borrowerId: string | null;
  readonly submittedBy: string;
  readonly channel: 'v1' | 'loan_apply';
  readonly status: ApplicationRow['status'];
  readonly outcome: DecisionOutcome;
  readonly currency: string;
  readonly amount: bigint;
  readonly productId: string | null;
  readonly loanId: string | null;
  readonly reasons: readonly AdverseReason[];
  readonly offer: Offer | null;
  /** Decrypted only for the applicant and for admin / underwriter; otherwise null. */
  readonly applicant: { readonly name: string; readonly email: string | null; readonly nationalId: string | null; readonly dateOfBirth: string | null } | null;
  readonly decisionId: string;
  readonly createdAt: Date;
  readonly updatedAt: Date;
  /** Staff only: every decision record (automated, shadow, reviews). */
  readonly decisions?: readonly DecisionView[];
  readonly narrative?: { readonly status: string; readonly text: string | null } | null;
}

export interface ReplayReport {
  readonly applicationId: string;
  readonly decisionId: string;
  readonly reproduced: boolean;
  readonly recordedHash: string;
  readonly replayedHash: string;
  readonly differences: readonly string[];
  readonly outcome: DecisionOutcome;
}

export interface ReviewRequest {
  readonly decision: 'approved' | 'declined' | 'counter_offer';
  readonly reasons: readonly string[];
  readonly note: string;
  readonly amount?: string | undefined;
  readonly termMonths?: number | undefined;
}

export interface PolicyVersionView {
  readonly id: string;
  readonly name: string;
  readonly version: number;
  readonly description: string;
  readonly contentHash: string;
  readonly createdAt: Date;
  readonly createdBy: string | null;
  readonly role: 'champion' | 'challenger' | null;
  readonly content?: Record<string, unknown>;
}

export interface PolicyComparison {
  readonly policyId: string;
  readonly compared: number;
  readonly agreed: number;
  readonly agreementRate: string | null;
  /** champion outcome → challenger outcome → count. */
  readonly matrix: Record<string, Record<string, number>>;
  readonly differences: readonly { readonly applicationId: string; readonly champion: string; readonly challenger: string; readonly decidedAt: Date }[];
}

const PII_READERS = new Set(['admin', 'underwriter']);
const STAFF_READERS = new Set(['admin', 'underwriter', 'auditor', 'servicer', 'analyst']);
const REVIEWERS = new Set(['admin', 'underwriter']);
const DAY_MS = 24 * 60 * 60 * 1000;
const DEFAULT_POLICY_NAME = 'default';

/** Limits that make an amount absurd rather than large (major units). */
const LIMITS = { loanAmount: 100_000_000n, monthlyIncome: 100_000_000n, monthlyDebtPayments: 100_000_000n, collateralValue: 10_000_000_000n } as const;

function fieldError(pointer: string, detail: string): AppError {
  return new AppError('validation_failed', { detail, errors: [{ pointer, location: 'body', detail }] });
}

function parseAmount(text: string, currency: string, field: keyof typeof LIMITS, pointer: string, minorPerMajor: bigint): bigint {
  let minor: bigint;
  try {
    minor = parseMoney(text, currency, field);
  } catch (error) {
    if (!isEngineError(error)) throw error;
    throw fieldError(pointer, error.message);
  }
  if (minor < 0n) throw fieldError(pointer, 'must not be negative');
  if (minor > LIMITS[field] * minorPerMajor) throw fieldError(pointer, `must be at most ${LIMITS[field].toString()}`);
  return minor;
}

function minorPerMajor(currency: string): bigint {
  return parseMoney('1', currency, 'unit');
}

/** Same person, same index: national id when given, else email, else the name as written (case and spacing folded). */
export function identityKey(r: Pick<ApplicationRequest, 'applicantName' | 'nationalId' | 'email'>): string {
  if (r.nationalId !== undefined) return `nid:${r.nationalId.replace(/[\s-]/g, '').toUpperCase()}`;
  if (r.email !== undefined) return `email:${r.email.trim().toLowerCase()}`;
  return `name:${r.applicantName.trim().replace(/\s+/g, ' ').toLowerCase()}`;
}

/** a / b as a decimal string with 4 places, truncated (0 ≤ a ≤ b). */
function ratio4(a: number, b: number): string {
  const scaled = (BigInt(a) * 10_000n) / BigInt(b);
  return `${scaled / 10_000n}.${(scaled % 10_000n).toString().padStart(4, '0')}`;
}

function decisionDateOf(now: Date): string {
  return now.toISOString().slice(0, 10);
}

export function createOriginationService(deps: OriginationDeps) {
  const { db, cipher, clock, logger } = deps;
  const odb = db as unknown as Kysely<OriginationDb>;
  const o = (trx: Transaction<OriginationDatabase>) => trx as unknown as Kysely<OriginationDb>;
  const now = deps.now ?? (() => performance.now());
  const compiled = new Map<string, Promise<CompiledPolicy>>();

  async function policyById(id: string): Promise<{ row: NonNullable<Awaited<ReturnType<typeof repo.findPolicy>>>; policy: CompiledPolicy }> {
    const row = await repo.findPolicy(odb, id);
    if (!row) throw new AppError('policy_not_found');
    let pending = compiled.get(id);
    if (pending === undefined) {
      pending = compilePolicy({ id: row.id, version: row.version, content: row.content });
      compiled.set(id, pending);
      pending.catch(() => compiled.delete(id));
    }
    return { row, policy: await pending };
  }

  /** Installs the shipped default policy as champion on first use (idempotent across processes). */
  async function ensureDefaultPolicy(): Promise<void> {
    const existing = await repo.assignments(odb);
    if (existing.some((a) => a.role === 'champion')) return;
    const content = loadDefaultPolicyContent();
    await compilePolicy({ id: 'default', version: 1, content });
    await db.transaction().execute(async (trx) => {
      const json = canonicalJson(content);
      await repo.insertPolicyVersionIfAbsent(o(trx), { id: randomUUID(), name: DEFAULT_POLICY_NAME, version: 1, description: 'Shipped with Loanbook (src/origination/policies/default.json)', content: json, content_hash: hashJson(json) });
      const row = await repo.findPolicyByName(o(trx), DEFAULT_POLICY_NAME, 1);
      if (row && (await repo.assignChampionIfNone(o(trx), row.id))) {
        await appendAudit<OriginationDatabase>(trx, { action: 'policy.activated', subjectType: 'policy', subjectId: row.id, details: { role: 'champion', name: row.name, version: row.version, installed: 'default' } }, clock());
      }
    });
  }

  type ActivePolicy = { row: { id: string; name: string; version: number }; policy: CompiledPolicy };
  type Active = { champion: ActivePolicy; challenger?: ActivePolicy };
  /**
   * The champion and challenger, read at most once a second per process: an activation
   * here takes effect at once, one made by another process within a second.
   */
  let active: { readAt: number; value: Promise<Active> } | undefined;
  const ACTIVE_TTL_MS = 1000;

  async function readActivePolicies(): Promise<Active> {
    let rows = await repo.assignments(odb);
    if (!rows.some((a) => a.role === 'champion')) {
      await ensureDefaultPolicy();
      rows = await repo.assignments(odb);
    }
    const championId = rows.find((a) => a.role === 'champion')?.policy_id;
    if (championId === undefined) throw new AppError('no_champion_policy');
    const challengerId = rows.find((a) => a.role === 'challenger')?.policy_id;
    const champion = await policyById(championId);
    return challengerId === undefined || challengerId === championId ? { champion } : { champion, challenger: await policyById(challengerId) };
  }

  function activePolicies(): Promise<Active> {
    const at = clock().getTime();
    if (active === undefined || at - active.readAt >= ACTIVE_TTL_MS || at < active.readAt) {
      const value = readActivePolicies();
      active = { readAt: at, value };
      value.catch(() => {
        if (active?.value === value) active = undefined;
      });
    }
    return active.value;
  }

  function timeStages(timings: StageTimings): void {
    for (const [stage, ms] of Object.entries(timings)) deps.metrics?.stage(stage as keyof StageTimings, ms / 1000);
  }

  function decisionInput(r: ApplicationRequest, currency: string): DecisionInput {
    const unit = minorPerMajor(currency);
    return {
      currency,
      loanAmount: parseAmount(r.loanAmount, currency, 'loanAmount', '#/loan_amount', unit),
      monthlyIncome: parseAmount(r.monthlyIncome, currency, 'monthlyIncome', '#/monthly_income', unit),
      monthlyDebtPayments: r.monthlyDebtPayments === undefined ? null : parseAmount(r.monthlyDebtPayments, currency, 'monthlyDebtPayments', '#/monthly_debt_payments', unit),
      employmentYears: r.employmentYears,
      existingLoans: r.existingLoans,
      repaymentScore: r.repaymentScore,
      collateralValue: parseAmount(r.collateralValue, currency, 'collateralValue', '#/collateral_value', unit),
      company: r.company.trim() === '' ? null : r.company.trim(),
      requestedTermMonths: r.requestedTermMonths ?? null,
      purpose: r.purpose ?? null,
    };
  }

  function canSeePii(viewer: Viewer, row: ApplicationRow): boolean {
    return PII_READERS.has(viewer.role) || (row.borrower_id !== null && row.borrower_id === viewer.userId);
  }

  function decrypt(row: ApplicationRow) {
    const ctx = (column: string) => ({ table: 'applications', column, rowId: row.id });
    const opt = (v: string | null, column: string) => (v === null ? null : cipher.decrypt(v, ctx(column)));
    return {
      name: cipher.decrypt(row.applicant_name, ctx('applicant_name')),
      email: opt(row.email, 'email'),
      nationalId: opt(row.national_id, 'national_id'),
      dateOfBirth: opt(row.date_of_birth, 'date_of_birth'),
    };
  }

  async function policyNames(ids: readonly (string | null)[]): Promise<Map<string, { id: string; name: string; version: number }>> {
    const out = new Map<string, { id: string; name: string; version: number }>();
    for (const id of new Set(ids.filter((x): x is string => x !== null))) {
      const row = await repo.findPolicy(odb, id);
      if (row) out.set(id, { id: row.id, name: row.name, version: row.version });
    }
    return out;
  }

  async function view(row: ApplicationRow, viewer: Viewer, full: boolean): Promise<ApplicationView> {
    const staff = STAFF_READERS.has(viewer.role);
    // The list views read only the decision in force; the full view reads every record.
    const decisions = full && staff ? await repo.decisionsOf(odb, row.id) : [];
    const current = full && staff ? decisions.find((d) => d.id === row.decision_id) : await repo.findDecision(odb, row.decision_id);
    const result: Record<string, unknown> = current?.result ?? {};
    const base: ApplicationView = {
      id: row.id,
      borrowerId: row.borrower_id,
      submittedBy: row.submitted_by,
      channel: row.channel,
      status: row.status,
      outcome: row.outcome as DecisionOutcome,
      currency: row.currency,
      amount: BigInt(row.amount),
      productId: row.product_id,
      loanId: row.loan_id,
      reasons: (result.reasons as AdverseReason[] | undefined) ?? [],
      offer: offerFromJson(result.offer),
      applicant: canSeePii(viewer, row) ? decrypt(row) : null,
      decisionId: row.decision_id,
      createdAt: row.created_at,
      updatedAt: row.updated_at,
    };
    if (!full || !staff) return base;
    const names = await policyNames(decisions.map((d) => d.policy_id));
    const narrative = await repo.findNarrative(odb, row.id);
    return {
      ...base,
      decisions: decisions.map((d) => ({
        id: d.id,
        kind: d.kind,
        policy: d.policy_id === null ? null : (names.get(d.policy_id) ?? null),
        scorecardVersion: d.scorecard_version,
        pricingVersion: d.pricing_version,
        inputHash: d.input_hash,
        outcome: d.outcome as DecisionOutcome,
        result: d.result,
        resultHash: d.result_hash,
        timings: d.timings,
        decidedAt: d.decided_at,
        decidedBy: d.decided_by,
        note: d.note,
      })),
      narrative: narrative ? { status: narrative.status, text: narrative.text } : null,
    };
  }

  async function loadVisible(id: string, viewer: Viewer): Promise<ApplicationRow> {
    const scope = viewer.role === 'borrower' ? viewer.userId : undefined;
    if (scope === undefined && !STAFF_READERS.has(viewer.role)) throw new AppError('application_not_found');
    const row = await repo.findApplication(odb, id, scope);
    if (!row) throw new AppError('application_not_found');
    return row;
  }

  /** The narrative for underwriters, after the decision committed; it never changes the decision. */
  function writeNarrative(applicationId: string, decisionId: string, result: DecisionResult, input: DecisionInput): void {
    const started = now();
    void deps.narrator
      .write({
        outcome: result.outcome,
        reasons: result.reasons,
        facts: {
          currency: input.currency,
          loan_amount: formatMoney(input.loanAmount, input.currency),
          monthly_income: formatMoney(input.monthlyIncome, input.currency),
          employment_years: input.employmentYears,
          existing_loans: input.existingLoans,
          repayment_score: input.repaymentScore,
          collateral_value: formatMoney(input.collateralValue, input.currency),
          company_verification: result.stages.company_verification?.status ?? null,
          score: result.stages.scorecard?.score ?? null,
          grade: result.stages.pricing?.grade ?? null,
          debt_to_income: result.stages.affordability?.debtToIncome ?? null,
          loan_to_value: result.stages.collateral?.ltv ?? null,
        },
      })
      .then(async (n) => {
        deps.metrics?.stage('narrative', (now() - started) / 1000);
        if (n.status === 'skipped') return;
        await repo.insertNarrative(odb, {
          application_id: applicationId,
          decision_id: decisionId,
          status: n.status,
          provider: n.provider,
          text: n.status === 'written' ? n.text : null,
          detail: n.status === 'unavailable' ? `${n.failure}: ${n.detail}` : null,
          created_at: clock(),
        });
      })
      .catch((error: unknown) => logger.warn({ err: { message: error instanceof Error ? error.message : String(error) }, applicationId }, 'narrative not recorded'));
  }

  function decisionRow(
    applicationId: string,
    kind: 'automated' | 'shadow' | 'review',
    recorded: { inputHash: string },
    result: DecisionResult,
    extra: { policyId: string | null; scorecardVersion: string | null; pricingVersion: string | null; timings: StageTimings; at: Date; by: string | null; note: string | null },
  ): repo.DecisionRowInsert {
    const json = resultJson(result);
    return {
      id: randomUUID(),
      application_id: applicationId,
      kind,
      policy_id: extra.policyId,
      scorecard_version: extra.scorecardVersion,
      pricing_version: extra.pricingVersion,
      input_hash: recorded.inputHash,
      outcome: result.outcome,
      result: json,
      result_hash: hashJson(json),
      timings: canonicalJson(extra.timings),
      decided_at: extra.at,
      decided_by: extra.by,
      note: extra.note,
    };
  }

  return {
    ensureDefaultPolicy,

    async apply(request: ApplicationRequest, ctx: RequestContext): Promise<ApplicationView> {
      const started = now();
      try {
        const view = await this.decide(request, ctx);
        deps.metrics?.application('success', view.outcome);
        deps.metrics?.stage('total', (now() - started) / 1000);
        return view;
      } catch (error) {
        deps.metrics?.application(error instanceof AppError && error.status < 500 ? 'refused' : 'error', 'none');
        throw error;
      }
    },

    async decide(request: ApplicationRequest, ctx: RequestContext): Promise<ApplicationView> {
      const viewer = ctx.viewer;
      let borrowerId: string | null;
      if (viewer.role === 'borrower') {
        if (request.borrowerId !== undefined && request.borrowerId !== viewer.userId) {
          throw new AppError('forbidden', { detail: 'A borrower applies for themself only.' });
        }
        borrowerId = viewer.userId;
      } else {
        borrowerId = request.borrowerId ?? null;
      }
      const currency = request.productId !== undefined ? await deps.booking.productCurrency(request.productId) : (request.currency ?? 'USD');
      if (request.productId !== undefined && request.currency !== undefined && request.currency !== currency) {
        throw fieldError('#/currency', `the product lends in ${currency}`);
      }
      const validationStarted = now();
      const input = decisionInput(request, currency);
      // Under every configured key: applications indexed before a key rotation still count.
      const applicantIndexes = cipher.blindIndexes(identityKey(request), 'applicant');
      const applicantIndex = applicantIndexes[0]!;
      const at = clock();
      const since = new Date(at.getTime() - DAY_MS);
      const overLimit = () => new AppError('application_velocity_exceeded', { headers: { 'retry-after': '3600' }, detail: `At most ${deps.applicationsPerDay} applications per applicant in 24 hours.` });
      // Checked before the pipeline runs (no provider call for a refused applicant), and again,
      // authoritatively, under the applicant's lock when the application is written.
      if ((await repo.countRecentApplications(odb, applicantIndexes, since)) >= deps.applicationsPerDay) throw overLimit();
      const validationMs = now() - validationStarted;

      const { champion, challenger } = await activePolicies();
      const recorded: RecordedInput = { input, decisionDate: decisionDateOf(at) };
      const inputJson = recordedInputJson(recorded);
      const inputHash = hashJson(inputJson);
      let verification: CompanyVerification | undefined;
      const first = await runPipeline(input, {
        policy: champion.policy,
        scorecardVersion: DEFAULT_SCORECARD_VERSION,
        pricingVersion: DEFAULT_PRICING_VERSION,
        decisionDate: recorded.decisionDate,
        now,
        verify: async (company: string) => (verification = await deps.verifier.verify(company)),
      });
      const timings: StageTimings = { ...first.timings, validation: (first.timings.validation ?? 0) + validationMs };
      timeStages(timings);
      const shadow = challenger
        ? await runPipeline(input, {
            policy: challenger.policy,
            scorecardVersion: DEFAULT_SCORECARD_VERSION,
            pricingVersion: DEFAULT_PRICING_VERSION,
            decisionDate: recorded.decisionDate,
            now,
            // The challenger sees what the champion saw: one provider call, one recorded outcome.
            verify: async (company: string) => verification ?? (await deps.verifier.verify(company)),
          })
        : undefined;

      const id = randomUUID();
      const rows = [
        decisionRow(id, 'automated', { inputHash }, first.result, { policyId: champion.row.id, scorecardVersion: DEFAULT_SCORECARD_VERSION, pricingVersion: DEFAULT_PRICING_VERSION, timings, at, by: null, note: null }),
      ];
      if (shadow && challenger) {
        rows.push(decisionRow(id, 'shadow', { inputHash }, shadow.result, { policyId: challenger.row.id, scorecardVersion: DEFAULT_SCORECARD_VERSION, pricingVersion: DEFAULT_PRICING_VERSION, timings: shadow.timings, at, by: null, note: null }));
      }
      const automated = rows[0] as repo.DecisionRowInsert;
      const outcome = first.result.outcome;
      const enc = (value: string | undefined, column: string) => (value === undefined ? null : cipher.encrypt(value, { table: 'applications', column, rowId: id }));
      const row: Omit<ApplicationRow, 'input' | 'loan_id'> & { input: string } = {
        id,
        borrower_id: borrowerId,
        submitted_by: viewer.userId,
        channel: request.channel,
        applicant_name: enc(request.applicantName, 'applicant_name') as string,
        email: enc(request.email, 'email'),
        national_id: enc(request.nationalId, 'national_id'),
        date_of_birth: enc(request.dateOfBirth, 'date_of_birth'),
        applicant_index: applicantIndex,
        input: inputJson,
        input_hash: inputHash,
        product_id: request.productId ?? null,
        currency,
        amount: input.loanAmount,
        status: outcome === 'referred' ? 'in_review' : 'decided',
        outcome,
        decision_id: automated.id,
        created_at: at,
        updated_at: at,
      };
      await db.transaction().execute(async (trx) => {
        await repo.lockApplicant(o(trx), applicantIndex);
        if ((await repo.insertApplicationCounting(o(trx), row, rows, since, applicantIndexes)) >= deps.applicationsPerDay) throw overLimit();
        await appendOutbox<OriginationDatabase>(trx, { topic: 'application.decided', aggregateType: 'application', aggregateId: id, payload: { application_id: id, outcome, policy_id: champion.row.id, borrower_id: borrowerId } });
        await appendAudit<OriginationDatabase>(
          trx,
          {
            action: 'application.decided',
            actorId: viewer.userId,
            subjectType: 'application',
            subjectId: id,
            ip: ctx.ip,
            requestId: ctx.requestId,
            details: { decision_id: automated.id, outcome, policy_id: champion.row.id, policy_version: champion.row.version, input_hash: inputHash, result_hash: automated.result_hash, shadow: shadow ? { policy_id: challenger?.row.id, outcome: shadow.result.outcome } : null },
          },
          at,
        );
      });
      deps.metrics?.decision('automated', `${champion.row.name}@${champion.row.version}`, outcome);
      if (shadow && challenger) deps.metrics?.decision('shadow', `${challenger.row.name}@${challenger.row.version}`, shadow.result.outcome);
      if (outcome === 'referred') writeNarrative(id, automated.id, first.result, input);
      // The answer from what was just written (the same as a read of it would give).
      return {
        id,
        borrowerId,
        submittedBy: viewer.userId,
        channel: request.channel,
        status: row.status,
        outcome,
        currency,
        amount: input.loanAmount,
        productId: row.product_id,
        loanId: null,
        reasons: first.result.reasons,
        offer: first.result.offer,
        applicant: PII_READERS.has(viewer.role) || borrowerId === viewer.userId
          ? { name: request.applicantName, email: request.email ?? null, nationalId: request.nationalId ?? null, dateOfBirth: request.dateOfBirth ?? null }
          : null,
        decisionId: automated.id,
        createdAt: at,
        updatedAt: at,
      };
    },

    async application(id: string, viewer: Viewer): Promise<ApplicationView> {
      return view(await loadVisible(id, viewer), viewer, true);
    },

    async applications(
      viewer: Viewer,
      filter: { status?: string | undefined; outcome?: string | undefined; borrowerId?: string | undefined; nationalId?: string | undefined; email?: string | undefined; limit: number; startingAfter?: string | undefined },
    ): Promise<{ data: ApplicationView[]; hasMore: boolean }> {
      const scope = viewer.role === 'borrower' ? viewer.userId : filter.borrowerId;
      if (viewer.role !== 'borrower' && !STAFF_READERS.has(viewer.role)) throw new AppError('forbidden');
      // Repeat applicants, found by the blind index: a search by personal data is for those who may see it.
      const byApplicant = filter.nationalId !== undefined || filter.email !== undefined;
      if (byApplicant && !PII_READERS.has(viewer.role)) throw new AppError('forbidden', { detail: 'Searching by national id or email is for admins and underwriters.' });
      const applicantIndexes = byApplicant ? cipher.blindIndexes(identityKey({ applicantName: '', nationalId: filter.nationalId, email: filter.email }), 'applicant') : undefined;
      let after: { created_at: Date; id: string } | undefined;
      if (filter.startingAfter !== undefined) {
        const a = await repo.findApplication(odb, filter.startingAfter, viewer.role === 'borrower' ? viewer.userId : undefined);
        if (!a) throw new AppError('application_not_found', { detail: 'starting_after names no application' });
        after = { created_at: a.created_at, id: a.id };
      }
      const rows = await repo.listApplications(odb, { borrowerId: scope, applicantIndexes, status: filter.status, outcome: filter.outcome, limit: filter.limit + 1, after });
      const data = await Promise.all(rows.slice(0, filter.limit).map((r) => view(r, viewer, false)));
      return { data, hasMore: rows.length > filter.limit };
    },

    /** The underwriters' queue: referred applications and approvals awaiting a second underwriter, oldest first. */
    async reviews(viewer: Viewer, page: { limit: number; startingAfter?: string | undefined }): Promise<{ data: ApplicationView[]; hasMore: boolean }> {
      if (!REVIEWERS.has(viewer.role)) throw new AppError('forbidden');
      let after: { created_at: Date; id: string } | undefined;
      if (page.startingAfter !== undefined) {
        const a = await repo.findApplication(odb, page.startingAfter);
        if (!a) throw new AppError('application_not_found', { detail: 'starting_after names no application' });
        after = { created_at: a.created_at, id: a.id };
      }
      const rows = await repo.listApplications(odb, { status: 'in_review', limit: page.limit + 1, after, oldestFirst: true });
      const data = await Promise.all(rows.slice(0, page.limit).map((r) => view(r, viewer, false)));
      return { data, hasMore: rows.length > page.limit };
    },

    /** Re-runs the automated decision on its recorded input, versions and provider outcome. */
    async replay(id: string, viewer: Viewer): Promise<ReplayReport> {
      const row = await loadVisible(id, viewer);
      const decisions = await repo.decisionsOf(odb, id);
      const original = decisions.find((d) => d.kind === 'automated');
      if (!original || original.policy_id === null) throw new AppError('application_not_found', { detail: 'the application has no automated decision' });
      const recorded = recordedInputFromJson(row.input);
      if (hashJson(recordedInputJson(recorded)) !== row.input_hash) {
        throw new AppError('invalid_application_state', { detail: 'the recorded input does not match its hash', extensions: { state: row.status, operation: 'replay' } });
      }
      const { policy } = await policyById(original.policy_id);
      const recordedVerification = (original.result.stages as Record<string, unknown> | undefined)?.company_verification as CompanyVerification | undefined;
      const again = await runPipeline(recorded.input, {
        policy,
        scorecardVersion: original.scorecard_version ?? DEFAULT_SCORECARD_VERSION,
        pricingVersion: original.pricing_version ?? DEFAULT_PRICING_VERSION,
        decisionDate: recorded.decisionDate,
        now,
        verify: async () => recordedVerification ?? { status: 'skipped', reason: 'no_company' },
      });
      const json = resultJson(again.result);
      const replayedHash = hashJson(json);
      return {
        applicationId: id,
        decisionId: original.id,
        reproduced: replayedHash === original.result_hash,
        recordedHash: original.result_hash,
        replayedHash,
        differences: jsonDifferences(original.result, JSON.parse(json)),
        outcome: again.result.outcome,
      };
    },

    async review(id: string, request: ReviewRequest, ctx: RequestContext): Promise<ApplicationView> {
      const viewer = ctx.viewer;
      if (!REVIEWERS.has(viewer.role)) throw new AppError('forbidden');
      const reasons: AdverseReason[] = request.reasons.map((code, i) => {
        if (!isReasonCode(code)) throw fieldError(`#/reasons/${i}`, `unknown reason code "${code}" (see docs/origination.md for the catalogue)`);
        return { code, text: reasonText(code), source: { kind: 'review', reviewerId: viewer.userId } };
      });
      if (request.decision !== 'approved' && (reasons.length < 1 || reasons.length > 4)) {
        throw fieldError('#/reasons', 'a decline or counter-offer carries 1 to 4 reasons');
      }
      const at = clock();
      await db.transaction().execute(async (trx) => {
        const row = await repo.findApplication(o(trx), id, undefined, true);
        if (!row) throw new AppError('application_not_found');
        if (row.status === 'accepted') throw new AppError('invalid_application_state', { detail: 'The offer was accepted and booked.', extensions: { state: row.status, operation: 'review' } });
        if (row.submitted_by === viewer.userId || row.borrower_id === viewer.userId) {
          throw new AppError('maker_checker', { detail: 'You submitted this application (or are its applicant); another underwriter decides it.' });
        }
        const decisions = await repo.decisionsOf(o(trx), id);
        const automated = decisions.find((d) => d.kind === 'automated');
        const stages = ((automated?.result.stages ?? {}) as Record<string, unknown>);
        const pricing = stages.pricing as { annualRate?: string; termMonths?: number } | undefined;
        let offer: Offer | null = null;
        if (request.decision !== 'declined') {
          const amount = request.amount === undefined ? BigInt(row.amount) : parseAmount(request.amount, row.currency, 'loanAmount', '#/amount', minorPerMajor(row.currency));
          if (amount <= 0n) throw fieldError('#/amount', 'must be more than zero');
          const term = request.termMonths ?? pricing?.termMonths;
          if (pricing?.annualRate === undefined || term === undefined) {
            throw new AppError('invalid_application_state', { detail: 'The application was not priced (a knockout declined it before pricing); it cannot be approved by review.', extensions: { state: row.status, operation: 'review' } });
          }
          offer = offerFor(amount, term, pricing.annualRate, row.currency, decisionDateOf(at));
        }
        // Four eyes above the threshold: the first approval waits for a second, different underwriter.
        const threshold = parseMoney(deps.dualApprovalAbove, row.currency, 'dualApprovalAbove');
        const approving = request.decision !== 'declined';
        const lastReview = [...decisions].reverse().find((d) => d.kind === 'review');
        const firstApprovalPending = row.status === 'in_review' && lastReview !== undefined && lastReview.outcome !== 'declined' && (lastReview.result as { pending_second_approval?: boolean }).pending_second_approval === true;
        if (approving && firstApprovalPending && lastReview?.decided_by === viewer.userId) {
          throw new AppError('maker_checker', { detail: 'The second approval must come from a different underwriter.' });
        }
        // An approval that overturns the automated decision (a decline, say) is an override: like a
        // large amount, it needs a second underwriter, so nobody approves their own override.
        const overrides = automated !== undefined && automated.outcome !== 'referred' && automated.outcome !== request.decision;
        const needsSecond = approving && offer !== null && (offer.amount > threshold || overrides) && !firstApprovalPending;
        const result = { outcome: request.decision, reasons, offer, stages: {}, pending_second_approval: needsSecond } as unknown as DecisionResult;
        const json = resultJson(result);
        const decisionId = randomUUID();
        await repo.insertDecisions(o(trx), [
          {
            id: decisionId,
            application_id: id,
            kind: 'review',
            policy_id: null,
            scorecard_version: null,
            pricing_version: null,
            input_hash: row.input_hash,
            outcome: request.decision,
            result: json,
            result_hash: hashJson(json),
            timings: '{}',
            decided_at: at,
            decided_by: viewer.userId,
            note: request.note,
          },
        ]);
        if (needsSecond) {
          await repo.updateApplication(o(trx), id, { status: 'in_review', outcome: row.outcome, decision_id: row.decision_id, updated_at: at });
        } else {
          await repo.updateApplication(o(trx), id, { status: 'decided', outcome: request.decision, decision_id: decisionId, updated_at: at });
        }
        await appendOutbox<OriginationDatabase>(trx, { topic: 'application.reviewed', aggregateType: 'application', aggregateId: id, payload: { application_id: id, outcome: request.decision, pending_second_approval: needsSecond } });
        await appendAudit<OriginationDatabase>(trx, { action: needsSecond ? 'application.review.first_approval' : 'application.reviewed', actorId: viewer.userId, subjectType: 'application', subjectId: id, ip: ctx.ip, requestId: ctx.requestId, details: { decision_id: decisionId, outcome: request.decision, reasons: reasons.map((r) => r.code), automated_outcome: automated?.outcome ?? null, override: overrides } }, at);
        deps.metrics?.decision('review', 'review', request.decision);
      });
      return view((await repo.findApplication(odb, id)) as ApplicationRow, viewer, true);
    },

    /** The applicant (or staff for them) accepts the offer: the loan is booked in servicing, exactly once. */
    async accept(id: string, request: { productId?: string | undefined; borrowerId?: string | undefined }, ctx: RequestContext): Promise<{ application: ApplicationView; loanId: string }> {
      const viewer = ctx.viewer;
      const at = clock();
      const loanId = await db.transaction().execute(async (trx) => {
        const row = await repo.findApplication(o(trx), id, viewer.role === 'borrower' ? viewer.userId : undefined, true);
        if (!row) throw new AppError('application_not_found');
        if (row.status === 'accepted') {
          throw new AppError('invalid_application_state', { detail: `The offer was already accepted: loan ${String(row.loan_id)}.`, extensions: { state: row.status, operation: 'accept', loan_id: row.loan_id } });
        }
        if (row.status !== 'decided' || (row.outcome !== 'approved' && row.outcome !== 'counter_offer')) throw new AppError('no_offer', { extensions: { state: row.status, outcome: row.outcome } });
        const decision = await repo.findDecision(o(trx), row.decision_id);
        const offer = offerFromJson(decision?.result.offer);
        if (!offer) throw new AppError('no_offer', { extensions: { state: row.status, outcome: row.outcome } });
        const productId = request.productId ?? row.product_id;
        if (productId === null || productId === undefined) throw new AppError('product_required');
        const borrowerId = row.borrower_id ?? request.borrowerId;
        if (borrowerId === undefined) throw new AppError('borrower_required');
        if (row.borrower_id !== null && request.borrowerId !== undefined && request.borrowerId !== row.borrower_id) {
          throw fieldError('#/borrower_id', 'the application belongs to another borrower');
        }
        const booked = await deps.booking.book(trx, { productId, borrowerId, principal: formatMoney(offer.amount, offer.currency), annualRate: offer.annualRate, term: offer.termMonths }, ctx);
        await repo.updateApplication(o(trx), id, { status: 'accepted', outcome: row.outcome, decision_id: row.decision_id, loan_id: booked.loanId, updated_at: at });
        await appendOutbox<OriginationDatabase>(trx, { topic: 'application.accepted', aggregateType: 'application', aggregateId: id, payload: { application_id: id, loan_id: booked.loanId } });
        await appendAudit<OriginationDatabase>(trx, { action: 'application.accepted', actorId: viewer.userId, subjectType: 'application', subjectId: id, ip: ctx.ip, requestId: ctx.requestId, details: { loan_id: booked.loanId, decision_id: row.decision_id, product_id: productId, amount: formatMoney(offer.amount, offer.currency), currency: offer.currency, annual_rate: offer.annualRate, term_months: offer.termMonths } }, at);
        return booked.loanId;
      });
      return { application: await view((await repo.findApplication(odb, id)) as ApplicationRow, viewer, false), loanId };
    },

    // ---- policies ------------------------------------------------------------------

    async uploadPolicy(input: { name: string; description: string; content: Record<string, unknown> }, ctx: RequestContext): Promise<PolicyVersionView> {
      try {
        await compilePolicy({ id: `upload-${randomUUID()}`, version: 0, content: input.content });
      } catch (error) {
        if (!(error instanceof PolicyContentError)) throw error;
        throw new AppError('invalid_policy', { detail: error.message, errors: error.issues.slice(0, 20).map((i) => ({ pointer: `#/content${i.path}`, location: 'body', detail: i.message })) });
      }
      const json = canonicalJson(input.content);
      const row = await db.transaction().execute(async (trx) => {
        const inserted = await repo.insertPolicyVersion(o(trx), { id: randomUUID(), name: input.name, description: input.description, content: json, content_hash: hashJson(json), created_by: ctx.viewer.userId });
        await appendAudit<OriginationDatabase>(trx, { action: 'policy.uploaded', actorId: ctx.viewer.userId, subjectType: 'policy', subjectId: inserted.id, ip: ctx.ip, requestId: ctx.requestId, details: { name: inserted.name, version: inserted.version, content_hash: inserted.content_hash } }, clock());
        return inserted;
      });
      return { id: row.id, name: row.name, version: row.version, description: row.description, contentHash: row.content_hash, createdAt: row.created_at, createdBy: row.created_by, role: null };
    },

    async policies(page: { limit: number; startingAfter?: string | undefined }): Promise<{ data: PolicyVersionView[]; hasMore: boolean }> {
      await ensureDefaultPolicy();
      let after: { created_at: Date; id: string } | undefined;
      if (page.startingAfter !== undefined) {
        const p = await repo.findPolicy(odb, page.startingAfter);
        if (!p) throw new AppError('policy_not_found', { detail: 'starting_after names no policy' });
        after = { created_at: p.created_at, id: p.id };
      }
      const [rows, roles] = await Promise.all([repo.listPolicies(odb, { limit: page.limit + 1, after }), repo.assignments(odb)]);
      const roleOf = (pid: string) => roles.find((r) => r.policy_id === pid)?.role ?? null;
      return {
        data: rows.slice(0, page.limit).map((r) => ({ id: r.id, name: r.name, version: r.version, description: r.description, contentHash: r.content_hash, createdAt: r.created_at, createdBy: r.created_by, role: roleOf(r.id) })),
        hasMore: rows.length > page.limit,
      };
    },

    async policy(id: string): Promise<PolicyVersionView> {
      await ensureDefaultPolicy();
      const row = await repo.findPolicy(odb, id);
      if (!row) throw new AppError('policy_not_found');
      const roles = await repo.assignments(odb);
      return { id: row.id, name: row.name, version: row.version, description: row.description, contentHash: row.content_hash, createdAt: row.created_at, createdBy: row.created_by, role: roles.find((r) => r.policy_id === id)?.role ?? null, content: row.content };
    },

    async activate(id: string, role: 'champion' | 'challenger' | 'none', ctx: RequestContext): Promise<PolicyVersionView> {
      await ensureDefaultPolicy();
      await policyById(id);
      await db.transaction().execute(async (trx) => {
        const current = await repo.assignments(o(trx));
        if (role === 'none') {
          const held = current.find((a) => a.policy_id === id);
          if (held?.role === 'champion') throw new AppError('invalid_application_state', { detail: 'The champion cannot be unassigned; activate another version as champion instead.', extensions: { state: 'champion', operation: 'deactivate' } });
          if (held) await repo.unassign(o(trx), held.role);
        } else {
          await repo.assign(o(trx), role, id, ctx.viewer.userId);
          // A version is champion or challenger, not both.
          if (role === 'champion' && current.find((a) => a.role === 'challenger')?.policy_id === id) await repo.unassign(o(trx), 'challenger');
        }
        await appendAudit<OriginationDatabase>(trx, { action: role === 'none' ? 'policy.deactivated' : 'policy.activated', actorId: ctx.viewer.userId, subjectType: 'policy', subjectId: id, ip: ctx.ip, requestId: ctx.requestId, details: { role } }, clock());
      });
      active = undefined;
      return this.policy(id);
    },

    async comparison(id: string, limit = 100): Promise<PolicyComparison> {
      const row = await repo.findPolicy(odb, id);
      if (!row) throw new AppError('policy_not_found');
      const [cells, diffs] = await Promise.all([repo.shadowMatrix(odb, id), repo.shadowDifferences(odb, id, limit)]);
      const matrix: Record<string, Record<string, number>> = {};
      let compared = 0;
      let agreed = 0;
      for (const c of cells) {
        const n = Number(c.n);
        (matrix[c.champion] ??= {})[c.challenger] = n;
        compared += n;
        if (c.champion === c.challenger) agreed += n;
      }
      return {
        policyId: id,
        compared,
        agreed,
        agreementRate: compared === 0 ? null : ratio4(agreed, compared),
        matrix,
        differences: diffs.map((d) => ({ applicationId: d.application_id, champion: d.champion, challenger: d.challenger, decidedAt: d.decided_at })),
      };
    },
  };
}

export type OriginationService = ReturnType<typeof createOriginationService>;
