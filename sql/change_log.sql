-- The change log: every captured row change and every message sent from the database, durable and ordered.
--
-- A change is written by its own transaction with (txid, ord): its transaction and its position in that
-- transaction. It has no public id yet, because ids must follow commit order and a writer cannot know its
-- commit position without serializing all writers. The sequencer (sequencer.sql) later numbers each
-- committed transaction in `commits`; a change's public id is then commits.first_id + ord, dense and
-- increasing. Retention (replay_and_retention.sql) removes whole transactions from the front.

-- USAGE for every role: what each may call here is granted function by function (most are revoked
-- from PUBLIC), and no table here grants anything to anyone but its owner.
CREATE SCHEMA fluxbase_realtime;
REVOKE ALL ON SCHEMA fluxbase_realtime FROM PUBLIC;
GRANT USAGE ON SCHEMA fluxbase_realtime TO PUBLIC;

-- What a row holds, by op:
--   INSERT, UPDATE, DELETE  a table's row change (capture.sql, or logical_capture.sql's consumer): record
--                           is the new row, old_record the old one (NULL where the op has none).
--   TRUNCATE                one change per emptied table, no record (capture.sql).
--   BROADCAST               a message sent with realtime_broadcast() (broadcast.sql): schema_name is empty
--                           (no table has that name), table_name the channel's name after `broadcast:`,
--                           record the payload, old_record the event as a JSON string, so that the log's
--                           readers return it unchanged.
CREATE TABLE fluxbase_realtime.change_log (
    txid        xid8    NOT NULL,
    ord         integer NOT NULL,
    -- Write order across all transactions (not commit order): orders transactions that the sequencer
    -- sees commit in the same pass, so a transaction that waited for another's row lock comes after it.
    seq         bigint  NOT NULL GENERATED ALWAYS AS IDENTITY,
    schema_name text    NOT NULL,
    table_name  text    NOT NULL,
    op          text    NOT NULL CHECK (op IN ('INSERT', 'UPDATE', 'DELETE', 'BROADCAST', 'TRUNCATE')),
    record      jsonb,
    old_record  jsonb,
    -- Logical mode: the COMMIT time of the source transaction (from pgoutput's Begin) on its first change,
    -- NULL on the others and in trigger mode, for the feed's commit-to-send latency. The log's own
    -- transaction is the consumer's batch, which commits later, so commits.commit_timestamp cannot say.
    commit_timestamp timestamptz,
    PRIMARY KEY (txid, ord)
);

-- One row per numbered transaction: its changes have the ids first_id .. first_id + change_count - 1.
CREATE TABLE fluxbase_realtime.commits (
    first_id     bigint      PRIMARY KEY,
    txid         xid8        NOT NULL,
    change_count integer     NOT NULL CHECK (change_count > 0),
    committed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- The tables the transaction touched, as format('%I.%I', schema, table): a channel's replay skips
    -- other transactions without reading their rows. NULL (numbered before this column existed) means
    -- "unknown": those transactions are read.
    tables       text[],
    -- The transaction's COMMIT as PostgreSQL recorded it (track_commit_timestamp), for the feed's
    -- commit-to-send latency; committed_at is when a sequencer pass numbered it. NULL where the setting was
    -- off, and in logical mode, whose log transactions are the consumer's batches.
    commit_timestamp timestamptz
);

-- One row: where the sequencer stopped. `horizon` is the snapshot of its last pass: every transaction
-- visible in it has been numbered (or wrote nothing to the log).
CREATE TABLE fluxbase_realtime.sequencer_state (
    singleton boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    next_id   bigint      NOT NULL,
    horizon   pg_snapshot NOT NULL
);
INSERT INTO fluxbase_realtime.sequencer_state (next_id, horizon) VALUES (1, pg_current_snapshot());

-- One row: the channel the capture trigger notifies, written by install_capture_function (capture.sql).
CREATE TABLE fluxbase_realtime.capture_config (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    notify_channel text    NOT NULL
);
