/**
 * Access tokens: HS256 JWTs signed with SECRET_KEY, verified with the algorithm pinned
 * (alg none and every other algorithm are refused), issuer and audience checked.
 * Refresh tokens: opaque random strings; only their SHA-256 is stored.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { SignJWT, decodeProtectedHeader, jwtVerify } from 'jose';
import { sha256Hex } from '../platform/crypto.js';

const ISSUER = 'loanbook';
const AUDIENCE = 'loanbook-api';
const ALG = 'HS256';

export interface AccessClaims {
  readonly userId: string;
  readonly sessionId: string;
  readonly role: string;
}

export interface TokenSigner {
  signAccess(claims: AccessClaims, now: Date): Promise<{ token: string; expiresIn: number }>;
  /** Null for every invalid token: bad signature, wrong alg, expired, malformed, wrong issuer. */
  verifyAccess(token: string, now: Date): Promise<AccessClaims | null>;
}

/**
 * Signs with `secretKey`; verifies with it and with `previousKeys` (SECRET_KEY_PREVIOUS),
 * so a rotation does not sign everyone out: tokens carry the id of the key that signed
 * them (`kid`, a hash of the key, never the key), and a token is checked against that
 * key only. Once ACCESS_TOKEN_EXPIRE_MINUTES have passed since the rotation, no token
 * signed with a previous key is still valid and the previous keys can be dropped.
 */
export function createTokenSigner(secretKey: string, accessTtlMinutes: number, previousKeys: readonly string[] = []): TokenSigner {
  const encoder = new TextEncoder();
  const currentKid = signingKeyId(secretKey);
  const key = encoder.encode(secretKey);
  const ring = new Map<string, Uint8Array>(previousKeys.map((k) => [signingKeyId(k), encoder.encode(k)]));
  ring.set(currentKid, key);
  const ttl = accessTtlMinutes * 60;
  return {
    async signAccess(claims, now) {
      const iat = Math.floor(now.getTime() / 1000);
      const token = await new SignJWT({ sid: claims.sessionId, role: claims.role })
        .setProtectedHeader({ alg: ALG, typ: 'JWT', kid: currentKid })
        .setSubject(claims.userId)
        .setIssuer(ISSUER)
        .setAudience(AUDIENCE)
        .setIssuedAt(iat)
        .setExpirationTime(iat + ttl)
        .setJti(randomUUID())
        .sign(key);
      return { token, expiresIn: ttl };
    },
    async verifyAccess(token, now) {
      try {
        // Tokens issued before key ids existed carry none: they can only be the current key's.
        const kid = decodeProtectedHeader(token).kid ?? currentKid;
        const verifyKey = ring.get(kid);
        if (verifyKey === undefined) return null;
        const { payload } = await jwtVerify(token, verifyKey, {
          algorithms: [ALG],
          issuer: ISSUER,
          audience: AUDIENCE,
          currentDate: now,
          requiredClaims: ['sub', 'exp', 'iat', 'jti'],
        });
        // Ids go into uuid-typed queries: a malformed one must be a refusal, not a database error.
        if (!isUuid(payload.sub) || !isUuid(payload.sid) || typeof payload.role !== 'string') return null;
        return { userId: payload.sub, sessionId: payload.sid, role: payload.role };
      } catch {
        return null;
      }
    },
  };
}

/** A public id for a signing key: 16 hex digits of a domain-separated SHA-256. */
export function signingKeyId(secretKey: string): string {
  return sha256Hex(`loanbook-jwt-kid\u0000${secretKey}`).slice(0, 16);
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function isUuid(v: unknown): v is string {
  return typeof v === 'string' && UUID.test(v);
}

export function newRefreshToken(): { token: string; hash: string } {
  const token = `lbr_${randomBytes(32).toString('base64url')}`;
  return { token, hash: hashRefreshToken(token) };
}

export function hashRefreshToken(token: string): string {
  return sha256Hex(token);
}
