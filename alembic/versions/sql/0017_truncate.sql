-- TRUNCATE reaches subscribers as one change: op 'TRUNCATE', no record (issue 12, part 4).
--
-- TRUNCATE fires no row or INSERT/UPDATE/DELETE trigger, only statement-level TRUNCATE triggers (no
-- transition tables), once for each table it empties: TRUNCATE of a parent fires its inheritance
-- children's too, TRUNCATE of a partitioned table its partitions' (verified on PostgreSQL 15). So
-- enable_realtime gives every realtime table a fourth (or second) trigger,
--   <table>_truncate_notify_change  AFTER TRUNCATE FOR EACH STATEMENT
-- named like the others so that the documented information_schema.triggers query lists it too. A
-- partitioned table's is on the table itself and logs under its own name; its partitions, captured through
-- it, get none, so a TRUNCATE of the partitioned table is one change on its channel. A TRUNCATE that
-- names a single partition fires nothing of ours and is not reported (README: known limits).
--
-- Row-level security: a TRUNCATE says nothing about row contents, so it goes to every subscriber whose
-- role may SELECT some column of the table (app/services/rls.py), without evaluating policies.
--
-- Tables enabled before this migration get the trigger (enable_realtime sees it missing); a table the
-- migrating user may not alter keeps what it has, with a WARNING, until its owner enables it again.

ALTER TABLE fluxbase_realtime.change_log DROP CONSTRAINT change_log_op_check;
ALTER TABLE fluxbase_realtime.change_log
    ADD CONSTRAINT change_log_op_check CHECK (op IN ('INSERT', 'UPDATE', 'DELETE', 'BROADCAST', 'TRUNCATE'));

-- The trigger function of 0016_notify_only_idle_feeds.sql, with a TRUNCATE branch.
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
            ELSIF TG_OP = 'TRUNCATE' THEN
                -- One change, no record: every row of the table is gone (0017_truncate.sql).
                INSERT INTO fluxbase_realtime.change_log (txid, ord, schema_name, table_name, op)
                VALUES (pg_current_xact_id(), first_ord, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'TRUNCATE');
                logged := 1;
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
                -- While a feed polls (the lease below), it finds this change without being woken, and its
                -- pass wakes every other instance: no NOTIFY, whose commit-time lock on the database would
                -- make this commit wait for every other notifying transaction's (see the header).
                IF NOT coalesce((SELECT l.until > clock_timestamp() FROM fluxbase_realtime.polling_lease l), false) THEN
                    -- A constant payload: PostgreSQL folds duplicates, so a transaction notifies once. The
                    -- data never travels in the notification, so no row is too large for NOTIFY's limit.
                    ignored := pg_notify(%L, '')::text;
                END IF;
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

CREATE OR REPLACE FUNCTION fluxbase_realtime.wanted_capture_triggers(rel regclass) RETURNS text[]
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
    -- Every kind of table: TRUNCATE fires statement triggers only, on each table it empties. A partitioned
    -- table's fires when it is truncated (its partitions, captured through it, have none of their own).
    EXECUTE format(
        'CREATE TRIGGER %I AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION public.notify_table_change()',
        fluxbase_realtime.capture_trigger_name(table_name, '_truncate_notify_change'), rel);
END
$$;


DO $$
DECLARE
    target record;
BEGIN
    FOR target IN
        SELECT DISTINCT n.nspname, c.relname
        FROM pg_trigger t
        JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE t.tgfoid = 'public.notify_table_change()'::regprocedure AND t.tgparentid = 0
    LOOP
        BEGIN
            PERFORM public.enable_realtime(target.nspname, target.relname);
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'realtime table %.% does not report TRUNCATE: %',
                quote_ident(target.nspname), quote_ident(target.relname), SQLERRM
                USING HINT = 'its owner can add it with enable_realtime()';
        END;
    END LOOP;
END
$$;
