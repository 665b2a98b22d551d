/**
 * Credit policy as data: rules in GoRules' JSON Decision Model (JDM), evaluated by
 * @gorules/zen-engine and editable in the open-source GoRules editor (standard node
 * types: inputNode, decisionTableNode, expressionNode, switchNode, outputNode, edges).
 *
 * Contract with a policy's author:
 *  - A decision table with an output field `outcome` is a rule table: each rule's
 *    outcome cell is the literal "approve", "decline" or "refer", and a declining or
 *    referring rule names a catalogued reason (reasons.ts) in its `reason_code` cell.
 *    Use hitPolicy "collect" so every rule that fires is recorded.
 *  - Outputs under `limits.` (limits.max_debt_to_income, limits.max_loan_to_value …)
 *    are the limits the offer is checked and counter-offered against.
 *  - Tables that feed later nodes pass their input through (`passThrough`) and collect
 *    rule rows under an `outputPath`, so every node's outputs reach the output node.
 *
 * The policy only compares: facts reach it as plain JSON numbers (amounts in whole
 * currency units, ratios at 4 places), and zen compares numbers as decimals, so a
 * decimal string turned into a JavaScript number and back (shortest round trip) is
 * compared as written. Money of record never leaves bigint: what the policy outputs is
 * outcomes, reason codes and limits (turned back into exact decimal strings here).
 *
 * Compiling validates the content first and lists everything wrong with a JSON-pointer
 * path each (zen itself accepts some malformed content silently, e.g. a rule cell that
 * does not parse simply never matches). Compiled decisions are cached by (id, version):
 * a policy version is immutable, so the same id and version with other content is refused.
 * Function nodes (JavaScript) and sub-decisions are not accepted: a policy is
 * declarative and self-contained, so a decision replays from its recorded version.
 */
import { type ZenDecision, ZenEngine, evaluateExpressionSync, evaluateUnaryExpressionSync } from '@gorules/zen-engine';
import { parseDecimal } from '../engine/index.js';
import { canonicalJson } from '../platform/canonical-json.js';
import type { PolicyResult, PolicyRuleHit } from './model.js';
import { isReasonCode } from './reasons.js';

export interface PolicyContentIssue {
  /** JSON pointer into the content, e.g. "/nodes/2/content/rules/0/_id"; "" is the whole document. */
  readonly path: string;
  readonly message: string;
}

/** A policy upload that is not a usable JDM graph. `path` is the first issue's; `issues` lists them all. */
export class PolicyContentError extends Error {
  override readonly name = 'PolicyContentError';
  readonly path: string;
  readonly issues: readonly PolicyContentIssue[];
  constructor(issues: readonly PolicyContentIssue[]) {
    const list = issues.map((i) => `${i.path === '' ? '(document)' : i.path}: ${i.message}`).join('; ');
    super(`policy content is not a valid decision graph (${issues.length} problem${issues.length === 1 ? '' : 's'}): ${list}`);
    this.issues = issues;
    this.path = issues[0]?.path ?? '';
  }
}

/** The facts a policy sees: plain JSON scalars (see the module comment on numbers). */
export type PolicyFacts = Readonly<Record<string, string | number | boolean | null>>;

export interface PolicyDefinition {
  readonly id: string;
  readonly version: number;
  /** The JDM document (parsed JSON). */
  readonly content: unknown;
}

export interface CompiledPolicy {
  readonly id: string;
  readonly version: number;
  /** The validated JDM document. */
  readonly content: JdmContent;
  /** Evaluates the policy with tracing; hits are in evaluation order. */
  evaluate(facts: PolicyFacts): Promise<PolicyResult>;
  /** The hit whose rule set `limits.<limit>` in this result (the last one, as later nodes override), or null. */
  limitSource(result: PolicyResult, limit: string): PolicyRuleHit | null;
}

// ---- the JDM shapes this module reads --------------------------------------------

export interface JdmNode {
  readonly id: string;
  readonly type: string;
  readonly name: string;
  readonly content?: unknown;
}

export interface JdmEdge {
  readonly id: string;
  readonly sourceId: string;
  readonly targetId: string;
}

export interface JdmContent {
  readonly nodes: readonly JdmNode[];
  readonly edges: readonly JdmEdge[];
}

interface TableColumn {
  readonly id: string;
  readonly field?: string;
}

interface TableContent {
  readonly hitPolicy: 'first' | 'collect';
  readonly inputs: readonly TableColumn[];
  readonly outputs: readonly TableColumn[];
  readonly rules: readonly Readonly<Record<string, string>>[];
}

const NODE_TYPES = ['inputNode', 'outputNode', 'decisionTableNode', 'expressionNode', 'switchNode'] as const;
const OUTCOMES = ['approve', 'decline', 'refer'] as const;
type RuleOutcome = (typeof OUTCOMES)[number];
const LIMIT_PREFIX = 'limits.';

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isNonEmptyString(value: unknown): value is string {
  return typeof value === 'string' && value.trim() !== '';
}

/** The value of a string-literal expression ("decline" or 'decline'), or null when the cell is not one. */
function stringLiteral(cell: string): string | null {
  const match = /^\s*(?:"([^"\\]*)"|'([^'\\]*)')\s*$/.exec(cell);
  return match === null ? null : (match[1] ?? match[2] ?? null);
}

/** A syntax error in a zen expression, or null. Evaluation errors on missing data (vmError) are not syntax errors. */
function syntaxError(expression: string, unary: boolean): string | null {
  try {
    if (unary) evaluateUnaryExpressionSync(expression, { $: null });
    else evaluateExpressionSync(expression, {});
    return null;
  } catch (error) {
    const detail = zenErrorDetail(error);
    return detail.type === 'parserError' || detail.type === 'lexerError' ? `expression does not parse: ${detail.text}` : null;
  }
}

/** zen errors are a JSON object on the first line of the message, followed by a native backtrace. */
function zenErrorDetail(error: unknown): { type: string | null; text: string } {
  const message = error instanceof Error ? error.message : String(error);
  const firstLine = message.split('\n')[0] ?? message;
  try {
    const parsed: unknown = JSON.parse(firstLine);
    if (isRecord(parsed)) {
      const type = typeof parsed.type === 'string' ? parsed.type : null;
      const rest = Object.entries(parsed)
        .filter(([k]) => k !== 'type')
        .map(([k, v]) => `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`)
        .join(', ');
      return { type, text: rest === '' ? (type ?? firstLine) : `${type ?? 'error'} (${rest})` };
    }
  } catch {
    // not JSON: use the line as it is
  }
  return { type: null, text: firstLine };
}

// ---- validation ------------------------------------------------------------------

function validateTable(content: unknown, at: string, issues: PolicyContentIssue[]): void {
  if (!isRecord(content)) {
    issues.push({ path: at, message: 'a decision table needs a content object with hitPolicy, inputs, outputs and rules' });
    return;
  }
  if (content.hitPolicy !== 'first' && content.hitPolicy !== 'collect') issues.push({ path: `${at}/hitPolicy`, message: 'hitPolicy must be "first" or "collect"' });
  const columns = (key: 'inputs' | 'outputs'): Map<string, string | undefined> => {
    const found = new Map<string, string | undefined>();
    const list = content[key];
    if (!Array.isArray(list)) {
      issues.push({ path: `${at}/${key}`, message: `${key} must be an array of columns` });
      return found;
    }
    list.forEach((column: unknown, i) => {
      if (!isRecord(column) || !isNonEmptyString(column.id)) {
        issues.push({ path: `${at}/${key}/${i}`, message: 'a column needs a non-empty string id' });
        return;
      }
      if (found.has(column.id)) issues.push({ path: `${at}/${key}/${i}/id`, message: `column id "${column.id}" is used twice` });
      const field = column.field;
      if (field !== undefined && field !== null && typeof field !== 'string') issues.push({ path: `${at}/${key}/${i}/field`, message: 'field must be a string' });
      if (key === 'outputs' && !isNonEmptyString(field)) issues.push({ path: `${at}/${key}/${i}/field`, message: 'an output column needs a field to write' });
      found.set(column.id, typeof field === 'string' && field.trim() !== '' ? field : undefined);
    });
    return found;
  };
  const inputs = columns('inputs');
  const outputs = columns('outputs');
  const columnOf = (field: string): string | undefined => [...outputs].find(([, f]) => f === field)?.[0];
  const outcomeColumn = columnOf('outcome');
  const reasonColumn = columnOf('reason_code');
  if (!Array.isArray(content.rules)) {
    issues.push({ path: `${at}/rules`, message: 'rules must be an array' });
    return;
  }
  const ruleIds = new Set<string>();
  content.rules.forEach((rule: unknown, r) => {
    const rulePath = `${at}/rules/${r}`;
    if (!isRecord(rule)) {
      issues.push({ path: rulePath, message: 'a rule must be an object of cells' });
      return;
    }
    if (!isNonEmptyString(rule._id)) issues.push({ path: `${rulePath}/_id`, message: 'a rule needs a non-empty string _id (the trace names rules by it)' });
    else if (ruleIds.has(rule._id)) issues.push({ path: `${rulePath}/_id`, message: `rule id "${rule._id}" is used twice in this table` });
    else ruleIds.add(rule._id);
    for (const [key, cell] of Object.entries(rule)) {
      if (key.startsWith('_')) continue;
      const cellPath = `${rulePath}/${key}`;
      if (!inputs.has(key) && !outputs.has(key)) {
        issues.push({ path: cellPath, message: `cell "${key}" names no input or output column` });
        continue;
      }
      if (typeof cell !== 'string') {
        issues.push({ path: cellPath, message: 'a cell must be a string expression' });
        continue;
      }
      if (cell.trim() === '') continue;
      const error = syntaxError(cell, inputs.has(key) && inputs.get(key) !== undefined);
      if (error !== null) issues.push({ path: cellPath, message: `${error} in "${cell}"` });
    }
    if (outcomeColumn === undefined) return;
    const outcomeCell = rule[outcomeColumn];
    const outcome = typeof outcomeCell === 'string' ? stringLiteral(outcomeCell) : null;
    if (outcome === null || !(OUTCOMES as readonly string[]).includes(outcome)) {
      issues.push({ path: `${rulePath}/${outcomeColumn}`, message: 'outcome must be the literal "approve", "decline" or "refer"' });
      return;
    }
    if (outcome === 'approve') return;
    const reasonCell = reasonColumn === undefined ? undefined : rule[reasonColumn];
    const reason = typeof reasonCell === 'string' ? stringLiteral(reasonCell) : null;
    if (reason === null || !isReasonCode(reason)) {
      issues.push({
        path: `${rulePath}/${reasonColumn ?? '_id'}`,
        message: `a rule that ${outcome === 'decline' ? 'declines' : 'refers'} needs a reason_code literal from the adverse-action catalogue${reason === null ? '' : ` ("${reason}" is not in it)`}`,
      });
    }
  });
}

function validateExpressions(list: unknown, key: 'expressions' | 'statements', valueKey: 'value' | 'condition', at: string, issues: PolicyContentIssue[]): void {
  if (!Array.isArray(list)) {
    issues.push({ path: `${at}/${key}`, message: `${key} must be an array` });
    return;
  }
  list.forEach((item: unknown, i) => {
    if (!isRecord(item)) {
      issues.push({ path: `${at}/${key}/${i}`, message: 'must be an object' });
      return;
    }
    const expression = item[valueKey];
    if (typeof expression !== 'string') {
      issues.push({ path: `${at}/${key}/${i}/${valueKey}`, message: `${valueKey} must be a string expression` });
      return;
    }
    if (expression.trim() === '') return;
    const error = syntaxError(expression, false);
    if (error !== null) issues.push({ path: `${at}/${key}/${i}/${valueKey}`, message: `${error} in "${expression}"` });
  });
}

/** Everything wrong with a JDM document, each with a JSON-pointer path; empty when it is usable. */
export function validatePolicyContent(content: unknown): PolicyContentIssue[] {
  const issues: PolicyContentIssue[] = [];
  if (!isRecord(content)) return [{ path: '', message: 'content must be a JSON object with "nodes" and "edges" arrays' }];
  const nodes = content.nodes;
  const edges = content.edges;
  if (!Array.isArray(nodes)) issues.push({ path: '/nodes', message: 'nodes must be an array' });
  if (!Array.isArray(edges)) issues.push({ path: '/edges', message: 'edges must be an array' });
  if (!Array.isArray(nodes) || !Array.isArray(edges)) return issues;

  const types = new Map<string, string>();
  nodes.forEach((node: unknown, i) => {
    const at = `/nodes/${i}`;
    if (!isRecord(node)) {
      issues.push({ path: at, message: 'a node must be an object' });
      return;
    }
    if (!isNonEmptyString(node.id)) issues.push({ path: `${at}/id`, message: 'a node needs a non-empty string id' });
    else if (types.has(node.id)) issues.push({ path: `${at}/id`, message: `node id "${node.id}" is used twice` });
    if (typeof node.name !== 'string') issues.push({ path: `${at}/name`, message: 'a node needs a name' });
    const type = node.type;
    if (typeof type !== 'string' || !(NODE_TYPES as readonly string[]).includes(type)) {
      issues.push({ path: `${at}/type`, message: `type must be one of ${NODE_TYPES.join(', ')}${typeof type === 'string' ? ` (got "${type}")` : ''}` });
    }
    if (isNonEmptyString(node.id) && !types.has(node.id)) types.set(node.id, typeof type === 'string' ? type : '');
    const body: unknown = node.content;
    if (type === 'decisionTableNode') validateTable(body, `${at}/content`, issues);
    else if (type === 'expressionNode') validateExpressions(isRecord(body) ? body.expressions : undefined, 'expressions', 'value', `${at}/content`, issues);
    else if (type === 'switchNode') validateExpressions(isRecord(body) ? body.statements : undefined, 'statements', 'condition', `${at}/content`, issues);
  });
  const count = (type: string): number => [...types.values()].filter((t) => t === type).length;
  if (count('inputNode') !== 1) issues.push({ path: '/nodes', message: `a policy needs exactly one inputNode (found ${count('inputNode')})` });
  if (count('outputNode') < 1) issues.push({ path: '/nodes', message: 'a policy needs an outputNode' });

  const next = new Map<string, string[]>();
  const incoming = new Map<string, number>();
  const edgeIds = new Set<string>();
  edges.forEach((edge: unknown, j) => {
    const at = `/edges/${j}`;
    if (!isRecord(edge)) {
      issues.push({ path: at, message: 'an edge must be an object' });
      return;
    }
    if (!isNonEmptyString(edge.id)) issues.push({ path: `${at}/id`, message: 'an edge needs a non-empty string id' });
    else if (edgeIds.has(edge.id)) issues.push({ path: `${at}/id`, message: `edge id "${edge.id}" is used twice` });
    else edgeIds.add(edge.id);
    let ends = true;
    for (const end of ['sourceId', 'targetId'] as const) {
      const id = edge[end];
      if (!isNonEmptyString(id) || !types.has(id)) {
        issues.push({ path: `${at}/${end}`, message: `${end} must name a node${typeof id === 'string' ? ` ("${id}" is not one)` : ''}` });
        ends = false;
      }
    }
    if (!ends) return;
    const source = edge.sourceId as string;
    const target = edge.targetId as string;
    if (types.get(target) === 'inputNode') issues.push({ path: `${at}/targetId`, message: 'nothing may lead into the inputNode' });
    if (types.get(source) === 'outputNode') issues.push({ path: `${at}/sourceId`, message: 'nothing may lead out of an outputNode' });
    next.set(source, [...(next.get(source) ?? []), target]);
    incoming.set(target, (incoming.get(target) ?? 0) + 1);
  });
  if (issues.length > 0) return issues;

  // Every node is reached from the input, and the graph has no cycle.
  const input = [...types].find(([, t]) => t === 'inputNode')?.[0];
  const reached = new Set<string>();
  const stack: string[] = input === undefined ? [] : [input];
  while (stack.length > 0) {
    const id = stack.pop() as string;
    if (reached.has(id)) continue;
    reached.add(id);
    stack.push(...(next.get(id) ?? []));
  }
  nodes.forEach((node, i) => {
    const id = (node as JdmNode).id;
    if (!reached.has(id)) issues.push({ path: `/nodes/${i}`, message: `node "${id}" is not connected to the inputNode` });
  });
  const state = new Map<string, 'open' | 'done'>();
  const cyclic = (id: string): boolean => {
    if (state.get(id) === 'done') return false;
    if (state.get(id) === 'open') return true;
    state.set(id, 'open');
    const found = (next.get(id) ?? []).some(cyclic);
    state.set(id, 'done');
    return found;
  };
  if ([...types.keys()].some(cyclic)) issues.push({ path: '/edges', message: 'the edges form a cycle; a decision graph must be acyclic' });
  return issues;
}

// ---- evaluation ------------------------------------------------------------------

interface RuleMeta {
  readonly outcome: RuleOutcome;
  readonly reasonCode: string | null;
}

interface TableMeta {
  readonly rules: ReadonlyMap<string, RuleMeta>;
  /** The limits (without the prefix) each rule writes. */
  readonly limitsByRule: ReadonlyMap<string, ReadonlySet<string>>;
}

function tableMeta(content: TableContent): TableMeta {
  const outcomeColumn = content.outputs.find((o) => o.field === 'outcome')?.id;
  const reasonColumn = content.outputs.find((o) => o.field === 'reason_code')?.id;
  const limitColumns = content.outputs.filter((o) => o.field?.startsWith(LIMIT_PREFIX) === true);
  const rules = new Map<string, RuleMeta>();
  const limitsByRule = new Map<string, ReadonlySet<string>>();
  for (const rule of content.rules) {
    const id = rule._id as string;
    const outcomeCell = outcomeColumn === undefined ? undefined : rule[outcomeColumn];
    const outcome = (outcomeCell === undefined ? null : stringLiteral(outcomeCell)) as RuleOutcome | null;
    const reasonCell = reasonColumn === undefined ? undefined : rule[reasonColumn];
    const reasonCode = outcome === null || outcome === 'approve' || reasonCell === undefined ? null : stringLiteral(reasonCell);
    rules.set(id, { outcome: outcome ?? 'approve', reasonCode });
    limitsByRule.set(id, new Set(limitColumns.filter((c) => (rule[c.id] ?? '').trim() !== '').map((c) => (c.field as string).slice(LIMIT_PREFIX.length))));
  }
  return { rules, limitsByRule };
}

/** The rule rows of a trace entry: an array for "collect", one object for "first", nothing when no rule matched. */
function tracedRuleIds(traceData: unknown): string[] {
  const rows = Array.isArray(traceData) ? (traceData as unknown[]) : traceData === null || traceData === undefined ? [] : [traceData];
  const ids: string[] = [];
  for (const row of rows) {
    if (isRecord(row) && isRecord(row.rule) && typeof row.rule._id === 'string') ids.push(row.rule._id);
  }
  return ids;
}

/** A limit value as an exact decimal string. A number is taken by its shortest round-trip form ("0.45"). */
function limitDecimal(name: string, value: unknown): string {
  const text = typeof value === 'number' && Number.isFinite(value) ? String(value) : typeof value === 'string' ? value : null;
  if (text === null || /e/i.test(text)) throw new Error(`policy limit ${name} must be a plain decimal number (got ${JSON.stringify(value)})`);
  parseDecimal(text, `limits.${name}`);
  return text;
}

function combine(hits: readonly PolicyRuleHit[]): PolicyResult['outcome'] {
  if (hits.some((h) => h.outcome === 'decline')) return 'decline';
  if (hits.some((h) => h.outcome === 'refer')) return 'refer';
  return 'approve';
}

/** Compiled versions kept; a process serves a handful, and one-off validations must not grow the cache without bound. */
const CACHE_LIMIT = 256;
let zen: ZenEngine | null = null;
const compiled = new Map<string, { fingerprint: string; policy: CompiledPolicy }>();

function build(id: string, version: number, content: JdmContent, decision: ZenDecision): CompiledPolicy {
  const nodes = new Map(content.nodes.map((n) => [n.id, n]));
  const tables = new Map<string, TableMeta>();
  for (const node of content.nodes) {
    if (node.type === 'decisionTableNode') tables.set(node.id, tableMeta(node.content as TableContent));
  }
  return {
    id,
    version,
    content,
    async evaluate(facts: PolicyFacts): Promise<PolicyResult> {
      for (const [key, value] of Object.entries(facts)) {
        if (typeof value === 'number' && !Number.isFinite(value)) throw new Error(`policy fact ${key} is not a finite number`);
      }
      const response = await decision.evaluate(facts, { trace: true });
      const entries = Object.values(response.trace ?? {}).sort((a, b) => a.order - b.order);
      const hits: PolicyRuleHit[] = [];
      for (const entry of entries) {
        const table = tables.get(entry.id);
        if (table === undefined) continue;
        for (const ruleId of tracedRuleIds(entry.traceData as unknown)) {
          const meta = table.rules.get(ruleId);
          if (meta === undefined) continue;
          hits.push({ nodeId: entry.id, nodeName: nodes.get(entry.id)?.name ?? entry.name, ruleId, outcome: meta.outcome, reasonCode: meta.reasonCode });
        }
      }
      const output = response.result as unknown;
      const rawLimits = isRecord(output) && isRecord(output.limits) ? output.limits : {};
      const limits: Record<string, string> = {};
      for (const name of Object.keys(rawLimits).sort()) limits[name] = limitDecimal(name, rawLimits[name]);
      return { policyId: id, policyVersion: version, outcome: combine(hits), hits, limits };
    },
    limitSource(result: PolicyResult, limit: string): PolicyRuleHit | null {
      let source: PolicyRuleHit | null = null;
      for (const hit of result.hits) {
        if (tables.get(hit.nodeId)?.limitsByRule.get(hit.ruleId)?.has(limit) === true) source = hit;
      }
      return source;
    },
  };
}

/**
 * Validates and compiles a policy version. Throws PolicyContentError listing every
 * problem; returns the cached decision when this (id, version) was compiled before.
 */
export async function compilePolicy(definition: PolicyDefinition): Promise<CompiledPolicy> {
  const { id, version, content } = definition;
  if (!isNonEmptyString(id)) throw new PolicyContentError([{ path: '', message: 'a policy needs a non-empty id' }]);
  if (!Number.isSafeInteger(version) || version < 0) throw new PolicyContentError([{ path: '', message: 'a policy version is a whole number, 0 or more' }]);
  const key = `${id}@${version}`;
  const fingerprint = canonicalJson(content);
  const cached = compiled.get(key);
  if (cached !== undefined) {
    if (cached.fingerprint !== fingerprint) throw new PolicyContentError([{ path: '', message: `policy ${key} is already compiled with other content; publish a new version instead` }]);
    return cached.policy;
  }
  const issues = validatePolicyContent(content);
  if (issues.length > 0) throw new PolicyContentError(issues);
  // The document is copied so a caller mutating its object later cannot change a compiled version.
  const frozen = JSON.parse(JSON.stringify(content)) as JdmContent;
  let decision: ZenDecision;
  try {
    zen ??= new ZenEngine();
    decision = zen.createDecision(frozen);
    decision.validate();
  } catch (error) {
    throw new PolicyContentError([{ path: '', message: `the rules engine refused the graph: ${zenErrorDetail(error).text}` }]);
  }
  const policy = build(id, version, frozen, decision);
  if (compiled.size >= CACHE_LIMIT) {
    const oldest = compiled.keys().next().value;
    if (oldest !== undefined) compiled.delete(oldest);
  }
  compiled.set(key, { fingerprint, policy });
  return policy;
}

/** Drops every cached compiled policy (tests; a process that re-reads policies). */
export function clearPolicyCache(): void {
  compiled.clear();
}

/**
 * A decimal string as the number a policy compares. Exact for what the pipeline
 * passes (at most 15 significant digits: the nearest double prints back as the same
 * decimal, and zen reads that decimal); used for comparison only, never for money.
 */
export function policyNumber(decimal: string): number {
  parseDecimal(decimal);
  return Number(decimal);
}
