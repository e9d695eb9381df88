-- A sequencer pass finds the transactions committed since the previous one by index, whatever the log's
-- statistics say.
--
-- 0005's pass selected `txid >= xmax(previous horizon) OR txid = ANY (xip(previous horizon))`. PostgreSQL
-- has no histogram arithmetic for xid8, so it estimates a third of the log for the range whatever the
-- statistics, and once the log is large it scans all of it: measured 19-20 ms per pass with 305,000 logged
-- changes (a bulk load, then single-row writes), where the pass needs well under a millisecond. Now:
-- the distinct txids from the previous horizon's xmax on are walked one index probe each (ORDER BY ...
-- LIMIT 1 is always an index scan), the previous horizon's in-progress txids are added, and each
-- candidate's changes are counted through the primary key. enable_seqscan is off for the pass, so the
-- per-transaction counts never turn into scans either; the pass touches the new changes and a few index
-- pages, not the log. The plans no longer depend on the values, so they are cached (0007's
-- force_custom_plan is dropped: planning every statement of every pass cost ~0.1 ms).

CREATE OR REPLACE FUNCTION fluxbase_realtime.sequence_commits() RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET enable_seqscan = off SET jit = off AS $$
DECLARE
    state    fluxbase_realtime.sequencer_state;
    snap     pg_snapshot;
    numbered bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('fluxbase_realtime.sequencer'));
    SELECT * INTO STRICT state FROM fluxbase_realtime.sequencer_state;
    snap := pg_current_snapshot();
    -- See 0003_sequencer.sql for why these are exactly the transactions committed since the last pass.
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
        SELECT c.txid, counted.change_count, counted.last_seq, counted.tables
        FROM candidates c
        CROSS JOIN LATERAL (
            SELECT count(*)::integer AS change_count, max(l.seq) AS last_seq,
                   array_agg(DISTINCT format('%I.%I', l.schema_name, l.table_name)) AS tables
            FROM fluxbase_realtime.change_log l
            WHERE l.txid = c.txid
        ) counted
        WHERE counted.change_count > 0 AND pg_visible_in_snapshot(c.txid, snap)
    ), inserted AS (
        -- Among transactions first seen together, the one that wrote last commits last (0003).
        INSERT INTO fluxbase_realtime.commits (first_id, txid, change_count, tables)
        SELECT state.next_id + sum(change_count) OVER (ORDER BY last_seq) - change_count, txid, change_count, tables
        FROM fresh
        RETURNING change_count
    )
    SELECT coalesce(sum(change_count), 0) INTO numbered FROM inserted;
    IF numbered > 0 THEN
        UPDATE fluxbase_realtime.sequencer_state SET next_id = next_id + numbered, horizon = snap;
    END IF;
    RETURN state.next_id + numbered - 1;
END
$$;
