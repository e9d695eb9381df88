-- One statement per change feed wake-up: the sequencer pass, then the first read of what it numbered.
--
-- The feed used to send sequence_commits() and changes_after() in one psycopg pipeline. Measured on an
-- idle machine (a wake-up every 2-10 ms, the shape of real traffic), the pipeline cost more than the two
-- statements sent one after the other, and one statement that does both cost 150-250 us less than the
-- pipeline (1.05-1.08 ms against 1.17-1.39 ms a wake-up after 10 ms idle; 0.50-0.65 against 0.68-0.89
-- after 2 ms). The read runs after the pass inside this function, in the same transaction and with a
-- snapshot taken after the pass, so it sees what the pass numbered; the pass's advisory lock is held until
-- the statement ends, as before.
--
-- `head` (the newest id numbered so far) is on every row; when there is nothing to read, one row carries
-- it with every other column NULL. The feed reads later batches with changes_after() itself.
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
