/**
 * Field encryption for personal data: AES-256-GCM with a key id, additional
 * authenticated data binding the value to its table, column and row (a ciphertext
 * copied to another row or column does not decrypt), and an HMAC-SHA-256 blind index
 * for equality lookups without decrypting.
 *
 * Stored form: `v1.<kid>.<iv b64url>.<ciphertext b64url>.<tag b64url>`.
 * The data key and the blind-index key are derived from ENCRYPTION_KEY with HKDF, so
 * one configured secret serves both without reusing a key for two purposes.
 */
import { createCipheriv, createDecipheriv, createHash, createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';

export interface FieldContext {
  readonly table: string;
  readonly column: string;
  readonly rowId: string;
}

export interface FieldCipher {
  readonly keyId: string;
  encrypt(plaintext: string, ctx: FieldContext): string;
  decrypt(stored: string, ctx: FieldContext): string;
  /** Deterministic keyed hash of a normalised value, for `WHERE x_index = $1`; written with new values. */
  blindIndex(value: string, purpose: string): string;
  /**
   * The same hash under every configured key, the current key's first: lookups match
   * `IN (…)` these, so rows indexed under a previous key are still found while a key
   * rotation's re-encryption (`loanbook keys reencrypt`) has not reached them.
   */
  blindIndexes(value: string, purpose: string): string[];
  /** Whether a stored value was encrypted with the current key (false: re-encrypt it). */
  isCurrent(stored: string): boolean;
}

export class FieldDecryptionError extends Error {
  override readonly name = 'FieldDecryptionError';
}

interface DerivedKey {
  readonly id: string;
  readonly dataKey: Buffer;
  readonly indexKey: Buffer;
}

const IV_BYTES = 12;
const TAG_BYTES = 16;

function derive(master: Buffer): DerivedKey {
  if (master.length !== 32) throw new Error('encryption key must be 32 bytes');
  const salt = Buffer.from('loanbook-field-encryption-v1');
  return {
    id: createHash('sha256').update('loanbook-kid').update(master).digest('hex').slice(0, 8),
    dataKey: Buffer.from(hkdfSync('sha256', master, salt, 'aes-256-gcm data key', 32)),
    indexKey: Buffer.from(hkdfSync('sha256', master, salt, 'hmac-sha256 blind index key', 32)),
  };
}

/**
 * Node's base64url decoder skips characters outside the alphabet and ignores trailing
 * bits, so many strings decode to the same bytes. Only the one canonical spelling is
 * accepted: a stored value that was altered in any way does not decrypt.
 */
function decodeCanonical(text: string): Buffer | null {
  const bytes = Buffer.from(text, 'base64url');
  return bytes.toString('base64url') === text ? bytes : null;
}

function aad(ctx: FieldContext): Buffer {
  return Buffer.from(`${ctx.table}\u0000${ctx.column}\u0000${ctx.rowId}`, 'utf8');
}

/**
 * `current` encrypts; `previous` keys (after a rotation) still decrypt. New blind indexes
 * use the current key; lookups try every key (`blindIndexes`) until re-encryption has
 * re-indexed the rows (see docs/operations.md, "Rotating keys").
 */
export function createFieldCipher(current: Buffer, previous: readonly Buffer[] = []): FieldCipher {
  const cur = derive(current);
  const ring = new Map<string, DerivedKey>([[cur.id, cur]]);
  for (const k of previous) {
    const d = derive(k);
    ring.set(d.id, d);
  }
  return {
    keyId: cur.id,
    encrypt(plaintext, ctx) {
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv('aes-256-gcm', cur.dataKey, iv, { authTagLength: TAG_BYTES });
      cipher.setAAD(aad(ctx));
      const ct = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
      return ['v1', cur.id, iv.toString('base64url'), ct.toString('base64url'), cipher.getAuthTag().toString('base64url')].join('.');
    },
    decrypt(stored, ctx) {
      const parts = stored.split('.');
      if (parts.length !== 5 || parts[0] !== 'v1') throw new FieldDecryptionError('not a v1 encrypted field');
      const [, kid, ivText, ctText, tagText] = parts as [string, string, string, string, string];
      const key = ring.get(kid);
      if (!key) throw new FieldDecryptionError(`no key with id ${kid} is configured`);
      const iv = decodeCanonical(ivText);
      const tag = decodeCanonical(tagText);
      const ct = decodeCanonical(ctText);
      // GCM accepts tags as short as 4 bytes unless told otherwise; a truncated tag must
      // not verify (it would cut the forgery cost from 2^128 to 2^32).
      if (iv === null || tag === null || ct === null || iv.length !== IV_BYTES || tag.length !== TAG_BYTES) {
        throw new FieldDecryptionError(`field ${ctx.table}.${ctx.column} of ${ctx.rowId} failed authentication`);
      }
      try {
        const decipher = createDecipheriv('aes-256-gcm', key.dataKey, iv, { authTagLength: TAG_BYTES });
        decipher.setAAD(aad(ctx));
        decipher.setAuthTag(tag);
        return Buffer.concat([decipher.update(ct), decipher.final()]).toString('utf8');
      } catch {
        throw new FieldDecryptionError(`field ${ctx.table}.${ctx.column} of ${ctx.rowId} failed authentication`);
      }
    },
    blindIndex(value, purpose) {
      return indexUnder(cur, value, purpose);
    },
    blindIndexes(value, purpose) {
      return [...ring.values()].map((k) => indexUnder(k, value, purpose));
    },
    isCurrent(stored) {
      return stored.startsWith(`v1.${cur.id}.`);
    },
  };
}

function indexUnder(key: DerivedKey, value: string, purpose: string): string {
  return createHmac('sha256', key.indexKey).update(purpose).update('\u0000').update(value).digest('base64url');
}

/** Constant-time comparison of two strings (tokens, hashes). */
export function safeEqual(a: string, b: string): boolean {
  const ab = Buffer.from(a);
  const bb = Buffer.from(b);
  return ab.length === bb.length && timingSafeEqual(ab, bb);
}

export function sha256Hex(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}
