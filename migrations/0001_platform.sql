-- Platform tables: idempotency keys and the append-only, hash-chained audit log.

CREATE TABLE idempotency_keys (
  scope            text        NOT NULL,                -- the caller: 'user:<uuid>' or 'anon:<ip>'
  key              text        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
  method           text        NOT NULL,
  route            text        NOT NULL,
  request_hash     text        NOT NULL,                -- sha256 of method, route, params and canonical body
  state            text        NOT NULL CHECK (state IN ('in_flight', 'completed')),
  locked_until     timestamptz NOT NULL,                -- an in_flight claim older than this was abandoned
  response_status  integer,
  response_headers jsonb,
  response_body    text,
  created_at       timestamptz NOT NULL DEFAULT now(),
  expires_at       timestamptz NOT NULL,
  PRIMARY KEY (scope, key),
  CHECK (state = 'in_flight' OR response_status IS NOT NULL)
);
CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at);

CREATE TABLE audit_log (
  id           bigint      PRIMARY KEY,                  -- gap-free: assigned under the chain lock
  occurred_at  timestamptz NOT NULL,
  actor_id     uuid,
  action       text        NOT NULL,
  subject_type text,
  subject_id   text,
  ip           text,
  request_id   text,
  details      jsonb       NOT NULL DEFAULT '{}'::jsonb,
  prev_hash    text        NOT NULL,
  hash         text        NOT NULL UNIQUE
);
CREATE INDEX audit_log_subject ON audit_log (subject_type, subject_id);
CREATE INDEX audit_log_actor ON audit_log (actor_id);

CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_log_no_update_delete
  BEFORE UPDATE OR DELETE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();

CREATE TRIGGER audit_log_no_truncate
  BEFORE TRUNCATE ON audit_log
  FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();
