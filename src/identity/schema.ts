/** Kysely table types for migrations/0002_identity.sql. */
import type { ColumnType, Generated } from 'kysely';
import type { Role, UserStatus } from './model.js';

export interface UsersTable {
  id: string;
  email_encrypted: string;
  email_index: string;
  password_hash: string;
  role: Role;
  status: Generated<UserStatus>;
  created_at: Generated<Date>;
  updated_at: Generated<Date>;
}

export type RevokedWhy = 'logout' | 'refresh_token_reuse' | 'user_disabled' | 'role_changed' | 'password_changed';

export interface SessionsTable {
  id: string;
  user_id: string;
  created_at: Generated<Date>;
  expires_at: Date;
  revoked_at: Date | null;
  revoked_why: RevokedWhy | null;
}

export interface RefreshTokensTable {
  token_hash: string;
  session_id: string;
  issued_at: ColumnType<Date, Date | undefined, never>;
  expires_at: Date;
  used_at: Date | null;
}

export interface IdentityTables {
  users: UsersTable;
  sessions: SessionsTable;
  refresh_tokens: RefreshTokensTable;
}
