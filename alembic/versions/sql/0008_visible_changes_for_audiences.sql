-- visible_changes for several audiences of one role in one call: the role is switched, the policies are
-- looked up and the query is built once, and each audience's claims are set in turn. One round trip per
-- role and batch instead of one per audience. `audience` is the 1-based position in `claims`.
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
