-- The change log: every captured row change, durable and ordered.
--
-- A change is written by the capturing transaction with (txid, ord): its transaction and its position in
-- that transaction. It has no public id yet, because ids must follow commit order and a writer cannot know
-- its commit position without serializing all writers. The sequencer (0003) later numbers each committed
-- transaction in `commits`; a change's public id is then commits.first_id + ord, dense and increasing.

CREATE SCHEMA IF NOT EXISTS fluxbase_realtime;
REVOKE ALL ON SCHEMA fluxbase_realtime FROM PUBLIC;

CREATE TABLE fluxbase_realtime.change_log (
    txid        xid8    NOT NULL,
    ord         integer NOT NULL,
    -- Write order across all transactions (not commit order): orders transactions that the sequencer
    -- sees commit in the same pass, so a transaction that waited for another's row lock comes after it.
    seq         bigint  NOT NULL GENERATED ALWAYS AS IDENTITY,
    schema_name text    NOT NULL,
    table_name  text    NOT NULL,
    op          text    NOT NULL CHECK (op IN ('INSERT', 'UPDATE', 'DELETE')),
    record      jsonb,
    old_record  jsonb,
    PRIMARY KEY (txid, ord)
);

CREATE TABLE fluxbase_realtime.commits (
    first_id     bigint      PRIMARY KEY,
    txid         xid8        NOT NULL,
    change_count integer     NOT NULL CHECK (change_count > 0),
    committed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- One row: where the sequencer stopped. `horizon` is the snapshot of its last pass: every transaction
-- visible in it has been numbered (or wrote nothing to the log).
CREATE TABLE fluxbase_realtime.sequencer_state (
    singleton boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    next_id   bigint      NOT NULL,
    horizon   pg_snapshot NOT NULL
);
INSERT INTO fluxbase_realtime.sequencer_state (next_id, horizon) VALUES (1, pg_current_snapshot());

CREATE TABLE fluxbase_realtime.capture_config (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    notify_channel text    NOT NULL
);
