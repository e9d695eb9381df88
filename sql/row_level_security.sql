-- Row-level security per subscriber: the roles connections act as, what a role may see of a table, and
-- the evaluation of a table's SELECT policies on changes.

-- The roles connections act as. NOLOGIN: nobody signs in as them; the service switches to them with
-- SET LOCAL ROLE, which needs membership, granted to the user that builds the schema (the service's).
-- Roles belong to the cluster, not the database: made only if missing.
DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = name) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', name);
        END IF;
        IF NOT pg_has_role(current_user, name, 'MEMBER') THEN
            EXECUTE format('GRANT %I TO %I', name, current_user);
        END IF;
    END LOOP;
END
$$;

-- What `role_name` may see of a table: whether RLS applies to it at all (`bypass`: superuser, BYPASSRLS,
-- or the table's owner without FORCE ROW LEVEL SECURITY, exactly PostgreSQL's rules), the columns it may
-- SELECT, the primary key, and how many permissive SELECT policies apply to it (none: it sees no row).
CREATE FUNCTION fluxbase_realtime.table_access(channel_schema text, channel_table text, role_name text)
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
REVOKE ALL ON FUNCTION fluxbase_realtime.table_access(text, text, text) FROM PUBLIC;

-- For each change (records[n], old_records[n]) and each audience (claims[audience], 1-based), whether
-- `role_name` with those claims could SELECT the row: the table's SELECT policies that apply to the role
-- (permissive ones OR'ed, restrictive ones AND'ed, none meaning no row), evaluated on the change's own
-- values, as that role, with the claims visible to policies through request.jwt.claims and
-- request.jwt.claim.sub: what a SELECT by that user would return for that version of the row. NULL where
-- the change has no such record. Callers skip roles that bypass. The role is switched, the policies are
-- looked up and the query is built once per call, and each audience's claims are set in turn: one round
-- trip per role and batch.
CREATE FUNCTION fluxbase_realtime.visible_changes_for(
    role_name text, claims jsonb[], channel_schema text, channel_table text, records jsonb[], old_records jsonb[]
)
RETURNS TABLE (audience integer, n bigint, new_visible boolean, old_visible boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel         regclass := fluxbase_realtime.find_table(channel_schema, channel_table);
    permissive  text;
    restrictive text;
    query       text;
BEGIN
    IF rel IS NULL THEN
        RAISE EXCEPTION 'table %.% does not exist', quote_ident(channel_schema), quote_ident(channel_table)
            USING ERRCODE = 'undefined_table';
    END IF;
    -- The same policy selection and evaluation as visible_changes (0006_row_level_security.sql).
    SELECT string_agg('(' || pg_get_expr(p.polqual, p.polrelid) || ')', ' OR ') FILTER (WHERE p.polpermissive),
           string_agg('(' || pg_get_expr(p.polqual, p.polrelid) || ')', ' AND ') FILTER (WHERE NOT p.polpermissive)
      INTO permissive, restrictive
    FROM pg_policy p
    WHERE p.polrelid = rel AND p.polcmd IN ('r', '*') AND p.polqual IS NOT NULL
      AND (0::oid = ANY (p.polroles)
           OR EXISTS (SELECT 1 FROM unnest(p.polroles) pr WHERE pg_has_role(role_name, pr, 'USAGE')));
    query := format(
        $query$
        SELECT $3, u.n,
               CASE WHEN u.rec IS NULL THEN NULL
                    ELSE EXISTS (SELECT FROM jsonb_populate_record(NULL::%1$s, u.rec) AS %2$I WHERE %3$s) END,
               CASE WHEN u.old IS NULL THEN NULL
                    ELSE EXISTS (SELECT FROM jsonb_populate_record(NULL::%1$s, u.old) AS %2$I WHERE %3$s) END
        FROM unnest($1, $2) WITH ORDINALITY AS u(rec, old, n)
        $query$,
        rel, channel_table, '(' || coalesce(permissive, 'false') || ')' || coalesce(' AND ' || restrictive, ''));
    PERFORM set_config('role', role_name, true);
    FOR i IN 1 .. coalesce(array_length(claims, 1), 0) LOOP
        PERFORM set_config('request.jwt.claims', claims[i]::text, true),
                set_config('request.jwt.claim.sub', coalesce(claims[i] ->> 'sub', ''), true);
        RETURN QUERY EXECUTE query USING records, old_records, i;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION fluxbase_realtime.visible_changes_for(text, jsonb[], text, text, jsonb[], jsonb[]) FROM PUBLIC;
