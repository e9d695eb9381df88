-- Logical decoding as a second capture mode (REALTIME_CAPTURE=logical); the triggers stay the default.
--
-- In logical mode no realtime table has a capture trigger: writers touch nothing of the service's. A
-- realtime table is a member of the service's publication instead (publish_via_partition_root, so a
-- partitioned table's rows are reported under it, as in trigger mode), with REPLICA IDENTITY FULL so that
-- UPDATE and DELETE carry the whole old row (old_record, row-level security decisions, and the values of
-- unchanged TOASTed columns, which pgoutput does not repeat in the new row). One consumer among the
-- service's instances streams the slot with pgoutput and writes what it decodes into the change log, in
-- its own transactions: the sequencer then numbers them like any other logged transaction, so ids,
-- replay, row-level security and the feed are the same in both modes (app/services/logical_capture.py).
--
-- The mode is a row set by each service instance at start (configure_capture). Switching moves every
-- realtime table from one mechanism to the other in one transaction. Towards logical mode the slot is
-- created first, so the switch commits after the slot's start: changes committed before it went through
-- the triggers (and the historic catalog the decoder reads says the table was not yet published then),
-- changes after it through the slot; each is captured exactly once.

-- The public entry points that dispatch on the mode (enable_realtime, disable_realtime, realtime_tables,
-- table_status) are in realtime_tables.sql; trigger mode's own functions in capture_triggers.sql.

CREATE TABLE fluxbase_realtime.capture_mode (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    mode        text    NOT NULL DEFAULT 'trigger' CHECK (mode IN ('trigger', 'logical')),
    publication name    NOT NULL DEFAULT 'fluxbase_realtime'
);
INSERT INTO fluxbase_realtime.capture_mode DEFAULT VALUES;

-- Where the consumer's writes stand, in the same transactions as the changes it wrote: the source
-- transaction (by the LSN of its commit record) whose changes were written last, and how many of them.
-- A restarted consumer may be sent transactions again (the slot's confirmed position is only a lower
-- bound); it skips what this row says it already wrote, so a crash anywhere loses and duplicates nothing.
CREATE TABLE fluxbase_realtime.logical_progress (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    commit_lsn pg_lsn  NOT NULL DEFAULT '0/0',
    written    bigint  NOT NULL DEFAULT 0,
    complete   boolean NOT NULL DEFAULT true
);
INSERT INTO fluxbase_realtime.logical_progress DEFAULT VALUES;

CREATE FUNCTION fluxbase_realtime.current_capture_mode() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT m.mode FROM fluxbase_realtime.capture_mode m
$$;

-- Whether `rel` itself is in the service's publication.
CREATE FUNCTION fluxbase_realtime.is_published(rel regclass) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM pg_publication_rel pr
                   JOIN pg_publication p ON p.oid = pr.prpubid
                   JOIN fluxbase_realtime.capture_mode m ON p.pubname = m.publication
                   WHERE pr.prrelid = rel);
END
$$;

-- Logical mode's enable: publish the table (a partitioned one with its whole tree), give it and its
-- partitions REPLICA IDENTITY FULL, and drop any capture triggers it still has.
CREATE FUNCTION fluxbase_realtime.enable_logical_capture(rel regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pub          name := (SELECT m.publication FROM fluxbase_realtime.capture_mode m);
    part         regclass;
    trigger_name name;
BEGIN
    -- A partition of a published partitioned table is published through it (publish_via_partition_root).
    IF EXISTS (SELECT 1 FROM pg_partition_ancestors(rel) WITH ORDINALITY AS a(ancestor, depth)
               WHERE a.depth > 1 AND fluxbase_realtime.is_published(a.ancestor)) THEN
        RETURN;
    END IF;
    IF NOT fluxbase_realtime.is_published(rel) THEN
        -- ONLY: an inheritance parent's children are not published with it (in trigger mode each has its
        -- own trigger, enabled on its own). A partitioned table always brings its partitions.
        EXECUTE format('ALTER PUBLICATION %I ADD TABLE %s%s', pub,
                       CASE WHEN fluxbase_realtime.is_partitioned(rel) THEN '' ELSE 'ONLY ' END, rel);
    END IF;
    -- The partitions' identities decide what their UPDATEs and DELETEs log, so each gets FULL too (a
    -- partition attached later needs enable_realtime again).
    FOR part IN
        SELECT t.relid FROM pg_partition_tree(rel) t JOIN pg_class c ON c.oid = t.relid
        WHERE c.relreplident <> 'f' AND c.relkind = 'r'
        UNION ALL
        SELECT rel WHERE NOT fluxbase_realtime.is_partitioned(rel)
                     AND (SELECT c.relreplident FROM pg_class c WHERE c.oid = rel) <> 'f'
    LOOP
        EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', part);
    END LOOP;
    FOR trigger_name IN
        SELECT t.tgname FROM pg_trigger t
        WHERE t.tgrelid = rel AND t.tgfoid = 'public.notify_table_change()'::regprocedure AND t.tgparentid = 0
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', trigger_name, rel);
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION fluxbase_realtime.enable_logical_capture(regclass) FROM PUBLIC;

-- The service's publication, created empty if missing (logical mode only: trigger mode needs none). It
-- must be older than the slot: decoding looks it up as of each change's time.
CREATE FUNCTION fluxbase_realtime.ensure_publication(wanted_publication name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('fluxbase_realtime.capture_mode'));
    IF NOT EXISTS (SELECT 1 FROM pg_publication p WHERE p.pubname = wanted_publication) THEN
        -- A TRUNCATE is one change per table (op TRUNCATE, no record), as in trigger mode.
        EXECUTE format('CREATE PUBLICATION %I WITH (publish = %L, publish_via_partition_root = true)',
                       wanted_publication, 'insert, update, delete, truncate');
    END IF;
END
$$;
REVOKE ALL ON FUNCTION fluxbase_realtime.ensure_publication(name) FROM PUBLIC;

-- Set at each service start: the mode and the publication, moving every realtime table to the mode's
-- mechanism when it changes. In logical mode the slot must exist before this runs (see the header); back
-- in trigger mode, the slot must have been drained in the same transaction, after
-- lock_published_tables() (app/services/replication_slot.py: prepare_capture).
CREATE FUNCTION fluxbase_realtime.configure_capture(wanted_mode text, wanted_publication name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target record;
    current fluxbase_realtime.capture_mode;
BEGIN
    IF wanted_mode NOT IN ('trigger', 'logical') THEN
        RAISE EXCEPTION 'capture mode must be trigger or logical, not %', wanted_mode
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('fluxbase_realtime.capture_mode'));
    SELECT * INTO STRICT current FROM fluxbase_realtime.capture_mode;
    IF wanted_mode = 'logical' THEN
        PERFORM fluxbase_realtime.ensure_publication(wanted_publication);
    END IF;
    IF current.mode = wanted_mode AND current.publication = wanted_publication THEN
        RETURN;
    END IF;
    -- Tables realtime had under the old mode (or the old publication's name).
    CREATE TEMP TABLE realtime_before ON COMMIT DROP AS SELECT * FROM public.realtime_tables();
    UPDATE fluxbase_realtime.capture_mode SET mode = wanted_mode, publication = wanted_publication;
    FOR target IN SELECT DISTINCT b.schema_name, b.table_name FROM realtime_before b LOOP
        IF wanted_mode = 'trigger' THEN
            IF EXISTS (SELECT 1 FROM pg_publication p WHERE p.pubname = current.publication) THEN
                EXECUTE format('ALTER PUBLICATION %I DROP TABLE %I.%I', current.publication,
                               target.schema_name, target.table_name);
            END IF;
        END IF;
        PERFORM public.enable_realtime(target.schema_name, target.table_name);
    END LOOP;
    DROP TABLE realtime_before;
END
$$;
REVOKE ALL ON FUNCTION fluxbase_realtime.configure_capture(text, name) FROM PUBLIC;

-- Back to triggers: until the switch commits, no realtime table may change (SHARE ROW EXCLUSIVE lets
-- readers through, not writers), so that the slot can be drained up to a position after which nothing
-- but the triggers captures, and ids stay in commit order across the switch.
CREATE FUNCTION fluxbase_realtime.lock_published_tables() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rel regclass;
BEGIN
    FOR rel IN
        SELECT pr.prrelid::regclass FROM pg_publication_rel pr
        JOIN pg_publication p ON p.oid = pr.prpubid
        JOIN fluxbase_realtime.capture_mode m ON p.pubname = m.publication
    LOOP
        EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', rel);
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION fluxbase_realtime.lock_published_tables() FROM PUBLIC;

-- The batch writer of the previous version's consumer, kept for instances of it still running during an
-- upgrade (today's consumer calls log_decoded_batch, below). One batch of decoded changes into the change
-- log, as one transaction of the consumer's (`ord` is the
-- position in the batch), with the progress row and one NOTIFY for every instance's feed. The batch is a
-- JSON array of [schema, table, op, new row, old row] (JSON: one parameter, parsed in C; text arrays cost
-- the client ten times as much to build). Rows are composite literals in the table's column order
-- (app/services/pgoutput.py: row_literal): cast to the table's row type and rendered with to_jsonb,
-- exactly what the trigger logs. Should the table have changed under the stream so that the cast fails,
-- that table's records are logged as the literal's text rather than stopping capture.
CREATE FUNCTION fluxbase_realtime.log_decoded_changes(
    batch json, progress_lsn pg_lsn, progress_written bigint, progress_complete boolean
) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target record;
    rel    regclass;
    logged integer := 0;
    added  integer;
BEGIN
    CREATE TEMP TABLE IF NOT EXISTS decoded_batch (
        n bigint, s text, t text, op text, new_row text, old_row text
    ) ON COMMIT DELETE ROWS;
    INSERT INTO decoded_batch
    SELECT c.n, c.v->>0, c.v->>1, c.v->>2, c.v->>3, c.v->>4
    FROM json_array_elements(batch) WITH ORDINALITY AS c(v, n);
    FOR target IN SELECT DISTINCT d.s, d.t FROM decoded_batch d LOOP
        rel := fluxbase_realtime.find_table(target.s, target.t);
        BEGIN
            IF rel IS NULL THEN
                RAISE EXCEPTION 'the table no longer exists' USING ERRCODE = 'undefined_table';
            END IF;
            EXECUTE format($q$
                INSERT INTO fluxbase_realtime.change_log (txid, ord, schema_name, table_name, op, record, old_record)
                SELECT pg_current_xact_id(), d.n - 1, d.s, d.t, d.op,
                       to_jsonb(d.new_row::%1$s), to_jsonb(d.old_row::%1$s)
                FROM decoded_batch d
                WHERE d.s = $1 AND d.t = $2
            $q$, rel) USING target.s, target.t;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'logical capture: rows of %.% do not fit its current definition (%): logged as text',
                quote_ident(target.s), quote_ident(target.t), SQLERRM;
            INSERT INTO fluxbase_realtime.change_log (txid, ord, schema_name, table_name, op, record, old_record)
            SELECT pg_current_xact_id(), d.n - 1, d.s, d.t, d.op, to_jsonb(d.new_row), to_jsonb(d.old_row)
            FROM decoded_batch d
            WHERE d.s = target.s AND d.t = target.t;
        END;
        GET DIAGNOSTICS added = ROW_COUNT;
        logged := logged + added;
    END LOOP;
    UPDATE fluxbase_realtime.logical_progress
    SET commit_lsn = progress_lsn, written = progress_written, complete = progress_complete;
    IF logged > 0 THEN
        PERFORM pg_notify((SELECT c.notify_channel FROM fluxbase_realtime.capture_config c), '');
    END IF;
    RETURN logged;
END
$$;
REVOKE ALL ON FUNCTION fluxbase_realtime.log_decoded_changes(json, pg_lsn, bigint, boolean) FROM PUBLIC;

-- One batch of decoded changes into the change log, as one transaction of the consumer's, with the
-- progress row and one NOTIFY for every instance's feed. The batch is jsonb (parsed once: json's ->> scans
-- the text again at every use), grouped by table by the consumer: [[schema, table, [[ord, op, new row,
-- old row], ...]], ...], `ord` being the change's position in the batch (and a source transaction's first
-- change has a fifth element, its COMMIT time in seconds since the epoch). Each table's changes go into the
-- log in one INSERT ... SELECT, with no temporary table in between (about half the server time per batch
-- of log_decoded_changes). Rows are composite literals in the table's column order
-- (app/services/pgoutput.py: row_literal), cast to the table's row type and rendered with to_jsonb,
-- exactly what the trigger logs; a TRUNCATE's new row is the partition it names (JSON text), or none.
-- Should the table have changed under the stream so that the cast fails, that table's records are logged
-- as the literal's text rather than stopping capture.
CREATE FUNCTION fluxbase_realtime.log_decoded_batch(
    batch jsonb, progress_lsn pg_lsn, progress_written bigint, progress_complete boolean
) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target jsonb;
    rel    regclass;
    logged integer := 0;
    added  integer;
BEGIN
    FOR target IN SELECT g.value FROM jsonb_array_elements(batch) AS g LOOP
        rel := fluxbase_realtime.find_table(target->>0, target->>1);
        BEGIN
            IF rel IS NULL THEN
                RAISE EXCEPTION 'the table no longer exists' USING ERRCODE = 'undefined_table';
            END IF;
            -- A source transaction's first change carries its COMMIT time, seconds since the epoch, as a
            -- fifth element (0018_commit_timestamps.sql).
            EXECUTE format($q$
                INSERT INTO fluxbase_realtime.change_log
                    (txid, ord, schema_name, table_name, op, record, old_record, commit_timestamp)
                SELECT pg_current_xact_id(), (c.v->>0)::integer, $1, $2, c.v->>1,
                       CASE WHEN c.v->>1 = 'TRUNCATE' THEN (c.v->>2)::jsonb ELSE to_jsonb((c.v->>2)::%1$s) END,
                       to_jsonb((c.v->>3)::%1$s), to_timestamp((c.v->>4)::double precision)
                FROM jsonb_array_elements($3) AS c(v)
            $q$, rel) USING target->>0, target->>1, target->2;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'logical capture: rows of %.% do not fit its current definition (%): logged as text',
                quote_ident(target->>0), quote_ident(target->>1), SQLERRM;
            INSERT INTO fluxbase_realtime.change_log
                (txid, ord, schema_name, table_name, op, record, old_record, commit_timestamp)
            SELECT pg_current_xact_id(), (c.v->>0)::integer, target->>0, target->>1, c.v->>1,
                   CASE WHEN c.v->>1 = 'TRUNCATE' THEN (c.v->>2)::jsonb ELSE to_jsonb(c.v->>2) END,
                   to_jsonb(c.v->>3), to_timestamp((c.v->>4)::double precision)
            FROM jsonb_array_elements(target->2) AS c(v);
        END;
        GET DIAGNOSTICS added = ROW_COUNT;
        logged := logged + added;
    END LOOP;
    UPDATE fluxbase_realtime.logical_progress
    SET commit_lsn = progress_lsn, written = progress_written, complete = progress_complete;
    IF logged > 0 THEN
        PERFORM pg_notify((SELECT c.notify_channel FROM fluxbase_realtime.capture_config c), '');
    END IF;
    RETURN logged;
END
$$;
REVOKE ALL ON FUNCTION fluxbase_realtime.log_decoded_batch(jsonb, pg_lsn, bigint, boolean) FROM PUBLIC;

-- The slot was lost (dropped, or invalidated past max_slot_wal_keep_size) and has been created anew:
-- changes committed in between were never captured. The numbered log is removed and one id is skipped,
-- so every feed sees a gap (and tells its live subscribers `replay_gap`) and every resume from before
-- now gets `replay_gap` too: a client must reload rather than trust a silent hole.
CREATE FUNCTION fluxbase_realtime.record_capture_gap() RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    skipped bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('fluxbase_realtime.sequencer'));
    PERFORM fluxbase_realtime.sequence_commits();
    DELETE FROM fluxbase_realtime.change_log l USING fluxbase_realtime.commits c WHERE l.txid = c.txid;
    DELETE FROM fluxbase_realtime.commits;
    UPDATE fluxbase_realtime.sequencer_state SET next_id = next_id + 1 RETURNING next_id - 1 INTO skipped;
    UPDATE fluxbase_realtime.logical_progress SET commit_lsn = '0/0', written = 0, complete = true;
    PERFORM pg_notify((SELECT c.notify_channel FROM fluxbase_realtime.capture_config c), '');
    RETURN skipped;
END
$$;
REVOKE ALL ON FUNCTION fluxbase_realtime.record_capture_gap() FROM PUBLIC;
