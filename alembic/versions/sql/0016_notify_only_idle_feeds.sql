-- Writers skip NOTIFY while a change feed is polling, and the sequencer numbers transactions in commit
-- order (commit timestamps) where PostgreSQL records them.
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
--     extends `until` to now + REALTIME_POLL_GRACE (sequence_and_read's `lease`); it goes on polling until
--     twice the grace has passed without a new change, so a transaction that read a valid lease and
--     committed within the grace after it is found by a polling pass.
--   * Wake-ups are shared: a pass that numbers transactions while `wake_until` (until + the grace) is in
--     the future sends one NOTIFY itself, which wakes every instance's listener. Without it, a writer that
--     skipped NOTIFY because instance A polls would leave instance B asleep. The NOTIFY is in the feed's
--     pass (at most one per pass), not in any writer's transaction.
--   * The bound: every feed, polling or not, also runs a pass when REALTIME_IDLE_POLL_INTERVAL has passed
--     without one. So a change is numbered and read by every instance at most that long after it commits,
--     whatever happens to the lease (a transaction that read it and committed much later, a feed killed
--     while polling, an instance that was never woken).
--
-- Commit order. Passes number the transactions they find in the order of their commit timestamps when
-- track_commit_timestamp is on (ties, and transactions committed before it was switched on, by their last
-- write, `seq`, as before); otherwise by `seq` alone, which orders a transaction that waited for another's
-- row lock after it, but not two independent transactions whose commits came in the opposite order of
-- their last writes. Across passes, the order is the order in which commits became visible: a pass never
-- numbers a transaction before one that had finished committing when it began to commit (that one is
-- visible in every snapshot that shows the later one). Two commits in flight at once can become visible in
-- the opposite order of their timestamps (the timestamp is taken before the WAL flush, visibility after);
-- a pass that sees only the later-stamped one numbers it first, and no reader could have seen the other
-- one first either.

CREATE UNLOGGED TABLE fluxbase_realtime.polling_lease (
    singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    -- Writers skip NOTIFY while clock_timestamp() < until.
    until      timestamptz NOT NULL,
    -- Passes that number transactions send one NOTIFY while clock_timestamp() < wake_until.
    wake_until timestamptz NOT NULL
);

-- The trigger function, with the channel compiled in as before (0002_capture.sql); only the NOTIFY changes.
CREATE OR REPLACE FUNCTION fluxbase_realtime.install_capture_function(channel text) RETURNS void
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


SELECT fluxbase_realtime.install_capture_function((SELECT c.notify_channel FROM fluxbase_realtime.capture_config c));

-- realtime_broadcast() of 0015_broadcast_channels.sql, which notifies like the trigger.
CREATE OR REPLACE FUNCTION public.realtime_broadcast(channel text, event text, payload jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- The transaction's next change position, shared with the capture triggers (0013).
    position integer := coalesce(nullif(current_setting('fluxbase_realtime.tx_changes', true), '')::integer, 0);
    ignored  text;
BEGIN
    IF starts_with(channel, 'broadcast:') THEN
        channel := substr(channel, 11);
    END IF;
    IF NOT fluxbase_realtime.valid_broadcast_name(channel) THEN
        RAISE EXCEPTION 'invalid broadcast channel name: 1 to 200 bytes without control characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT fluxbase_realtime.valid_broadcast_name(event) THEN
        RAISE EXCEPTION 'invalid broadcast event: 1 to 200 bytes without control characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO fluxbase_realtime.change_log (txid, ord, schema_name, table_name, op, record, old_record)
    VALUES (pg_current_xact_id(), position, '', channel, 'BROADCAST', coalesce(payload, 'null'::jsonb),
            to_jsonb(event));
    ignored := set_config('fluxbase_realtime.tx_changes', (position + 1)::text, true);
    -- As the capture trigger: no NOTIFY (and no commit-time lock) while a feed polls.
    IF NOT coalesce((SELECT l.until > clock_timestamp() FROM fluxbase_realtime.polling_lease l), false) THEN
        ignored := pg_notify((SELECT c.notify_channel FROM fluxbase_realtime.capture_config c), '')::text;
    END IF;
END
$$;

-- The pass of 0012_sequencer_by_index.sql, ordering by commit timestamp and sharing wake-ups (header).
CREATE OR REPLACE FUNCTION fluxbase_realtime.sequence_commits() RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET enable_seqscan = off SET jit = off AS $$
DECLARE
    state    fluxbase_realtime.sequencer_state;
    snap     pg_snapshot;
    numbered bigint;
    -- pg_xact_commit_timestamp raises when the setting is off; it needs a restart to change.
    stamped  boolean := current_setting('track_commit_timestamp')::boolean;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('fluxbase_realtime.sequencer'));
    SELECT * INTO STRICT state FROM fluxbase_realtime.sequencer_state;
    snap := pg_current_snapshot();
    -- See 0003_sequencer.sql for why these are exactly the transactions committed since the last pass, and
    -- 0012_sequencer_by_index.sql for why they are found this way.
    WITH RECURSIVE later (txid) AS (
        (SELECT l.txid FROM fluxbase_realtime.change_log l
         WHERE l.txid >= pg_snapshot_xmax(state.horizon) ORDER BY l.txid LIMIT 1)
        UNION ALL
        SELECT (SELECT l.txid FROM fluxbase_realtime.change_log l
                WHERE l.txid > later.txid ORDER BY l.txid LIMIT 1)
        FROM later WHERE later.txid IS NOT NULL
    ), candidates AS (
        SELECT later.txid FROM later WHERE later.txid IS NOT NULL
        UNION
        SELECT running FROM pg_snapshot_xip(state.horizon) AS running
    ), fresh AS (
        SELECT c.txid, counted.change_count, counted.last_seq, counted.tables,
               -- Recorded before the transaction became visible, so known for every one visible in snap
               -- (NULL for those older than the setting).
               CASE WHEN stamped THEN pg_xact_commit_timestamp(xid(c.txid)) END AS committed
        FROM candidates c
        CROSS JOIN LATERAL (
            SELECT count(*)::integer AS change_count, max(l.seq) AS last_seq,
                   array_agg(DISTINCT format('%I.%I', l.schema_name, l.table_name)) AS tables
            FROM fluxbase_realtime.change_log l
            WHERE l.txid = c.txid
        ) counted
        WHERE counted.change_count > 0 AND pg_visible_in_snapshot(c.txid, snap)
    ), inserted AS (
        -- Commit order where it is recorded; among equal timestamps (microseconds), and without them, the
        -- one that wrote last commits last (0003). last_seq is unique, so no two rows are window peers.
        INSERT INTO fluxbase_realtime.commits (first_id, txid, change_count, tables)
        SELECT state.next_id + sum(change_count) OVER (ORDER BY committed NULLS FIRST, last_seq) - change_count,
               txid, change_count, tables
        FROM fresh
        RETURNING change_count
    )
    SELECT coalesce(sum(change_count), 0) INTO numbered FROM inserted;
    IF numbered > 0 THEN
        UPDATE fluxbase_realtime.sequencer_state SET next_id = next_id + numbered, horizon = snap;
        -- Writers may be skipping NOTIFY: wake every instance once for all that this pass numbered.
        IF EXISTS (SELECT 1 FROM fluxbase_realtime.polling_lease l WHERE l.wake_until > clock_timestamp()) THEN
            PERFORM pg_notify(c.notify_channel, '') FROM fluxbase_realtime.capture_config c;
        END IF;
    END IF;
    RETURN state.next_id + numbered - 1;
END
$$;

-- sequence_and_read of 0014_sequence_and_read.sql, and the lease of a polling feed: with `lease` set and
-- new changes found (the head is past after_id), writers skip NOTIFY for `lease` from now, and passes wake
-- the other instances for twice that. Concurrent passes take turns on the sequencer's lock, so the one row
-- is never contended. The three-argument version stays for instances not yet upgraded.
CREATE FUNCTION fluxbase_realtime.sequence_and_read(after_id bigint, max_count integer, max_bytes bigint, lease interval)
RETURNS TABLE (
    head bigint, id bigint, schema_name text, table_name text, op text, record text, old_record text, rls boolean
)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    numbered bigint;
BEGIN
    numbered := fluxbase_realtime.sequence_commits();
    IF lease IS NOT NULL AND numbered > after_id THEN
        UPDATE fluxbase_realtime.polling_lease
        SET until = greatest(until, clock_timestamp() + lease),
            wake_until = greatest(wake_until, clock_timestamp() + 2 * lease);
        IF NOT FOUND THEN  -- first use, or emptied by a crash (UNLOGGED)
            INSERT INTO fluxbase_realtime.polling_lease (until, wake_until)
            VALUES (clock_timestamp() + lease, clock_timestamp() + 2 * lease)
            ON CONFLICT (singleton) DO NOTHING;
        END IF;
    END IF;
    RETURN QUERY SELECT numbered, c.* FROM fluxbase_realtime.changes_after(after_id, max_count, max_bytes) AS c;
    IF NOT FOUND THEN
        RETURN QUERY SELECT numbered, NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text,
                            NULL::boolean;
    END IF;
END
$$;
