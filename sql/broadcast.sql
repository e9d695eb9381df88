-- Broadcast channels (`broadcast:{name}`): messages sent from the database, who may use a channel, and the
-- bus's overflow table.
--
-- A message sent with realtime_broadcast() is a row of the change log (op 'BROADCAST': change_log.sql),
-- written by the sending transaction like a captured row change: it is delivered when the transaction
-- commits and never if it rolls back, it is numbered in commit order with the table changes, any size
-- works, and `since` replays it.

-- A name as the protocol accepts it: 1 to 200 bytes, no control characters (C0, DEL, C1).
CREATE FUNCTION fluxbase_realtime.valid_broadcast_name(name text) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT name IS NOT NULL AND octet_length(name) BETWEEN 1 AND 200
           AND name !~ '[\u0001-\u001f\u007f-\u009f]'
$$;

-- Send `payload` as `event` to every subscriber of `broadcast:{channel}` when the calling transaction
-- commits. `channel` may be given with or without its `broadcast:` prefix. It takes the transaction's
-- next change position, shared with the capture trigger, and notifies like it (capture.sql: no NOTIFY
-- while a feed polls).
--
-- Whoever may send from the database is the operator's choice: the service's own database user (the
-- function's owner) and service_role may; grant it to the roles your backends use.
CREATE FUNCTION public.realtime_broadcast(channel text, event text, payload jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- The transaction's next change position, shared with the capture triggers (0013).
    position integer := coalesce(nullif(current_setting('fluxbase_realtime.tx_changes', true), '')::integer, 0);
    ignored  text;
BEGIN
    IF starts_with(channel, 'broadcast:') THEN
        channel := substr(channel, 11);
    END IF;
    IF NOT fluxbase_realtime.valid_broadcast_name(channel) THEN
        RAISE EXCEPTION 'invalid broadcast channel name: 1 to 200 bytes without control characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT fluxbase_realtime.valid_broadcast_name(event) THEN
        RAISE EXCEPTION 'invalid broadcast event: 1 to 200 bytes without control characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO fluxbase_realtime.change_log (txid, ord, schema_name, table_name, op, record, old_record)
    VALUES (pg_current_xact_id(), position, '', channel, 'BROADCAST', coalesce(payload, 'null'::jsonb),
            to_jsonb(event));
    ignored := set_config('fluxbase_realtime.tx_changes', (position + 1)::text, true);
    -- As the capture trigger: no NOTIFY (and no commit-time lock) while a feed polls.
    IF NOT coalesce((SELECT l.until > clock_timestamp() FROM fluxbase_realtime.polling_lease l), false) THEN
        ignored := pg_notify((SELECT c.notify_channel FROM fluxbase_realtime.capture_config c), '')::text;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION public.realtime_broadcast(text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.realtime_broadcast(text, text, jsonb) TO service_role;

-- Who may subscribe to (read) and send or track on (write) a broadcast channel: the SELECT policies of
-- this table, evaluated on the row (channel, action) with the connection's role and claims, exactly as
-- row-level security decides which table rows a subscriber sees. It never holds rows. Its own schema, so
-- that the roles can resolve its row type without reaching anything of fluxbase_realtime.
CREATE SCHEMA fluxbase_realtime_access;
GRANT USAGE ON SCHEMA fluxbase_realtime_access TO PUBLIC;
CREATE TABLE fluxbase_realtime_access.broadcast_channels (
    channel text NOT NULL,  -- the name after `broadcast:`
    action  text NOT NULL CHECK (action IN ('read', 'write'))
);
ALTER TABLE fluxbase_realtime_access.broadcast_channels ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON fluxbase_realtime_access.broadcast_channels TO PUBLIC;
-- Every channel is public until the operator replaces this policy with their own.
CREATE POLICY public_channels ON fluxbase_realtime_access.broadcast_channels FOR SELECT TO PUBLIC USING (true);

-- Whether `role_name` with `claims` may read and write `broadcast:{channel}`. Roles that bypass row-level
-- security in PostgreSQL bypass it here; a role that may not SELECT the table, or that no policy applies
-- to, may do neither.
CREATE FUNCTION fluxbase_realtime.broadcast_permissions(role_name text, claims jsonb, channel text)
RETURNS TABLE (can_read boolean, can_write boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    access record;
BEGIN
    SELECT * INTO access
    FROM fluxbase_realtime.table_access('fluxbase_realtime_access', 'broadcast_channels', role_name);
    IF NOT access.role_exists OR cardinality(access.allowed_columns) = 0 THEN
        RETURN QUERY SELECT false, false;
    ELSIF access.bypass OR NOT access.rls_enabled THEN
        RETURN QUERY SELECT true, true;
    ELSIF access.policy_count = 0 THEN
        RETURN QUERY SELECT false, false;
    ELSE
        RETURN QUERY
        SELECT coalesce(bool_or(v.new_visible) FILTER (WHERE v.n = 1), false),
               coalesce(bool_or(v.new_visible) FILTER (WHERE v.n = 2), false)
        FROM fluxbase_realtime.visible_changes_for(
            role_name, ARRAY[claims], 'fluxbase_realtime_access', 'broadcast_channels',
            ARRAY[jsonb_build_object('channel', channel, 'action', 'read'),
                  jsonb_build_object('channel', channel, 'action', 'write')],
            ARRAY[NULL::jsonb, NULL::jsonb]) AS v;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION fluxbase_realtime.broadcast_permissions(text, jsonb, text) FROM PUBLIC;


-- The bus between instances (app/services/bus/postgres.py) sends through NOTIFY, whose payload must stay
-- under 8000 bytes; a larger packet is stored here and its id notified instead. Transient: unlogged, and
-- pruned a minute after it was written.
CREATE UNLOGGED TABLE fluxbase_realtime.bus_packets (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    payload    text        NOT NULL
);
