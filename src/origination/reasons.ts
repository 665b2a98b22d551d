/**
 * The adverse-action reason catalogue and the choice of reasons for a decision.
 *
 * A declined or counter-offered applicant is owed the specific principal reasons
 * (Regulation B § 1002.9(a)(2), (b)(2); FCRA § 615 key factors). The texts follow the
 * sample reasons of Regulation B's model forms (Appendix C, form C-1). Codes are
 * stable: they are stored with every decision and shown to underwriters; the text may
 * be reworded without changing what a recorded decision meant. There is no generic
 * "internal policy" reason: every policy rule that declines or refers must name a code
 * from this catalogue (policy.ts refuses a policy that does not).
 *
 * Order of reasons: the knockout rules that fired (in the policy's evaluation order),
 * then the limits a counter-offer was cut to, then the scorecard attributes that cost
 * the most points (ties in the scorecard's fixed attribute order); duplicates of one
 * code keep their first place; at most four (the model form's guidance: more than four
 * is unlikely to help the applicant).
 */
import type { AdverseReason, PolicyRuleHit, ScoreResult } from './model.js';
import { reasonCodeFor } from './scorecard.js';

export const REASON_CATALOGUE = {
  repayment_history: 'Delinquent past or present credit obligations with others',
  debt_to_income_too_high: 'Excessive obligations in relation to income',
  income_insufficient: 'Income insufficient for amount of credit requested',
  employment_too_short: 'Length of employment',
  insufficient_collateral: 'Value or type of collateral not sufficient',
  employer_not_verified: 'Unable to verify employment',
  verification_unavailable: 'Unable to verify employment at this time',
  credit_score_too_low: 'Credit score below the minimum for this credit',
  limited_credit_experience: 'Limited credit experience',
  too_many_obligations: 'Number of existing credit obligations',
  application_incomplete: 'Credit application incomplete',
  amount_exceeds_limit: 'Amount of credit requested exceeds the maximum available for your credit standing',
} as const satisfies Record<string, string>;

export type ReasonCode = keyof typeof REASON_CATALOGUE;

export const MAX_REASONS = 4;

export function isReasonCode(code: unknown): code is ReasonCode {
  return typeof code === 'string' && Object.hasOwn(REASON_CATALOGUE, code);
}

/** The text of a catalogued code. Throws on an unknown code (a policy or scorecard bug). */
export function reasonText(code: string): string {
  if (!isReasonCode(code)) throw new Error(`reason code "${code}" is not in the adverse-action catalogue`);
  return REASON_CATALOGUE[code];
}

function fromHit(hit: PolicyRuleHit): AdverseReason | null {
  if (hit.reasonCode === null) return null;
  return { code: hit.reasonCode, text: reasonText(hit.reasonCode), source: { kind: 'rule', nodeId: hit.nodeId, ruleId: hit.ruleId } };
}

/** Scorecard attributes that cost points, most points lost first, ties in the scorecard's attribute order. */
export function scorecardReasons(score: ScoreResult): AdverseReason[] {
  return score.attributes
    .map((a, index) => ({ a, index, lost: a.maxPoints - a.points }))
    .filter((x) => x.lost > 0)
    .sort((x, y) => y.lost - x.lost || x.index - y.index)
    .map(({ a, lost }) => {
      const code = reasonCodeFor(score.scorecardVersion, a);
      return { code, text: reasonText(code), source: { kind: 'scorecard', attribute: a.attribute, pointsLost: lost } };
    });
}

function firstFour(candidates: readonly AdverseReason[]): AdverseReason[] {
  const seen = new Set<string>();
  const chosen: AdverseReason[] = [];
  for (const reason of candidates) {
    if (chosen.length === MAX_REASONS) break;
    if (seen.has(reason.code)) continue;
    seen.add(reason.code);
    chosen.push(reason);
  }
  return chosen;
}

/**
 * The reasons for a decline or a counter-offer: knockout (decline) rules that fired,
 * then `limitReasons` (the limits a counter-offer was cut to), then scorecard
 * attributes by points lost; 1–4 of them. When nothing else applies (a perfect score
 * and no knockout) the scorecard's first attribute is given rather than none.
 */
export function selectReasons(score: ScoreResult, hits: readonly PolicyRuleHit[], limitReasons: readonly AdverseReason[] = []): AdverseReason[] {
  const knockouts = hits.filter((h) => h.outcome === 'decline').map(fromHit).filter((r): r is AdverseReason => r !== null);
  const chosen = firstFour([...knockouts, ...limitReasons, ...scorecardReasons(score)]);
  if (chosen.length > 0) return chosen;
  const fallback = score.attributes[0];
  if (fallback === undefined) throw new Error('a decline needs a reason and the scorecard has no attributes');
  const code = reasonCodeFor(score.scorecardVersion, fallback);
  return [{ code, text: reasonText(code), source: { kind: 'scorecard', attribute: fallback.attribute, pointsLost: fallback.maxPoints - fallback.points } }];
}

/** Why an application was referred: the referral rules that fired, in evaluation order, at most four. */
export function referralReasons(hits: readonly PolicyRuleHit[]): AdverseReason[] {
  return firstFour(hits.filter((h) => h.outcome === 'refer').map(fromHit).filter((r): r is AdverseReason => r !== null));
}

/** A reason with a rule as its source. */
export function ruleReason(code: ReasonCode, nodeId: string, ruleId: string): AdverseReason {
  return { code, text: REASON_CATALOGUE[code], source: { kind: 'rule', nodeId, ruleId } };
}
