-- The sequencer: numbers committed transactions in the order it observes their commits, and the reader
-- that turns (commit, ord) back into public ids.

-- One pass: number every transaction that committed since the last pass; return the last id handed out.
-- Any service instance may call it; an advisory lock makes concurrent passes take turns, and each pass
-- starts from the state the previous one committed. Writers never wait for it.
CREATE FUNCTION fluxbase_realtime.sequence_commits() RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    state    fluxbase_realtime.sequencer_state;
    snap     pg_snapshot;
    numbered bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('fluxbase_realtime.sequencer'));
    SELECT * INTO STRICT state FROM fluxbase_realtime.sequencer_state;
    snap := pg_current_snapshot();
    -- New commits are those visible in `snap` but not in the last horizon: started at or after its xmax,
    -- or still running in it. Both arms are index ranges on change_log (txid, ord), so a long-running
    -- transaction does not make every pass rescan the log. The explicit visibility test pins the pass to
    -- `snap` even though this statement's own snapshot may be a little newer.
    WITH fresh AS (
        SELECT l.txid, count(*)::integer AS change_count, max(l.seq) AS last_seq
        FROM fluxbase_realtime.change_log l
        WHERE (l.txid >= pg_snapshot_xmax(state.horizon)
               OR l.txid = ANY (ARRAY(SELECT pg_snapshot_xip(state.horizon))))
          AND pg_visible_in_snapshot(l.txid, snap)
        GROUP BY l.txid
    ), inserted AS (
        -- Among transactions first seen together, the one that wrote last commits last (a transaction
        -- that waited on another's lock writes after that one committed), so order them by last write.
        INSERT INTO fluxbase_realtime.commits (first_id, txid, change_count)
        SELECT state.next_id + sum(change_count) OVER (ORDER BY last_seq) - change_count, txid, change_count
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

-- Changes with ids after `after_id`, in id order: at most `max_count`, and about `max_bytes` of records
-- (always at least one, however large). Records come back as JSON text, ready to be framed.
CREATE FUNCTION fluxbase_realtime.changes_after(after_id bigint, max_count integer, max_bytes bigint)
RETURNS TABLE (id bigint, schema_name text, table_name text, op text, record text, old_record text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH span AS (
        SELECT c.first_id, c.txid
        FROM fluxbase_realtime.commits c
        WHERE c.first_id >= coalesce((SELECT max(first_id) FROM fluxbase_realtime.commits
                                      WHERE first_id <= after_id + 1), 0)
          AND c.first_id <= after_id + max_count
    ), picked AS (
        SELECT s.first_id + l.ord AS id, l.schema_name, l.table_name, l.op, l.record, l.old_record,
               sum(coalesce(pg_column_size(l.record), 0) + coalesce(pg_column_size(l.old_record), 0))
                   OVER (ORDER BY s.first_id + l.ord) AS running_bytes
        FROM span s
        JOIN fluxbase_realtime.change_log l
          ON l.txid = s.txid AND l.ord > after_id - s.first_id AND l.ord <= after_id + max_count - s.first_id
    )
    SELECT p.id, p.schema_name, p.table_name, p.op, p.record::text, p.old_record::text
    FROM picked p
    WHERE p.running_bytes <= max_bytes OR p.id = after_id + 1
    ORDER BY p.id
$$;
