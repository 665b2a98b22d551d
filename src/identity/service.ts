/**
 * Identity rules: sign-in, token rotation and revocation, user administration.
 * Every change that matters to an auditor is appended to the audit log in the same
 * transaction as the change.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import { appendAudit, type AuditEvent } from '../platform/audit.js';
import type { FieldCipher } from '../platform/crypto.js';
import { AppError } from '../platform/errors.js';
import type { Authenticator, Principal } from '../platform/http.js';
import type { Logger } from '../platform/logger.js';
import type { RateLimitStore } from '../platform/rate-limit.js';
import { normaliseEmail, passwordWeakness, type Role, type TokenPair, type User, type UserStatus } from './model.js';
import { dummyHash, hashPassword, verifyPassword } from './passwords.js';
import * as repo from './repository.js';
import type { Executor, IdentityDb, UserRow } from './repository.js';
import { hashRefreshToken, newRefreshToken, type TokenSigner } from './tokens.js';

export interface IdentityDeps {
  readonly db: Kysely<IdentityDb>;
  readonly cipher: FieldCipher;
  readonly signer: TokenSigner;
  readonly clock: () => Date;
  readonly logger: Logger;
  readonly loginLimiter: { readonly store: RateLimitStore; readonly failures: number; readonly windowMs: number };
  readonly refreshTokenExpireDays: number;
}

/** Who did it, from where: copied into audit rows. */
export interface ActorContext {
  readonly actorId: string | null;
  readonly ip: string | null;
  readonly requestId: string | null;
}

export const EMAIL_INDEX_PURPOSE = 'users.email';
const BOOTSTRAP_LOCK_KEY = 0x4c42_4144; // 'LBAD'

export type IdentityService = ReturnType<typeof createIdentityService>;

export function createIdentityService(deps: IdentityDeps) {
  const { db, cipher, signer, clock } = deps;

  const emailIndex = (email: string) => cipher.blindIndex(normaliseEmail(email), EMAIL_INDEX_PURPOSE);
  const emailIndexes = (email: string) => cipher.blindIndexes(normaliseEmail(email), EMAIL_INDEX_PURPOSE);
  const toUser = (row: UserRow): User => ({
    id: row.id,
    email: cipher.decrypt(row.email_encrypted, { table: 'users', column: 'email', rowId: row.id }),
    role: row.role,
    status: row.status,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  });
  const audit = (ex: Executor, ctx: ActorContext, event: Omit<AuditEvent, 'actorId' | 'ip' | 'requestId'>) =>
    appendAudit(ex, { ...event, actorId: ctx.actorId, ip: ctx.ip, requestId: ctx.requestId }, clock());

  async function issueTokens(ex: Executor, sessionId: string, userId: string, role: Role, now: Date): Promise<TokenPair> {
    const refresh = newRefreshToken();
    const refreshTtl = deps.refreshTokenExpireDays * 86_400;
    await repo.insertRefreshToken(ex, {
      token_hash: refresh.hash,
      session_id: sessionId,
      issued_at: now,
      expires_at: new Date(now.getTime() + refreshTtl * 1000),
    });
    const access = await signer.signAccess({ userId, sessionId, role }, now);
    return { accessToken: access.token, accessExpiresIn: access.expiresIn, refreshToken: refresh.token, refreshExpiresIn: refreshTtl };
  }

  async function createUser(input: { email: string; password: string; role: Role }, ctx: ActorContext): Promise<User> {
    const email = input.email.trim();
    const weakness = passwordWeakness(input.password, email);
    if (weakness) {
      throw new AppError('weak_password', {
        detail: `The password ${weakness}.`,
        errors: [{ pointer: '#/password', location: 'body', detail: weakness }],
      });
    }
    const index = emailIndex(email);
    const passwordHash = await hashPassword(input.password);
    const id = randomUUID();
    return db.transaction().execute(async (trx) => {
      if (await repo.findUserByEmailIndex(trx, emailIndexes(email))) throw new AppError('email_taken');
      let row: UserRow;
      try {
        row = await repo.insertUser(trx, {
          id,
          email_encrypted: cipher.encrypt(email, { table: 'users', column: 'email', rowId: id }),
          email_index: index,
          password_hash: passwordHash,
          role: input.role,
        });
      } catch (e) {
        if ((e as { code?: string }).code === '23505') throw new AppError('email_taken');
        throw e;
      }
      await audit(trx, ctx, { action: 'user.created', subjectType: 'user', subjectId: id, details: { role: input.role } });
      return toUser(row);
    });
  }

  return {
    createUser,

    /**
     * First start on an empty database: an admin from ADMIN_EMAIL / ADMIN_PASSWORD, or
     * with a generated password that the caller prints once. Safe under concurrent starts.
     */
    async bootstrapAdmin(input: { email: string | undefined; password: string | undefined }): Promise<
      { created: false } | { created: true; email: string; generatedPassword: string | undefined }
    > {
      const email = input.email ?? 'admin@loanbook.local';
      const generated = input.password === undefined ? randomBytes(18).toString('base64url') : undefined;
      const password = input.password ?? generated!;
      return db.transaction().execute(async (trx) => {
        // A transaction-scoped advisory lock makes "is it empty? then create" atomic across processes.
        await sql`select pg_advisory_xact_lock(${BOOTSTRAP_LOCK_KEY})`.execute(trx);
        if ((await repo.countUsers(trx)) > 0) return { created: false as const };
        const id = randomUUID();
        const weakness = passwordWeakness(password, email);
        if (weakness) throw new Error(`ADMIN_PASSWORD ${weakness}`);
        await repo.insertUser(trx, {
          id,
          email_encrypted: cipher.encrypt(email, { table: 'users', column: 'email', rowId: id }),
          email_index: emailIndex(email),
          password_hash: await hashPassword(password),
          role: 'admin',
        });
        await audit(trx, { actorId: null, ip: null, requestId: null }, {
          action: 'user.created',
          subjectType: 'user',
          subjectId: id,
          details: { role: 'admin', bootstrap: true },
        });
        return { created: true as const, email, generatedPassword: generated };
      });
    },

    async login(input: { email: string; password: string }, ctx: ActorContext): Promise<TokenPair> {
      const index = emailIndex(input.email);
      const limiterKey = `login:${index}`;
      const { store, failures, windowMs } = deps.loginLimiter;
      // Count the attempt before the password is checked: concurrent guesses each take
      // their own slot, so no more than `failures` passwords are verified per window
      // (checking first and counting after let a parallel burst through unchecked).
      const attempt = await store.hit(limiterKey, windowMs);
      const row = await repo.findUserByEmailIndex(db, emailIndexes(input.email));
      if (attempt.count > failures) {
        await audit(db, ctx, { action: 'login.refused', subjectType: 'user', subjectId: row?.id ?? null, details: { reason: 'locked' } });
        throw new AppError('too_many_login_failures', {
          detail: 'Too many failed sign-ins for this account.',
          headers: { 'retry-after': String(Math.max(1, Math.ceil(attempt.resetMs / 1000))) },
        });
      }
      const ok = await verifyPassword(row?.password_hash ?? (await dummyHash()), input.password);
      if (!row || !ok || row.status !== 'active') {
        const reason = !row ? 'unknown_email' : !ok ? 'bad_password' : `user_${row.status}`;
        await audit(db, ctx, {
          action: 'login.failed',
          subjectType: 'user',
          subjectId: row?.id ?? null,
          details: { reason, failures_in_window: attempt.count },
        });
        throw new AppError('invalid_credentials');
      }
      await store.reset(limiterKey);
      const now = clock();
      return db.transaction().execute(async (trx) => {
        const sessionId = randomUUID();
        await repo.insertSession(trx, {
          id: sessionId,
          user_id: row.id,
          expires_at: new Date(now.getTime() + deps.refreshTokenExpireDays * 86_400_000),
        });
        await audit(trx, { ...ctx, actorId: row.id }, { action: 'login.succeeded', subjectType: 'user', subjectId: row.id, details: { session_id: sessionId } });
        return issueTokens(trx, sessionId, row.id, row.role, now);
      });
    },

    /**
     * Rotates a refresh token. Presenting one that was already rotated is treated as
     * theft: the whole session (every token descended from the same sign-in) is revoked.
     */
    async refresh(token: string, ctx: ActorContext): Promise<TokenPair> {
      const now = clock();
      const outcome = await db.transaction().execute(async (trx) => {
        const state = await repo.lockRefreshToken(trx, hashRefreshToken(token));
        if (!state) return { error: 'unknown' as const };
        if (state.used_at !== null) {
          const revoked = await repo.revokeSession(trx, state.session_id, 'refresh_token_reuse', now);
          await audit(trx, { ...ctx, actorId: state.user_id }, {
            action: 'session.revoked',
            subjectType: 'session',
            subjectId: state.session_id,
            details: { reason: 'refresh_token_reuse', already_revoked: !revoked },
          });
          return { error: 'reused' as const };
        }
        if (state.session_revoked_at !== null || state.expires_at <= now || state.session_expires_at <= now || state.user_status !== 'active') {
          return { error: 'inactive' as const };
        }
        await repo.markRefreshTokenUsed(trx, state.token_hash, now);
        return { tokens: await issueTokens(trx, state.session_id, state.user_id, state.role, now) };
      });
      if ('error' in outcome) {
        deps.logger.info({ reason: outcome.error }, 'refresh token refused');
        throw new AppError('invalid_refresh_token');
      }
      return outcome.tokens;
    },

    async logout(principal: Principal, ctx: ActorContext): Promise<void> {
      await db.transaction().execute(async (trx) => {
        await repo.revokeSession(trx, principal.sessionId, 'logout', clock());
        await audit(trx, ctx, { action: 'session.revoked', subjectType: 'session', subjectId: principal.sessionId, details: { reason: 'logout' } });
      });
    },

    /** The platform's Authenticator: a valid signature is not enough; the session and user must be live. */
    authenticator(): Authenticator {
      return {
        authenticate: async (token) => {
          const now = clock();
          const claims = await signer.verifyAccess(token, now);
          if (!claims) return null;
          const state = await repo.findPrincipalState(db, claims.sessionId, claims.userId);
          if (!state || state.user_status !== 'active' || state.revoked_at !== null || state.expires_at <= now) return null;
          // The role comes from the database, so a role change applies at once.
          return { userId: claims.userId, sessionId: claims.sessionId, role: state.role };
        },
      };
    },

    async getUser(id: string): Promise<User> {
      const row = await repo.findUserById(db, id);
      if (!row || row.status === 'deleted') throw new AppError('user_not_found');
      return toUser(row);
    },

    async listUsers(limit: number, startingAfter: string | undefined): Promise<{ data: User[]; hasMore: boolean }> {
      if (startingAfter !== undefined && !(await repo.findUserById(db, startingAfter))) {
        throw new AppError('validation_failed', {
          detail: 'starting_after does not name a user.',
          errors: [{ pointer: '#/starting_after', location: 'query', detail: 'unknown user id' }],
        });
      }
      const rows = await repo.listUsers(db, limit + 1, startingAfter);
      return { data: rows.slice(0, limit).map(toUser), hasMore: rows.length > limit };
    },

    /** Role change or status change (disable / re-enable / delete). Disabling revokes every session. */
    async updateUser(id: string, patch: { role?: Role; status?: UserStatus }, ctx: ActorContext): Promise<User> {
      const now = clock();
      return db.transaction().execute(async (trx) => {
        const admins = await repo.lockActiveAdminIds(trx);
        const current = await repo.lockUser(trx, id);
        if (!current || current.status === 'deleted') throw new AppError('user_not_found');
        const losesAdmin =
          current.role === 'admin' &&
          current.status === 'active' &&
          ((patch.role !== undefined && patch.role !== 'admin') || (patch.status !== undefined && patch.status !== 'active'));
        if (losesAdmin && admins.filter((a) => a !== id).length === 0) throw new AppError('last_admin');
        const changes: { role?: Role; status?: UserStatus } = {};
        if (patch.role !== undefined && patch.role !== current.role) changes.role = patch.role;
        if (patch.status !== undefined && patch.status !== current.status) changes.status = patch.status;
        if (Object.keys(changes).length === 0) return toUser(current);
        const row = await repo.updateUser(trx, id, changes, now);
        if (changes.role !== undefined) {
          await audit(trx, ctx, { action: 'user.role_changed', subjectType: 'user', subjectId: id, details: { from: current.role, to: changes.role } });
        }
        if (changes.status !== undefined) {
          if (changes.status !== 'active') await repo.revokeUserSessions(trx, id, 'user_disabled', now);
          await audit(trx, ctx, {
            action: changes.status === 'active' ? 'user.enabled' : changes.status === 'disabled' ? 'user.disabled' : 'user.deleted',
            subjectType: 'user',
            subjectId: id,
            details: { from: current.status, to: changes.status },
          });
        }
        return toUser(row);
      });
    },
  };
}
