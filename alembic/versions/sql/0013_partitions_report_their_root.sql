-- Partitioned tables report their own name. The row trigger of a partitioned table is cloned onto each of
-- its partitions, and TG_TABLE_NAME in a clone is the partition's: rows were logged under the partition
-- that holds them, so a subscriber to the partitioned table's channel received nothing. Now its trigger
-- passes the partitioned table's schema and name as arguments (EXECUTE FUNCTION
-- public.notify_table_change('public', 'measurements')); clones keep their parent's arguments, and the
-- trigger function logs rows under them when present. Row-level security is then checked against the
-- partitioned table's policies and column privileges, as a SELECT on it would apply them.
--
-- The name is fixed when realtime is enabled: after renaming a partitioned realtime table (or its schema),
-- run enable_realtime on it again, which sees the stale arguments and replaces the trigger.
--
-- A partition captured through a realtime ancestor is reported by table_status() as 'partition', so that
-- a subscribe to its own channel is refused with the ancestor's name (capturing_table()) instead of
-- succeeding and receiving nothing; disable_realtime() on it says to disable realtime on the ancestor
-- instead of failing on the clone PostgreSQL refuses to drop.

-- The trigger function, with the channel compiled in as before (0002_capture.sql).
CREATE OR REPLACE FUNCTION fluxbase_realtime.install_capture_function(channel text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $outer$
BEGIN
    -- SECURITY DEFINER: writers need no privilege on the change log, and cannot forge entries in it.
    EXECUTE format($fn$
        CREATE OR REPLACE FUNCTION public.notify_table_change() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
        DECLARE
            -- Position of the next change in its transaction; SET LOCAL state rolls back with savepoints,
            -- exactly like the log rows it numbers.
            first_ord integer := coalesce(nullif(current_setting('fluxbase_realtime.tx_changes', true), '')::integer, 0);
            logged    bigint;
            ignored   text;
        BEGIN
            IF TG_LEVEL = 'ROW' THEN
                -- Partitioned tables, partitions and inheritance hierarchies (0010_statement_level_capture.sql).
                -- A partitioned table's trigger names it in its arguments, and its clones on the partitions
                -- keep them: rows are reported under the table realtime was enabled on, whichever partition
                -- holds them (0013_partitions_report_their_root.sql).
                INSERT INTO fluxbase_realtime.change_log (txid, ord, schema_name, table_name, op, record, old_record)
                VALUES (pg_current_xact_id(), first_ord, coalesce(TG_ARGV[0], TG_TABLE_SCHEMA),
                        coalesce(TG_ARGV[1], TG_TABLE_NAME), TG_OP,
                        CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END,
                        CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END);
                logged := 1;
            -- Every row of the statement in one INSERT ... SELECT, numbered in the order the statement
            -- changed them. `r.*`, not `r`: a column named r would otherwise win over the whole row.
            ELSIF TG_OP = 'INSERT' THEN
                INSERT INTO fluxbase_realtime.change_log (txid, ord, schema_name, table_name, op, record)
                SELECT pg_current_xact_id(), first_ord + changed.n - 1, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'INSERT',
                       changed.rec
                FROM (SELECT to_jsonb(r.*) AS rec, row_number() OVER () AS n FROM fluxbase_new AS r) AS changed;
                GET DIAGNOSTICS logged = ROW_COUNT;
            ELSIF TG_OP = 'DELETE' THEN
                INSERT INTO fluxbase_realtime.change_log (txid, ord, schema_name, table_name, op, old_record)
                SELECT pg_current_xact_id(), first_ord + changed.n - 1, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'DELETE',
                       changed.rec
                FROM (SELECT to_jsonb(r.*) AS rec, row_number() OVER () AS n FROM fluxbase_old AS r) AS changed;
                GET DIAGNOSTICS logged = ROW_COUNT;
            ELSE
                -- The n-th old row is the n-th new row's previous version: see the header of
                -- 0010_statement_level_capture.sql for why.
                INSERT INTO fluxbase_realtime.change_log (txid, ord, schema_name, table_name, op, record, old_record)
                SELECT pg_current_xact_id(), first_ord + new_rows.n - 1, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'UPDATE',
                       new_rows.rec, old_rows.rec
                FROM (SELECT to_jsonb(r.*) AS rec, row_number() OVER () AS n FROM fluxbase_new AS r) AS new_rows
                JOIN (SELECT to_jsonb(r.*) AS rec, row_number() OVER () AS n FROM fluxbase_old AS r) AS old_rows
                  USING (n);
                GET DIAGNOSTICS logged = ROW_COUNT;
            END IF;
            -- A statement that changed no row logs nothing and wakes nobody.
            IF logged > 0 THEN
                -- Assignments rather than PERFORM: PL/pgSQL evaluates a simple expression without starting
                -- the executor, which saves about as much per statement as row_number() costs.
                ignored := set_config('fluxbase_realtime.tx_changes', (first_ord + logged)::text, true);
                -- A constant payload: PostgreSQL folds duplicates, so a transaction notifies once. The data
                -- never travels in the notification, so no row is too large for NOTIFY's 8000-byte limit.
                ignored := pg_notify(%L, '')::text;
            END IF;
            RETURN NULL;
        END
        $body$
    $fn$, channel);
    DELETE FROM fluxbase_realtime.capture_config;
    INSERT INTO fluxbase_realtime.capture_config (notify_channel) VALUES (channel);
END
$outer$;

SELECT fluxbase_realtime.install_capture_function((SELECT c.notify_channel FROM fluxbase_realtime.capture_config c));

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
CREATE OR REPLACE FUNCTION fluxbase_realtime.capture_triggers(rel regclass) RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ARRAY(SELECT format('%s:%s:%s:%s', t.tgtype, t.tgoldtable, t.tgnewtable,
                               fluxbase_realtime.trigger_arguments(t.tgargs))
                 FROM pg_trigger t
                 WHERE t.tgrelid = rel AND t.tgfoid = 'public.notify_table_change()'::regprocedure
                 ORDER BY t.tgtype, t.tgname)
$$;
CREATE OR REPLACE FUNCTION fluxbase_realtime.wanted_capture_triggers(rel regclass) RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    -- tgtype bits: ROW 1, INSERT 4, DELETE 8, UPDATE 16 (AFTER: no BEFORE bit).
    SELECT CASE WHEN fluxbase_realtime.captures_statements(rel)
                THEN ARRAY['4::fluxbase_new:{}', '8:fluxbase_old::{}', '16:fluxbase_old:fluxbase_new:{}']
                WHEN fluxbase_realtime.is_partitioned(rel)
                THEN ARRAY[format('29:::%s', ARRAY[n.nspname::text, c.relname::text])]
                ELSE ARRAY['29:::{}'] END
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = rel
$$;

-- The table whose channel reports the changes of this partition: the nearest
-- ancestor with capture triggers of its own. None when the table is not a partition captured that way.
CREATE FUNCTION fluxbase_realtime.capturing_table(schema_name text, table_name text)
RETURNS TABLE (via_schema text, via_table text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT n.nspname::text, c.relname::text
    FROM pg_partition_ancestors(fluxbase_realtime.find_table(schema_name, table_name)) WITH ORDINALITY AS a(rel, depth)
    JOIN pg_class c ON c.oid = a.rel
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE a.depth > 1
      AND EXISTS (SELECT 1 FROM pg_trigger t
                  WHERE t.tgrelid = a.rel AND t.tgparentid = 0
                    AND t.tgfoid = 'public.notify_table_change()'::regprocedure)
    ORDER BY a.depth
    LIMIT 1
$$;

-- 'missing', 'disabled', 'enabled', or 'partition' (captured only through an ancestor: see the header).
CREATE OR REPLACE FUNCTION fluxbase_realtime.table_status(schema_name text, table_name text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN rel IS NULL THEN 'missing'
        WHEN EXISTS (SELECT 1 FROM pg_trigger t
                     WHERE t.tgrelid = rel AND t.tgfoid = 'public.notify_table_change()'::regprocedure
                       AND t.tgparentid = 0)
            THEN 'enabled'
        WHEN EXISTS (SELECT 1 FROM pg_trigger t
                     WHERE t.tgrelid = rel AND t.tgfoid = 'public.notify_table_change()'::regprocedure)
            THEN 'partition'
        ELSE 'disabled'
    END
    FROM (SELECT fluxbase_realtime.find_table(schema_name, table_name) AS rel) AS found
$$;

CREATE OR REPLACE FUNCTION public.enable_realtime(schema_name text, table_name text) RETURNS void
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
END
$$;

CREATE OR REPLACE FUNCTION public.disable_realtime(schema_name text, table_name text) RETURNS void
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


-- Partitioned tables enabled before this migration get the trigger that names them (enable_realtime sees
-- that theirs has no arguments). Same rules as in 0010: a table the migrating user may not alter keeps
-- its trigger, which goes on logging rows under their partitions' names, until its owner enables it again.
DO $$
DECLARE
    target record;
BEGIN
    FOR target IN
        SELECT DISTINCT n.nspname, c.relname
        FROM pg_trigger t
        JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE t.tgfoid = 'public.notify_table_change()'::regprocedure AND t.tgparentid = 0 AND c.relkind = 'p'
    LOOP
        BEGIN
            PERFORM public.enable_realtime(target.nspname, target.relname);
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'realtime table %.% goes on reporting its partitions'' names: %',
                quote_ident(target.nspname), quote_ident(target.relname), SQLERRM
                USING HINT = 'its owner can make it report its own name with enable_realtime()';
        END;
    END LOOP;
END
$$;
