-- The general ledger: chart of accounts, journal entries and their lines.
-- Amounts are signed bigint minor units: debits positive, credits negative, so an
-- entry balances when its lines sum to zero in every currency. The database itself
-- refuses an unbalanced entry (deferred constraint triggers, checked at commit) and
-- any change to a posted entry (corrections are reversing entries).

CREATE TABLE ledger_accounts (
  code           text        PRIMARY KEY CHECK (code ~ '^[a-z][a-z0-9_]*$'),
  number         text        NOT NULL UNIQUE,
  name           text        NOT NULL,
  type           text        NOT NULL CHECK (type IN ('asset', 'liability', 'equity', 'income', 'expense')),
  normal_balance text        NOT NULL CHECK (normal_balance IN ('debit', 'credit')),
  created_at     timestamptz NOT NULL DEFAULT now()
);

INSERT INTO ledger_accounts (code, number, name, type, normal_balance) VALUES
  ('cash_clearing',              '1000', 'Cash and clearing',                   'asset',     'debit'),
  ('loans_receivable_principal', '1100', 'Loans receivable: principal',         'asset',     'debit'),
  ('interest_receivable',        '1110', 'Interest receivable',                 'asset',     'debit'),
  ('fees_receivable',            '1120', 'Fees receivable',                     'asset',     'debit'),
  ('borrower_credit_balances',   '2100', 'Borrower credit balances',            'liability', 'credit'),
  ('suspense',                   '2900', 'Suspense',                            'liability', 'credit'),
  ('interest_income',            '4000', 'Interest income',                     'income',    'credit'),
  ('fee_income',                 '4100', 'Fee income',                          'income',    'credit'),
  ('recoveries',                 '4200', 'Recoveries on charged-off loans',     'income',    'credit'),
  ('charge_off_losses',          '5000', 'Charge-off losses',                   'expense',   'debit');

CREATE TABLE journal_entries (
  id               uuid        PRIMARY KEY,
  seq              bigint      GENERATED ALWAYS AS IDENTITY UNIQUE, -- posting order
  entry_date       date        NOT NULL,                    -- the business (value) date
  posted_at        timestamptz NOT NULL DEFAULT now(),
  description      text        NOT NULL CHECK (length(description) BETWEEN 1 AND 500),
  loan_id          uuid,                                    -- the loan the entry belongs to, if any
  source_type      text        NOT NULL CHECK (source_type ~ '^[a-z][a-z0-9_.]*$'),
  source_id        text,
  reverses_entry_id uuid       UNIQUE REFERENCES journal_entries (id),  -- at most one reversal per entry
  created_by       uuid
);
CREATE INDEX journal_entries_loan ON journal_entries (loan_id, entry_date, posted_at) WHERE loan_id IS NOT NULL;
CREATE INDEX journal_entries_date ON journal_entries (entry_date);
CREATE INDEX journal_entries_loan_seq ON journal_entries (loan_id, seq) WHERE loan_id IS NOT NULL;

CREATE TABLE journal_lines (
  entry_id     uuid    NOT NULL REFERENCES journal_entries (id),
  line_no      integer NOT NULL CHECK (line_no >= 1),
  account_code text    NOT NULL REFERENCES ledger_accounts (code),
  currency     text    NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  amount       bigint  NOT NULL CHECK (amount <> 0),        -- debit > 0, credit < 0
  PRIMARY KEY (entry_id, line_no)
);
CREATE INDEX journal_lines_account ON journal_lines (account_code, currency);

-- Balanced: at least two lines, and every currency sums to zero. Deferred to commit,
-- so the entry and its lines can be inserted in any order within one transaction.
CREATE FUNCTION journal_entry_check_balanced(entry uuid) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  line_count integer;
  unbalanced record;
BEGIN
  SELECT count(*) INTO line_count FROM journal_lines WHERE entry_id = entry;
  IF line_count < 2 THEN
    RAISE EXCEPTION 'journal entry % has % line(s); an entry needs at least two', entry, line_count
      USING ERRCODE = 'check_violation', CONSTRAINT = 'journal_entry_balanced';
  END IF;
  SELECT currency, sum(amount) AS total INTO unbalanced
    FROM journal_lines WHERE entry_id = entry GROUP BY currency HAVING sum(amount) <> 0 LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'journal entry % does not balance in %: debits and credits differ by %', entry, unbalanced.currency, unbalanced.total
      USING ERRCODE = 'check_violation', CONSTRAINT = 'journal_entry_balanced';
  END IF;
END;
$$;

CREATE FUNCTION journal_entries_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM journal_entry_check_balanced(NEW.id);
  RETURN NULL;
END;
$$;

CREATE FUNCTION journal_lines_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM journal_entries WHERE id = NEW.entry_id) THEN
    RETURN NULL; -- the foreign key reports it
  END IF;
  PERFORM journal_entry_check_balanced(NEW.entry_id);
  RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER journal_entries_balanced
  AFTER INSERT ON journal_entries DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION journal_entries_check();

CREATE CONSTRAINT TRIGGER journal_lines_balanced
  AFTER INSERT ON journal_lines DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION journal_lines_check();

-- Immutable: a posted entry is corrected by a reversing entry, never edited.
CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% is append-only: % refused; post a reversing entry instead', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER journal_entries_immutable BEFORE UPDATE OR DELETE ON journal_entries
  FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER journal_entries_no_truncate BEFORE TRUNCATE ON journal_entries
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER journal_lines_immutable BEFORE UPDATE OR DELETE ON journal_lines
  FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER journal_lines_no_truncate BEFORE TRUNCATE ON journal_lines
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
