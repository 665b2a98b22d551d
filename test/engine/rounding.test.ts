/**
 * Named rounding (rounding.ts) and exact ratios (ratio.ts). The seven modes are
 * checked against the published java.math.RoundingMode table, against a
 * reference that rounds decimal strings by reading their digits, and by
 * properties of the exact quotient.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  ONE,
  ROUNDING_MODES,
  type Ratio,
  type RoundingMode,
  ZERO,
  add,
  compare,
  div,
  divRound,
  formatScaled,
  gcd,
  isRoundingMode,
  isZero,
  mul,
  mulInt,
  parseDecimal,
  ratio,
  reduce,
  roundRatio,
  roundToIncrement,
  sub,
  toDecimalString,
  toNumber,
} from '../../src/engine/index.js';
import { expectEngineError } from '../support/engine.js';


/** A decimal string as numerator over a power of ten, parsed here without ratio.ts. */
function decimalParts(text: string): { num: bigint; den: bigint } {
  const negative = text.startsWith('-');
  const [whole = '', fraction = ''] = text.replace(/^[+-]/, '').split('.');
  const num = BigInt(whole + fraction);
  return { num: negative ? -num : num, den: 10n ** BigInt(fraction.length) };
}

/**
 * Rounds a decimal string to an integer by reading its digits: the integer part
 * is the truncation, and the fraction digits say whether the discarded part is
 * below, at or above one half. Written from the mode definitions only.
 */
function referenceRound(text: string, mode: RoundingMode): bigint {
  const negative = text.startsWith('-');
  const [whole = '0', fraction = ''] = text.replace(/^[+-]/, '').split('.');
  const truncated = BigInt(whole);
  const digits = fraction.replace(/0+$/, '');
  const sign = negative ? -1n : 1n;
  if (digits === '') return sign * truncated;
  const half: 'below' | 'tie' | 'above' = digits[0]! < '5' ? 'below' : digits === '5' ? 'tie' : 'above';
  const towardZero = sign * truncated;
  const awayFromZero = sign * (truncated + 1n);
  switch (mode) {
    case 'down':
      return towardZero;
    case 'up':
      return awayFromZero;
    case 'floor':
      return negative ? awayFromZero : towardZero;
    case 'ceiling':
      return negative ? towardZero : awayFromZero;
    case 'half_up':
      return half === 'below' ? towardZero : awayFromZero;
    case 'half_down':
      return half === 'above' ? awayFromZero : towardZero;
    case 'half_even':
      if (half !== 'tie') return half === 'below' ? towardZero : awayFromZero;
      return truncated % 2n === 0n ? towardZero : awayFromZero;
  }
}

describe('divRound: the seven modes', () => {
  // java.math.RoundingMode, "Summary of Rounding Operations Under Different Rounding Modes":
  // https://docs.oracle.com/javase/8/docs/api/java/math/RoundingMode.html
  // Columns: UP, DOWN, CEILING, FLOOR, HALF_UP, HALF_DOWN, HALF_EVEN.
  const modes: RoundingMode[] = ['up', 'down', 'ceiling', 'floor', 'half_up', 'half_down', 'half_even'];
  const javaTable: [string, number[]][] = [
    ['5.5', [6, 5, 6, 5, 6, 5, 6]],
    ['2.5', [3, 2, 3, 2, 3, 2, 2]],
    ['1.6', [2, 1, 2, 1, 2, 2, 2]],
    ['1.1', [2, 1, 2, 1, 1, 1, 1]],
    ['1.0', [1, 1, 1, 1, 1, 1, 1]],
    ['-1.0', [-1, -1, -1, -1, -1, -1, -1]],
    ['-1.1', [-2, -1, -1, -2, -1, -1, -1]],
    ['-1.6', [-2, -1, -1, -2, -2, -2, -2]],
    ['-2.5', [-3, -2, -2, -3, -3, -2, -2]],
    ['-5.5', [-6, -5, -5, -6, -6, -5, -6]],
  ];
  it.each(javaTable)('%s (java.math.RoundingMode table)', (input, expected) => {
    const { num, den } = decimalParts(input);
    modes.forEach((mode, i) => {
      expect(divRound(num, den, mode), `${input} ${mode}`).toBe(BigInt(expected[i]!));
      expect(referenceRound(input, mode), `reference ${input} ${mode}`).toBe(BigInt(expected[i]!));
    });
  });

  const more = ['2.5', '-2.5', '2.4', '-2.6', '3.5', '-3.5', '0.5', '-0.5', '0.49999', '-0.50001', '0', '-0.0', '7', '-7', '12.500', '13.5000001', '-1000000000000000000000.5'];
  it.each(more)('%s agrees with the digit-reading reference in every mode', (input) => {
    const { num, den } = decimalParts(input);
    for (const mode of ROUNDING_MODES) expect(divRound(num, den, mode), mode).toBe(referenceRound(input, mode));
  });

  it('half_even examples: 2.5 → 2, 3.5 → 4, -2.5 → -2, -3.5 → -4, 0.5 → 0', () => {
    expect(divRound(5n, 2n, 'half_even')).toBe(2n);
    expect(divRound(7n, 2n, 'half_even')).toBe(4n);
    expect(divRound(-5n, 2n, 'half_even')).toBe(-2n);
    expect(divRound(-7n, 2n, 'half_even')).toBe(-4n);
    expect(divRound(1n, 2n, 'half_even')).toBe(0n);
  });

  it('agrees with the digit-reading reference on random decimals (property)', () => {
    const decimal = fc
      .tuple(fc.boolean(), fc.bigInt({ min: 0n, max: 10n ** 20n }), fc.stringMatching(/^[0-9]{1,8}$/))
      .map(([negative, whole, fraction]) => `${negative ? '-' : ''}${whole}.${fraction}`);
    fc.assert(
      fc.property(decimal, fc.constantFrom(...ROUNDING_MODES), (text, mode) => {
        const { num, den } = decimalParts(text);
        expect(divRound(num, den, mode)).toBe(referenceRound(text, mode));
      }),
      { numRuns: 2000 },
    );
  });

  it('stays within one unit of the exact quotient, within one half in the half modes, on the right side in the directed modes (property)', () => {
    const nonZero = fc.bigInt({ min: -(10n ** 30n), max: 10n ** 30n }).filter((x) => x !== 0n);
    fc.assert(
      fc.property(fc.bigInt({ min: -(10n ** 30n), max: 10n ** 30n }), nonZero, fc.constantFrom(...ROUNDING_MODES), (n, dd, mode) => {
        const q = divRound(n, dd, mode);
        // error = q − n/d, scaled by |d|: |q·d − n| over |d|.
        const absD = dd < 0n ? -dd : dd;
        const scaledError = (q * dd - n) * (dd < 0n ? -1n : 1n); // (q − n/d)·|d|
        const absError = scaledError < 0n ? -scaledError : scaledError;
        expect(absError < absD).toBe(true);
        if (mode.startsWith('half_')) expect(2n * absError <= absD).toBe(true);
        if (mode === 'floor') expect(scaledError <= 0n).toBe(true);
        if (mode === 'ceiling') expect(scaledError >= 0n).toBe(true);
        const exactSign = (n < 0n) !== (dd < 0n) ? -1n : 1n;
        if (mode === 'down') expect(scaledError * exactSign <= 0n).toBe(true);
        if (mode === 'up') expect(scaledError * exactSign >= 0n).toBe(true);
        // A negative denominator is the same quotient as negating both.
        expect(divRound(-n, -dd, mode)).toBe(q);
      }),
      { numRuns: 2000 },
    );
  });

  it('rejects a zero denominator and names the modes', () => {
    expectEngineError(() => divRound(1n, 0n, 'half_even'), 'invalid_argument');
    expect(ROUNDING_MODES).toHaveLength(7);
    for (const mode of ROUNDING_MODES) expect(isRoundingMode(mode)).toBe(true);
    expect(isRoundingMode('HALF_EVEN')).toBe(false);
    expect(isRoundingMode('bankers')).toBe(false);
  });
});

describe('roundToIncrement', () => {
  it('rounds to a multiple of the increment', () => {
    expect(roundToIncrement(12_345n, 100n, 'up')).toBe(12_400n);
    expect(roundToIncrement(12_345n, 100n, 'half_even')).toBe(12_300n);
    expect(roundToIncrement(12_350n, 100n, 'half_even')).toBe(12_400n);
    expect(roundToIncrement(12_250n, 100n, 'half_even')).toBe(12_200n);
    expect(roundToIncrement(-12_350n, 100n, 'half_up')).toBe(-12_400n);
    expect(roundToIncrement(-12_345n, 100n, 'floor')).toBe(-12_400n);
    expect(roundToIncrement(777n, 1n, 'up')).toBe(777n);
    expectEngineError(() => roundToIncrement(1n, 0n, 'up'), 'invalid_argument', 'increment');
    expectEngineError(() => roundToIncrement(1n, -5n, 'up'), 'invalid_argument', 'increment');
  });

  it('gives a multiple within one increment (property)', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: -(10n ** 15n), max: 10n ** 15n }), fc.bigInt({ min: 1n, max: 10_000n }), fc.constantFrom(...ROUNDING_MODES), (value, increment, mode) => {
        const rounded = roundToIncrement(value, increment, mode);
        expect(rounded % increment).toBe(0n);
        const gap = rounded - value;
        expect((gap < 0n ? -gap : gap) < increment).toBe(true);
      }),
      { numRuns: 1000 },
    );
  });
});

describe('ratios', () => {
  const smallRatio = fc.tuple(fc.bigInt({ min: -(10n ** 12n), max: 10n ** 12n }), fc.bigInt({ min: 1n, max: 10n ** 12n })).map(([n, dd]) => ratio(n, dd));

  it('normalise the sign into the numerator and reject a zero denominator', () => {
    expect(ratio(3n, -4n)).toEqual({ num: -3n, den: 4n });
    expect(reduce(ratio(-6n, 8n))).toEqual({ num: -3n, den: 4n });
    expect(gcd(-12n, 18n)).toBe(6n);
    expect(isZero(ZERO)).toBe(true);
    expect(compare(ONE, ratio(2n, 2n))).toBe(0);
    expectEngineError(() => ratio(1n, 0n), 'invalid_argument');
    expectEngineError(() => div(ONE, ZERO), 'invalid_argument');
  });

  it('field laws hold exactly (property)', () => {
    fc.assert(
      fc.property(smallRatio, smallRatio, smallRatio, (a, b, c) => {
        expect(compare(sub(add(a, b), b), a)).toBe(0);
        expect(compare(add(a, b), add(b, a))).toBe(0);
        expect(compare(mul(a, add(b, c)), add(mul(a, b), mul(a, c)))).toBe(0);
        if (!isZero(b)) expect(compare(mul(div(a, b), b), a)).toBe(0);
        expect(compare(mulInt(a, 3n), add(add(a, a), a))).toBe(0);
        // compare agrees with the sign of the difference.
        const diff = sub(a, b);
        expect(compare(a, b)).toBe(diff.num === 0n ? 0 : diff.num > 0n ? 1 : -1);
      }),
      { numRuns: 1000 },
    );
  });

  it('roundRatio is divRound of its parts', () => {
    expect(roundRatio(ratio(5n, 2n), 'half_even')).toBe(2n);
    expect(roundRatio(ratio(-5n, 2n), 'half_up')).toBe(-3n);
  });

  it('parseDecimal reads plain decimals exactly and rejects everything else', () => {
    expect(parseDecimal('0.0625')).toEqual({ num: 625n, den: 10_000n });
    expect(parseDecimal('-12')).toEqual({ num: -12n, den: 1n });
    expect(parseDecimal('+1.5')).toEqual({ num: 15n, den: 10n });
    for (const bad of ['', '1e5', 'NaN', 'Infinity', ' 1', '1 ', '--1', '.5', '1.', '1,5', '0x10', '1.2.3']) {
      expectEngineError(() => parseDecimal(bad, 'annual_rate'), 'invalid_argument', 'annual_rate');
    }
    expectEngineError(() => parseDecimal('1'.repeat(10_000), 'annual_rate'), 'invalid_argument', 'annual_rate');
    expectEngineError(() => parseDecimal(`0.${'1'.repeat(40)}`), 'invalid_argument');
    expect(compare(parseDecimal(`0.${'1'.repeat(39)}`), ratio(10n ** 39n / 9n, 10n ** 39n))).toBe(0);
  });

  it('toDecimalString rounds by the named mode; formatScaled places the point', () => {
    expect(toDecimalString(ratio(1n, 3n), 4)).toBe('0.3333');
    expect(toDecimalString(ratio(2n, 3n), 4)).toBe('0.6667');
    expect(toDecimalString(ratio(-1n, 8n), 2)).toBe('-0.12');
    expect(toDecimalString(ratio(-1n, 8n), 2, 'half_up')).toBe('-0.13');
    expect(toDecimalString(ratio(7n, 2n), 0)).toBe('4');
    expect(formatScaled(5n, 2)).toBe('0.05');
    expect(formatScaled(-5n, 2)).toBe('-0.05');
    expect(formatScaled(123_456n, 0)).toBe('123456');
  });

  it('toDecimalString agrees with parseDecimal both ways (property)', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: -(10n ** 20n), max: 10n ** 20n }), fc.integer({ min: 0, max: 8 }), (scaled, places) => {
        const text = formatScaled(scaled, places);
        expect(toDecimalString(parseDecimal(text), places)).toBe(text);
      }),
      { numRuns: 1000 },
    );
  });

  it('toNumber is close to the quotient for small and for huge parts (was Infinity for 2^100 / 3)', () => {
    expect(toNumber(ratio(1n, 3n))).toBe(1 / 3);
    expect(toNumber(ratio(-7n, 2n))).toBe(-3.5);
    expect(toNumber(ZERO)).toBe(0);
    const huge = toNumber(ratio(2n ** 100n, 3n));
    expect(Math.abs(huge / (2 ** 100 / 3) - 1)).toBeLessThan(1e-15);
    const tiny = toNumber(ratio(1n, 3n * 2n ** 200n));
    expect(Math.abs(tiny / (1 / 3 / 2 ** 200) - 1)).toBeLessThan(1e-15);
    const nearOne = toNumber(ratio(10n ** 40n + 1n, 10n ** 40n));
    expect(nearOne).toBe(1);
    expect(toNumber(ratio(-(2n ** 70n) - 1n, 2n ** 69n))).toBe(-2);
  });

  it('toNumber is within a relative 1e-15 of the quotient of the scaled parts (property)', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 1n, max: 10n ** 15n }), fc.bigInt({ min: 1n, max: 10n ** 15n }), fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: 300 }), fc.boolean(), (n, dd, shiftN, shiftD, negative) => {
        const r = ratio((negative ? -n : n) * 2n ** BigInt(shiftN), dd * 2n ** BigInt(shiftD));
        const expected = ((negative ? -1 : 1) * (Number(n) / Number(dd))) * 2 ** (shiftN - shiftD);
        const actual = toNumber(r);
        expect(Math.abs(actual / expected - 1)).toBeLessThan(1e-15);
      }),
      { numRuns: 1000 },
    );
  });

  it('a ratio never silently becomes a float: toNumber is the only conversion', () => {
    const r: Ratio = add(ratio(1n, 10n), ratio(2n, 10n));
    expect(compare(r, ratio(3n, 10n))).toBe(0); // 0.1 + 0.2 = 0.3 exactly
  });
});
