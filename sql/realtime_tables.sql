-- The public face of capture, the same in both modes: enable_realtime(), disable_realtime(),
-- realtime_tables(), and a table's status as a channel. Each dispatches on the capture mode
-- (logical_capture.sql) to the trigger mode's functions (capture_triggers.sql) or logical mode's.

-- The table whose channel reports this partition's rows: its nearest published ancestor, or the nearest
-- one with capture triggers of its own.
CREATE FUNCTION fluxbase_realtime.capturing_table(schema_name text, table_name text)
RETURNS TABLE (via_schema text, via_table text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    (SELECT n.nspname::text, c.relname::text
     FROM pg_partition_ancestors(fluxbase_realtime.find_table(schema_name, table_name)) WITH ORDINALITY AS a(rel, depth)
     JOIN pg_class c ON c.oid = a.rel
     JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE a.depth > 1 AND fluxbase_realtime.is_published(a.rel)
     ORDER BY a.depth
     LIMIT 1)
    UNION ALL
    SELECT * FROM fluxbase_realtime.trigger_capturing_table(schema_name, table_name)
    LIMIT 1
$$;

-- 'missing', 'disabled', 'enabled', or 'partition' (captured only through an ancestor), in either mode.
CREATE FUNCTION fluxbase_realtime.table_status(schema_name text, table_name text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN rel IS NOT NULL AND fluxbase_realtime.is_published(rel) THEN 'enabled'
        WHEN rel IS NOT NULL AND EXISTS (
            SELECT 1 FROM pg_partition_ancestors(rel) WITH ORDINALITY AS a(ancestor, depth)
            WHERE a.depth > 1 AND fluxbase_realtime.is_published(a.ancestor)) THEN 'partition'
        ELSE fluxbase_realtime.trigger_table_status(schema_name, table_name)
    END
    FROM (SELECT fluxbase_realtime.find_table(schema_name, table_name) AS rel) AS found
$$;

-- Realtime for a table (the documented way): its changes reach the subscribers of its channel from the
-- next transaction on. Idempotent.
CREATE FUNCTION public.enable_realtime(schema_name text, table_name text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel regclass := fluxbase_realtime.find_table(schema_name, table_name);
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
