-- Statement-level capture: an ordinary table's changes are logged once per statement, from its transition
-- tables, instead of once per row. A 500-row INSERT then costs one trigger call and one INSERT ... SELECT
-- into the change log instead of 500 of each (../shared/notes/change-capture-costs.md: 2.3x faster for
-- 500-row statements, not slower for single-row ones). What is logged is unchanged: one change_log row
-- per changed row, with the same (txid, ord), record and old_record as the row trigger wrote.
--
-- PostgreSQL refuses transition tables on a trigger with more than one event, so an ordinary table gets
-- three AFTER ... FOR EACH STATEMENT triggers, all calling public.notify_table_change() (table_status() and
-- disable_realtime() find them by that function, as before) and all named `..._notify_change` (the
-- documented information_schema query keeps listing realtime tables, one row per event as before):
--   <table>_insert_notify_change  AFTER INSERT  REFERENCING NEW TABLE AS fluxbase_new
--   <table>_update_notify_change  AFTER UPDATE  REFERENCING OLD TABLE AS fluxbase_old NEW TABLE AS fluxbase_new
--   <table>_delete_notify_change  AFTER DELETE  REFERENCING OLD TABLE AS fluxbase_old
--
-- Tables that keep the row trigger <table>_notify_change (AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW):
--   * partitioned tables (relkind 'p'): a statement trigger on the root does not fire for a statement that
--     targets a partition directly, while the root's row trigger is cloned onto every partition and fires
--     either way;
--   * partitions: their own statement triggers do not fire for rows routed to them through the root;
--   * tables with inheritance parents or children (INHERITS): a statement that names the parent fires only
--     the parent's statement triggers, and its transition tables hold the children's rows converted to the
--     parent's columns; the row triggers log each row under its own table, as before.
-- Each case verified on PostgreSQL 15 and tested in tests/integration/test_statement_capture.py.
--
-- UPDATE pairs the n-th row of the OLD TABLE with the n-th row of the NEW TABLE. PostgreSQL's source,
-- src/backend/commands/trigger.c, AfterTriggerSaveEvent(): for every updated row, ExecARUpdateTriggers calls
-- it once with both the row's old and new slot, and while the statement has a TransitionCaptureState it
-- appends the old tuple to the UPDATE's old tuplestore and then, in the same call, the new tuple to its new
-- tuplestore (PostgreSQL 15 keeps separate UPDATE/INSERT/DELETE tuplestores since MERGE; older versions one
-- old and one new, filled the same way). A row skipped by a BEFORE trigger or by a concurrent update is
-- added to neither. The only call with just one of the two is cross-partition row movement (the DELETE
-- half, then at once the INSERT half of the same row), which happens only when a partitioned table is the
-- target: those keep row triggers. The tuplestores are read back in insertion order, so numbering each
-- side's rows in scan order (row_number() OVER ()) and joining on that number pairs every old row with its
-- own new row, even when the UPDATE changes the primary key (test_an_update_of_primary_keys_pairs_old_and_new).

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
                INSERT INTO fluxbase_realtime.change_log (txid, ord, schema_name, table_name, op, record, old_record)
                VALUES (pg_current_xact_id(), first_ord, TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP,
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

-- `table_name || suffix`, cut to PostgreSQL's identifier length (63 bytes) by shortening the table's part,
-- whole characters at a time: PostgreSQL would cut the suffix instead, and the three names of a long table
-- would then collide and no longer end in `_notify_change`.
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

-- Whether `rel` is captured by statement triggers (see the header: ordinary tables outside any partition
-- or inheritance tree) rather than by the row trigger.
CREATE FUNCTION fluxbase_realtime.captures_statements(rel regclass) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT c.relkind = 'r' AND NOT c.relispartition
           AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid OR i.inhparent = c.oid)
    FROM pg_class c WHERE c.oid = rel
$$;

-- The capture triggers `rel` has, as 'tgtype:old table:new table' in tgtype order, and those it should have.
CREATE FUNCTION fluxbase_realtime.capture_triggers(rel regclass) RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ARRAY(SELECT format('%s:%s:%s', t.tgtype, t.tgoldtable, t.tgnewtable) FROM pg_trigger t
                 WHERE t.tgrelid = rel AND t.tgfoid = 'public.notify_table_change()'::regprocedure
                 ORDER BY t.tgtype, t.tgname)
$$;
CREATE FUNCTION fluxbase_realtime.wanted_capture_triggers(rel regclass) RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    -- tgtype bits: ROW 1, INSERT 4, DELETE 8, UPDATE 16 (AFTER: no BEFORE bit).
    SELECT CASE WHEN fluxbase_realtime.captures_statements(rel)
                THEN ARRAY['4::fluxbase_new', '8:fluxbase_old:', '16:fluxbase_old:fluxbase_new']
                ELSE ARRAY['29::'] END
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
    ELSE
        EXECUTE format(
            'CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW '
            'EXECUTE FUNCTION public.notify_table_change()',
            fluxbase_realtime.capture_trigger_name(table_name, '_notify_change'), rel);
    END IF;
END
$$;

-- Tables enabled before this migration move to statement triggers now, each in this migration's
-- transaction (their writers wait for it to commit: DROP TRIGGER locks the table). Only tables with triggers
-- of their own: a partition's clone of its root's row trigger belongs to the root (and a partition with
-- both loses its own, which logged each of its rows twice). A table the migrating user may not alter (it
-- is not the owner) keeps its row trigger, which goes on capturing as before, until its owner runs
-- enable_realtime again.
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
            RAISE WARNING 'realtime table %.% keeps its row trigger: %', quote_ident(target.nspname),
                quote_ident(target.relname), SQLERRM
                USING HINT = 'its owner can switch it to statement-level capture with enable_realtime()';
        END;
    END LOOP;
END
$$;
