/**
 * The policy as JDM: the shipped default compiles and is cached by (id, version); a
 * malformed upload is refused with every problem named by JSON pointer; the trace
 * names the node and rule that fired; outcomes combine decline > refer > approve;
 * comparisons are exact at the boundary; limits come back as decimal strings with
 * the rule that set them.
 */
import { describe, expect, it } from 'vitest';
import { loadDefaultPolicyContent } from '../../src/origination/pipeline.js';
import { type PolicyFacts, PolicyContentError, compilePolicy, validatePolicyContent } from '../../src/origination/policy.js';

/** Facts that fire no knockout or referral rule (grade A). */
const clean: PolicyFacts = {
  currency: 'USD',
  monthly_income: 10000,
  repayment_score: 0.92,
  existing_debt_to_income: 0.1,
  loan_to_value: 0.7143,
  score: 810,
  grade: 'A',
  company_verification: 'verified',
  employment_years: 7,
};

type Json = Record<string, unknown>;

function defaultContent(): { nodes: Json[]; edges: Json[] } {
  return loadDefaultPolicyContent() as { nodes: Json[]; edges: Json[] };
}

async function contentError(content: unknown): Promise<PolicyContentError> {
  try {
    await compilePolicy({ id: `bad-${Math.random()}`, version: 1, content });
  } catch (error) {
    if (error instanceof PolicyContentError) return error;
    throw error;
  }
  throw new Error('expected a PolicyContentError');
}

function tableRules(content: { nodes: Json[] }, nodeId: string): Json[] {
  const node = content.nodes.find((n) => n.id === nodeId) as { content: { rules: Json[] } };
  return node.content.rules;
}

describe('the default policy', () => {
  it('compiles, and compiling the same id and version again returns the cached decision', async () => {
    const a = await compilePolicy({ id: 'default', version: 1, content: loadDefaultPolicyContent() });
    const b = await compilePolicy({ id: 'default', version: 1, content: loadDefaultPolicyContent() });
    expect(b).toBe(a);
    expect(validatePolicyContent(loadDefaultPolicyContent())).toEqual([]);
  });

  it('refuses other content under an id and version already compiled (versions are immutable)', async () => {
    await compilePolicy({ id: 'default', version: 1, content: loadDefaultPolicyContent() });
    const changed = defaultContent();
    (tableRules(changed, 'knockouts')[1] as Json).repayment = '< 0.6';
    await expect(compilePolicy({ id: 'default', version: 1, content: changed })).rejects.toThrow(/already compiled with other content/);
  });

  it('approves clean facts; the trace still names the limits rule that applied, with the limits as decimal strings', async () => {
    const policy = await compilePolicy({ id: 'default', version: 1, content: loadDefaultPolicyContent() });
    const result = await policy.evaluate(clean);
    expect(result).toEqual({
      policyId: 'default',
      policyVersion: 1,
      outcome: 'approve',
      hits: [{ nodeId: 'limits', nodeName: 'Limits by grade', ruleId: 'limits-a', outcome: 'approve', reasonCode: null }],
      limits: { max_debt_to_income: '0.45', max_loan_amount: '250000', max_loan_to_value: '0.9', max_payment_to_income: '0.35', min_score: '450' },
    });
    expect(policy.limitSource(result, 'max_payment_to_income')).toEqual(result.hits[0]);
    expect(policy.limitSource(result, 'no_such_limit')).toBeNull();
  });

  it('names the rule that fired in the trace: a knockout declines with its reason code', async () => {
    const policy = await compilePolicy({ id: 'default', version: 1, content: loadDefaultPolicyContent() });
    const result = await policy.evaluate({ ...clean, repayment_score: 0.3 });
    expect(result.outcome).toBe('decline');
    expect(result.hits).toContainEqual({ nodeId: 'knockouts', nodeName: 'Knockout rules', ruleId: 'ko-repayment', outcome: 'decline', reasonCode: 'repayment_history' });
  });

  it('combines outcomes: any decline declines, else any refer refers', async () => {
    const policy = await compilePolicy({ id: 'default', version: 1, content: loadDefaultPolicyContent() });
    const referred = await policy.evaluate({ ...clean, company_verification: 'not_found', employment_years: 0.5 });
    expect(referred.outcome).toBe('refer');
    expect(referred.hits.filter((h) => h.outcome === 'refer').map((h) => h.ruleId)).toEqual(['rf-employer-not-found', 'rf-employment-short']);
    const both = await policy.evaluate({ ...clean, company_verification: 'unavailable', score: 449 });
    expect(both.outcome).toBe('decline');
    expect(both.hits.map((h) => h.ruleId)).toEqual(['limits-a', 'ko-score', 'rf-verification-unavailable']);
  });

  it('compares exactly at the boundary and ignores a rule whose fact is null', async () => {
    const policy = await compilePolicy({ id: 'default', version: 1, content: loadDefaultPolicyContent() });
    expect((await policy.evaluate({ ...clean, existing_debt_to_income: 0.6 })).outcome).toBe('approve');
    expect((await policy.evaluate({ ...clean, existing_debt_to_income: 0.6001 })).outcome).toBe('decline');
    expect((await policy.evaluate({ ...clean, loan_to_value: 1 })).outcome).toBe('approve');
    expect((await policy.evaluate({ ...clean, loan_to_value: null, existing_debt_to_income: null })).outcome).toBe('approve');
    expect((await policy.evaluate({ ...clean, score: 450 })).outcome).toBe('approve');
    expect((await policy.evaluate({ ...clean, score: 449 })).outcome).toBe('decline');
  });
});

describe('a malformed policy is refused with a clear error', () => {
  it('names the document when it is not an object, and the arrays when they are missing', async () => {
    const notObject = await contentError('nodes');
    expect(notObject.path).toBe('');
    expect(notObject.message).toMatch(/JSON object with "nodes" and "edges"/);
    const missing = await contentError({ nodes: {} });
    expect(missing.issues.map((i) => i.path)).toEqual(['/nodes', '/edges']);
  });

  it('lists every problem with a JSON pointer', async () => {
    const content = defaultContent();
    const rules = tableRules(content, 'knockouts');
    (rules[1] as Json).repayment = '< < 0.5 (';
    (rules[2] as Json).reason = '"internal_policy"';
    delete (rules[3] as Json)._id;
    content.edges.push({ id: 'edge-dangling', sourceId: 'limits', targetId: 'nowhere' });
    content.nodes.push({ id: 'js', type: 'functionNode', name: 'Script', content: { source: 'export const handler = () => ({})' } });
    const error = await contentError(content);
    expect(error).toBeInstanceOf(PolicyContentError);
    expect(error.issues).toEqual(
      expect.arrayContaining([
        { path: '/nodes/2/content/rules/1/repayment', message: expect.stringMatching(/does not parse/) as unknown },
        { path: '/nodes/2/content/rules/2/reason', message: expect.stringMatching(/reason_code literal from the adverse-action catalogue \("internal_policy" is not in it\)/) as unknown },
        { path: '/nodes/2/content/rules/3/_id', message: expect.stringMatching(/non-empty string _id/) as unknown },
        { path: '/nodes/5/type', message: expect.stringMatching(/type must be one of .* \(got "functionNode"\)/) as unknown },
        { path: '/edges/4/targetId', message: 'targetId must name a node ("nowhere" is not one)' },
      ]),
    );
    expect(error.path).toBe(error.issues[0]?.path);
    expect(error.message).toMatch(/^policy content is not a valid decision graph \(\d+ problems\): /);
    expect(error.message).toContain('/nodes/2/content/rules/1/repayment');
  });

  it('requires one input and an output, a connected acyclic graph, and a reason on declining rules', async () => {
    const noOutput = defaultContent();
    noOutput.nodes = noOutput.nodes.filter((n) => n.type !== 'outputNode');
    noOutput.edges = noOutput.edges.filter((e) => e.targetId !== 'output');
    expect((await contentError(noOutput)).issues).toContainEqual({ path: '/nodes', message: 'a policy needs an outputNode' });

    const cycle = defaultContent();
    cycle.edges.push({ id: 'edge-back', sourceId: 'referrals', targetId: 'limits' });
    expect((await contentError(cycle)).issues).toContainEqual({ path: '/edges', message: 'the edges form a cycle; a decision graph must be acyclic' });

    const island = defaultContent();
    island.edges = island.edges.filter((e) => e.id !== 'edge-limits-knockouts');
    expect((await contentError(island)).issues.map((i) => i.message)).toContain('node "knockouts" is not connected to the inputNode');

    const noReason = defaultContent();
    (tableRules(noReason, 'referrals')[0] as Json).reason = '';
    expect((await contentError(noReason)).issues[0]?.path).toBe('/nodes/3/content/rules/0/reason');

    const badOutcome = defaultContent();
    (tableRules(badOutcome, 'knockouts')[0] as Json).outcome = '"maybe"';
    expect((await contentError(badOutcome)).issues).toContainEqual({ path: '/nodes/2/content/rules/0/outcome', message: 'outcome must be the literal "approve", "decline" or "refer"' });
  });
});
