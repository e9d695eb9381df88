-- The public face of capture, the same in both modes: enable_realtime(), disable_realtime(),
-- realtime_tables(), and a table's status as a channel. Each dispatches on the capture mode
-- (logical_capture.sql) to the trigger mode's functions (capture_triggers.sql) or logical mode's.

-- The table whose channel reports this partition's rows: its nearest published ancestor, or the nearest
-- one with capture triggers of its own.
CREATE FUNCTION fluxbase_realtime.capturing_table(schema_name text, table_name text)
RETURNS TABLE (via_schema text, via_table text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    (SELECT n.nspname::text, c.relname::text
     FROM pg_partition_ancestors(fluxbase_realtime.find_table(schema_name, table_name)) WITH ORDINALITY AS a(rel, depth)
     JOIN pg_class c ON c.oid = a.rel
     JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE a.depth > 1 AND fluxbase_realtime.is_published(a.rel)
     ORDER BY a.depth
     LIMIT 1)
    UNION ALL
    SELECT * FROM fluxbase_realtime.trigger_capturing_table(schema_name, table_name)
    LIMIT 1;
END
$$;

-- 'missing', 'disabled', 'enabled', or 'partition' (captured only through an ancestor), in either mode.
CREATE FUNCTION fluxbase_realtime.table_status(schema_name text, table_name text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel regclass := fluxbase_realtime.find_table(schema_name, table_name);
BEGIN
    IF rel IS NOT NULL AND fluxbase_realtime.is_published(rel) THEN
        RETURN 'enabled';
    ELSIF rel IS NOT NULL AND EXISTS (
            SELECT 1 FROM pg_partition_ancestors(rel) WITH ORDINALITY AS a(ancestor, depth)
            WHERE a.depth > 1 AND fluxbase_realtime.is_published(a.ancestor)) THEN
        RETURN 'partition';
    END IF;
    RETURN fluxbase_realtime.trigger_table_status(schema_name, table_name);
END
$$;

-- A TRUNCATE naming one partition of a realtime partitioned table (not the table) is reported on the
-- root's channel as a TRUNCATE whose record names the partition, {"schema": ..., "table": ...}: only that
-- partition's rows are gone, and clients that cannot tell which rows those were reload the table (the
-- frame's `partition`, docs/protocol.md). Neither mode sees it otherwise: the root's TRUNCATE trigger
-- fires only when the root is named, statement triggers are not cloned onto partitions, and pgoutput with
-- publish_via_partition_root sends nothing for a partition (PostgreSQL 15's pgoutput_truncate skips a
-- partition published as its root). So every partition of a realtime partitioned table, at any depth,
-- has a statement trigger fluxbase_realtime_partition_truncate calling partition_truncated(root schema,
-- root table), in both modes: in trigger mode it logs the change; in logical mode it writes a
-- transactional logical decoding message (prefix fluxbase_realtime.partition_truncate) into the WAL,
-- which the consumer (asking pgoutput for messages) logs in its place, so writers still touch no
-- realtime table. A TRUNCATE of the root, or of a sub-partitioned partition, also fires the triggers of
-- every partition below what it names, in order with nothing in between: the change already logged
-- covers them, so a partition's TRUNCATE is not logged when the transaction's last change is a TRUNCATE
-- of its root or of one of its ancestors (trigger mode: here; logical mode: in the consumer, which gets
-- the ancestors in the message). Anyone may write such a message: the consumer logs it only for a table
-- whose status is 'enabled'.
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

-- Every partition under `root` (at any depth) gets its TRUNCATE trigger naming the root, or (wanted =
-- false) loses it. Idempotent, and takes no lock on a partition whose trigger is as wanted. A partition
-- attached later gets its trigger when enable_realtime runs on the root (or the partition) again.
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

-- Realtime for a table (the documented way): its changes reach the subscribers of its channel from the
-- next transaction on, and the partitions of the partitioned table that captures it (itself, or the root
-- a partition is captured through) get their TRUNCATE triggers. Idempotent.
CREATE FUNCTION public.enable_realtime(schema_name text, table_name text) RETURNS void
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

CREATE FUNCTION public.disable_realtime(schema_name text, table_name text) RETURNS void
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

-- Which tables have realtime, in either mode (the information_schema.triggers query answers only for
-- the trigger mode).
CREATE FUNCTION public.realtime_tables()
RETURNS TABLE (schema_name text, table_name text, capture text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT DISTINCT n.nspname::text, c.relname::text, 'trigger'
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE t.tgfoid = 'public.notify_table_change()'::regprocedure AND t.tgparentid = 0
    UNION
    SELECT n.nspname::text, c.relname::text, 'logical'
    FROM pg_publication_rel pr
    JOIN pg_publication p ON p.oid = pr.prpubid
    JOIN fluxbase_realtime.capture_mode m ON p.pubname = m.publication
    JOIN pg_class c ON c.oid = pr.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    ORDER BY 1, 2
$$;
