-- Servicing: versioned loan products, loan accounts, their transactions (partitioned by
-- month of value date), replay checkpoints, the installation's business date and the
-- end-of-day runs.
--
-- A loan row holds its current state (the fold of its transactions, loan-state.ts) and
-- the ledger vector already posted for it (`gl`): a command posts the difference between
-- the new state's vector and `gl` in the same transaction, so the loan subledger and the
-- general ledger cannot drift. Commands on one loan serialize on the loan row
-- (SELECT … FOR UPDATE).

CREATE TABLE loan_products (
  id          uuid        NOT NULL,
  version     integer     NOT NULL CHECK (version >= 1),
  code        text        NOT NULL CHECK (code ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
  name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  currency    text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  terms       jsonb       NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  created_by  uuid,
  PRIMARY KEY (id, version)
);
-- One product per code; versions share it.
CREATE UNIQUE INDEX loan_products_code ON loan_products (code, version);
CREATE INDEX loan_products_code_id ON loan_products (code, id);

CREATE TABLE loans (
  id                  uuid        PRIMARY KEY,
  borrower_id         uuid        NOT NULL,
  product_id          uuid        NOT NULL,
  product_version     integer     NOT NULL,
  status              text        NOT NULL CHECK (status IN ('pending_disbursement', 'active', 'paid_off', 'overpaid', 'charged_off', 'written_off', 'cancelled')),
  currency            text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  principal           bigint      NOT NULL CHECK (principal > 0),
  terms               jsonb       NOT NULL,   -- the product version's terms plus this loan's amount, rate and term
  state               jsonb       NOT NULL,   -- the fold of the transactions (loan-state.ts)
  gl                  jsonb       NOT NULL DEFAULT '{}'::jsonb, -- the ledger vector posted for this loan
  last_seq            integer     NOT NULL DEFAULT 0,
  as_of               date,                   -- the date the state has been advanced to
  principal_outstanding bigint    NOT NULL DEFAULT 0 CHECK (principal_outstanding >= 0),
  days_past_due       integer     NOT NULL DEFAULT 0 CHECK (days_past_due >= 0),
  delinquency_bucket  text        NOT NULL DEFAULT 'current',
  next_due_date       date,
  closed_through      date,                   -- the last business date end of day processed for this loan
  booked_on           date        NOT NULL,   -- the business date it was booked: nothing is dated before it
  version             integer     NOT NULL DEFAULT 0,  -- bumped by every change
  created_at          timestamptz NOT NULL DEFAULT now(),
  updated_at          timestamptz NOT NULL DEFAULT now(),
  created_by          uuid,
  FOREIGN KEY (product_id, product_version) REFERENCES loan_products (id, version)
);
CREATE INDEX loans_borrower ON loans (borrower_id, created_at, id);
CREATE INDEX loans_created ON loans (created_at, id);
-- End of day walks the open book in id order, skipping loans it already closed.
CREATE INDEX loans_eod ON loans (id) WHERE status = 'active';

-- Every money movement on a loan. Partitioned by month of value date; partitions are
-- created ahead by loan_transactions_ensure_partitions (end of day keeps three months
-- ahead), and anything outside them lands in the default partition.
CREATE TABLE loan_transactions (
  id              uuid        NOT NULL,
  loan_id         uuid        NOT NULL,
  seq             integer     NOT NULL CHECK (seq >= 1),  -- per loan, under the loan's row lock
  type            text        NOT NULL CHECK (type IN ('disbursement', 'repayment', 'fee', 'late_fee', 'charge_off', 'write_off', 'recovery')),
  value_date      date        NOT NULL,
  amount          bigint      NOT NULL CHECK (amount >= 0),
  currency        text        NOT NULL,
  details         jsonb       NOT NULL DEFAULT '{}'::jsonb,   -- per type: overpayment mode, installment, policy
  effect          jsonb       NOT NULL DEFAULT '{}'::jsonb,   -- what it did when posted (allocation and explanation)
  reversed_at     timestamptz,
  reversal_reason text,
  journal_entry_id uuid,
  idempotency_key text,
  created_at      timestamptz NOT NULL DEFAULT now(),
  created_by      uuid,
  PRIMARY KEY (loan_id, value_date, seq)
) PARTITION BY RANGE (value_date);
CREATE TABLE loan_transactions_default PARTITION OF loan_transactions DEFAULT;
CREATE INDEX loan_transactions_id ON loan_transactions (loan_id, id);

CREATE FUNCTION loan_transactions_ensure_partitions(first_month date, months integer) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  created integer := 0;
  m date;
  name text;
BEGIN
  FOR i IN 0 .. months - 1 LOOP
    m := (date_trunc('month', first_month) + make_interval(months => i))::date;
    name := 'loan_transactions_' || to_char(m, 'YYYY_MM');
    IF to_regclass(name) IS NULL THEN
      -- Refuses (and the caller keeps the default partition) if the default already holds rows of that month.
      EXECUTE format('CREATE TABLE %I PARTITION OF loan_transactions FOR VALUES FROM (%L) TO (%L)', name, m, (m + interval '1 month')::date);
      created := created + 1;
    END IF;
  END LOOP;
  RETURN created;
END;
$$;
SELECT loan_transactions_ensure_partitions('2026-01-01', 24);

-- The service-level idempotency of money movements: one transaction per (loan, key),
-- whatever happens to the HTTP layer's stored response.
CREATE TABLE loan_command_keys (
  loan_id         uuid    NOT NULL,
  idempotency_key text    NOT NULL,
  request_hash    text    NOT NULL,
  transaction_id  uuid,
  created_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (loan_id, idempotency_key)
);

-- Replay checkpoints: the state right after a transaction. A backdated change replays
-- from the latest checkpoint before its value date; later checkpoints are dropped.
CREATE TABLE loan_checkpoints (
  loan_id    uuid    NOT NULL,
  seq        integer NOT NULL,
  value_date date    NOT NULL,
  state      jsonb   NOT NULL,
  PRIMARY KEY (loan_id, value_date, seq)
);

-- The installation's business date: one row.
CREATE TABLE business_date (
  id            boolean PRIMARY KEY DEFAULT true CHECK (id),
  today         date    NOT NULL,
  updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE eod_runs (
  id              uuid        PRIMARY KEY,
  business_date   date        NOT NULL UNIQUE,   -- one run per date; a crashed run is resumed, not repeated
  status          text        NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
  loans_total     integer     NOT NULL DEFAULT 0,
  loans_processed integer     NOT NULL DEFAULT 0,
  chunks          integer     NOT NULL DEFAULT 0,
  accrued         jsonb       NOT NULL DEFAULT '{}'::jsonb,  -- interest recognized per currency
  late_fees       integer     NOT NULL DEFAULT 0,
  charge_offs     integer     NOT NULL DEFAULT 0,
  newly_delinquent integer    NOT NULL DEFAULT 0,
  reconciliation  jsonb,
  error           text,
  started_at      timestamptz NOT NULL DEFAULT now(),
  finished_at     timestamptz,
  started_by      uuid
);
