-- Row-level security per subscriber: roles, what a role may see of a table, and policy evaluation.

-- The roles connections act as. NOLOGIN: nobody signs in as them; the service switches to them with
-- SET LOCAL ROLE, which needs membership, granted to the user running the migrations (the service's).
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
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
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
    WHERE n.nspname = channel_schema AND c.relname = channel_table AND c.relkind IN ('r', 'p')
$$;

-- For each change (record, old_record), whether `role_name` with `claims` could SELECT the row: the
-- table's SELECT policies that apply to the role (permissive ones OR'ed, restrictive ones AND'ed, none
-- meaning no row), evaluated on the change's own values, as that role, with the claims visible to
-- policies through request.jwt.claims and request.jwt.claim.sub: what a SELECT by that user would return
-- for that version of the row. NULL where the change has no such record. Callers skip roles that bypass.
CREATE FUNCTION fluxbase_realtime.visible_changes(
    role_name text, claims jsonb, channel_schema text, channel_table text, records jsonb[], old_records jsonb[]
)
RETURNS TABLE (n bigint, new_visible boolean, old_visible boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel         regclass := fluxbase_realtime.find_table(channel_schema, channel_table);
    permissive  text;
    restrictive text;
    condition   text;
BEGIN
    IF rel IS NULL THEN
        RAISE EXCEPTION 'table %.% does not exist', quote_ident(channel_schema), quote_ident(channel_table)
            USING ERRCODE = 'undefined_table';
    END IF;
    -- Policy expressions come from the catalog (written by the table's owner), deparsed by PostgreSQL.
    SELECT string_agg('(' || pg_get_expr(p.polqual, p.polrelid) || ')', ' OR ') FILTER (WHERE p.polpermissive),
           string_agg('(' || pg_get_expr(p.polqual, p.polrelid) || ')', ' AND ') FILTER (WHERE NOT p.polpermissive)
      INTO permissive, restrictive
    FROM pg_policy p
    WHERE p.polrelid = rel AND p.polcmd IN ('r', '*') AND p.polqual IS NOT NULL
      AND (0::oid = ANY (p.polroles)
           OR EXISTS (SELECT 1 FROM unnest(p.polroles) pr WHERE pg_has_role(role_name, pr, 'USAGE')));
    condition := '(' || coalesce(permissive, 'false') || ')' || coalesce(' AND ' || restrictive, '');
    PERFORM set_config('role', role_name, true),
            set_config('request.jwt.claims', claims::text, true),
            set_config('request.jwt.claim.sub', coalesce(claims ->> 'sub', ''), true);
    -- The record is expanded under the table's own name, so column references in the policies (plain or
    -- qualified with the table name, as PostgreSQL deparses them) mean its columns.
    RETURN QUERY EXECUTE format(
        $query$
        SELECT u.n,
               CASE WHEN u.rec IS NULL THEN NULL
                    ELSE EXISTS (SELECT FROM jsonb_populate_record(NULL::%1$s, u.rec) AS %2$I WHERE %3$s) END,
               CASE WHEN u.old IS NULL THEN NULL
                    ELSE EXISTS (SELECT FROM jsonb_populate_record(NULL::%1$s, u.old) AS %2$I WHERE %3$s) END
        FROM unnest($1, $2) WITH ORDINALITY AS u(rec, old, n)
        $query$,
        rel, channel_table, condition)
    USING records, old_records;
END
$$;
REVOKE ALL ON FUNCTION fluxbase_realtime.visible_changes(text, jsonb, text, text, jsonb[], jsonb[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION fluxbase_realtime.table_access(text, text, text) FROM PUBLIC;

-- The readers now say, for each change, whether its table has row-level security enabled right now.
DROP FUNCTION fluxbase_realtime.changes_after(bigint, integer, bigint);
CREATE FUNCTION fluxbase_realtime.changes_after(after_id bigint, max_count integer, max_bytes bigint)
RETURNS TABLE (
    id bigint, schema_name text, table_name text, op text, record text, old_record text, rls boolean
)
-- Inlinable (no SET clause; every name is qualified): planned with the actual ids.
LANGUAGE sql STABLE AS $$
    WITH span AS (
        SELECT c.first_id, c.txid
        FROM fluxbase_realtime.commits c
        WHERE c.first_id >= coalesce((SELECT max(first_id) FROM fluxbase_realtime.commits
                                      WHERE first_id <= after_id + 1), 0)
          AND c.first_id <= after_id + max_count
    ), picked AS (
        SELECT s.first_id + l.ord AS id, l.schema_name, l.table_name, l.op, l.record, l.old_record,
               sum(coalesce(pg_catalog.pg_column_size(l.record), 0)
                   + coalesce(pg_catalog.pg_column_size(l.old_record), 0))
                   OVER (ORDER BY s.first_id + l.ord) AS running_bytes
        FROM span s
        JOIN fluxbase_realtime.change_log l
          ON l.txid = s.txid AND l.ord > after_id - s.first_id AND l.ord <= after_id + max_count - s.first_id
    )
    SELECT p.id, p.schema_name, p.table_name, p.op, p.record::text, p.old_record::text,
           coalesce((SELECT c.relrowsecurity FROM pg_catalog.pg_class c
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = p.schema_name AND c.relname = p.table_name), false)
    FROM picked p
    WHERE p.running_bytes <= max_bytes OR p.id = after_id + 1
    ORDER BY p.id
$$;

DROP FUNCTION fluxbase_realtime.table_changes_after(text, text, bigint, bigint, integer, bigint);
CREATE FUNCTION fluxbase_realtime.table_changes_after(
    channel_schema text, channel_table text, after_id bigint, upto_id bigint, max_count integer, max_bytes bigint
)
RETURNS TABLE (
    id bigint, schema_name text, table_name text, op text, record text, old_record text, rls boolean,
    complete_to bigint
)
-- Inlinable, like changes_after. See 0005_replay_and_retention.sql for complete_to and the id windows.
LANGUAGE sql STABLE AS $$
    WITH picked AS (
        SELECT c.first_id + l.ord AS id, l.schema_name, l.table_name, l.op, l.record, l.old_record
        FROM fluxbase_realtime.commits c
        JOIN fluxbase_realtime.change_log l
          ON l.txid = c.txid AND l.ord > after_id - c.first_id AND l.ord <= upto_id - c.first_id
        WHERE c.first_id >= coalesce((SELECT max(first_id) FROM fluxbase_realtime.commits
                                      WHERE first_id <= after_id + 1), 0)
          AND c.first_id <= upto_id
          AND (c.tables IS NULL OR pg_catalog.format('%I.%I', channel_schema, channel_table) = ANY (c.tables))
          AND l.schema_name = channel_schema AND l.table_name = channel_table
        ORDER BY c.first_id, l.ord
        LIMIT max_count
    ), sized AS (
        SELECT p.*,
               sum(coalesce(pg_catalog.pg_column_size(p.record), 0)
                   + coalesce(pg_catalog.pg_column_size(p.old_record), 0)) OVER (ORDER BY p.id) AS running_bytes,
               row_number() OVER (ORDER BY p.id) AS position,
               count(*) OVER () AS found
        FROM picked p
    ), kept AS (
        SELECT * FROM sized s WHERE s.running_bytes <= max_bytes OR s.position = 1
    )
    SELECT k.id, k.schema_name, k.table_name, k.op, k.record::text, k.old_record::text,
           coalesce((SELECT c.relrowsecurity FROM pg_catalog.pg_class c
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = channel_schema AND c.relname = channel_table), false),
           CASE WHEN k.found >= max_count OR k.found > (SELECT count(*) FROM kept)
                THEN (SELECT max(kept.id) FROM kept) ELSE upto_id END
    FROM kept k
    ORDER BY k.id
$$;

-- table_status no longer refuses RLS tables: the service checks them per role instead.
CREATE OR REPLACE FUNCTION fluxbase_realtime.table_status(schema_name text, table_name text) RETURNS text
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
