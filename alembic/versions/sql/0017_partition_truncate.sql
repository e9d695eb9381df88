-- A TRUNCATE naming a partition (not its partitioned table) reaches the root's channel (issue 12), and
-- the logical consumer's batches take a cheaper writer (log_decoded_batch, at the end).
--
-- What a client can act on: the rows of the root that were stored in that partition are gone, the others
-- are not, and a client holding the root's rows cannot tell which were which unless it knows the
-- partitioning. So it is logged as a TRUNCATE on the root's channel whose record names the partition,
-- {"schema": ..., "table": ...}; the frame carries it as `partition` (app/protocol/frames.py), and the
-- client libraries treat it as "reload this table" (docs/protocol.md).
--
-- Neither capture mode sees it otherwise. The root's TRUNCATE trigger fires only when the root is named,
-- statement triggers are not cloned onto partitions, and pgoutput with publish_via_partition_root sends
-- nothing for a partition (PostgreSQL 15, pgoutput_truncate: a partition published as its root is
-- skipped). So enable_realtime gives each partition of a realtime partitioned table (at any depth) one
-- statement trigger, fluxbase_realtime_partition_truncate, calling partition_truncated(root schema, root
-- table), in both modes:
--   * trigger mode: the function logs the change like the capture trigger does;
--   * logical mode: it writes a transactional logical decoding message (prefix
--     fluxbase_realtime.partition_truncate) into the WAL, which the consumer, asking pgoutput for
--     messages, logs in its place in the transaction. Writers still touch no realtime table.
-- A TRUNCATE of the root, or of a sub-partitioned partition, also fires the triggers of every partition
-- below what it names (in that order, with nothing in between): the change already logged covers them,
-- so a partition's TRUNCATE is not logged when the transaction's last change is a TRUNCATE of its root
-- or of one of its ancestors (trigger mode: here; logical mode: in the consumer, which gets the
-- ancestors in the message). A partition attached later gets its trigger when enable_realtime runs on
-- the root (or on the partition) again, as its replica identity does.

CREATE FUNCTION fluxbase_realtime.partition_truncated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    position  integer := coalesce(nullif(current_setting('fluxbase_realtime.tx_changes', true), '')::integer, 0);
    partition jsonb := jsonb_build_object('schema', TG_TABLE_SCHEMA::text, 'table', TG_TABLE_NAME::text);
    ignored   text;
BEGIN
    IF fluxbase_realtime.current_capture_mode() = 'logical' THEN
        PERFORM pg_logical_emit_message(true, 'fluxbase_realtime.partition_truncate', jsonb_build_object(
            'root', jsonb_build_array(TG_ARGV[0], TG_ARGV[1]),
            'partition', partition,
            'ancestors', (SELECT coalesce(jsonb_agg(jsonb_build_array(n.nspname::text, c.relname::text)), '[]')
                          FROM pg_partition_ancestors(TG_RELID) a
                          JOIN pg_class c ON c.oid = a.relid JOIN pg_namespace n ON n.oid = c.relnamespace
                          WHERE a.relid <> TG_RELID))::text);
        RETURN NULL;
    END IF;
    IF position > 0 AND EXISTS (
        SELECT 1 FROM fluxbase_realtime.change_log l
        WHERE l.txid = pg_current_xact_id() AND l.ord = position - 1 AND l.op = 'TRUNCATE'
          AND l.schema_name = TG_ARGV[0] AND l.table_name = TG_ARGV[1]
          AND (l.record IS NULL OR fluxbase_realtime.find_table(l.record->>'schema', l.record->>'table')
                                   IN (SELECT a.relid FROM pg_partition_ancestors(TG_RELID) a))) THEN
        RETURN NULL;  -- covered by the TRUNCATE just logged
    END IF;
    INSERT INTO fluxbase_realtime.change_log (txid, ord, schema_name, table_name, op, record)
    VALUES (pg_current_xact_id(), position, TG_ARGV[0], TG_ARGV[1], 'TRUNCATE', partition);
    ignored := set_config('fluxbase_realtime.tx_changes', (position + 1)::text, true);
    IF NOT coalesce((SELECT l.until > clock_timestamp() FROM fluxbase_realtime.polling_lease l), false) THEN
        ignored := pg_notify((SELECT c.notify_channel FROM fluxbase_realtime.capture_config c), '')::text;
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION fluxbase_realtime.partition_truncated() FROM PUBLIC;

-- Give every partition under `root` (at any depth) its TRUNCATE trigger naming the root, or (wanted =
-- false) take them away. Idempotent, and takes no lock on a partition whose trigger is as wanted.
CREATE FUNCTION fluxbase_realtime.sync_partition_truncate_triggers(root regclass, wanted boolean) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    part      regclass;
    root_args text[] := (SELECT ARRAY[n.nspname::text, c.relname::text]
                         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = root);
BEGIN
    FOR part IN SELECT t.relid FROM pg_partition_tree(root) t WHERE t.relid <> root LOOP
        IF wanted AND EXISTS (
            SELECT 1 FROM pg_trigger t
            WHERE t.tgrelid = part AND t.tgname = 'fluxbase_realtime_partition_truncate'
              AND t.tgfoid = 'fluxbase_realtime.partition_truncated()'::regprocedure
              AND t.tgargs = convert_to(root_args[1], 'UTF8') || '\x00'::bytea
                             || convert_to(root_args[2], 'UTF8') || '\x00'::bytea) THEN
            CONTINUE;
        END IF;
        EXECUTE format('DROP TRIGGER IF EXISTS fluxbase_realtime_partition_truncate ON %s', part);
        IF wanted THEN
            EXECUTE format(
                'CREATE TRIGGER fluxbase_realtime_partition_truncate AFTER TRUNCATE ON %s FOR EACH STATEMENT '
                'EXECUTE FUNCTION fluxbase_realtime.partition_truncated(%L, %L)',
                part, root_args[1], root_args[2]);
        END IF;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION fluxbase_realtime.sync_partition_truncate_triggers(regclass, boolean) FROM PUBLIC;

-- The dispatcher of 0018_logical_capture.sql, then the partitions' TRUNCATE triggers of the partitioned
-- table that captures this one (itself, or the root a partition is captured through).
CREATE OR REPLACE FUNCTION public.enable_realtime(schema_name text, table_name text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel     regclass := fluxbase_realtime.find_table(schema_name, table_name);
    through record;
BEGIN
    IF rel IS NULL THEN
        RAISE EXCEPTION 'table %.% does not exist', quote_ident(schema_name), quote_ident(table_name)
            USING ERRCODE = 'undefined_table';
    END IF;
    IF fluxbase_realtime.current_capture_mode() = 'logical' THEN
        PERFORM fluxbase_realtime.enable_logical_capture(rel);
    ELSE
        PERFORM fluxbase_realtime.enable_trigger_capture(schema_name, table_name);
    END IF;
    IF fluxbase_realtime.table_status(schema_name, table_name) = 'partition' THEN
        SELECT * INTO through FROM fluxbase_realtime.capturing_table(schema_name, table_name);
        rel := fluxbase_realtime.find_table(through.via_schema, through.via_table);
    END IF;
    IF rel IS NOT NULL AND fluxbase_realtime.is_partitioned(rel) THEN
        PERFORM fluxbase_realtime.sync_partition_truncate_triggers(rel, true);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION public.disable_realtime(schema_name text, table_name text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel     regclass := fluxbase_realtime.find_table(schema_name, table_name);
    through record;
BEGIN
    IF rel IS NULL THEN
        RAISE EXCEPTION 'table %.% does not exist', quote_ident(schema_name), quote_ident(table_name)
            USING ERRCODE = 'undefined_table';
    END IF;
    IF fluxbase_realtime.table_status(schema_name, table_name) = 'partition' THEN
        SELECT * INTO through FROM fluxbase_realtime.capturing_table(schema_name, table_name);
        RAISE EXCEPTION 'table %.% is captured through its partitioned table %.%',
            quote_ident(schema_name), quote_ident(table_name),
            quote_ident(through.via_schema), quote_ident(through.via_table)
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'disable realtime on the partitioned table, or detach this partition';
    END IF;
    -- Both mechanisms, whatever the mode: a table switched while the service was down has either.
    IF fluxbase_realtime.is_published(rel) THEN
        EXECUTE format('ALTER PUBLICATION %I DROP TABLE %s',
                       (SELECT m.publication FROM fluxbase_realtime.capture_mode m), rel);
    END IF;
    PERFORM fluxbase_realtime.disable_trigger_capture(schema_name, table_name);
    IF fluxbase_realtime.is_partitioned(rel) THEN
        PERFORM fluxbase_realtime.sync_partition_truncate_triggers(rel, false);
    END IF;
END
$$;

-- The consumer's batch writer, cheaper than log_decoded_changes of 0018_logical_capture.sql (which stays,
-- for instances of the previous version during an upgrade): the batch is jsonb, parsed once (json's ->>
-- scans the text again at every use), grouped by table by the consumer, and each table's changes go into
-- the log in one INSERT ... SELECT, with no temporary table in between; about half the server time per
-- batch. `batch` is [[schema, table, [[ord, op, new row, old row], ...]], ...]: rows are composite
-- literals in the table's column order, cast to its row type and rendered with to_jsonb, exactly what the
-- trigger logs (app/services/pgoutput.py: row_literal); a TRUNCATE's new row is the partition it names
-- (JSON text), or none. Should the table have changed under the stream so that the cast fails, that
-- table's records are logged as the literal's text rather than stopping capture.
CREATE FUNCTION fluxbase_realtime.log_decoded_batch(
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
            EXECUTE format($q$
                INSERT INTO fluxbase_realtime.change_log (txid, ord, schema_name, table_name, op, record, old_record)
                SELECT pg_current_xact_id(), (c.v->>0)::integer, $1, $2, c.v->>1,
                       CASE WHEN c.v->>1 = 'TRUNCATE' THEN (c.v->>2)::jsonb ELSE to_jsonb((c.v->>2)::%1$s) END,
                       to_jsonb((c.v->>3)::%1$s)
                FROM jsonb_array_elements($3) AS c(v)
            $q$, rel) USING target->>0, target->>1, target->2;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'logical capture: rows of %.% do not fit its current definition (%): logged as text',
                quote_ident(target->>0), quote_ident(target->>1), SQLERRM;
            INSERT INTO fluxbase_realtime.change_log (txid, ord, schema_name, table_name, op, record, old_record)
            SELECT pg_current_xact_id(), (c.v->>0)::integer, target->>0, target->>1, c.v->>1,
                   CASE WHEN c.v->>1 = 'TRUNCATE' THEN (c.v->>2)::jsonb ELSE to_jsonb(c.v->>2) END,
                   to_jsonb(c.v->>3)
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
REVOKE ALL ON FUNCTION fluxbase_realtime.log_decoded_batch(jsonb, pg_lsn, bigint, boolean) FROM PUBLIC;

-- Realtime partitioned tables enabled before this migration get their partitions' triggers.
DO $$
DECLARE
    target record;
BEGIN
    FOR target IN SELECT r.schema_name, r.table_name FROM public.realtime_tables() r LOOP
        IF fluxbase_realtime.is_partitioned(fluxbase_realtime.find_table(target.schema_name, target.table_name)) THEN
            BEGIN
                PERFORM fluxbase_realtime.sync_partition_truncate_triggers(
                    fluxbase_realtime.find_table(target.schema_name, target.table_name), true);
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE WARNING 'the partitions of %.% do not report their own TRUNCATE: %',
                    quote_ident(target.schema_name), quote_ident(target.table_name), SQLERRM
                    USING HINT = 'its owner can add them with enable_realtime()';
            END;
        END IF;
    END LOOP;
END
$$;
