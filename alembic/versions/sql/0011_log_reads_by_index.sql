-- Log reads look each transaction's changes up by index, however large the log has grown.
--
-- The readers join the commits of an id range to change_log on (txid, ord). The planner cannot know how
-- many commits the range holds (its lower bound is a subquery), guesses a few hundred, and then prefers a
-- hash join over a sequential scan of the whole log: measured 3.1 ms for a 5-change read of a 25,000-row
-- log, growing with the log (retention keeps up to 1,000,000 rows by default). The LIMIT below keeps the
-- per-transaction subquery from being flattened, so the join is a nested loop of index range scans on
-- change_log's primary key: the cost follows the changes read, not the changes retained. Same results as
-- 0006_row_level_security.sql's versions; only the join's shape changes.

CREATE OR REPLACE FUNCTION fluxbase_realtime.changes_after(after_id bigint, max_count integer, max_bytes bigint)
RETURNS TABLE (id bigint, schema_name text, table_name text, op text, record text, old_record text, rls boolean)
LANGUAGE sql STABLE AS $$
    WITH span AS (
        SELECT c.first_id, c.txid
        FROM fluxbase_realtime.commits c
        WHERE c.first_id >= coalesce((SELECT max(first_id) FROM fluxbase_realtime.commits
                                      WHERE first_id <= after_id + 1), 0)
          AND c.first_id <= after_id + max_count
    ), picked AS (
        SELECT s.first_id + l.ord AS id, l.schema_name, l.table_name, l.op, l.record, l.old_record,
               sum(coalesce(pg_catalog.pg_column_size(l.record), 0)
                   + coalesce(pg_catalog.pg_column_size(l.old_record), 0))
                   OVER (ORDER BY s.first_id + l.ord) AS running_bytes
        FROM span s
        CROSS JOIN LATERAL (
            SELECT l.ord, l.schema_name, l.table_name, l.op, l.record, l.old_record
            FROM fluxbase_realtime.change_log l
            WHERE l.txid = s.txid AND l.ord > after_id - s.first_id AND l.ord <= after_id + max_count - s.first_id
            LIMIT max_count
        ) l
    )
    SELECT p.id, p.schema_name, p.table_name, p.op, p.record::text, p.old_record::text,
           coalesce((SELECT c.relrowsecurity FROM pg_catalog.pg_class c
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = p.schema_name AND c.relname = p.table_name), false)
    FROM picked p
    WHERE p.running_bytes <= max_bytes OR p.id = after_id + 1
    ORDER BY p.id
$$;

CREATE OR REPLACE FUNCTION fluxbase_realtime.table_changes_after(
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
