/** Identity: users, roles, sessions. Types and the part's problem catalogue. */
import { defineProblems } from '../platform/errors.js';

export const ROLES = ['admin', 'underwriter', 'servicer', 'analyst', 'auditor', 'borrower'] as const;
export type Role = (typeof ROLES)[number];

export const USER_STATUSES = ['active', 'disabled', 'deleted'] as const;
export type UserStatus = (typeof USER_STATUSES)[number];

export interface User {
  readonly id: string;
  readonly email: string;
  readonly role: Role;
  readonly status: UserStatus;
  readonly createdAt: Date;
  readonly updatedAt: Date;
}

export interface TokenPair {
  readonly accessToken: string;
  readonly accessExpiresIn: number;
  readonly refreshToken: string;
  readonly refreshExpiresIn: number;
}

export const IdentityProblem = defineProblems({
  invalid_credentials: {
    status: 401,
    title: 'Invalid credentials',
    description: 'The email and password do not match an active account.',
  },
  invalid_refresh_token: {
    status: 401,
    title: 'Invalid refresh token',
    description: 'The refresh token is unknown, expired, already used or revoked. Sign in again.',
  },
  too_many_login_failures: {
    status: 429,
    title: 'Too many failed sign-ins',
    description: 'Sign-in to this account is paused after repeated failures. Retry after the Retry-After interval.',
  },
  user_not_found: { status: 404, title: 'User not found', description: 'No user has this id.' },
  email_taken: { status: 409, title: 'Email already registered', description: 'Another user has this email address.' },
  last_admin: {
    status: 409,
    title: 'Last active admin',
    description: 'This change would leave no active admin. Make another user admin first.',
  },
  weak_password: {
    status: 400,
    title: 'Password too weak',
    description: 'Passwords need at least 12 characters and may not contain the email address.',
  },
});

/** Lower-cased, trimmed: the form the blind index is computed over. */
export function normaliseEmail(email: string): string {
  return email.trim().toLowerCase();
}

/** Returns why a password is unacceptable, or undefined. */
export function passwordWeakness(password: string, email: string): string | undefined {
  if (password.length < 12) return 'must have at least 12 characters';
  if (password.length > 256) return 'must have at most 256 characters';
  const local = normaliseEmail(email).split('@')[0] ?? '';
  if (local.length >= 4 && password.toLowerCase().includes(local)) return 'may not contain the email address';
  if (new Set(password).size < 5) return 'has too few distinct characters';
  return undefined;
}
