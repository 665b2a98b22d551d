-- Users, sessions (one per login; the refresh-token family) and refresh tokens.
-- Email is personal data: stored encrypted (AES-256-GCM, platform field encryption)
-- with an HMAC blind index for login lookups and uniqueness.

CREATE TABLE users (
  id              uuid        PRIMARY KEY,
  email_encrypted text        NOT NULL,
  email_index     text        NOT NULL UNIQUE,
  password_hash   text        NOT NULL,
  role            text        NOT NULL
                  CHECK (role IN ('admin', 'underwriter', 'servicer', 'analyst', 'auditor', 'borrower')),
  status          text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled', 'deleted')),
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX users_created_at_id ON users (created_at, id);

CREATE TABLE sessions (
  id          uuid        PRIMARY KEY,
  user_id     uuid        NOT NULL REFERENCES users (id),
  created_at  timestamptz NOT NULL DEFAULT now(),
  expires_at  timestamptz NOT NULL,
  revoked_at  timestamptz,
  revoked_why text CHECK (revoked_why IN ('logout', 'refresh_token_reuse', 'user_disabled', 'role_changed', 'password_changed'))
);
CREATE INDEX sessions_user_id ON sessions (user_id) WHERE revoked_at IS NULL;

CREATE TABLE refresh_tokens (
  token_hash  text        PRIMARY KEY,                   -- sha256 of the opaque token; the token itself is never stored
  session_id  uuid        NOT NULL REFERENCES sessions (id),
  issued_at   timestamptz NOT NULL DEFAULT now(),
  expires_at  timestamptz NOT NULL,
  used_at     timestamptz                                -- set when rotated; presenting it again revokes the session
);
CREATE INDEX refresh_tokens_session_id ON refresh_tokens (session_id);
