-- Replay (one channel's changes after an id, for a subscribe with `since`) and retention (pruning the log
-- by age and size).

-- The smallest id the log still holds (the next id to be handed out when it holds nothing).
CREATE FUNCTION fluxbase_realtime.oldest_retained_id() RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT min(first_id) FROM fluxbase_realtime.commits),
                    (SELECT next_id FROM fluxbase_realtime.sequencer_state))
$$;

-- One table's changes with after_id < id <= upto_id, in id order: at most max_count, and about max_bytes of
-- records (always at least one). `complete_to` (the same on every row) is the id up to which the answer
-- is complete: upto_id, or the last id returned when a limit cut it short. Ids are dense across all
-- tables, so the caller bounds the work of one call by keeping upto_id - after_id small.
--
-- Inlinable, and reading each transaction's changes by index, like changes_after (sequencer.sql): a
-- generic plan of it reads the whole log (100x slower).
CREATE FUNCTION fluxbase_realtime.table_changes_after(
    channel_schema text, channel_table text, after_id bigint, upto_id bigint, max_count integer, max_bytes bigint)
RETURNS TABLE (id bigint, schema_name text, table_name text, op text, record text, old_record text, rls boolean,
               complete_to bigint)
LANGUAGE sql STABLE AS $$
    WITH picked AS (
        SELECT c.first_id + l.ord AS id, l.schema_name, l.table_name, l.op, l.record, l.old_record
        FROM fluxbase_realtime.commits c
        CROSS JOIN LATERAL (
            SELECT l.ord, l.schema_name, l.table_name, l.op, l.record, l.old_record
            FROM fluxbase_realtime.change_log l
            WHERE l.txid = c.txid AND l.ord > after_id - c.first_id AND l.ord <= upto_id - c.first_id
              AND l.schema_name = channel_schema AND l.table_name = channel_table
            ORDER BY l.ord
            LIMIT max_count
        ) l
        WHERE c.first_id >= coalesce((SELECT max(first_id) FROM fluxbase_realtime.commits
                                      WHERE first_id <= after_id + 1), 0)
          AND c.first_id <= upto_id
          AND (c.tables IS NULL OR pg_catalog.format('%I.%I', channel_schema, channel_table) = ANY (c.tables))
        ORDER BY c.first_id, l.ord
        LIMIT max_count
    ), sized AS (
        SELECT p.*,
               sum(coalesce(pg_catalog.pg_column_size(p.record), 0)
                   + coalesce(pg_catalog.pg_column_size(p.old_record), 0)) OVER (ORDER BY p.id) AS running_bytes,
               row_number() OVER (ORDER BY p.id) AS position,
               count(*) OVER () AS found
        FROM picked p
    ), kept AS (
        SELECT * FROM sized s WHERE s.running_bytes <= max_bytes OR s.position = 1
    )
    SELECT k.id, k.schema_name, k.table_name, k.op, k.record::text, k.old_record::text,
           coalesce((SELECT c.relrowsecurity FROM pg_catalog.pg_class c
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = channel_schema AND c.relname = channel_table), false),
           CASE WHEN k.found >= max_count OR k.found > (SELECT count(*) FROM kept)
                THEN (SELECT max(kept.id) FROM kept) ELSE upto_id END
    FROM kept k
    ORDER BY k.id
$$;

-- One bounded pruning step: removes the oldest whole transactions that are older than max_age or outside
-- the newest max_rows changes, at most about batch_rows changes (always at least one transaction when
-- something is due). Returns the number of changes removed; call again until it returns 0. Short
-- transactions and row locks only, so writers and readers never wait on it.
CREATE FUNCTION fluxbase_realtime.prune_change_log(max_age interval, max_rows bigint, batch_rows integer)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    head    bigint;
    removed bigint;
BEGIN
    -- Several instances prune the same log: one at a time is enough.
    IF NOT pg_try_advisory_xact_lock(hashtext('fluxbase_realtime.pruner')) THEN
        RETURN 0;
    END IF;
    SELECT next_id - 1 INTO STRICT head FROM fluxbase_realtime.sequencer_state;
    WITH due AS (
        -- Ids and commit times both grow with first_id, so what is due is a prefix of the log.
        SELECT c.first_id, c.txid,
               sum(c.change_count) OVER (ORDER BY c.first_id) - c.change_count AS rows_before
        FROM fluxbase_realtime.commits c
        WHERE c.committed_at < clock_timestamp() - max_age
           OR (max_rows IS NOT NULL AND c.first_id + c.change_count - 1 <= head - max_rows)
        ORDER BY c.first_id
        LIMIT batch_rows
    ), doomed AS (
        DELETE FROM fluxbase_realtime.commits c
        USING due
        WHERE c.first_id = due.first_id AND due.rows_before < batch_rows
        RETURNING c.txid
    ), deleted AS (
        DELETE FROM fluxbase_realtime.change_log l USING doomed WHERE l.txid = doomed.txid
        RETURNING 1
    )
    SELECT count(*) INTO removed FROM deleted;
    RETURN removed;
END
$$;
REVOKE ALL ON FUNCTION fluxbase_realtime.prune_change_log(interval, bigint, integer) FROM PUBLIC;
