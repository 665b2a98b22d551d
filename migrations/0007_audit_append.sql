-- Appending to the audit chain in one round trip. The chain lock is taken, the last row
-- read and the new row inserted inside one function call, so the lock is held from this
-- statement to the commit that follows it, instead of across three client round trips.
--
-- The hash is the same as before (src/platform/audit.ts auditRowHash): SHA-256 of
-- prev_hash, a newline and the canonical JSON of the row. The caller sends that canonical
-- JSON in two pieces, before and after the value of "id", which only the function knows;
-- the id is a JSON string of the decimal number, so nothing is escaped in SQL.
CREATE FUNCTION audit_log_append(
  p_occurred_at  timestamptz,
  p_actor_id     uuid,
  p_action       text,
  p_subject_type text,
  p_subject_id   text,
  p_ip           text,
  p_request_id   text,
  p_details      jsonb,
  p_json_before_id text,
  p_json_after_id  text
) RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  last_id   bigint;
  last_hash text;
  new_id    bigint;
  prev      text;
BEGIN
  -- The same advisory lock key as src/platform/audit.ts (0x4c424155, 'LBAU').
  PERFORM pg_advisory_xact_lock(1279410517);
  SELECT id, hash INTO last_id, last_hash FROM audit_log ORDER BY id DESC LIMIT 1;
  new_id := coalesce(last_id, 0) + 1;
  prev := coalesce(last_hash, repeat('0', 64));
  INSERT INTO audit_log (id, occurred_at, actor_id, action, subject_type, subject_id, ip, request_id, details, prev_hash, hash)
  VALUES (new_id, p_occurred_at, p_actor_id, p_action, p_subject_type, p_subject_id, p_ip, p_request_id, p_details, prev,
          encode(sha256(convert_to(prev || E'\n' || p_json_before_id || '"' || new_id::text || '"' || p_json_after_id, 'UTF8')), 'hex'));
  RETURN new_id;
END;
$$;
