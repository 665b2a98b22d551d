/**
 * The loan state and ledger vector in jsonb: bigints as decimal strings, converted field
 * by field (end of day converts a million states per run).
 */
import type { AccountCode } from '../ledger/model.js';
import type { InstallmentState, LoanState } from './loan-state.js';
import type { LoanStatus } from './model.js';



type Plain = Record<string, unknown>;
const str = (v: bigint) => v.toString();
const big = (v: unknown) => BigInt(v as string);

function installmentToPlain(i: InstallmentState): Plain {
  return {
    number: i.number, periodStart: i.periodStart, dueDate: i.dueDate, days: i.days, basis: str(i.basis),
    principal: str(i.principal), interest: str(i.interest), fee: str(i.fee), penalty: str(i.penalty),
    paidPrincipal: str(i.paidPrincipal), paidInterest: str(i.paidInterest), paidFee: str(i.paidFee), paidPenalty: str(i.paidPenalty),
    lateFeeCharged: i.lateFeeCharged,
  };
}

function installmentFromPlain(p: Plain): InstallmentState {
  return {
    number: p.number as number, periodStart: p.periodStart as string, dueDate: p.dueDate as string, days: p.days as number, basis: big(p.basis),
    principal: big(p.principal), interest: big(p.interest), fee: big(p.fee), penalty: big(p.penalty),
    paidPrincipal: big(p.paidPrincipal), paidInterest: big(p.paidInterest), paidFee: big(p.paidFee), paidPenalty: big(p.paidPenalty),
    lateFeeCharged: p.lateFeeCharged === true,
  };
}

/** The state as a plain JSON value (bigints as decimal strings). */
export function stateToJson(state: LoanState): Plain {
  return {
    status: state.status,
    disbursed: str(state.disbursed),
    firstDisbursementDate: state.firstDisbursementDate,
    installments: state.installments.map(installmentToPlain),
    asOf: state.asOf,
    accrualEnd: state.accrualEnd,
    received: str(state.received),
    paid: { principal: str(state.paid.principal), interest: str(state.paid.interest), fee: str(state.paid.fee), penalty: str(state.paid.penalty) },
    feesCharged: str(state.feesCharged),
    chargedOff: { principal: str(state.chargedOff.principal), interest: str(state.chargedOff.interest), fees: str(state.chargedOff.fees) },
    recovered: str(state.recovered),
    credit: str(state.credit),
  };
}

/** The state as JSON text, for a jsonb column. */
export function stateJsonText(state: LoanState): string {
  return JSON.stringify(stateToJson(state));
}

/** From jsonb as the driver returns it (parsed), or from JSON text. */
export function stateFromJson(json: unknown): LoanState {
  const p = (typeof json === 'string' ? JSON.parse(json) : json) as Plain;
  const paid = p.paid as Plain;
  const co = p.chargedOff as Plain;
  return {
    status: p.status as LoanStatus,
    disbursed: big(p.disbursed),
    firstDisbursementDate: (p.firstDisbursementDate ?? null) as string | null,
    installments: (p.installments as Plain[]).map(installmentFromPlain),
    asOf: (p.asOf ?? null) as string | null,
    accrualEnd: (p.accrualEnd ?? null) as string | null,
    received: big(p.received),
    paid: { principal: big(paid.principal), interest: big(paid.interest), fee: big(paid.fee), penalty: big(paid.penalty) },
    feesCharged: big(p.feesCharged),
    chargedOff: { principal: big(co.principal), interest: big(co.interest), fees: big(co.fees) },
    recovered: big(p.recovered),
    credit: big(p.credit),
  };
}

/** The ledger vector as stored with the loan (what has been posted). */
export function glToJson(gl: Readonly<Record<string, bigint>>): Record<string, string> {
  return Object.fromEntries(Object.entries(gl).map(([k, v]) => [k, v.toString()]));
}

export function glFromJson(json: unknown): Record<AccountCode, bigint> {
  const obj = (typeof json === 'string' ? JSON.parse(json) : json) as Record<string, string> | null;
  const out: Record<string, bigint> = {};
  for (const [k, v] of Object.entries(obj ?? {})) out[k] = BigInt(v);
  return out;
}
