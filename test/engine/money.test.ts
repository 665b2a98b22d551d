/**
 * Money of record: ISO 4217 minor units, strict parsing and formatting of
 * decimal amounts, and exact proportional allocation.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { allocateProportionally, currencies, formatMoney, isCurrency, minorUnits, parseMoney, sumMinor } from '../../src/engine/index.js';
import { expectEngineError } from '../support/engine.js';


describe('currencies', () => {
  it('carry their ISO 4217 minor units', () => {
    // ISO 4217 List One (SIX, maintenance agency): https://www.six-group.com/en/products-services/financial-information/data-standards.html
    const table: Record<string, number> = { USD: 2, EUR: 2, GBP: 2, JPY: 0, KRW: 0, CLP: 0, ISK: 0, KWD: 3, BHD: 3, TND: 3, OMR: 3, CLF: 4, UYW: 4, XCG: 2, ZWG: 2, VED: 2 };
    for (const [code, places] of Object.entries(table)) {
      expect(minorUnits(code), code).toBe(places);
      expect(isCurrency(code)).toBe(true);
    }
  });

  it('rejects codes that are not current ISO 4217 currencies with a minor unit', () => {
    for (const code of ['usd', 'XAU', 'XXX', 'HRK', 'US', 'USDX', '']) {
      expect(isCurrency(code), code).toBe(false);
      expectEngineError(() => minorUnits(code), 'unknown_currency', 'currency');
    }
    expect(isCurrency(840)).toBe(false);
  });

  it('lists each code once, sorted, as three capital letters', () => {
    const list = currencies();
    expect(new Set(list).size).toBe(list.length);
    expect([...list].sort()).toEqual(list);
    for (const code of list) expect(code).toMatch(/^[A-Z]{3}$/);
    expect(list.length).toBeGreaterThan(150);
  });
});

describe('parseMoney and formatMoney', () => {
  it('convert between decimal strings and minor units', () => {
    expect(parseMoney('1199.10', 'USD')).toBe(119_910n);
    expect(parseMoney('1199.1', 'USD')).toBe(119_910n);
    expect(parseMoney('1199', 'USD')).toBe(119_900n);
    expect(parseMoney('-0.05', 'USD')).toBe(-5n);
    expect(parseMoney('1.100', 'USD')).toBe(110n); // trailing zeros lose nothing
    expect(parseMoney('1234', 'JPY')).toBe(1234n);
    expect(parseMoney('1.000', 'KWD')).toBe(1000n);
    expect(parseMoney('0.0001', 'CLF')).toBe(1n);
    expect(formatMoney(119_910n, 'USD')).toBe('1199.10');
    expect(formatMoney(-5n, 'USD')).toBe('-0.05');
    expect(formatMoney(0n, 'USD')).toBe('0.00');
    expect(formatMoney(1234n, 'JPY')).toBe('1234');
    expect(formatMoney(1n, 'KWD')).toBe('0.001');
    expect(formatMoney(12_345n, 'CLF')).toBe('1.2345');
  });

  const CURRENCIES = [
    ['USD', 2],
    ['JPY', 0],
    ['KWD', 3],
    ['CLF', 4],
  ] as const;

  it.each(CURRENCIES)('%s: formatMoney then parseMoney is the identity (property)', (currency, places) => {
    fc.assert(
      fc.property(fc.bigInt({ min: -(10n ** 24n), max: 10n ** 24n }), (minor) => {
        const text = formatMoney(minor, currency);
        const fraction = text.split('.')[1];
        expect(fraction?.length ?? 0).toBe(places);
        expect(parseMoney(text, currency)).toBe(minor);
      }),
      { numRuns: 1000 },
    );
  });

  it.each(CURRENCIES)('%s: parseMoney then formatMoney pads to the currency places (property)', (currency, places) => {
    const amount = fc.tuple(fc.boolean(), fc.stringMatching(/^(0|[1-9][0-9]{0,17})$/), fc.stringMatching(new RegExp(`^[0-9]{0,${places}}$`))).map(([negative, whole, fraction]) => ({
      text: `${negative ? '-' : ''}${whole}${fraction === '' ? '' : `.${fraction}`}`,
      negative,
      whole,
      fraction,
    }));
    fc.assert(
      fc.property(amount, ({ text, negative, whole, fraction }) => {
        const minor = parseMoney(text, currency);
        // Reference: the digits with the fraction padded to the currency's places.
        const magnitude = BigInt(whole + fraction.padEnd(places, '0'));
        expect(minor).toBe(negative ? -magnitude : magnitude);
        const padded = places === 0 ? whole : `${whole}.${fraction.padEnd(places, '0')}`;
        expect(formatMoney(minor, currency)).toBe(magnitude === 0n ? padded : `${negative ? '-' : ''}${padded}`);
      }),
      { numRuns: 1000 },
    );
  });

  const rejected: [string, string][] = [
    ['1.001', 'USD'],
    ['0.5', 'JPY'],
    ['1.0001', 'KWD'],
    ['1.00001', 'CLF'],
    ['1e5', 'USD'],
    ['1E5', 'USD'],
    ['NaN', 'USD'],
    ['Infinity', 'USD'],
    [' 1', 'USD'],
    ['1 ', 'USD'],
    ['--1', 'USD'],
    ['+1', 'USD'],
    ['-', 'USD'],
    ['', 'USD'],
    ['.5', 'USD'],
    ['1.', 'USD'],
    ['1,000.00', 'USD'],
    ['1_000', 'USD'],
    ['0x10', 'USD'],
    ['１', 'USD'],
    ['1'.repeat(10_000), 'USD'],
    [`0.${'0'.repeat(10_000)}`, 'USD'],
    ['9'.repeat(31), 'JPY'],
  ];
  it.each(rejected)('rejects %j in %s', (text, currency) => {
    expectEngineError(() => parseMoney(text, currency, 'principal'), 'invalid_amount', 'principal');
  });

  it('an unknown currency is reported before the amount', () => {
    expectEngineError(() => parseMoney('1.00', 'ABC'), 'unknown_currency', 'currency');
    expectEngineError(() => formatMoney(1n, 'ABC'), 'unknown_currency', 'currency');
  });
});

describe('allocateProportionally', () => {
  it('splits by weight, remainders to the largest fractional parts, ties to the earlier weight', () => {
    expect(allocateProportionally(100n, [1n, 1n, 1n])).toEqual([34n, 33n, 33n]);
    expect(allocateProportionally(-100n, [1n, 1n, 1n])).toEqual([-34n, -33n, -33n]);
    expect(allocateProportionally(10n, [3n, 7n])).toEqual([3n, 7n]);
    expect(allocateProportionally(5n, [0n, 1n, 0n])).toEqual([0n, 5n, 0n]);
    // 100 × 2/3 = 66.67, 100 × 1/3 = 33.33: the larger remainder takes the cent.
    expect(allocateProportionally(100n, [2n, 1n])).toEqual([67n, 33n]);
    expect(allocateProportionally(0n, [5n, 5n])).toEqual([0n, 0n]);
  });

  it('rejects negative weights and a zero weight sum', () => {
    expectEngineError(() => allocateProportionally(100n, [1n, -1n, 1n]), 'invalid_argument', 'weights');
    expectEngineError(() => allocateProportionally(100n, [0n, 0n]), 'invalid_argument', 'weights');
    expectEngineError(() => allocateProportionally(100n, []), 'invalid_argument', 'weights');
  });

  it('sums exactly, each part within one unit of its exact share (property)', () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: -(10n ** 18n), max: 10n ** 18n }),
        fc.array(fc.bigInt({ min: 0n, max: 10n ** 12n }), { minLength: 1, maxLength: 30 }).filter((ws) => ws.some((w) => w > 0n)),
        (total, weights) => {
          const parts = allocateProportionally(total, weights);
          expect(parts).toHaveLength(weights.length);
          expect(sumMinor(parts)).toBe(total);
          const weightSum = sumMinor(weights);
          parts.forEach((part, i) => {
            // |part − total·w/W| < 1  ⇔  |part·W − total·w| < W
            const gap = part * weightSum - total * (weights[i] as bigint);
            expect((gap < 0n ? -gap : gap) < weightSum).toBe(true);
            if (weights[i] === 0n) expect(part).toBe(0n);
          });
        },
      ),
      { numRuns: 1000 },
    );
  });
});
