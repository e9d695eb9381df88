-- A subscribe's checks with cached plans (issue 14, PostgreSQL's CPU per connect). The service checks every
-- subscribe with table_status() and table_access() (app/services/tables.py). They and what they call were
-- SQL-language functions with a SET clause: PostgreSQL never inlines such a function and keeps no plan of
-- a SQL function beyond the statement that called it, so every check parsed and planned every catalog
-- query again (find_table twice, is_published once or more, the trigger lookups, table_access's joins).
-- Here they become PL/pgSQL with the same SET clause, the same STABLE volatility and the same answers:
-- PL/pgSQL keeps each statement's plan for the session (after five custom plans, the generic one when it
-- is not dearer), and a caller's cached plan calls them by OID, so a later CREATE OR REPLACE still reaches
-- it. They still run as the caller.
--
-- A cached plan keeps what was resolved when it was planned, and nothing here may answer from the past:
--   * the rows: every execution reads the catalogs with the caller's snapshot, as before (a table
--     enabled, disabled, dropped or created again under its name, a policy or a grant added, are seen
--     by the next check on the same connection; tests/integration/test_table_checks.py);
--   * the OIDs of names written as literals: 'public.notify_table_change()'::regprocedure is resolved
--     when the statement is parsed, and PostgreSQL does not invalidate a plan when a function it names
--     only as a constant is dropped and created again. The trigger lookups resolve it at each call
--     instead (text cast to regprocedure, a stable conversion the planner does not fold). Relations
--     (capture_mode) and functions the statements call invalidate their plans themselves.
-- capturing_table() and trigger_capturing_table() (a partition's channel, asked once per refused
-- subscribe) change the same way; so do the callers of find_table() and table_access() elsewhere
-- (visible_changes_for, the logical consumer, broadcast_permissions), which now reuse their plans too.

CREATE OR REPLACE FUNCTION fluxbase_realtime.find_table(schema_name text, table_name text) RETURNS regclass
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (SELECT c.oid::regclass
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = schema_name AND c.relname = table_name AND c.relkind IN ('r', 'p'));
END
$$;

CREATE OR REPLACE FUNCTION fluxbase_realtime.is_published(rel regclass) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM pg_publication_rel pr
                   JOIN pg_publication p ON p.oid = pr.prpubid
                   JOIN fluxbase_realtime.capture_mode m ON p.pubname = m.publication
                   WHERE pr.prrelid = rel);
END
$$;

CREATE OR REPLACE FUNCTION fluxbase_realtime.trigger_table_status(schema_name text, table_name text) RETURNS text
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

CREATE OR REPLACE FUNCTION fluxbase_realtime.trigger_capturing_table(schema_name text, table_name text)
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

CREATE OR REPLACE FUNCTION fluxbase_realtime.capturing_table(schema_name text, table_name text)
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

CREATE OR REPLACE FUNCTION fluxbase_realtime.table_status(schema_name text, table_name text) RETURNS text
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

CREATE OR REPLACE FUNCTION fluxbase_realtime.table_access(channel_schema text, channel_table text, role_name text)
RETURNS TABLE (
    role_exists boolean, rls_enabled boolean, bypass boolean,
    all_columns text[], allowed_columns text[], key_columns text[], policy_count integer
)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    SELECT r.oid IS NOT NULL,
           c.relrowsecurity,
           r.oid IS NOT NULL AND (r.rolsuper OR r.rolbypassrls
                                  OR (pg_has_role(r.oid, c.relowner, 'USAGE') AND NOT c.relforcerowsecurity)),
           ARRAY(SELECT a.attname::text FROM pg_attribute a
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
           CASE WHEN r.oid IS NULL THEN '{}'::text[] ELSE
           ARRAY(SELECT a.attname::text FROM pg_attribute a
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                   AND has_column_privilege(r.oid, c.oid, a.attnum, 'SELECT') ORDER BY a.attnum) END,
           ARRAY(SELECT a.attname::text FROM pg_index i
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[])
                 WHERE i.indrelid = c.oid AND i.indisprimary
                 ORDER BY array_position(i.indkey::int2[], a.attnum)),
           CASE WHEN r.oid IS NULL THEN 0 ELSE
           (SELECT count(*)::integer FROM pg_policy p
            WHERE p.polrelid = c.oid AND p.polcmd IN ('r', '*') AND p.polpermissive AND p.polqual IS NOT NULL
              AND (0::oid = ANY (p.polroles)
                   OR EXISTS (SELECT 1 FROM unnest(p.polroles) pr WHERE pg_has_role(r.oid, pr, 'USAGE')))) END
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_roles r ON r.rolname = role_name
    WHERE n.nspname = channel_schema AND c.relname = channel_table AND c.relkind IN ('r', 'p');
END
$$;
