-- Commit-to-send latency (issue 13): each numbered transaction keeps the COMMIT time PostgreSQL recorded
-- for it (track_commit_timestamp, which the sequencer already reads to order commits), and in logical
-- mode each source transaction's first change keeps the COMMIT time of pgoutput's Begin (one log
-- transaction, the consumer's batch, holds many source transactions, and commits after them, so its own
-- timestamp is not kept). The feed's reads return it on each commit's first change, so that the feed can
-- observe fluxbase_realtime_commit_to_send_seconds once per commit.
--
-- The feed reads with the new read_log() and sequence_and_read_log(), which return one more column;
-- changes_after() and sequence_and_read() keep their columns, as wrappers, for instances not yet upgraded.

ALTER TABLE fluxbase_realtime.commits ADD COLUMN commit_timestamp timestamptz;
ALTER TABLE fluxbase_realtime.change_log ADD COLUMN commit_timestamp timestamptz;

CREATE OR REPLACE FUNCTION fluxbase_realtime.sequence_commits() RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET enable_seqscan = off SET jit = off AS $$
DECLARE
    state    fluxbase_realtime.sequencer_state;
    snap     pg_snapshot;
    numbered bigint;
    -- pg_xact_commit_timestamp raises when the setting is off; it needs a restart to change.
    stamped  boolean := current_setting('track_commit_timestamp')::boolean;
    -- In logical mode the log's transactions are the consumer's batches, which commit after the source
    -- transactions they copy: their timestamps are not the COMMIT a client waited for, so none is kept
    -- (0018_commit_timestamps.sql).
    kept     boolean := stamped AND (SELECT m.mode FROM fluxbase_realtime.capture_mode m) = 'trigger';
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
        -- The commit timestamp is kept for the feed's commit-to-send latency (0018_commit_timestamps.sql).
        INSERT INTO fluxbase_realtime.commits (first_id, txid, change_count, tables, commit_timestamp)
        SELECT state.next_id + sum(change_count) OVER (ORDER BY committed NULLS FIRST, last_seq) - change_count,
               txid, change_count, tables, CASE WHEN kept THEN committed END
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

CREATE FUNCTION fluxbase_realtime.read_log(after_id bigint, max_count integer, max_bytes bigint)
RETURNS TABLE (
    id bigint, schema_name text, table_name text, op text, record text, old_record text, rls boolean,
    committed double precision
)
LANGUAGE sql STABLE AS $$
    WITH span AS (
        SELECT c.first_id, c.txid, c.commit_timestamp
        FROM fluxbase_realtime.commits c
        WHERE c.first_id >= coalesce((SELECT max(first_id) FROM fluxbase_realtime.commits
                                      WHERE first_id <= after_id + 1), 0)
          AND c.first_id <= after_id + max_count
    ), picked AS (
        SELECT s.first_id + l.ord AS id, l.schema_name, l.table_name, l.op, l.record, l.old_record,
               pg_catalog.date_part('epoch', coalesce(l.commit_timestamp,
                                                      CASE WHEN l.ord = 0 THEN s.commit_timestamp END)) AS committed,
               sum(coalesce(pg_catalog.pg_column_size(l.record), 0)
                   + coalesce(pg_catalog.pg_column_size(l.old_record), 0))
                   OVER (ORDER BY s.first_id + l.ord) AS running_bytes
        FROM span s
        CROSS JOIN LATERAL (
            SELECT l.ord, l.schema_name, l.table_name, l.op, l.record, l.old_record, l.commit_timestamp
            FROM fluxbase_realtime.change_log l
            WHERE l.txid = s.txid AND l.ord > after_id - s.first_id AND l.ord <= after_id + max_count - s.first_id
            LIMIT max_count
        ) l
    )
    SELECT p.id, p.schema_name, p.table_name, p.op, p.record::text, p.old_record::text,
           coalesce((SELECT c.relrowsecurity FROM pg_catalog.pg_class c
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = p.schema_name AND c.relname = p.table_name), false),
           p.committed
    FROM picked p
    WHERE p.running_bytes <= max_bytes OR p.id = after_id + 1
    ORDER BY p.id
$$;

CREATE OR REPLACE FUNCTION fluxbase_realtime.changes_after(after_id bigint, max_count integer, max_bytes bigint)
RETURNS TABLE (id bigint, schema_name text, table_name text, op text, record text, old_record text, rls boolean)
LANGUAGE sql STABLE AS $$
    SELECT r.id, r.schema_name, r.table_name, r.op, r.record, r.old_record, r.rls
    FROM fluxbase_realtime.read_log(after_id, max_count, max_bytes) AS r
$$;

CREATE FUNCTION fluxbase_realtime.sequence_and_read_log(
    after_id bigint, max_count integer, max_bytes bigint, lease interval
) RETURNS TABLE (
    head bigint, id bigint, schema_name text, table_name text, op text, record text, old_record text, rls boolean,
    committed double precision
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
    RETURN QUERY SELECT numbered, c.* FROM fluxbase_realtime.read_log(after_id, max_count, max_bytes) AS c;
    IF NOT FOUND THEN
        RETURN QUERY SELECT numbered, NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text,
                            NULL::boolean, NULL::double precision;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION fluxbase_realtime.sequence_and_read(after_id bigint, max_count integer, max_bytes bigint, lease interval)
RETURNS TABLE (
    head bigint, id bigint, schema_name text, table_name text, op text, record text, old_record text, rls boolean
)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY SELECT r.head, r.id, r.schema_name, r.table_name, r.op, r.record, r.old_record, r.rls
                 FROM fluxbase_realtime.sequence_and_read_log(after_id, max_count, max_bytes, lease) AS r;
END
$$;

CREATE OR REPLACE FUNCTION fluxbase_realtime.log_decoded_batch(
    batch jsonb, progress_lsn pg_lsn, progress_written bigint, progress_complete boolean
) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target jsonb;
    rel    regclass;
    logged integer := 0;
    added  integer;
BEGIN
    FOR target IN SELECT g.value FROM jsonb_array_elements(batch) AS g LOOP
        rel := fluxbase_realtime.find_table(target->>0, target->>1);
        BEGIN
            IF rel IS NULL THEN
                RAISE EXCEPTION 'the table no longer exists' USING ERRCODE = 'undefined_table';
            END IF;
            -- A source transaction's first change carries its COMMIT time, seconds since the epoch, as a
            -- fifth element (0018_commit_timestamps.sql).
            EXECUTE format($q$
                INSERT INTO fluxbase_realtime.change_log
                    (txid, ord, schema_name, table_name, op, record, old_record, commit_timestamp)
                SELECT pg_current_xact_id(), (c.v->>0)::integer, $1, $2, c.v->>1,
                       CASE WHEN c.v->>1 = 'TRUNCATE' THEN (c.v->>2)::jsonb ELSE to_jsonb((c.v->>2)::%1$s) END,
                       to_jsonb((c.v->>3)::%1$s), to_timestamp((c.v->>4)::double precision)
                FROM jsonb_array_elements($3) AS c(v)
            $q$, rel) USING target->>0, target->>1, target->2;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'logical capture: rows of %.% do not fit its current definition (%): logged as text',
                quote_ident(target->>0), quote_ident(target->>1), SQLERRM;
            INSERT INTO fluxbase_realtime.change_log
                (txid, ord, schema_name, table_name, op, record, old_record, commit_timestamp)
            SELECT pg_current_xact_id(), (c.v->>0)::integer, target->>0, target->>1, c.v->>1,
                   CASE WHEN c.v->>1 = 'TRUNCATE' THEN (c.v->>2)::jsonb ELSE to_jsonb(c.v->>2) END,
                   to_jsonb(c.v->>3), to_timestamp((c.v->>4)::double precision)
            FROM jsonb_array_elements(target->2) AS c(v);
        END;
        GET DIAGNOSTICS added = ROW_COUNT;
        logged := logged + added;
    END LOOP;
    UPDATE fluxbase_realtime.logical_progress
    SET commit_lsn = progress_lsn, written = progress_written, complete = progress_complete;
    IF logged > 0 THEN
        PERFORM pg_notify((SELECT c.notify_channel FROM fluxbase_realtime.capture_config c), '');
    END IF;
    RETURN logged;
END
$$;
