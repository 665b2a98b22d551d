/**
 * Versioned scorecards as data. A scorecard gives each attribute of an application
 * points by the bin its value falls in; the score is their sum. Every version ever
 * used stays in the registry, so a recorded decision replays against the scorecard
 * it was made with (its `scorecardVersion`), never against today's.
 *
 * Values are exact decimal strings and bins are compared as exact ratios (engine
 * `parseDecimal` / `compare`), so a value on a boundary lands in the same bin on
 * every machine. `maxPoints` per attribute is the best bin's points: points lost =
 * maxPoints − points, the ranking the adverse-action reasons are chosen by
 * (Regulation B § 1002.9(b)(2): the principal reasons are the factors that cost the
 * applicant the most points).
 */
import { type Ratio, compare, parseDecimal } from '../engine/index.js';
import type { ScoreResult, ScoredAttribute } from './model.js';

export const SCORE_ATTRIBUTES = ['repayment_score', 'existing_loans', 'employment_years', 'debt_to_income', 'loan_to_value'] as const;
export type ScoreAttributeName = (typeof SCORE_ATTRIBUTES)[number];

/** One end of a bin; absent = unbounded. */
export interface BinBound {
  readonly value: string;
  readonly inclusive: boolean;
}

export interface ScoreBin {
  readonly lower?: BinBound;
  readonly upper?: BinBound;
  readonly points: number;
  /** The adverse-action reason when this bin costs points; default the attribute's. */
  readonly reasonCode?: string;
}

export interface ScorecardAttribute {
  readonly attribute: ScoreAttributeName;
  /** Bins in increasing order; a value falls in the first bin that contains it. */
  readonly bins: readonly ScoreBin[];
  /** The bin of a value that is not there (debts not stated, no collateral); its label is the scored `value`. */
  readonly missing?: { readonly label: string; readonly points: number; readonly reasonCode?: string };
  /** The adverse-action reason (reasons.ts catalogue) when this attribute costs points. */
  readonly reasonCode: string;
}

export interface Scorecard {
  readonly version: string;
  /** Attributes in the fixed order that breaks ties between equal points lost. */
  readonly attributes: readonly ScorecardAttribute[];
}

/** What the scorecard scores: exact decimal strings, null where the attribute has a missing bin. */
export interface ScoreFacts {
  /** [0, 1]. */
  readonly repaymentScore: string;
  readonly existingLoans: number;
  readonly employmentYears: string;
  /** Existing debt payments / income, without the new loan; null when unknown. */
  readonly debtToIncome: string | null;
  /** Loan / collateral; null when unsecured. */
  readonly loanToValue: string | null;
}

const b = (value: string, inclusive: boolean): BinBound => ({ value, inclusive });

/**
 * sc-2026.1 — maximum 1,000 points. Repayment history weighs most (250); the
 * others 150–200. Unknown debts score below every known ratio up to 0.35 (the
 * applicant did not say), an unsecured loan below every LTV up to 1.0.
 */
const SC_2026_1: Scorecard = {
  version: 'sc-2026.1',
  attributes: [
    {
      attribute: 'repayment_score',
      reasonCode: 'repayment_history',
      bins: [
        { lower: b('0', true), upper: b('0.5', false), points: 0 },
        { lower: b('0.5', true), upper: b('0.7', false), points: 60 },
        { lower: b('0.7', true), upper: b('0.8', false), points: 120 },
        { lower: b('0.8', true), upper: b('0.9', false), points: 180 },
        { lower: b('0.9', true), points: 250 },
      ],
    },
    {
      attribute: 'existing_loans',
      reasonCode: 'too_many_obligations',
      bins: [
        { lower: b('0', true), upper: b('0', true), points: 90, reasonCode: 'limited_credit_experience' },
        { lower: b('1', true), upper: b('2', true), points: 150 },
        { lower: b('3', true), upper: b('4', true), points: 80 },
        { lower: b('5', true), points: 20 },
      ],
    },
    {
      attribute: 'employment_years',
      reasonCode: 'employment_too_short',
      bins: [
        { lower: b('0', true), upper: b('1', false), points: 20 },
        { lower: b('1', true), upper: b('3', false), points: 80 },
        { lower: b('3', true), upper: b('5', false), points: 130 },
        { lower: b('5', true), upper: b('10', false), points: 170 },
        { lower: b('10', true), points: 200 },
      ],
    },
    {
      attribute: 'debt_to_income',
      reasonCode: 'debt_to_income_too_high',
      missing: { label: 'unknown', points: 90, reasonCode: 'application_incomplete' },
      bins: [
        { lower: b('0', true), upper: b('0.1', false), points: 200 },
        { lower: b('0.1', true), upper: b('0.2', false), points: 160 },
        { lower: b('0.2', true), upper: b('0.35', false), points: 110 },
        { lower: b('0.35', true), upper: b('0.5', false), points: 50 },
        { lower: b('0.5', true), points: 0 },
      ],
    },
    {
      attribute: 'loan_to_value',
      reasonCode: 'insufficient_collateral',
      missing: { label: 'unsecured', points: 60 },
      bins: [
        { lower: b('0', true), upper: b('0.5', true), points: 200 },
        { lower: b('0.5', false), upper: b('0.8', true), points: 150 },
        { lower: b('0.8', false), upper: b('1', true), points: 80 },
        { lower: b('1', false), points: 0 },
      ],
    },
  ],
};

const REGISTRY: ReadonlyMap<string, Scorecard> = new Map([[SC_2026_1.version, SC_2026_1]]);

export const SCORECARD_VERSIONS: readonly string[] = [...REGISTRY.keys()];

/** The scorecard of a version. Throws on an unknown version (a configuration bug, not an applicant's error). */
export function getScorecard(version: string): Scorecard {
  const card = REGISTRY.get(version);
  if (card === undefined) throw new Error(`unknown scorecard version "${version}" (known: ${SCORECARD_VERSIONS.join(', ')})`);
  return card;
}

/** "[0.9, ∞)", "(0.5, 0.8]", "[1, 2]". */
export function binLabel(bin: ScoreBin): string {
  const open = bin.lower === undefined ? '(−∞' : `${bin.lower.inclusive ? '[' : '('}${bin.lower.value}`;
  const close = bin.upper === undefined ? '∞)' : `${bin.upper.value}${bin.upper.inclusive ? ']' : ')'}`;
  return `${open}, ${close}`;
}

function inBin(value: Ratio, bin: ScoreBin): boolean {
  if (bin.lower !== undefined) {
    const c = compare(value, parseDecimal(bin.lower.value));
    if (c < 0 || (c === 0 && !bin.lower.inclusive)) return false;
  }
  if (bin.upper !== undefined) {
    const c = compare(value, parseDecimal(bin.upper.value));
    if (c > 0 || (c === 0 && !bin.upper.inclusive)) return false;
  }
  return true;
}

function maxPointsOf(attr: ScorecardAttribute): number {
  return Math.max(...attr.bins.map((bin) => bin.points), attr.missing?.points ?? 0);
}

function factOf(facts: ScoreFacts, attribute: ScoreAttributeName): string | null {
  switch (attribute) {
    case 'repayment_score':
      return facts.repaymentScore;
    case 'existing_loans':
      return String(facts.existingLoans);
    case 'employment_years':
      return facts.employmentYears;
    case 'debt_to_income':
      return facts.debtToIncome;
    case 'loan_to_value':
      return facts.loanToValue;
  }
}

/** The bin a value falls in, with its label and reason code. Throws when no bin holds it (a scorecard gap). */
function binOf(attr: ScorecardAttribute, value: string | null): { label: string; points: number; reasonCode: string } {
  if (value === null) {
    if (attr.missing === undefined) throw new Error(`${attr.attribute} has no bin for a missing value`);
    return { label: attr.missing.label, points: attr.missing.points, reasonCode: attr.missing.reasonCode ?? attr.reasonCode };
  }
  const exact = parseDecimal(value, attr.attribute);
  const bin = attr.bins.find((candidate) => inBin(exact, candidate));
  if (bin === undefined) throw new Error(`${attr.attribute} value ${value} falls in no bin`);
  return { label: binLabel(bin), points: bin.points, reasonCode: bin.reasonCode ?? attr.reasonCode };
}

/** Scores an application's facts with the scorecard of `version`. Pure and exact. */
export function scoreApplication(version: string, facts: ScoreFacts): ScoreResult {
  const card = getScorecard(version);
  const attributes: ScoredAttribute[] = card.attributes.map((attr) => {
    const value = factOf(facts, attr.attribute);
    const bin = binOf(attr, value);
    return { attribute: attr.attribute, value: value ?? bin.label, bin: bin.label, points: bin.points, maxPoints: maxPointsOf(attr) };
  });
  let score = 0;
  let maxScore = 0;
  for (const a of attributes) {
    score += a.points;
    maxScore += a.maxPoints;
  }
  return { scorecardVersion: card.version, score, maxScore, attributes };
}

/** The adverse-action reason code of a scored attribute's bin (by the scorecard version that scored it). */
export function reasonCodeFor(version: string, scored: ScoredAttribute): string {
  const attr = getScorecard(version).attributes.find((a) => a.attribute === scored.attribute);
  if (attr === undefined) throw new Error(`scorecard ${version} has no attribute ${scored.attribute}`);
  if (attr.missing !== undefined && scored.bin === attr.missing.label) return attr.missing.reasonCode ?? attr.reasonCode;
  const bin = attr.bins.find((candidate) => binLabel(candidate) === scored.bin);
  return bin?.reasonCode ?? attr.reasonCode;
}
