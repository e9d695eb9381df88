-- Which capture triggers a table gets in trigger mode (the default), and the table's status as a channel.
-- The public entry points, enable_realtime() and disable_realtime(), dispatch on the capture mode
-- (realtime_tables.sql) to enable_trigger_capture() and disable_trigger_capture() here.
--
-- PostgreSQL refuses transition tables on a trigger with more than one event, so an ordinary table gets
-- three AFTER ... FOR EACH STATEMENT triggers, all calling public.notify_table_change() (table status and
-- disable find them by that function) and all named `..._notify_change` (the documented
-- information_schema.triggers query lists realtime tables, one row per event), plus the TRUNCATE one:
--   <table>_insert_notify_change    AFTER INSERT   REFERENCING NEW TABLE AS fluxbase_new
--   <table>_update_notify_change    AFTER UPDATE   REFERENCING OLD TABLE AS fluxbase_old NEW TABLE AS fluxbase_new
--   <table>_delete_notify_change    AFTER DELETE   REFERENCING OLD TABLE AS fluxbase_old
--   <table>_truncate_notify_change  AFTER TRUNCATE FOR EACH STATEMENT
--
-- Tables that get the row trigger <table>_notify_change (AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW)
-- instead of the three statement triggers (and the TRUNCATE one as well):
--   * partitioned tables (relkind 'p'): a statement trigger on the root does not fire for a statement that
--     targets a partition directly, while the root's row trigger is cloned onto every partition and fires
--     either way. It passes the partitioned table's schema and name as arguments
--     (EXECUTE FUNCTION public.notify_table_change('public', 'measurements')), which the clones keep, so
--     rows are logged under it and row-level security is checked against its policies and column
--     privileges, as a SELECT on it would apply them. The name is fixed when realtime is enabled: after
--     renaming a partitioned realtime table (or its schema), run enable_realtime on it again, which sees
--     the stale arguments and replaces the trigger;
--   * partitions: their own statement triggers do not fire for rows routed to them through the root;
--   * tables with inheritance parents or children (INHERITS): a statement that names the parent fires only
--     the parent's statement triggers, and its transition tables hold the children's rows converted to the
--     parent's columns; the row triggers log each row under its own table.
-- Each case verified on PostgreSQL 15 and tested in tests/integration/test_statement_capture.py.
--
-- TRUNCATE fires no row or INSERT/UPDATE/DELETE trigger, only statement-level TRUNCATE triggers, once for
-- each table it empties: TRUNCATE of a parent fires its inheritance children's too, TRUNCATE of a
-- partitioned table its partitions' (verified on PostgreSQL 15). A partitioned table's TRUNCATE trigger is
-- on the table itself and logs under its own name; its partitions, captured through it, get none, so a
-- TRUNCATE of the partitioned table is one change on its channel. A TRUNCATE that names a single partition
-- fires nothing of ours and is not reported (docs/design.md, Known limits).
--
-- A partition captured through a realtime ancestor has the status 'partition', so that a subscribe to its
-- own channel is refused with the ancestor's name (capturing_table()) instead of succeeding and receiving
-- nothing; disable_realtime() on it says to disable realtime on the ancestor instead of failing on the
-- clone PostgreSQL refuses to drop.

-- The table a channel names, matched exactly (no case folding), or NULL. PL/pgSQL, like everything a
-- subscribe's checks call (sql/README.md, "Functions on hot paths").
CREATE FUNCTION fluxbase_realtime.find_table(schema_name text, table_name text) RETURNS regclass
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (SELECT c.oid::regclass
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = schema_name AND c.relname = table_name AND c.relkind IN ('r', 'p'));
END
$$;

-- `table_name || suffix`, cut to PostgreSQL's identifier length (63 bytes) by shortening the table's part,
-- whole characters at a time: PostgreSQL would cut the suffix instead, and the names of a long table's
-- triggers would then collide and no longer end in `_notify_change`.
CREATE FUNCTION fluxbase_realtime.capture_trigger_name(table_name text, suffix text) RETURNS text
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    head text := table_name;
BEGIN
    WHILE octet_length(head) + octet_length(suffix) > current_setting('max_identifier_length')::integer LOOP
        head := left(head, -1);
    END LOOP;
    RETURN head || suffix;
END
$$;

-- Whether `rel` is captured by statement triggers (ordinary tables outside any partition or inheritance
-- tree: see the header) rather than by the row trigger.
CREATE FUNCTION fluxbase_realtime.captures_statements(rel regclass) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT c.relkind = 'r' AND NOT c.relispartition
           AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid OR i.inhparent = c.oid)
    FROM pg_class c WHERE c.oid = rel
$$;

-- Whether `rel` is a partitioned table (at any level of a partition tree).
CREATE FUNCTION fluxbase_realtime.is_partitioned(rel regclass) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT c.relkind = 'p' FROM pg_class c WHERE c.oid = rel
$$;

-- The arguments a trigger passes its function: pg_trigger.tgargs holds each, NUL-terminated, in the
-- server encoding.
CREATE FUNCTION fluxbase_realtime.trigger_arguments(args bytea) RETURNS text[]
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    result text[] := '{}';
    rest   bytea := args;
    cut    integer;
BEGIN
    LOOP
        cut := position('\x00'::bytea IN rest);
        EXIT WHEN cut = 0;
        result := result || convert_from(substring(rest FROM 1 FOR cut - 1), current_setting('server_encoding'));
        rest := substring(rest FROM cut + 1);
    END LOOP;
    RETURN result;
END
$$;

-- The capture triggers `rel` has, as 'tgtype:old table:new table:arguments' in tgtype order, and those it
-- should have: a partitioned table's row trigger carries its name, so a renamed one no longer matches.
CREATE FUNCTION fluxbase_realtime.capture_triggers(rel regclass) RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ARRAY(SELECT format('%s:%s:%s:%s', t.tgtype, t.tgoldtable, t.tgnewtable,
                               fluxbase_realtime.trigger_arguments(t.tgargs))
                 FROM pg_trigger t
                 WHERE t.tgrelid = rel AND t.tgfoid = 'public.notify_table_change()'::regprocedure
                 ORDER BY t.tgtype, t.tgname)
$$;
CREATE FUNCTION fluxbase_realtime.wanted_capture_triggers(rel regclass) RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    -- tgtype bits: ROW 1, INSERT 4, DELETE 8, UPDATE 16, TRUNCATE 32 (AFTER: no BEFORE bit).
    SELECT CASE WHEN fluxbase_realtime.captures_statements(rel)
                THEN ARRAY['4::fluxbase_new:{}', '8:fluxbase_old::{}', '16:fluxbase_old:fluxbase_new:{}', '32:::{}']
                WHEN fluxbase_realtime.is_partitioned(rel)
                THEN ARRAY[format('29:::%s', ARRAY[n.nspname::text, c.relname::text]), '32:::{}']
                ELSE ARRAY['29:::{}', '32:::{}'] END
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = rel
$$;

-- Trigger mode's enable (enable_realtime() in trigger mode): gives the table exactly the triggers it
-- should have, replacing any others of notify_table_change(), and does nothing (takes no lock) when it
-- has them already.
CREATE FUNCTION fluxbase_realtime.enable_trigger_capture(schema_name text, table_name text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel          regclass := fluxbase_realtime.find_table(schema_name, table_name);
    trigger_name name;
BEGIN
    IF rel IS NULL THEN
        RAISE EXCEPTION 'table %.% does not exist', quote_ident(schema_name), quote_ident(table_name)
            USING ERRCODE = 'undefined_table';
    END IF;
    -- A partition of a realtime partitioned table is captured by the clone of its root's row trigger. Any
    -- capture triggers of its own (it had realtime before it was attached) would log its rows twice.
    IF EXISTS (SELECT 1 FROM pg_trigger t
               WHERE t.tgrelid = rel AND t.tgfoid = 'public.notify_table_change()'::regprocedure
                 AND t.tgparentid <> 0) THEN
        FOR trigger_name IN
            SELECT t.tgname FROM pg_trigger t
            WHERE t.tgrelid = rel AND t.tgfoid = 'public.notify_table_change()'::regprocedure
              AND t.tgparentid = 0
        LOOP
            EXECUTE format('DROP TRIGGER %I ON %s', trigger_name, rel);
        END LOOP;
        RETURN;
    END IF;
    -- Idempotent by the function the triggers call and their kind, not by name: nothing to do (and no
    -- lock taken) when the table has exactly the triggers it should.
    IF fluxbase_realtime.capture_triggers(rel) = fluxbase_realtime.wanted_capture_triggers(rel) THEN
        RETURN;
    END IF;
    -- Concurrent calls take turns (both modes conflict with themselves), and the second finds the work
    -- done. Replacing triggers needs DROP TRIGGER's ACCESS EXCLUSIVE: take it at once rather than upgrade.
    EXECUTE format('LOCK TABLE %s IN %s MODE', rel,
                   CASE WHEN cardinality(fluxbase_realtime.capture_triggers(rel)) > 0
                        THEN 'ACCESS EXCLUSIVE' ELSE 'SHARE ROW EXCLUSIVE' END);
    IF fluxbase_realtime.capture_triggers(rel) = fluxbase_realtime.wanted_capture_triggers(rel) THEN
        RETURN;
    END IF;
    -- Replace whatever capture triggers it has (the row trigger of a table enabled before statement-level
    -- capture, or the other kind after the table joined or left a partition or inheritance tree). One
    -- transaction: no statement runs between the old triggers and the new ones.
    FOR trigger_name IN
        SELECT t.tgname FROM pg_trigger t
        WHERE t.tgrelid = rel AND t.tgfoid = 'public.notify_table_change()'::regprocedure
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', trigger_name, rel);
    END LOOP;
    IF fluxbase_realtime.captures_statements(rel) THEN
        EXECUTE format(
            'CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS fluxbase_new '
            'FOR EACH STATEMENT EXECUTE FUNCTION public.notify_table_change()',
            fluxbase_realtime.capture_trigger_name(table_name, '_insert_notify_change'), rel);
        EXECUTE format(
            'CREATE TRIGGER %I AFTER UPDATE ON %s REFERENCING OLD TABLE AS fluxbase_old NEW TABLE AS fluxbase_new '
            'FOR EACH STATEMENT EXECUTE FUNCTION public.notify_table_change()',
            fluxbase_realtime.capture_trigger_name(table_name, '_update_notify_change'), rel);
        EXECUTE format(
            'CREATE TRIGGER %I AFTER DELETE ON %s REFERENCING OLD TABLE AS fluxbase_old '
            'FOR EACH STATEMENT EXECUTE FUNCTION public.notify_table_change()',
            fluxbase_realtime.capture_trigger_name(table_name, '_delete_notify_change'), rel);
    ELSIF fluxbase_realtime.is_partitioned(rel) THEN
        -- Its name goes with the trigger onto every partition (see the header).
        EXECUTE format(
            'CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW '
            'EXECUTE FUNCTION public.notify_table_change(%L, %L)',
            fluxbase_realtime.capture_trigger_name(table_name, '_notify_change'), rel, schema_name, table_name);
    ELSE
        EXECUTE format(
            'CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW '
            'EXECUTE FUNCTION public.notify_table_change()',
            fluxbase_realtime.capture_trigger_name(table_name, '_notify_change'), rel);
    END IF;
    -- Every kind of table: TRUNCATE fires statement triggers only, on each table it empties. A partitioned
    -- table's fires when it is truncated (its partitions, captured through it, have none of their own).
    EXECUTE format(
        'CREATE TRIGGER %I AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION public.notify_table_change()',
        fluxbase_realtime.capture_trigger_name(table_name, '_truncate_notify_change'), rel);
END
$$;
REVOKE ALL ON FUNCTION fluxbase_realtime.enable_trigger_capture(text, text) FROM PUBLIC;

-- Trigger mode's disable: drops the table's own capture triggers.
CREATE FUNCTION fluxbase_realtime.disable_trigger_capture(schema_name text, table_name text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel          regclass := fluxbase_realtime.find_table(schema_name, table_name);
    trigger_name name;
    through      record;
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
    -- Its own triggers only: clones of an ancestor's cannot be dropped, and belong to the ancestor.
    FOR trigger_name IN
        SELECT t.tgname FROM pg_trigger t
        WHERE t.tgrelid = rel AND t.tgfoid = 'public.notify_table_change()'::regprocedure AND t.tgparentid = 0
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', trigger_name, rel);
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION fluxbase_realtime.disable_trigger_capture(text, text) FROM PUBLIC;

-- In trigger mode: 'missing', 'disabled', 'enabled', or 'partition' (captured only through an ancestor:
-- see the header). table_status() (realtime_tables.sql) answers for both modes.
CREATE FUNCTION fluxbase_realtime.trigger_table_status(schema_name text, table_name text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel    regclass := fluxbase_realtime.find_table(schema_name, table_name);
    -- Resolved at each call, not kept in a cached plan (0019_plan_cached_table_checks.sql).
    notify regprocedure := 'public.notify_table_change()'::text::regprocedure;
BEGIN
    IF rel IS NULL THEN
        RETURN 'missing';
    END IF;
    RETURN CASE
        WHEN EXISTS (SELECT 1 FROM pg_trigger t
                     WHERE t.tgrelid = rel AND t.tgfoid = notify AND t.tgparentid = 0)
            THEN 'enabled'
        WHEN EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = rel AND t.tgfoid = notify)
            THEN 'partition'
        ELSE 'disabled'
    END;
END
$$;

-- In trigger mode, the table whose channel reports the changes of this partition: the nearest ancestor
-- with capture triggers of its own. None when the table is not a partition captured that way.
CREATE FUNCTION fluxbase_realtime.trigger_capturing_table(schema_name text, table_name text)
RETURNS TABLE (via_schema text, via_table text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- Resolved at each call, not kept in a cached plan (0019_plan_cached_table_checks.sql).
    notify regprocedure := 'public.notify_table_change()'::text::regprocedure;
BEGIN
    RETURN QUERY
    SELECT n.nspname::text, c.relname::text
    FROM pg_partition_ancestors(fluxbase_realtime.find_table(schema_name, table_name)) WITH ORDINALITY AS a(rel, depth)
    JOIN pg_class c ON c.oid = a.rel
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE a.depth > 1
      AND EXISTS (SELECT 1 FROM pg_trigger t
                  WHERE t.tgrelid = a.rel AND t.tgparentid = 0 AND t.tgfoid = notify)
    ORDER BY a.depth
    LIMIT 1;
END
$$;
