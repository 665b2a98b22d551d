import { EngineError } from './errors.js';
import { divRound, type RoundingMode } from './rounding.js';

/**
 * An exact rational number. Rates, year fractions and every intermediate value
 * of money arithmetic are ratios, so nothing passes through a binary float.
 * The denominator is always positive; ratios are not kept in lowest terms
 * unless {@link reduce} is called (reducing costs a gcd per operation).
 */
export interface Ratio {
  readonly num: bigint;
  readonly den: bigint;
}

export const ZERO: Ratio = { num: 0n, den: 1n };
export const ONE: Ratio = { num: 1n, den: 1n };

export function ratio(num: bigint, den: bigint = 1n): Ratio {
  if (den === 0n) throw new EngineError('invalid_argument', 'ratio with zero denominator');
  return den < 0n ? { num: -num, den: -den } : { num, den };
}

export function gcd(a: bigint, b: bigint): bigint {
  if (a < 0n) a = -a;
  if (b < 0n) b = -b;
  while (b !== 0n) [a, b] = [b, a % b];
  return a;
}

export function reduce(r: Ratio): Ratio {
  const g = gcd(r.num, r.den);
  return g <= 1n ? r : { num: r.num / g, den: r.den / g };
}

export function add(a: Ratio, b: Ratio): Ratio {
  if (a.den === b.den) return { num: a.num + b.num, den: a.den };
  return reduce({ num: a.num * b.den + b.num * a.den, den: a.den * b.den });
}

export function sub(a: Ratio, b: Ratio): Ratio {
  return add(a, { num: -b.num, den: b.den });
}

export function mul(a: Ratio, b: Ratio): Ratio {
  return reduce({ num: a.num * b.num, den: a.den * b.den });
}

export function div(a: Ratio, b: Ratio): Ratio {
  if (b.num === 0n) throw new EngineError('invalid_argument', 'division by zero');
  return reduce(ratio(a.num * b.den, a.den * b.num));
}

export function mulInt(a: Ratio, n: bigint): Ratio {
  return reduce({ num: a.num * n, den: a.den });
}

export function compare(a: Ratio, b: Ratio): -1 | 0 | 1 {
  const left = a.num * b.den;
  const right = b.num * a.den;
  return left < right ? -1 : left > right ? 1 : 0;
}

export function isZero(a: Ratio): boolean {
  return a.num === 0n;
}

/** The integer nearest to `r` under the named rounding mode. */
export function roundRatio(r: Ratio, mode: RoundingMode): bigint {
  return divRound(r.num, r.den, mode);
}

const DECIMAL = /^([+-])?(\d+)(?:\.(\d+))?$/;

/**
 * Parses a plain decimal string ("0.0625", "-12", "1.5") into an exact ratio
 * with a power-of-ten denominator. Exponents, spaces, "NaN" and "Infinity" are
 * rejected. `maxDigits` bounds the total digit count so a 10,000-digit input
 * cannot make the arithmetic that follows expensive.
 */
export function parseDecimal(text: string, field = 'value', maxDigits = 40): Ratio {
  const match = DECIMAL.exec(text);
  if (!match) throw new EngineError('invalid_argument', `${field} must be a decimal number such as "0.065"`, field);
  const [, sign, whole = '', fraction = ''] = match;
  if (whole.length + fraction.length > maxDigits) {
    throw new EngineError('invalid_argument', `${field} has more than ${maxDigits} digits`, field);
  }
  const magnitude = BigInt(whole + fraction);
  return { num: sign === '-' ? -magnitude : magnitude, den: 10n ** BigInt(fraction.length) };
}

/**
 * Formats a ratio as a decimal string with exactly `places` decimals, rounded
 * by `mode` (default half_even).
 */
export function toDecimalString(r: Ratio, places: number, mode: RoundingMode = 'half_even'): string {
  const scaled = divRound(r.num * 10n ** BigInt(places), r.den, mode);
  return formatScaled(scaled, places);
}

/** Formats an integer that carries `places` implied decimals ("12345", 2 → "123.45"). */
export function formatScaled(scaled: bigint, places: number): string {
  const negative = scaled < 0n;
  const digits = (negative ? -scaled : scaled).toString().padStart(places + 1, '0');
  const body = places === 0 ? digits : `${digits.slice(0, -places)}.${digits.slice(-places)}`;
  return negative ? `-${body}` : body;
}

/**
 * An approximation as a float, for analytics and solver starting points only.
 * Within about one unit in the last place for any ratio, including ones whose
 * parts exceed 2^53 or even the float range: the quotient is taken in bigint
 * arithmetic to 64 significant bits before it becomes a number.
 */
export function toNumber(r: Ratio): number {
  const { num, den } = r;
  if (num === 0n) return 0;
  if (num > -(2n ** 53n) && num < 2n ** 53n && den < 2n ** 53n) return Number(num) / Number(den);
  const negative = num < 0n;
  const magnitude = negative ? -num : num;
  // Scale so the integer quotient has 64–65 significant bits, then undo the scale.
  const shift = bitLength(den) - bitLength(magnitude) + 64;
  const quotient = shift >= 0 ? (magnitude << BigInt(shift)) / den : magnitude / (den << BigInt(-shift));
  const value = scaleByPowerOfTwo(Number(quotient), -shift);
  return negative ? -value : value;
}

function bitLength(value: bigint): number {
  return value.toString(2).length;
}

/** x · 2^exponent without overflowing the intermediate power of two. */
function scaleByPowerOfTwo(x: number, exponent: number): number {
  let result = x;
  let rest = exponent;
  while (rest > 1000) {
    result *= 2 ** 1000;
    rest -= 1000;
  }
  while (rest < -1000) {
    result *= 2 ** -1000;
    rest += 1000;
  }
  return result * 2 ** rest;
}
