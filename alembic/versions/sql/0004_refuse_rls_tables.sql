-- Until row-level security is enforced per subscriber, a table with RLS enabled is reported as 'protected',
-- and the service refuses subscriptions to it rather than stream rows its users may not SELECT.
CREATE OR REPLACE FUNCTION fluxbase_realtime.table_status(schema_name text, table_name text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN rel IS NULL THEN 'missing'
        WHEN NOT EXISTS (SELECT 1 FROM pg_trigger t
                         WHERE t.tgrelid = rel AND t.tgfoid = 'public.notify_table_change()'::regprocedure)
            THEN 'disabled'
        WHEN (SELECT c.relrowsecurity FROM pg_class c WHERE c.oid = rel) THEN 'protected'
        ELSE 'enabled'
    END
    FROM (SELECT fluxbase_realtime.find_table(schema_name, table_name) AS rel) AS found
$$;
