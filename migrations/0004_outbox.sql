-- The transactional outbox. A change and the events that announce it are inserted in
-- the same transaction (appendOutbox joins the caller's), so no event is ever sent for
-- a change that rolled back and no committed change loses its event. A relay
-- (src/platform/outbox.ts) claims unpublished rows in id order with
-- FOR UPDATE SKIP LOCKED, publishes them and sets published_at in that transaction:
-- delivery is at least once (a crash between publish and commit sends again), so
-- consumers deduplicate on event_id.

CREATE TABLE outbox_events (
  id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- publication order
  event_id       uuid        NOT NULL UNIQUE,                          -- what consumers deduplicate on
  topic          text        NOT NULL CHECK (topic ~ '^[a-z][a-z0-9_.]*$'), -- 'loan.disbursed', 'payment.posted'
  aggregate_type text        NOT NULL,
  aggregate_id   text        NOT NULL,
  payload        jsonb       NOT NULL CHECK (jsonb_typeof(payload) = 'object'), -- canonical JSON: bigint as a decimal string
  occurred_at    timestamptz NOT NULL DEFAULT now(),
  published_at   timestamptz,                                          -- null until the relay has published it
  attempts       integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0), -- failed publish attempts
  last_error     text                                                  -- the last failure's message (≤ 500 chars)
);
-- The relay's claim: the oldest unpublished rows. Stays small while the relay keeps up.
CREATE INDEX outbox_events_unpublished ON outbox_events (id) WHERE published_at IS NULL;
-- The events of one aggregate, in order.
CREATE INDEX outbox_events_aggregate ON outbox_events (aggregate_type, aggregate_id, id);
