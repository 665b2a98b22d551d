/**
 * Access tokens: HS256 JWTs signed with SECRET_KEY, verified with the algorithm pinned
 * (alg none and every other algorithm are refused), issuer and audience checked.
 * Refresh tokens: opaque random strings; only their SHA-256 is stored.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { SignJWT, jwtVerify } from 'jose';
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

export function createTokenSigner(secretKey: string, accessTtlMinutes: number): TokenSigner {
  const key = new TextEncoder().encode(secretKey);
  const ttl = accessTtlMinutes * 60;
  return {
    async signAccess(claims, now) {
      const iat = Math.floor(now.getTime() / 1000);
      const token = await new SignJWT({ sid: claims.sessionId, role: claims.role })
        .setProtectedHeader({ alg: ALG, typ: 'JWT' })
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
        const { payload } = await jwtVerify(token, key, {
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
