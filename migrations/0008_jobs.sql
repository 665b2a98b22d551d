-- Background jobs (src/platform/jobs.ts): one row per job, what the API shows at
-- GET /v1/jobs/{id}. pg-boss (its own schema, `pgboss`, installed and upgraded by pg-boss
-- at start) queues, claims and retries the work under the same id; this table is the
-- readable record of it: state, progress, attempts, the last error and the result. A job
-- is inserted here and enqueued in pg-boss in one transaction, and each attempt's outcome
-- is written here and in pg-boss in one transaction, so the two never disagree about a
-- finished attempt.

CREATE TABLE jobs (
  id           uuid        PRIMARY KEY,                                  -- also the pg-boss job id
  kind         text        NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_.-]*$' AND length(kind) <= 100), -- 'forecast.project'; the pg-boss queue name
  state        text        NOT NULL DEFAULT 'queued'
                           CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
  progress     numeric(5,4) NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 1), -- fraction done, as reported by the handler
  payload      jsonb       NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
  result       jsonb,                                                    -- the handler's return value, once succeeded
  error        text,                                                     -- the last failure, as shown to the caller: a message, never a stack
  attempts     integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),     -- attempts started so far
  max_attempts integer     NOT NULL CHECK (max_attempts >= 1),
  created_by   uuid,                                                     -- the user who asked for it; null for system jobs
  created_at   timestamptz NOT NULL DEFAULT now(),
  started_at   timestamptz,                                              -- when the first attempt started
  finished_at  timestamptz,
  updated_at   timestamptz NOT NULL DEFAULT now(),
  CHECK ((state IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
  CHECK (result IS NULL OR state = 'succeeded'),
  CHECK (attempts <= max_attempts)
);
-- A user's jobs, newest first.
CREATE INDEX jobs_created_by ON jobs (created_by, created_at DESC) WHERE created_by IS NOT NULL;
-- Unfinished jobs of a kind (operations, and the sweep that reconciles jobs pg-boss expired).
CREATE INDEX jobs_unfinished ON jobs (kind, created_at) WHERE state IN ('queued', 'running');
