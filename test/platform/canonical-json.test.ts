/**
 * canonicalJson (reproducible hashes for idempotency and the audit chain) and
 * jsonDepth (the request body depth guard).
 */
import fc from 'fast-check';
import { Temporal } from 'temporal-polyfill';
import { describe, expect, it } from 'vitest';
import { canonicalJson } from '../../src/platform/canonical-json.js';
import { jsonDepth } from '../../src/platform/http.js';

/** The same value with every object's keys in reverse insertion order. */
function reverseKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(reverseKeys);
  if (v !== null && typeof v === 'object') {
    return Object.fromEntries(
      Object.entries(v)
        .reverse()
        .map(([k, x]) => [k, reverseKeys(x)]),
    );
  }
  return v;
}

/** Depth by recursion, for comparison: scalars 0, each array/object one more than its deepest member. */
function depthOf(v: unknown): number {
  if (Array.isArray(v)) return 1 + Math.max(0, ...v.map(depthOf));
  if (v !== null && typeof v === 'object') return 1 + Math.max(0, ...Object.values(v).map(depthOf));
  return 0;
}

describe('canonicalJson', () => {
  it('is independent of key order', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        expect(canonicalJson(reverseKeys(v))).toBe(canonicalJson(v));
      }),
      { numRuns: 300 },
    );
  });

  it('is valid JSON for the same value, and a fixed point', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        const text = canonicalJson(v);
        const parsed: unknown = JSON.parse(text);
        expect(canonicalJson(parsed)).toBe(text);
        // The same value (through JSON on both sides: -0 has no JSON form).
        expect(parsed).toEqual(JSON.parse(JSON.stringify(v)));
      }),
      { numRuns: 300 },
    );
  });

  it('sorts keys at every depth and writes no whitespace', () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { z: 1, y: 2 }], c: 'x y' } })).toBe('{"a":{"c":"x y","d":[3,{"y":2,"z":1}]},"b":1}');
  });

  it('sorts keys by UTF-16 code unit, as RFC 8785 does', () => {
    expect(canonicalJson({ é: 1, z: 2, Z: 3, '10': 4, '9': 5, '😀': 6, 'ﬀ': 7 })).toBe('{"10":4,"9":5,"Z":3,"z":2,"é":1,"😀":6,"ﬀ":7}');
  });

  it('writes bigint as a decimal string, never through a number', () => {
    expect(canonicalJson({ amount_minor: 119910n })).toBe('{"amount_minor":"119910"}');
    expect(canonicalJson(2n ** 70n)).toBe('"1180591620717411303424"');
    expect(canonicalJson(-5n)).toBe('"-5"');
  });

  it('drops undefined members, writes undefined array slots as null, and dates as ISO strings', () => {
    expect(canonicalJson({ a: undefined, b: null, c: [undefined, 1] })).toBe('{"b":null,"c":[null,1]}');
    expect(canonicalJson(new Date(Date.UTC(2024, 1, 29, 12, 0, 0)))).toBe('"2024-02-29T12:00:00.000Z"');
    expect(canonicalJson(undefined)).toBe('null');
  });

  it('writes values with a JSON form (Temporal dates) as that form, so different dates hash differently', () => {
    const a = canonicalJson({ as_of: Temporal.PlainDate.from('2024-02-29') });
    const b = canonicalJson({ as_of: Temporal.PlainDate.from('2024-03-01') });
    expect(a).toBe('{"as_of":"2024-02-29"}');
    expect(a).not.toBe(b);
  });

  it('escapes strings exactly as JSON.stringify does', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (s) => {
        expect(canonicalJson(s)).toBe(JSON.stringify(s));
        expect(canonicalJson({ [s]: s })).toBe(`{${JSON.stringify(s)}:${JSON.stringify(s)}}`);
      }),
    );
  });
});

describe('jsonDepth', () => {
  it.each([
    ['1', 0],
    ['"text"', 0],
    ['{}', 1],
    ['[]', 1],
    ['{"a":[1,{"b":2}]}', 3],
    ['[[],[[]],[]]', 3],
    ['"[[[[{{{{"', 0],
    ['{"a":"[[[\\"{{{\\"]]]"}', 1],
    ['{"a":"\\\\","b":[[1]]}', 3],
    ['{"a":"\\\\\\"[","b":{}}', 2],
    ['{"a":"\\u005b\\u007b"}', 1],
  ])('%s → %i', (text, depth) => {
    expect(jsonDepth(text)).toBe(depth);
  });

  it('matches the recursive depth of any JSON value, brackets and quotes in strings included', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 8 }), (v) => {
        expect(jsonDepth(JSON.stringify(v))).toBe(depthOf(v));
      }),
      { numRuns: 500 },
    );
  });

  it('matches for strings built from brackets, quotes and backslashes', () => {
    fc.assert(
      fc.property(fc.array(fc.string({ unit: fc.constantFrom('[', ']', '{', '}', '"', '\\', 'a') }), { maxLength: 5 }), (strings) => {
        expect(jsonDepth(JSON.stringify(strings))).toBe(1);
        expect(jsonDepth(JSON.stringify({ k: strings }))).toBe(2);
      }),
    );
  });

  it('measures 100 000 levels without recursing', () => {
    expect(jsonDepth('['.repeat(100_000) + ']'.repeat(100_000))).toBe(100_000);
    expect(jsonDepth('{"a":'.repeat(100_000) + '1' + '}'.repeat(100_000))).toBe(100_000);
  });
});
