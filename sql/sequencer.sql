-- The sequencer numbers committed transactions in commit order, and the feed's reader turns
-- (commit, ord) back into public ids.
--
-- A pass numbers every transaction that committed since the last one. New commits are those visible in
-- the pass's snapshot but not in the previous horizon: started at or after its xmax, or still running in
-- it. The explicit visibility test pins the pass to its snapshot even though its statements' own snapshots
-- may be a little newer. Any service instance may run a pass; an advisory lock makes concurrent passes
-- take turns, and each starts from the state the previous one committed. Writers never wait for it.
--
-- Found by index, whatever the log's statistics say: PostgreSQL has no histogram arithmetic for xid8, so
-- `txid >= xmax(previous horizon)` is estimated at a third of the log, and a large log was scanned whole
-- (19-20 ms per pass with 305,000 logged changes, where the pass needs well under a millisecond). So the
-- distinct txids from the previous horizon's xmax on are walked one index probe each (ORDER BY ... LIMIT 1
-- is always an index scan), the previous horizon's in-progress txids are added, and each candidate's
-- changes are counted through the primary key. enable_seqscan is off for the pass, so the per-transaction
-- counts never turn into scans either. The plans do not depend on the values, so they are cached
-- (force_custom_plan, tried before, cost ~0.1 ms of planning per pass).
--
-- Commit order. Passes number the transactions they find in the order of their commit timestamps when
-- track_commit_timestamp is on (ties, and transactions committed before it was switched on, by their last
-- write, `seq`); otherwise by `seq` alone, which orders a transaction that waited for another's row lock
-- after it (it wrote after that one committed), but not two independent transactions whose commits came in
-- the opposite order of their last writes. Across passes, the order is the order in which commits became
-- visible: a pass never numbers a transaction before one that had finished committing when it began to
-- commit (that one is visible in every snapshot that shows the later one). Two commits in flight at once
-- can become visible in the opposite order of their timestamps (the timestamp is taken before the WAL
-- flush, visibility after); a pass that sees only the later-stamped one numbers it first, and no reader
-- could have seen the other one first either.
--
-- A pass that numbers transactions while the polling lease's wake_until is in the future sends one NOTIFY
-- for all of them (capture.sql: writers may be skipping theirs).

-- One pass; returns the last id handed out.
CREATE FUNCTION fluxbase_realtime.sequence_commits() RETURNS bigint
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

-- Changes with ids after `after_id`, in id order: at most `max_count`, and about `max_bytes` of records
-- (always at least one, however large), each with whether its table has row-level security enabled
-- right now. Records come back as JSON text, ready to be framed.
--
-- No SET clause (every name is qualified, and it runs as its caller): PostgreSQL then inlines it and
-- plans the query with the actual ids. Each transaction's changes are looked up by index however large
-- the log has grown: the planner cannot know how many commits the id range holds (its lower bound is a
-- subquery), guesses a few hundred, and would then prefer a hash join over a sequential scan of the
-- whole log (3.1 ms for a 5-change read of a 25,000-row log, growing with the log). The LIMIT keeps the
-- per-transaction subquery from being flattened, so the join is a nested loop of index range scans on
-- change_log's primary key: the cost follows the changes read, not the changes retained.
--
-- `committed`: the COMMIT time of the change's transaction as seconds since the epoch, on its first
-- change only (NULL on the others), so that the feed observes its commit-to-send latency once per commit,
-- however its changes are split into reads. Trigger mode: commits.commit_timestamp on ord 0 (NULL where
-- track_commit_timestamp was off); logical mode: the source transaction's, change_log.commit_timestamp
-- (one log transaction holds many source transactions). A float: cheaper to parse than a timestamp.
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

-- read_log() without the commit times, for instances not yet upgraded (the two inline into one plan).
CREATE FUNCTION fluxbase_realtime.changes_after(after_id bigint, max_count integer, max_bytes bigint)
RETURNS TABLE (id bigint, schema_name text, table_name text, op text, record text, old_record text, rls boolean)
LANGUAGE sql STABLE AS $$
    SELECT r.id, r.schema_name, r.table_name, r.op, r.record, r.old_record, r.rls
    FROM fluxbase_realtime.read_log(after_id, max_count, max_bytes) AS r
$$;

-- One statement per change feed wake-up: a pass, then the first read of what it numbered, in the same
-- transaction and with a snapshot taken after the pass (the pass's advisory lock is held until the
-- statement ends). Cheaper than the two in one pipeline: on an idle machine, a wake-up every 2-10 ms
-- (the shape of real traffic), one statement cost 150-250 us less (1.05-1.08 ms against 1.17-1.39 ms a
-- wake-up after 10 ms idle; 0.50-0.65 against 0.68-0.89 after 2 ms).
--
-- `head` (the newest id numbered so far) is on every row; when there is nothing to read, one row carries
-- it with every other column NULL. The feed reads later batches with read_log() itself.
--
-- With `lease` set and new changes found (the head is past after_id), it also takes the polling lease
-- (capture.sql): writers skip NOTIFY for `lease` from now, and passes wake the other instances for twice
-- that. Concurrent passes take turns on the sequencer's lock, so the one row is never contended. The
-- sequence_and_read() versions, without the commit times (and the three-argument one without the
-- lease), stay for instances not yet upgraded.
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

-- sequence_and_read_log() without the commit times, for instances not yet upgraded.
CREATE FUNCTION fluxbase_realtime.sequence_and_read(after_id bigint, max_count integer, max_bytes bigint, lease interval)
RETURNS TABLE (
    head bigint, id bigint, schema_name text, table_name text, op text, record text, old_record text, rls boolean
)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY SELECT r.head, r.id, r.schema_name, r.table_name, r.op, r.record, r.old_record, r.rls
                 FROM fluxbase_realtime.sequence_and_read_log(after_id, max_count, max_bytes, lease) AS r;
END
$$;
CREATE FUNCTION fluxbase_realtime.sequence_and_read(after_id bigint, max_count integer, max_bytes bigint)
RETURNS TABLE (
    head bigint, id bigint, schema_name text, table_name text, op text, record text, old_record text, rls boolean
)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    numbered bigint;
BEGIN
    numbered := fluxbase_realtime.sequence_commits();
    RETURN QUERY SELECT numbered, c.* FROM fluxbase_realtime.changes_after(after_id, max_count, max_bytes) AS c;
    IF NOT FOUND THEN
        RETURN QUERY SELECT numbered, NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text,
                            NULL::boolean;
    END IF;
END
$$;
