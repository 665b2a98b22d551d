/**
 * The JSON form of decision inputs and results as recorded (jsonb) and hashed: bigint
 * amounts as decimal strings of minor units, everything else as is. The hash is SHA-256
 * of the canonical JSON (sorted keys), so a replay compares exactly what was recorded.
 */
import { canonicalJson } from '../platform/canonical-json.js';
import { sha256Hex } from '../platform/crypto.js';
import type { DecisionInput, DecisionResult, Offer } from './model.js';

/** What an application's decision ran on: the input plus the date its schedule and APR used. */
export interface RecordedInput {
  readonly input: DecisionInput;
  readonly decisionDate: string;
}

export function recordedInputJson(r: RecordedInput): string {
  return canonicalJson({ ...r.input, decisionDate: r.decisionDate });
}

export function hashJson(json: string): string {
  return sha256Hex(json);
}

/** A recorded scalar as text; anything else means the record is not what this module wrote. */
function text(v: unknown): string {
  if (typeof v === 'string' || typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean') return String(v);
  throw new Error(`recorded decision JSON holds ${typeof v} where a scalar belongs`);
}
const big = (v: unknown): bigint => BigInt(text(v));
const bigOrNull = (v: unknown): bigint | null => (v === null || v === undefined ? null : big(v));
const textOrNull = (v: unknown): string | null => (v === null || v === undefined ? null : text(v));

export function recordedInputFromJson(j: Record<string, unknown>): RecordedInput {
  return {
    decisionDate: text(j.decisionDate),
    input: {
      currency: text(j.currency),
      loanAmount: big(j.loanAmount),
      monthlyIncome: big(j.monthlyIncome),
      monthlyDebtPayments: bigOrNull(j.monthlyDebtPayments),
      employmentYears: text(j.employmentYears),
      existingLoans: Number(j.existingLoans),
      repaymentScore: text(j.repaymentScore),
      collateralValue: big(j.collateralValue),
      company: textOrNull(j.company),
      requestedTermMonths: j.requestedTermMonths === null || j.requestedTermMonths === undefined ? null : Number(j.requestedTermMonths),
      purpose: textOrNull(j.purpose),
    },
  };
}

export function resultJson(result: DecisionResult): string {
  return canonicalJson(result);
}

/** The offer of a recorded result, with its amounts back as bigint. */
export function offerFromJson(j: unknown): Offer | null {
  if (j === null || j === undefined || typeof j !== 'object') return null;
  const o = j as Record<string, unknown>;
  return {
    currency: text(o.currency),
    amount: big(o.amount),
    termMonths: Number(o.termMonths),
    annualRate: text(o.annualRate),
    apr: text(o.apr),
    monthlyPayment: big(o.monthlyPayment),
  };
}

/** JSON pointers where two JSON values differ (at most `max`), for a replay that did not reproduce. */
export function jsonDifferences(a: unknown, b: unknown, max = 20, path = ''): string[] {
  if (canonicalJson(a) === canonicalJson(b)) return [];
  const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null;
  if (!isObj(a) || !isObj(b) || Array.isArray(a) !== Array.isArray(b)) return [path === '' ? '/' : path];
  const out: string[] = [];
  for (const key of [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()) {
    for (const d of jsonDifferences(a[key], b[key], max - out.length, `${path}/${key.replace(/~/g, '~0').replace(/\//g, '~1')}`)) {
      if (out.length >= max) return out;
      out.push(d);
    }
  }
  return out;
}
