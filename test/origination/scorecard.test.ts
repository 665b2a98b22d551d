/**
 * Scorecard, pricing and reason selection: points per bin exactly at every boundary,
 * the score and its maximum, reasons ranked by points lost (a worked example and the
 * tie order), knockouts first, one to four reasons always; grades and terms at their
 * edges; an offer's installment and APR from the engine.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { aprWithinTolerance, buildSchedule, formatScaled, parseDecimal } from '../../src/engine/index.js';
import type { PolicyRuleHit, ScoreResult } from '../../src/origination/model.js';
import { getPricing, minimumAmount, offerFor, priceApplication } from '../../src/origination/pricing.js';
import { MAX_REASONS, REASON_CATALOGUE, referralReasons, selectReasons } from '../../src/origination/reasons.js';
import { type ScoreFacts, SCORE_ATTRIBUTES, scoreApplication } from '../../src/origination/scorecard.js';

const V = 'sc-2026.1';
const base: ScoreFacts = { repaymentScore: '0.92', existingLoans: 2, employmentYears: '7', debtToIncome: '0.05', loanToValue: '0.3' };

function pointsOf(facts: Partial<ScoreFacts>, attribute: string): { points: number; bin: string; maxPoints: number } {
  const scored = scoreApplication(V, { ...base, ...facts }).attributes.find((a) => a.attribute === attribute);
  if (scored === undefined) throw new Error(`no ${attribute}`);
  return scored;
}

describe('scorecard sc-2026.1: points per bin at the boundaries', () => {
  it.each([
    ['0', 0],
    ['0.4999', 0],
    ['0.5', 60],
    ['0.50', 60],
    ['0.6999', 60],
    ['0.7', 120],
    ['0.8999', 180],
    ['0.9', 250],
    ['1', 250],
    ['1.00', 250],
  ])('repayment_score %s → %i', (value, points) => {
    expect(pointsOf({ repaymentScore: value }, 'repayment_score').points).toBe(points);
  });

  it.each([
    [0, 90],
    [1, 150],
    [2, 150],
    [3, 80],
    [4, 80],
    [5, 20],
    [40, 20],
  ])('existing_loans %i → %i', (value, points) => {
    expect(pointsOf({ existingLoans: value }, 'existing_loans').points).toBe(points);
  });

  it.each([
    ['0', 20],
    ['0.99', 20],
    ['1', 80],
    ['2.99', 80],
    ['3', 130],
    ['5', 170],
    ['9.999', 170],
    ['10', 200],
    ['40', 200],
  ])('employment_years %s → %i', (value, points) => {
    expect(pointsOf({ employmentYears: value }, 'employment_years').points).toBe(points);
  });

  it.each([
    ['0', 200],
    ['0.0999', 200],
    ['0.1', 160],
    ['0.2', 110],
    ['0.3499', 110],
    ['0.35', 50],
    ['0.5', 0],
    ['3', 0],
  ])('debt_to_income %s → %i', (value, points) => {
    expect(pointsOf({ debtToIncome: value }, 'debt_to_income').points).toBe(points);
  });

  it.each([
    ['0.5', 200],
    ['0.5001', 150],
    ['0.8', 150],
    ['0.8001', 80],
    ['1', 80],
    ['1.0001', 0],
  ])('loan_to_value %s → %i', (value, points) => {
    expect(pointsOf({ loanToValue: value }, 'loan_to_value').points).toBe(points);
  });

  it('unknown debts and an unsecured loan score in bins of their own', () => {
    expect(pointsOf({ debtToIncome: null }, 'debt_to_income')).toEqual({ attribute: 'debt_to_income', value: 'unknown', bin: 'unknown', points: 90, maxPoints: 200 });
    expect(pointsOf({ loanToValue: null }, 'loan_to_value')).toMatchObject({ value: 'unsecured', bin: 'unsecured', points: 60 });
  });

  it('labels bins by their interval and sums the score against a maximum of 1,000', () => {
    const result = scoreApplication(V, { ...base, repaymentScore: '0.92', loanToValue: '0.7143', debtToIncome: null });
    expect(result.attributes.map((a) => a.attribute)).toEqual([...SCORE_ATTRIBUTES]);
    expect(result.attributes.map((a) => a.bin)).toEqual(['[0.9, ∞)', '[1, 2]', '[5, 10)', 'unknown', '(0.5, 0.8]']);
    expect(result.score).toBe(250 + 150 + 170 + 90 + 150);
    expect(result.maxScore).toBe(1000);
    expect(result.scorecardVersion).toBe(V);
  });

  it('refuses an unknown version rather than scoring with another', () => {
    expect(() => scoreApplication('sc-1999.1', base)).toThrow(/unknown scorecard version/);
  });
});

const hit = (ruleId: string, outcome: PolicyRuleHit['outcome'], reasonCode: string | null, nodeId = 'knockouts'): PolicyRuleHit => ({ nodeId, nodeName: 'Knockout rules', ruleId, outcome, reasonCode });

describe('reason selection', () => {
  it('ranks scorecard attributes by points lost (worked example)', () => {
    // repayment 0.75 → 120 (lost 130); no loans → 90 (lost 60); 2 years → 80 (lost 120);
    // DTI 0.40 → 50 (lost 150); unsecured → 60 (lost 140).
    const score = scoreApplication(V, { repaymentScore: '0.75', existingLoans: 0, employmentYears: '2', debtToIncome: '0.40', loanToValue: null });
    const reasons = selectReasons(score, []);
    expect(reasons.map((r) => [r.code, r.source.kind === 'scorecard' ? r.source.pointsLost : null])).toEqual([
      ['debt_to_income_too_high', 150],
      ['insufficient_collateral', 140],
      ['repayment_history', 130],
      ['employment_too_short', 120],
    ]);
    expect(reasons[0]?.text).toBe('Excessive obligations in relation to income');
  });

  it('breaks ties by the scorecard attribute order', () => {
    // repayment 0.85 and employment 4 years both lose 70 points; repayment comes first in the card.
    const score = scoreApplication(V, { ...base, repaymentScore: '0.85', employmentYears: '4' });
    expect(selectReasons(score, []).map((r) => r.code)).toEqual(['repayment_history', 'employment_too_short']);
  });

  it('puts the knockout rule that fired first, and keeps one reason per code', () => {
    const score = scoreApplication(V, { ...base, repaymentScore: '0.3', employmentYears: '2' });
    const reasons = selectReasons(score, [hit('limits-a', 'approve', null, 'limits'), hit('rf-employment-short', 'refer', 'employment_too_short'), hit('ko-repayment', 'decline', 'repayment_history')]);
    expect(reasons[0]).toEqual({ code: 'repayment_history', text: REASON_CATALOGUE.repayment_history, source: { kind: 'rule', nodeId: 'knockouts', ruleId: 'ko-repayment' } });
    expect(reasons.filter((r) => r.code === 'repayment_history')).toHaveLength(1);
    // the referral rule is not a reason for a decline; employment appears only as the scorecard attribute
    expect(reasons[1]).toMatchObject({ code: 'employment_too_short', source: { kind: 'scorecard', attribute: 'employment_years' } });
  });

  it('gives one reason even for a perfect score, and referral reasons only from referral rules', () => {
    const perfect = scoreApplication(V, { repaymentScore: '1', existingLoans: 1, employmentYears: '12', debtToIncome: '0', loanToValue: '0.2' });
    expect(perfect.score).toBe(perfect.maxScore);
    expect(selectReasons(perfect, [])).toHaveLength(1);
    expect(referralReasons([hit('ko-repayment', 'decline', 'repayment_history'), hit('rf-employer-not-found', 'refer', 'employer_not_verified')]).map((r) => r.code)).toEqual(['employer_not_verified']);
  });

  it('always gives 1–4 catalogued, distinct reasons (property)', () => {
    const decimal = (max: number) => fc.integer({ min: 0, max }).map((n) => formatScaled(BigInt(n), 4));
    const facts = fc.record({
      repaymentScore: decimal(10_000),
      existingLoans: fc.integer({ min: 0, max: 12 }),
      employmentYears: decimal(400_000),
      debtToIncome: fc.option(decimal(20_000), { nil: null }),
      loanToValue: fc.option(decimal(20_000), { nil: null }),
    });
    const codes = Object.keys(REASON_CATALOGUE);
    const hits = fc.array(
      fc.record({ ruleId: fc.string({ minLength: 1, maxLength: 6 }), outcome: fc.constantFrom<PolicyRuleHit['outcome']>('approve', 'decline', 'refer'), reasonCode: fc.constantFrom(...codes) }),
      { maxLength: 8 },
    );
    fc.assert(
      fc.property(facts, hits, (f, h) => {
        const score: ScoreResult = scoreApplication(V, f);
        const reasons = selectReasons(score, h.map((x) => hit(x.ruleId, x.outcome, x.outcome === 'approve' ? null : x.reasonCode)));
        expect(reasons.length).toBeGreaterThanOrEqual(1);
        expect(reasons.length).toBeLessThanOrEqual(MAX_REASONS);
        expect(new Set(reasons.map((r) => r.code)).size).toBe(reasons.length);
        for (const r of reasons) expect(r.text).toBe(REASON_CATALOGUE[r.code as keyof typeof REASON_CATALOGUE]);
        const firstDecline = h.find((x) => x.outcome === 'decline');
        if (firstDecline !== undefined) expect(reasons[0]?.code).toBe(firstDecline.reasonCode);
      }),
    );
  });
});

describe('pricing pr-2026.1', () => {
  it.each([
    [1000, 'A', '0.0699'],
    [800, 'A', '0.0699'],
    [799, 'B', '0.0899'],
    [700, 'B', '0.0899'],
    [699, 'C', '0.1199'],
    [600, 'C', '0.1199'],
    [599, 'D', '0.1599'],
    [500, 'D', '0.1599'],
    [499, 'E', '0.1999'],
    [0, 'E', '0.1999'],
  ])('score %i → grade %s at %s', (score, grade, rate) => {
    expect(priceApplication('pr-2026.1', score, null)).toMatchObject({ grade, annualRate: rate, termMonths: 36 });
  });

  it('takes the requested term, capped at the grade maximum, and refuses terms outside 12..84', () => {
    expect(priceApplication('pr-2026.1', 850, 84)).toMatchObject({ termMonths: 84, maxTermMonths: 84 });
    expect(priceApplication('pr-2026.1', 550, 60)).toMatchObject({ grade: 'D', termMonths: 48, maxTermMonths: 48 });
    expect(priceApplication('pr-2026.1', 550, 12)).toMatchObject({ termMonths: 12 });
    expect(() => priceApplication('pr-2026.1', 850, 11)).toThrow(RangeError);
    expect(() => priceApplication('pr-2026.1', 850, 85)).toThrow(RangeError);
    expect(minimumAmount(getPricing('pr-2026.1'), 'USD')).toBe(100_000n);
    expect(minimumAmount(getPricing('pr-2026.1'), 'JPY')).toBe(1000n);
  });

  it("quotes the engine schedule's installment and an Appendix J APR equal to the rate within the Reg Z tolerance", () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: 100_000n, max: 100_000_000n }),
        fc.integer({ min: 12, max: 84 }),
        fc.constantFrom('0.0699', '0.0899', '0.1199', '0.1599', '0.1999'),
        (amount, term, rate) => {
          const offer = offerFor(amount, term, rate, 'USD', '2026-01-15');
          const schedule = buildSchedule({ principal: amount, currency: 'USD', annualRate: parseDecimal(rate), term, frequency: 'monthly', disbursementDate: '2026-01-15' });
          expect(offer.monthlyPayment).toBe(schedule.payment);
          expect(offer).toMatchObject({ amount, termMonths: term, annualRate: rate, currency: 'USD' });
          expect(aprWithinTolerance(offer.apr, rate, 'regular')).toBe(true);
        },
      ),
      { numRuns: 50 },
    );
    // a concrete figure: 10,000.00 at 6.99 % over 36 months
    expect(offerFor(1_000_000n, 36, '0.0699', 'USD', '2026-01-15')).toEqual({ currency: 'USD', amount: 1_000_000n, termMonths: 36, annualRate: '0.0699', apr: '0.0699', monthlyPayment: 30_873n });
  });
});
