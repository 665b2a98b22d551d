/** Identity I/O: Kysely queries only, no decisions. Every function takes the executor. */
import { sql, type Kysely, type Transaction } from 'kysely';
import type { PlatformTables } from '../platform/schema.js';
import type { Role, UserStatus } from './model.js';
import type { IdentityTables, RevokedWhy } from './schema.js';

export type IdentityDb = IdentityTables & PlatformTables;
/** A database or a transaction (Transaction extends Kysely). */
export type Executor = Kysely<IdentityDb>;

export interface UserRow {
  id: string;
  email_encrypted: string;
  email_index: string;
  password_hash: string;
  role: Role;
  status: UserStatus;
  created_at: Date;
  updated_at: Date;
}

export async function insertUser(
  db: Executor,
  row: { id: string; email_encrypted: string; email_index: string; password_hash: string; role: Role },
): Promise<UserRow> {
  return db.insertInto('users').values(row).returningAll().executeTakeFirstOrThrow();
}

export function findUserById(db: Executor, id: string): Promise<UserRow | undefined> {
  return db.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst();
}

/** By the email's blind index under any configured key (current first; see FieldCipher.blindIndexes). */
export function findUserByEmailIndex(db: Executor, emailIndexes: readonly string[]): Promise<UserRow | undefined> {
  return db.selectFrom('users').selectAll().where('email_index', 'in', emailIndexes).executeTakeFirst();
}

/** Locks the row for the rest of the transaction. */
export function lockUser(db: Transaction<IdentityDb>, id: string): Promise<UserRow | undefined> {
  return db.selectFrom('users').selectAll().where('id', '=', id).forUpdate().executeTakeFirst();
}

/**
 * A page in (created_at, id) order after the user `afterId`. The cursor's position is
 * read in SQL: timestamptz has microseconds and a JavaScript Date only milliseconds, so
 * a round-tripped created_at would repeat or skip rows.
 */
export async function listUsers(db: Executor, limit: number, afterId?: string): Promise<UserRow[]> {
  let q = db.selectFrom('users').selectAll().where('status', '!=', 'deleted');
  if (afterId !== undefined) {
    q = q.where(sql<boolean>`(created_at, id) > (select c.created_at, c.id from users c where c.id = ${afterId})`);
  }
  return q.orderBy('created_at').orderBy('id').limit(limit).execute();
}

export async function updateUser(
  db: Executor,
  id: string,
  patch: { role?: Role; status?: UserStatus; password_hash?: string },
  now: Date,
): Promise<UserRow> {
  return db.updateTable('users').set({ ...patch, updated_at: now }).where('id', '=', id).returningAll().executeTakeFirstOrThrow();
}

/** Locks every active admin row, so two concurrent demotions cannot both pass the last-admin check. */
export async function lockActiveAdminIds(db: Transaction<IdentityDb>): Promise<string[]> {
  const rows = await db
    .selectFrom('users')
    .select('id')
    .where('role', '=', 'admin')
    .where('status', '=', 'active')
    .orderBy('id')
    .forUpdate()
    .execute();
  return rows.map((r) => r.id);
}

export async function countUsers(db: Executor): Promise<number> {
  const r = await db.selectFrom('users').select((eb) => eb.fn.countAll<bigint>().as('n')).executeTakeFirstOrThrow();
  return Number(r.n);
}

export async function insertSession(db: Executor, row: { id: string; user_id: string; expires_at: Date }): Promise<void> {
  await db.insertInto('sessions').values({ ...row, revoked_at: null, revoked_why: null }).execute();
}

export async function revokeSession(db: Executor, sessionId: string, why: RevokedWhy, now: Date): Promise<boolean> {
  const r = await db
    .updateTable('sessions')
    .set({ revoked_at: now, revoked_why: why })
    .where('id', '=', sessionId)
    .where('revoked_at', 'is', null)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) > 0;
}

export async function revokeUserSessions(db: Executor, userId: string, why: RevokedWhy, now: Date): Promise<number> {
  const r = await db
    .updateTable('sessions')
    .set({ revoked_at: now, revoked_why: why })
    .where('user_id', '=', userId)
    .where('revoked_at', 'is', null)
    .executeTakeFirst();
  return Number(r.numUpdatedRows);
}

export async function insertRefreshToken(
  db: Executor,
  row: { token_hash: string; session_id: string; issued_at: Date; expires_at: Date },
): Promise<void> {
  await db.insertInto('refresh_tokens').values({ ...row, used_at: null }).execute();
}

export interface RefreshTokenState {
  token_hash: string;
  session_id: string;
  expires_at: Date;
  used_at: Date | null;
  session_revoked_at: Date | null;
  session_expires_at: Date;
  user_id: string;
  user_status: UserStatus;
  role: Role;
}

/** The token, its session and user, with the token row locked against a concurrent rotation. */
export function lockRefreshToken(db: Transaction<IdentityDb>, tokenHash: string): Promise<RefreshTokenState | undefined> {
  return db
    .selectFrom('refresh_tokens as t')
    .innerJoin('sessions as s', 's.id', 't.session_id')
    .innerJoin('users as u', 'u.id', 's.user_id')
    .select([
      't.token_hash',
      't.session_id',
      't.expires_at',
      't.used_at',
      's.revoked_at as session_revoked_at',
      's.expires_at as session_expires_at',
      'u.id as user_id',
      'u.status as user_status',
      'u.role',
    ])
    .where('t.token_hash', '=', tokenHash)
    .forUpdate('t')
    .executeTakeFirst();
}

export async function markRefreshTokenUsed(db: Executor, tokenHash: string, now: Date): Promise<void> {
  await db.updateTable('refresh_tokens').set({ used_at: now }).where('token_hash', '=', tokenHash).execute();
}

export interface PrincipalState {
  role: Role;
  user_status: UserStatus;
  revoked_at: Date | null;
  expires_at: Date;
}

export function findPrincipalState(db: Executor, sessionId: string, userId: string): Promise<PrincipalState | undefined> {
  return db
    .selectFrom('sessions as s')
    .innerJoin('users as u', 'u.id', 's.user_id')
    .select(['u.role', 'u.status as user_status', 's.revoked_at', 's.expires_at'])
    .where('s.id', '=', sessionId)
    .where('u.id', '=', userId)
    .executeTakeFirst();
}
