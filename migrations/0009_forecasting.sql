-- Forecasting: saved scenarios (named assumption sets) and the forecast history (who
-- projected what, when, on which inputs, with what result). Projections are analytics on
-- floating point, not money of record: amounts here are JSON numbers, never posted.

CREATE TABLE forecast_scenarios (
  id           uuid        PRIMARY KEY,
  name         text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  description  text        NOT NULL DEFAULT '',
  tags         text[]      NOT NULL DEFAULT '{}',
  assumptions  jsonb       NOT NULL,
  version      integer     NOT NULL DEFAULT 1,
  created_by   uuid,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX forecast_scenarios_name ON forecast_scenarios (lower(name));
CREATE INDEX forecast_scenarios_tags ON forecast_scenarios USING gin (tags);

CREATE TABLE forecasts (
  id           uuid        PRIMARY KEY,
  -- calculate (one loan), batch, forecast (pool or loans), book (the live loan book)
  kind         text        NOT NULL CHECK (kind IN ('calculate', 'batch', 'forecast', 'book')),
  status       text        NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
  created_by   uuid,
  created_at   timestamptz NOT NULL DEFAULT now(),
  finished_at  timestamptz,
  inputs_hash  text        NOT NULL,
  -- What was projected, without the loan tape itself: sizes, assumptions, options.
  inputs       jsonb       NOT NULL,
  scenario_id  uuid,
  job_id       uuid,
  loans        integer     NOT NULL,
  months       integer,
  summary      jsonb,
  -- Periods (and Monte Carlo distributions) of forecasts run as jobs; inline answers are not kept.
  result       jsonb,
  error        text
);
CREATE INDEX forecasts_created ON forecasts (created_at DESC, id DESC);
CREATE INDEX forecasts_creator ON forecasts (created_by, created_at DESC);
