-- Trigger capture: the trigger function that writes a table's changes into the change log, and the
-- NOTIFY that wakes the change feeds. Which tables get which triggers is capture_triggers.sql.
--
-- public.notify_table_change() runs as a row trigger or as a statement trigger:
--   * ROW (partitioned tables, partitions, inheritance trees: capture_triggers.sql says why): one change
--     per row, under the table named by the trigger's arguments when it has them (a partitioned table's
--     trigger names itself, and its clones on the partitions keep the arguments, so rows are reported
--     under the table realtime was enabled on, whichever partition holds them), else under its own.
--   * STATEMENT, from transition tables (ordinary tables): every row of the statement in one
--     INSERT ... SELECT, numbered in the order the statement changed them. A 500-row INSERT costs one
--     trigger call instead of 500 (../shared/notes/change-capture-costs.md: 2.3x faster for 500-row
--     statements, not slower for single-row ones); what is logged is the same as the row trigger's.
--   * TRUNCATE (a statement trigger on every realtime table, no transition tables): one change, no record.
--
-- UPDATE pairs the n-th row of the OLD TABLE with the n-th row of the NEW TABLE. PostgreSQL's source,
-- src/backend/commands/trigger.c, AfterTriggerSaveEvent(): for every updated row, ExecARUpdateTriggers calls
-- it once with both the row's old and new slot, and while the statement has a TransitionCaptureState it
-- appends the old tuple to the UPDATE's old tuplestore and then, in the same call, the new tuple to its new
-- tuplestore (PostgreSQL 15 keeps separate UPDATE/INSERT/DELETE tuplestores since MERGE; older versions one
-- old and one new, filled the same way). A row skipped by a BEFORE trigger or by a concurrent update is
-- added to neither. The only call with just one of the two is cross-partition row movement (the DELETE
-- half, then at once the INSERT half of the same row), which happens only when a partitioned table is the
-- target: those keep row triggers. The tuplestores are read back in insertion order, so numbering each
-- side's rows in scan order (row_number() OVER ()) and joining on that number pairs every old row with its
-- own new row, even when the UPDATE changes the primary key (test_an_update_of_primary_keys_pairs_old_and_new).
--
-- NOTIFY. A transaction that has called pg_notify takes a lock on the database at commit (PreCommit_Notify,
-- src/backend/commands/async.c) and holds it through its commit's WAL flush, so notifying writers commit
-- one at a time: with 8 concurrent writers of single-row transactions, realtime kept 0.24 of their
-- throughput, and 0.65-0.72 with the trigger's pg_notify removed. A notification only wakes an idle feed;
-- a feed that is polling under load does not need one. So:
--   * polling_lease (one row, UNLOGGED: no WAL, and it is empty after a crash, which means "notify") says
--     until when some feed promises to poll. The trigger reads it (an MVCC read, no lock that anyone
--     waits for) and skips pg_notify while `until` is in the future.
--   * A feed that polls (app/services/changes.py, PassPacer: more committed during three passes in a row)
--     runs a pass at least every REALTIME_BUSY_PASS_INTERVAL and, at each pass that finds new changes,
--     extends `until` to now + REALTIME_POLL_GRACE (sequence_and_read's `lease`, sequencer.sql); it goes on
--     polling until twice the grace has passed without a new change, so a transaction that read a valid
--     lease and committed within the grace after it is found by a polling pass.
--   * Wake-ups are shared: a pass that numbers transactions while `wake_until` (until + the grace) is in
--     the future sends one NOTIFY itself, which wakes every instance's listener. Without it, a writer that
--     skipped NOTIFY because instance A polls would leave instance B asleep. The NOTIFY is in the feed's
--     pass (at most one per pass), not in any writer's transaction.
--   * The bound: every feed, polling or not, also runs a pass when REALTIME_IDLE_POLL_INTERVAL has passed
--     without one. So a change is numbered and read by every instance at most that long after it commits,
--     whatever happens to the lease (a transaction that read it and committed much later, a feed killed
--     while polling, an instance that was never woken).
--
-- The comments inside function bodies are part of what PostgreSQL stores, and name the migration file
-- (alembic/versions/sql/) that introduced each part; sql/README.md says why they stay.

CREATE UNLOGGED TABLE fluxbase_realtime.polling_lease (
    singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    -- Writers skip NOTIFY while clock_timestamp() < until.
    until      timestamptz NOT NULL,
    -- Passes that number transactions send one NOTIFY while clock_timestamp() < wake_until.
    wake_until timestamptz NOT NULL
);

-- Installs public.notify_table_change() notifying on `channel`, and records the channel. The channel
-- is compiled into the function (rather than looked up per change) because the trigger runs once per
-- statement or row.
CREATE FUNCTION fluxbase_realtime.install_capture_function(channel text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $outer$
BEGIN
    -- SECURITY DEFINER: writers need no privilege on the change log, and cannot forge entries in it.
    EXECUTE format($fn$
        CREATE OR REPLACE FUNCTION public.notify_table_change() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
        DECLARE
            -- Position of the next change in its transaction; SET LOCAL state rolls back with savepoints,
            -- exactly like the log rows it numbers.
            first_ord integer := coalesce(nullif(current_setting('fluxbase_realtime.tx_changes', true), '')::integer, 0);
            logged    bigint;
            ignored   text;
        BEGIN
            IF TG_LEVEL = 'ROW' THEN
                -- Partitioned tables, partitions and inheritance hierarchies (0010_statement_level_capture.sql).
                -- A partitioned table's trigger names it in its arguments, and its clones on the partitions
                -- keep them: rows are reported under the table realtime was enabled on, whichever partition
                -- holds them (0013_partitions_report_their_root.sql).
                INSERT INTO fluxbase_realtime.change_log (txid, ord, schema_name, table_name, op, record, old_record)
                VALUES (pg_current_xact_id(), first_ord, coalesce(TG_ARGV[0], TG_TABLE_SCHEMA),
                        coalesce(TG_ARGV[1], TG_TABLE_NAME), TG_OP,
                        CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END,
                        CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END);
                logged := 1;
            -- Every row of the statement in one INSERT ... SELECT, numbered in the order the statement
            -- changed them. `r.*`, not `r`: a column named r would otherwise win over the whole row.
            ELSIF TG_OP = 'INSERT' THEN
                INSERT INTO fluxbase_realtime.change_log (txid, ord, schema_name, table_name, op, record)
                SELECT pg_current_xact_id(), first_ord + changed.n - 1, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'INSERT',
                       changed.rec
                FROM (SELECT to_jsonb(r.*) AS rec, row_number() OVER () AS n FROM fluxbase_new AS r) AS changed;
                GET DIAGNOSTICS logged = ROW_COUNT;
            ELSIF TG_OP = 'DELETE' THEN
                INSERT INTO fluxbase_realtime.change_log (txid, ord, schema_name, table_name, op, old_record)
                SELECT pg_current_xact_id(), first_ord + changed.n - 1, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'DELETE',
                       changed.rec
                FROM (SELECT to_jsonb(r.*) AS rec, row_number() OVER () AS n FROM fluxbase_old AS r) AS changed;
                GET DIAGNOSTICS logged = ROW_COUNT;
            ELSIF TG_OP = 'TRUNCATE' THEN
                -- One change, no record: every row of the table is gone (0017_truncate.sql).
                INSERT INTO fluxbase_realtime.change_log (txid, ord, schema_name, table_name, op)
                VALUES (pg_current_xact_id(), first_ord, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'TRUNCATE');
                logged := 1;
            ELSE
                -- The n-th old row is the n-th new row's previous version: see the header of
                -- 0010_statement_level_capture.sql for why.
                INSERT INTO fluxbase_realtime.change_log (txid, ord, schema_name, table_name, op, record, old_record)
                SELECT pg_current_xact_id(), first_ord + new_rows.n - 1, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'UPDATE',
                       new_rows.rec, old_rows.rec
                FROM (SELECT to_jsonb(r.*) AS rec, row_number() OVER () AS n FROM fluxbase_new AS r) AS new_rows
                JOIN (SELECT to_jsonb(r.*) AS rec, row_number() OVER () AS n FROM fluxbase_old AS r) AS old_rows
                  USING (n);
                GET DIAGNOSTICS logged = ROW_COUNT;
            END IF;
            -- A statement that changed no row logs nothing and wakes nobody.
            IF logged > 0 THEN
                -- Assignments rather than PERFORM: PL/pgSQL evaluates a simple expression without starting
                -- the executor, which saves about as much per statement as row_number() costs.
                ignored := set_config('fluxbase_realtime.tx_changes', (first_ord + logged)::text, true);
                -- While a feed polls (the lease below), it finds this change without being woken, and its
                -- pass wakes every other instance: no NOTIFY, whose commit-time lock on the database would
                -- make this commit wait for every other notifying transaction's (see the header).
                IF NOT coalesce((SELECT l.until > clock_timestamp() FROM fluxbase_realtime.polling_lease l), false) THEN
                    -- A constant payload: PostgreSQL folds duplicates, so a transaction notifies once. The
                    -- data never travels in the notification, so no row is too large for NOTIFY's limit.
                    ignored := pg_notify(%L, '')::text;
                END IF;
            END IF;
            RETURN NULL;
        END
        $body$
    $fn$, channel);
    DELETE FROM fluxbase_realtime.capture_config;
    INSERT INTO fluxbase_realtime.capture_config (notify_channel) VALUES (channel);
END
$outer$;
REVOKE ALL ON FUNCTION fluxbase_realtime.install_capture_function(text) FROM PUBLIC;

-- Called by the service at start: keeps the trigger's channel equal to REALTIME_NOTIFY_CHANNEL, and only
-- replaces the function when the channel differs (so starting instances do not take locks for nothing).
CREATE FUNCTION fluxbase_realtime.configure_notify_channel(channel text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM fluxbase_realtime.capture_config c WHERE c.notify_channel = channel) THEN
        PERFORM fluxbase_realtime.install_capture_function(channel);
    END IF;
END
$$;
REVOKE ALL ON FUNCTION fluxbase_realtime.configure_notify_channel(text) FROM PUBLIC;

-- The default channel (REALTIME_NOTIFY_CHANNEL's default) until a service instance configures its own.
SELECT fluxbase_realtime.install_capture_function('fluxbase_changes');
