import { minorUnits } from './currency.js';
import { EngineError } from './errors.js';
import { formatScaled } from './ratio.js';

/**
 * Money of record is a bigint count of the currency's minor units (cents for
 * USD, yen for JPY, fils for KWD). These helpers convert between that and the
 * decimal strings used on the wire; they never round. A value with more
 * decimals than the currency has is an error, not a silent rounding.
 */

const AMOUNT = /^(-)?(\d+)(?:\.(\d+))?$/;
/** 30 digits, whole and fraction together, is far beyond any loan; the cap keeps hostile input cheap. */
const MAX_DIGITS = 30;

export function parseMoney(text: string, currency: string, field = 'amount'): bigint {
  const places = minorUnits(currency);
  const match = AMOUNT.exec(text);
  if (!match) throw new EngineError('invalid_amount', `${field} must be a decimal amount such as "1250.00"`, field);
  const [, sign, whole = '', fraction = ''] = match;
  if (whole.length + fraction.length > MAX_DIGITS) {
    throw new EngineError('invalid_amount', `${field} has more than ${MAX_DIGITS} digits`, field);
  }
  const significant = fraction.replace(/0+$/, '');
  if (significant.length > places) {
    throw new EngineError('invalid_amount', `${field} has more than ${places} decimal places for ${currency}`, field);
  }
  const minor = BigInt(whole + significant.padEnd(places, '0'));
  return sign === '-' ? -minor : minor;
}

/** Formats minor units as a decimal string with the currency's places: 119910n, 'USD' → "1199.10". */
export function formatMoney(minor: bigint, currency: string): string {
  return formatScaled(minor, minorUnits(currency));
}

/** Sum of a list of amounts. */
export function sumMinor(values: Iterable<bigint>): bigint {
  let total = 0n;
  for (const value of values) total += value;
  return total;
}

/**
 * Splits `total` into parts proportional to `weights`, exactly: the parts sum
 * to `total`, each part is the floor of its exact share, and the remainder goes
 * one unit at a time to the largest fractional remainders (ties to the earlier
 * weight). Weights must be non-negative with a positive sum.
 */
export function allocateProportionally(total: bigint, weights: readonly bigint[]): bigint[] {
  const weightSum = sumMinor(weights);
  if (weights.some((w) => w < 0n) || weightSum <= 0n) {
    throw new EngineError('invalid_argument', 'weights must be non-negative with a positive sum', 'weights');
  }
  const negative = total < 0n;
  const magnitude = negative ? -total : total;
  const parts = weights.map((w) => (magnitude * w) / weightSum);
  let remainder = magnitude - sumMinor(parts);
  const order = weights
    .map((w, index) => ({ index, rest: (magnitude * w) % weightSum }))
    .sort((a, b) => (a.rest === b.rest ? a.index - b.index : a.rest > b.rest ? -1 : 1));
  for (const { index } of order) {
    if (remainder === 0n) break;
    parts[index] = (parts[index] ?? 0n) + 1n;
    remainder -= 1n;
  }
  return negative ? parts.map((p) => -p) : parts;
}
