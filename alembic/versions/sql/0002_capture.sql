-- Capture: the trigger function and the documented enable_realtime / disable_realtime.

-- Installs public.notify_table_change() notifying on `channel`. The channel is compiled into the function
-- (rather than looked up per row) because the trigger runs once per changed row.
CREATE FUNCTION fluxbase_realtime.install_capture_function(channel text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $outer$
BEGIN
    -- SECURITY DEFINER: writers need no privilege on the change log, and cannot forge entries in it.
    EXECUTE format($fn$
        CREATE OR REPLACE FUNCTION public.notify_table_change() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
        DECLARE
            -- Position of this change in its transaction; SET LOCAL state rolls back with savepoints,
            -- exactly like the log rows it numbers.
            position integer := coalesce(nullif(current_setting('fluxbase_realtime.tx_changes', true), '')::integer, 0);
        BEGIN
            INSERT INTO fluxbase_realtime.change_log (txid, ord, schema_name, table_name, op, record, old_record)
            VALUES (pg_current_xact_id(), position, TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP,
                    CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END,
                    CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END);
            PERFORM set_config('fluxbase_realtime.tx_changes', (position + 1)::text, true);
            -- A constant payload: PostgreSQL folds duplicates, so a transaction notifies once. The data
            -- never travels in the notification, so no row is too large for NOTIFY's 8000-byte limit.
            PERFORM pg_notify(%L, '');
            RETURN NULL;
        END
        $body$
    $fn$, channel);
    DELETE FROM fluxbase_realtime.capture_config;
    INSERT INTO fluxbase_realtime.capture_config (notify_channel) VALUES (channel);
END
$outer$;

-- Called by the service at start: keeps the trigger's channel equal to REALTIME_NOTIFY_CHANNEL, and only
-- replaces the function when the channel differs (so starting instances do not take locks for nothing).
CREATE FUNCTION fluxbase_realtime.configure_notify_channel(channel text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM fluxbase_realtime.capture_config c WHERE c.notify_channel = channel) THEN
        PERFORM fluxbase_realtime.install_capture_function(channel);
    END IF;
END
$$;

SELECT fluxbase_realtime.install_capture_function('fluxbase_changes');

-- The table a channel names, matched exactly (no case folding), or NULL.
CREATE FUNCTION fluxbase_realtime.find_table(schema_name text, table_name text) RETURNS regclass
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT c.oid::regclass
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = schema_name AND c.relname = table_name AND c.relkind IN ('r', 'p')
$$;

-- 'missing', 'disabled' or 'enabled': what a subscription to this table would get.
CREATE FUNCTION fluxbase_realtime.table_status(schema_name text, table_name text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN rel IS NULL THEN 'missing'
        WHEN EXISTS (SELECT 1 FROM pg_trigger t
                     WHERE t.tgrelid = rel AND t.tgfoid = 'public.notify_table_change()'::regprocedure)
            THEN 'enabled'
        ELSE 'disabled'
    END
    FROM (SELECT fluxbase_realtime.find_table(schema_name, table_name) AS rel) AS found
$$;
GRANT USAGE ON SCHEMA fluxbase_realtime TO PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase_realtime.find_table(text, text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase_realtime.table_status(text, text) TO PUBLIC;
REVOKE ALL ON FUNCTION fluxbase_realtime.install_capture_function(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION fluxbase_realtime.configure_notify_channel(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION public.enable_realtime(schema_name text, table_name text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel regclass := fluxbase_realtime.find_table(schema_name, table_name);
BEGIN
    IF rel IS NULL THEN
        RAISE EXCEPTION 'table %.% does not exist', quote_ident(schema_name), quote_ident(table_name)
            USING ERRCODE = 'undefined_table';
    END IF;
    -- Idempotent by the function the trigger calls, not by name: PostgreSQL truncates long names.
    IF NOT EXISTS (SELECT 1 FROM pg_trigger t
                   WHERE t.tgrelid = rel AND t.tgfoid = 'public.notify_table_change()'::regprocedure) THEN
        EXECUTE format(
            'CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW '
            'EXECUTE FUNCTION public.notify_table_change()',
            table_name || '_notify_change', rel);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION public.disable_realtime(schema_name text, table_name text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel regclass := fluxbase_realtime.find_table(schema_name, table_name);
    trigger_name name;
BEGIN
    IF rel IS NULL THEN
        RAISE EXCEPTION 'table %.% does not exist', quote_ident(schema_name), quote_ident(table_name)
            USING ERRCODE = 'undefined_table';
    END IF;
    FOR trigger_name IN
        SELECT t.tgname FROM pg_trigger t
        WHERE t.tgrelid = rel AND t.tgfoid = 'public.notify_table_change()'::regprocedure
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', trigger_name, rel);
    END LOOP;
END
$$;
