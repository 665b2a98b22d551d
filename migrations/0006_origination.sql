-- Origination: versioned policies (JDM decision graphs), applications with their
-- personal data encrypted, immutable decision records (automated, shadow, review) and
-- the link from an accepted offer to the loan it booked.
--
-- An application's decision facts (`input`, no personal data) are stored as recorded,
-- with their hash; every decision names the policy, scorecard and pricing versions it
-- ran on and stores its stage results, so `POST /v1/applications/{id}/replay` re-runs it
-- on exactly those. Decisions and policy versions are immutable (triggers).

CREATE TABLE policy_versions (
  id            uuid        PRIMARY KEY,
  name          text        NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
  version       integer     NOT NULL CHECK (version >= 1),
  description   text        NOT NULL DEFAULT '',
  content       jsonb       NOT NULL,
  content_hash  text        NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  created_by    uuid,
  UNIQUE (name, version)
);

-- Which policy version decides (champion) and which runs in shadow beside it (challenger).
CREATE TABLE policy_assignments (
  role          text        PRIMARY KEY CHECK (role IN ('champion', 'challenger')),
  policy_id     uuid        NOT NULL REFERENCES policy_versions (id),
  assigned_at   timestamptz NOT NULL DEFAULT now(),
  assigned_by   uuid
);

CREATE TABLE applications (
  id                uuid        PRIMARY KEY,
  -- The applicant's user (a borrower); null when staff applied for someone not yet registered.
  borrower_id       uuid,
  submitted_by      uuid        NOT NULL,
  channel           text        NOT NULL CHECK (channel IN ('v1', 'loan_apply')),
  -- Personal data: AES-256-GCM (platform field encryption), bound to this row and column.
  applicant_name    text        NOT NULL,
  email             text,
  national_id       text,
  date_of_birth     text,
  -- Blind index (HMAC) of the applicant's identity, for repeat applicants and the velocity rule.
  applicant_index   text        NOT NULL,
  input             jsonb       NOT NULL,
  input_hash        text        NOT NULL,
  product_id        uuid,
  currency          text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  amount            bigint      NOT NULL CHECK (amount > 0),
  -- decided (automated outcome stands), in_review (referred, or awaiting a second underwriter),
  -- accepted (booked as a loan)
  status            text        NOT NULL CHECK (status IN ('decided', 'in_review', 'accepted')),
  outcome           text        NOT NULL CHECK (outcome IN ('approved', 'declined', 'referred', 'counter_offer')),
  decision_id       uuid        NOT NULL,
  loan_id           uuid        UNIQUE,
  created_at        timestamptz NOT NULL,
  updated_at        timestamptz NOT NULL,
  CHECK ((status = 'accepted') = (loan_id IS NOT NULL))
);
CREATE INDEX applications_applicant ON applications (applicant_index, created_at);
CREATE INDEX applications_borrower ON applications (borrower_id, created_at DESC, id DESC);
CREATE INDEX applications_created ON applications (created_at DESC, id DESC);
CREATE INDEX applications_review_queue ON applications (created_at, id) WHERE status = 'in_review';

CREATE TABLE application_decisions (
  id                 uuid        PRIMARY KEY,
  application_id     uuid        NOT NULL REFERENCES applications (id),
  -- automated: the champion's decision; shadow: the challenger's, recorded beside it;
  -- review: an underwriter's decision on a referred or overridden application.
  kind               text        NOT NULL CHECK (kind IN ('automated', 'shadow', 'review')),
  policy_id          uuid        REFERENCES policy_versions (id),
  scorecard_version  text,
  pricing_version    text,
  input_hash         text        NOT NULL,
  outcome            text        NOT NULL CHECK (outcome IN ('approved', 'declined', 'referred', 'counter_offer')),
  result             jsonb       NOT NULL,
  result_hash        text        NOT NULL,
  timings            jsonb       NOT NULL DEFAULT '{}'::jsonb,
  decided_at         timestamptz NOT NULL,
  decided_by         uuid,
  note               text
);
CREATE INDEX application_decisions_application ON application_decisions (application_id, decided_at);
CREATE INDEX application_decisions_policy ON application_decisions (policy_id, kind);

CREATE FUNCTION origination_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% is immutable: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER application_decisions_immutable BEFORE UPDATE OR DELETE ON application_decisions
  FOR EACH ROW EXECUTE FUNCTION origination_refuse_change();
CREATE TRIGGER application_decisions_no_truncate BEFORE TRUNCATE ON application_decisions
  FOR EACH STATEMENT EXECUTE FUNCTION origination_refuse_change();
CREATE TRIGGER policy_versions_immutable BEFORE UPDATE OR DELETE ON policy_versions
  FOR EACH ROW EXECUTE FUNCTION origination_refuse_change();

-- The underwriters' narrative (external LLM), written after the decision commits. It never
-- changes a decision; it is kept apart from the immutable decision record.
CREATE TABLE application_narratives (
  application_id  uuid        PRIMARY KEY REFERENCES applications (id),
  decision_id     uuid        NOT NULL REFERENCES application_decisions (id),
  status          text        NOT NULL CHECK (status IN ('written', 'unavailable', 'skipped')),
  provider        text,
  text            text,
  detail          text,
  created_at      timestamptz NOT NULL
);
