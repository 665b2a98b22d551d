import { EngineError } from './errors.js';

/**
 * Named rounding modes. Every division that produces money in the engine goes
 * through {@link divRound} with one of these; there is no implicit rounding.
 *
 * - half_even: to nearest, ties to the even neighbour (banker's rounding)
 * - half_up:   to nearest, ties away from zero
 * - half_down: to nearest, ties toward zero
 * - down:      toward zero (truncate)
 * - up:        away from zero
 * - floor:     toward negative infinity
 * - ceiling:   toward positive infinity
 */
export const ROUNDING_MODES = ['half_even', 'half_up', 'half_down', 'down', 'up', 'floor', 'ceiling'] as const;
export type RoundingMode = (typeof ROUNDING_MODES)[number];

export function isRoundingMode(value: unknown): value is RoundingMode {
  return typeof value === 'string' && (ROUNDING_MODES as readonly string[]).includes(value);
}

/**
 * The integer nearest to `numerator / denominator` under `mode`, computed
 * exactly in bigint arithmetic. The denominator may be negative; it must not be
 * zero.
 */
export function divRound(numerator: bigint, denominator: bigint, mode: RoundingMode): bigint {
  if (denominator === 0n) throw new EngineError('invalid_argument', 'division by zero');
  if (denominator < 0n) {
    numerator = -numerator;
    denominator = -denominator;
  }
  const quotient = numerator / denominator; // truncates toward zero
  const remainder = numerator - quotient * denominator; // same sign as numerator
  if (remainder === 0n) return quotient;
  const negative = numerator < 0n;
  const awayFromZero = negative ? quotient - 1n : quotient + 1n;
  switch (mode) {
    case 'down':
      return quotient;
    case 'up':
      return awayFromZero;
    case 'floor':
      return negative ? awayFromZero : quotient;
    case 'ceiling':
      return negative ? quotient : awayFromZero;
    case 'half_up':
    case 'half_down':
    case 'half_even': {
      const twice = 2n * (negative ? -remainder : remainder);
      if (twice > denominator) return awayFromZero;
      if (twice < denominator) return quotient;
      if (mode === 'half_up') return awayFromZero;
      if (mode === 'half_down') return quotient;
      return quotient % 2n === 0n ? quotient : awayFromZero;
    }
  }
}

/**
 * Rounds an integer amount to a multiple of `increment` (for example a payment
 * rounded up to whole currency units: increment 100 in a 2-decimal currency).
 */
export function roundToIncrement(value: bigint, increment: bigint, mode: RoundingMode): bigint {
  if (increment <= 0n) throw new EngineError('invalid_argument', 'rounding increment must be positive', 'increment');
  if (increment === 1n) return value;
  return divRound(value, increment, mode) * increment;
}
