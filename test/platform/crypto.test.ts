/**
 * Field encryption: AES-256-GCM with a key id, AAD binding table/column/row, key
 * rotation, and the HMAC blind index.
 */
import { createHash, createHmac, hkdfSync } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createFieldCipher, FieldDecryptionError, safeEqual, sha256Hex, type FieldContext } from '../../src/platform/crypto.js';

const KEY_A = Buffer.from(Array.from({ length: 32 }, (_, i) => (i * 7 + 3) % 256));
const KEY_B = Buffer.from(Array.from({ length: 32 }, (_, i) => (i * 13 + 101) % 256));
const CTX: FieldContext = { table: 'users', column: 'email', rowId: '5b0f6a7e-0000-4000-8000-000000000001' };
const STORED = /^v1\.([0-9a-f]{8})\.([A-Za-z0-9_-]{16})\.([A-Za-z0-9_-]*)\.([A-Za-z0-9_-]{22})$/;
const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/** The key id is derived from the key, not stored beside it. */
function expectedKeyId(key: Buffer): string {
  return createHash('sha256').update('loanbook-kid').update(key).digest('hex').slice(0, 8);
}

function expectRefused(fn: () => unknown, message?: RegExp): void {
  let thrown: unknown;
  try {
    fn();
  } catch (e) {
    thrown = e;
  }
  expect(thrown).toBeInstanceOf(FieldDecryptionError);
  if (message) expect((thrown as Error).message).toMatch(message);
}

const contexts = fc.record({ table: fc.string({ minLength: 1 }), column: fc.string({ minLength: 1 }), rowId: fc.uuid() });

describe('field encryption', () => {
  const cipher = createFieldCipher(KEY_A);

  it('round-trips any well-formed unicode string', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 200 }), contexts, (plaintext, ctx) => {
        expect(cipher.decrypt(cipher.encrypt(plaintext, ctx), ctx)).toBe(plaintext);
      }),
      { numRuns: 300 },
    );
  });

  it('round-trips grapheme clusters, the empty string and a 64 KiB value', () => {
    for (const plaintext of ['', 'é', '👩‍👩‍👧‍👦', 'Zoë O’Brien-Łukasiewicz 张伟', 'x'.repeat(64 * 1024)]) {
      expect(cipher.decrypt(cipher.encrypt(plaintext, CTX), CTX)).toBe(plaintext);
    }
  });

  it('stores v1.<key id>.<iv>.<ciphertext>.<tag>, with the id of the key that encrypted', () => {
    const stored = cipher.encrypt('alice@example.test', CTX);
    const m = STORED.exec(stored);
    expect(m).not.toBeNull();
    expect(m?.[1]).toBe(expectedKeyId(KEY_A));
    expect(cipher.keyId).toBe(expectedKeyId(KEY_A));
    // 12-byte IV, 16-byte tag, ciphertext as long as the UTF-8 plaintext (GCM is a stream mode).
    expect(Buffer.from(m?.[2] ?? '', 'base64url')).toHaveLength(12);
    expect(Buffer.from(m?.[4] ?? '', 'base64url')).toHaveLength(16);
    expect(Buffer.from(m?.[3] ?? '', 'base64url')).toHaveLength(Buffer.byteLength('alice@example.test'));
    expect(stored).not.toContain('alice');
  });

  it('uses a fresh IV for every encryption', () => {
    const a = cipher.encrypt('same', CTX);
    const b = cipher.encrypt('same', CTX);
    expect(a).not.toBe(b);
    expect(a.split('.')[2]).not.toBe(b.split('.')[2]);
  });

  it('binds the value to its table, column and row (AAD)', () => {
    const stored = cipher.encrypt('alice@example.test', CTX);
    for (const other of [
      { ...CTX, rowId: '5b0f6a7e-0000-4000-8000-000000000002' },
      { ...CTX, column: 'name' },
      { ...CTX, table: 'applicants' },
      { table: 'users', column: 'email', rowId: CTX.rowId.toUpperCase() },
    ]) {
      expectRefused(() => cipher.decrypt(stored, other), /failed authentication/);
    }
  });

  it('refuses a value copied to any other row (property)', () => {
    fc.assert(
      fc.property(fc.string(), fc.uuid(), fc.uuid(), (plaintext, rowA, rowB) => {
        fc.pre(rowA !== rowB);
        const stored = cipher.encrypt(plaintext, { ...CTX, rowId: rowA });
        expectRefused(() => cipher.decrypt(stored, { ...CTX, rowId: rowB }));
      }),
      { numRuns: 100 },
    );
  });

  it('refuses a stored value with any single character changed', () => {
    fc.assert(
      fc.property(
        fc.string({ maxLength: 40 }),
        fc.nat(),
        fc.constantFrom(...(B64URL + '.=+/ ').split('')),
        (plaintext, at, replacement) => {
          const stored = cipher.encrypt(plaintext, CTX);
          const i = at % stored.length;
          fc.pre(stored[i] !== replacement);
          const tampered = stored.slice(0, i) + replacement + stored.slice(i + 1);
          expectRefused(() => cipher.decrypt(tampered, CTX));
        },
      ),
      { numRuns: 500 },
    );
  });

  it('refuses a truncated or extended tag', () => {
    const stored = cipher.encrypt('alice@example.test', CTX);
    const parts = stored.split('.');
    const tag = Buffer.from(parts[4] ?? '', 'base64url');
    for (const bad of [tag.subarray(0, 4), tag.subarray(0, 12), tag.subarray(0, 15), Buffer.concat([tag, Buffer.from([0])])]) {
      const tampered = [...parts.slice(0, 4), bad.toString('base64url')].join('.');
      expectRefused(() => cipher.decrypt(tampered, CTX), /failed authentication/);
    }
  });

  it('refuses a truncated ciphertext, a flipped ciphertext bit and a swapped IV', () => {
    const stored = cipher.encrypt('alice@example.test', CTX);
    const [v, kid, iv, ct, tag] = stored.split('.') as [string, string, string, string, string];
    const ctBytes = Buffer.from(ct, 'base64url');
    const flipped = Buffer.from(ctBytes);
    flipped[0] = (flipped[0] ?? 0) ^ 1;
    const otherIv = cipher.encrypt('alice@example.test', CTX).split('.')[2] ?? '';
    for (const tampered of [
      [v, kid, iv, ctBytes.subarray(1).toString('base64url'), tag],
      [v, kid, iv, flipped.toString('base64url'), tag],
      [v, kid, otherIv, ct, tag],
      [v, kid, iv, ct, tag, ''],
      [v, kid, iv, ct],
    ]) {
      expectRefused(() => cipher.decrypt(tampered.join('.'), CTX));
    }
  });

  it('refuses non-canonical base64 spellings of the same bytes', () => {
    const stored = cipher.encrypt('alice@example.test', CTX);
    const parts = stored.split('.');
    // The IV is 12 bytes = 16 base64url characters with no spare bits; pad it instead.
    for (const [index, spelling] of [
      [2, `${parts[2]}==`],
      [4, `${parts[4]}=`],
      [3, `${parts[3]}!`],
    ] as const) {
      const tampered = parts.map((p, i) => (i === index ? spelling : p)).join('.');
      expectRefused(() => cipher.decrypt(tampered, CTX));
    }
  });

  it('names the problem when the version or key id is unknown', () => {
    const stored = cipher.encrypt('x', CTX);
    expectRefused(() => cipher.decrypt(stored.replace(/^v1\./, 'v2.'), CTX), /not a v1 encrypted field/);
    expectRefused(() => cipher.decrypt('plain text', CTX), /not a v1 encrypted field/);
    expectRefused(() => cipher.decrypt(stored.replace(cipher.keyId, '00000000'), CTX), /no key with id 00000000 is configured/);
  });

  it('keeps decrypting with a previous key after rotation, and encrypts with the new one', () => {
    const before = createFieldCipher(KEY_A);
    const old = before.encrypt('alice@example.test', CTX);

    const rotated = createFieldCipher(KEY_B, [KEY_A]);
    expect(rotated.keyId).toBe(expectedKeyId(KEY_B));
    expect(rotated.keyId).not.toBe(before.keyId);
    expect(rotated.decrypt(old, CTX)).toBe('alice@example.test');

    const fresh = rotated.encrypt('alice@example.test', CTX);
    expect(fresh.split('.')[1]).toBe(expectedKeyId(KEY_B));
    expect(rotated.decrypt(fresh, CTX)).toBe('alice@example.test');

    // Once the old key is dropped from the ring, old values no longer decrypt.
    const newOnly = createFieldCipher(KEY_B);
    expectRefused(() => newOnly.decrypt(old, CTX), new RegExp(`no key with id ${expectedKeyId(KEY_A)}`));
    // And the old key alone cannot read values written after rotation.
    expectRefused(() => before.decrypt(fresh, CTX), /no key with id/);
  });

  it('decrypts a value stored by an earlier build (the stored form is stable)', () => {
    const stored = 'v1.b03e0f7c.cmfxzJwfGyYxv6zN.PvjeenT5R4H31EIbkE0omKIO.IqhJi1r9aAdehoatjgZQUw';
    expect(cipher.decrypt(stored, CTX)).toBe('alice@example.test');
    expectRefused(() => cipher.decrypt(stored, { ...CTX, rowId: 'another-row' }));
  });

  it('refuses keys that are not 32 bytes', () => {
    expect(() => createFieldCipher(Buffer.alloc(16, 1))).toThrow('encryption key must be 32 bytes');
    expect(() => createFieldCipher(KEY_A, [Buffer.alloc(31, 1)])).toThrow('encryption key must be 32 bytes');
  });
});

describe('blind index', () => {
  const a = createFieldCipher(KEY_A);
  const b = createFieldCipher(KEY_B);

  it('is deterministic per value and purpose', () => {
    fc.assert(
      fc.property(fc.string(), fc.string({ minLength: 1 }), (value, purpose) => {
        expect(a.blindIndex(value, purpose)).toBe(a.blindIndex(value, purpose));
        expect(createFieldCipher(KEY_A).blindIndex(value, purpose)).toBe(a.blindIndex(value, purpose));
      }),
    );
  });

  it('is a 256-bit base64url HMAC that does not contain the value', () => {
    const index = a.blindIndex('alice@example.test', 'users.email');
    expect(index).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(index).not.toContain('alice');
  });

  it('differs by value, by purpose and by key', () => {
    fc.assert(
      fc.property(fc.string(), fc.string(), fc.string({ minLength: 1 }), fc.string({ minLength: 1 }), (v1, v2, p1, p2) => {
        if (v1 !== v2) expect(a.blindIndex(v1, p1)).not.toBe(a.blindIndex(v2, p1));
        if (p1 !== p2) expect(a.blindIndex(v1, p1)).not.toBe(a.blindIndex(v1, p2));
        expect(a.blindIndex(v1, p1)).not.toBe(b.blindIndex(v1, p1));
      }),
    );
  });

  it('is not the normalising step: case differences give different indexes', () => {
    expect(a.blindIndex('Alice@Example.test', 'users.email')).not.toBe(a.blindIndex('alice@example.test', 'users.email'));
  });

  it('follows the current key after rotation (so rotation means re-indexing)', () => {
    const rotated = createFieldCipher(KEY_B, [KEY_A]);
    expect(rotated.blindIndex('alice@example.test', 'users.email')).toBe(b.blindIndex('alice@example.test', 'users.email'));
    expect(rotated.blindIndex('alice@example.test', 'users.email')).not.toBe(a.blindIndex('alice@example.test', 'users.email'));
  });

  it('is HMAC-SHA-256 under an HKDF-derived index key, never under the configured key itself', () => {
    // Stored indexes must stay findable across releases: pin the derivation.
    const indexKey = Buffer.from(hkdfSync('sha256', KEY_A, Buffer.from('loanbook-field-encryption-v1'), 'hmac-sha256 blind index key', 32));
    const expected = createHmac('sha256', indexKey).update('users.email').update('\u0000').update('alice@example.test').digest('base64url');
    expect(a.blindIndex('alice@example.test', 'users.email')).toBe(expected);
    expect(a.blindIndex('alice@example.test', 'users.email')).toBe('i8lqQVgh5G3whqwemaPQIaUwJlAvv_SRvUp-aW2s3MY');
    const underMaster = createHmac('sha256', KEY_A).update('users.email').update('\u0000').update('alice@example.test').digest('base64url');
    expect(a.blindIndex('alice@example.test', 'users.email')).not.toBe(underMaster);
  });
});

describe('safeEqual and sha256Hex', () => {
  it('compares strings in constant time, length included', () => {
    expect(safeEqual('token-abc', 'token-abc')).toBe(true);
    expect(safeEqual('token-abc', 'token-abd')).toBe(false);
    expect(safeEqual('token-abc', 'token-ab')).toBe(false);
    expect(safeEqual('', '')).toBe(true);
    expect(safeEqual('é', 'e\u0301')).toBe(false);
  });

  it('hashes the published SHA-256 vectors', () => {
    expect(sha256Hex('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    expect(sha256Hex('')).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
    expect(sha256Hex(Buffer.from('abc'))).toBe(sha256Hex('abc'));
  });
});
