"""A database's schema as readable text, read from PostgreSQL's catalogs, and sql/ applied in its order.

`catalog` reads every object a migration can make (schemas, functions, tables and columns, constraints,
indexes, triggers, policies, views, sequences, types, publications, comments, grants, and the rows of the
service's tables) as text, one entry per object, so that two databases compare entry by entry and a
difference reads as a diff of that object. PostgreSQL deparses each definition itself
(pg_get_functiondef, pg_get_indexdef, ...), so the text depends on what is defined, not how it was written.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import psycopg
from psycopg import sql

from app.migrations import PROJECT_ROOT

SCHEMA_DIR = PROJECT_ROOT / "sql"
SCHEMA_INDEX = SCHEMA_DIR / "schema.txt"

# Schemas PostgreSQL makes for itself.
_SYSTEM = "('pg_catalog', 'information_schema')"
_USER_SCHEMA = f"n.nspname NOT IN {_SYSTEM} AND n.nspname !~ '^pg_(toast|temp_)'"
# Alembic's bookkeeping, which sql/ does not (and must not) create.
_ALEMBIC = "alembic_version"
# Columns whose value depends on the database it was written in, not on the schema: the sequencer's first
# horizon is the snapshot of the transaction that installed it.
_UNCOMPARABLE_COLUMNS = {("fluxbase_realtime", "sequencer_state"): ("horizon",)}

# Privileges as (grantee, privilege, grantable) rows, NULL (the built-in default) spelled out, so that an
# explicit GRANT of a default privilege compares equal to the default.
_ACL = """coalesce((SELECT string_agg(g.entry, ' ' ORDER BY g.entry) FROM (
              SELECT format('%s=%s%s',
                            CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,
                            a.privilege_type, CASE WHEN a.is_grantable THEN '*' ELSE '' END) AS entry
              FROM aclexplode(coalesce({acl}, acldefault(({kind})::"char", {owner}))) a) g), '')"""


def _acl(acl: str, kind: str, owner: str) -> str:
    return _ACL.format(acl=acl, kind=kind, owner=owner)


# Each query returns (category, name, definition) rows; names are unique within a category.
_QUERIES: tuple[str, ...] = (
    f"""SELECT 'schema', n.nspname, format('owner %s; grants %s', n.nspowner::regrole,
                                         {_acl('n.nspacl', "'n'", 'n.nspowner')})
        FROM pg_namespace n WHERE {_USER_SCHEMA}""",
    f"""SELECT 'function',
               format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
               format(E'%s\\n-- owner %s; grants %s; kind %s; parallel %s; leakproof %s; cost %s; rows %s',
                      CASE WHEN p.prokind IN ('f', 'p', 'w') THEN pg_get_functiondef(p.oid) END,
                      p.proowner::regrole, {_acl('p.proacl', "'f'", 'p.proowner')}, p.prokind,
                      p.proparallel, p.proleakproof, p.procost, p.prorows)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {_USER_SCHEMA}""",
    f"""SELECT 'relation', format('%I.%I', n.nspname, c.relname),
               format('kind %s; persistence %s; row security %s, forced %s; replica identity %s; options %s; '
                      'partition key %s; partition of %s; owner %s; grants %s',
                      c.relkind, c.relpersistence, c.relrowsecurity, c.relforcerowsecurity, c.relreplident,
                      c.reloptions, pg_get_partkeydef(c.oid), pg_get_expr(c.relpartbound, c.oid),
                      c.relowner::regrole,
                      {_acl('c.relacl', "CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END", 'c.relowner')})
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {_USER_SCHEMA} AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND c.relname <> '{_ALEMBIC}'""",
    # Position among the live columns: a column added by ALTER TABLE and one declared last compare equal.
    f"""SELECT 'column', format('%I.%I.%I', n.nspname, c.relname, a.attname),
               format('position %s; type %s; not null %s; default %s; identity %s; generated %s; '
                      'collation %s; grants %s',
                      row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
                      format_type(a.atttypid, a.atttypmod),
                      a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
                      CASE WHEN a.attcollation <> t.typcollation THEN a.attcollation::regcollation::text END,
                      coalesce(a.attacl::text, ''))
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE {_USER_SCHEMA} AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND c.relname <> '{_ALEMBIC}'
          AND a.attnum > 0 AND NOT a.attisdropped""",
    f"""SELECT 'constraint', format('%I.%I %I', n.nspname, coalesce(c.relname, t.typname), k.conname),
               format('%s; deferrable %s, deferred %s; validated %s', pg_get_constraintdef(k.oid),
                      k.condeferrable, k.condeferred, k.convalidated)
        FROM pg_constraint k
        JOIN pg_namespace n ON n.oid = k.connamespace
        LEFT JOIN pg_class c ON c.oid = k.conrelid
        LEFT JOIN pg_type t ON t.oid = k.contypid
        WHERE {_USER_SCHEMA} AND coalesce(c.relname, '') <> '{_ALEMBIC}'""",
    f"""SELECT 'index', format('%I.%I', n.nspname, ic.relname), pg_get_indexdef(i.indexrelid)
        FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_class c ON c.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = ic.relnamespace
        WHERE {_USER_SCHEMA} AND c.relname <> '{_ALEMBIC}'""",
    f"""SELECT 'trigger', format('%I.%I %I', n.nspname, c.relname, t.tgname),
               format('%s; enabled %s', pg_get_triggerdef(t.oid), t.tgenabled)
        FROM pg_trigger t
        JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {_USER_SCHEMA} AND NOT t.tgisinternal""",
    """SELECT 'event trigger', e.evtname, format('%s %s; function %s; tags %s; enabled %s',
                                                e.evtevent, e.evtowner::regrole, e.evtfoid::regproc,
                                                e.evttags, e.evtenabled)
       FROM pg_event_trigger e""",
    """SELECT 'policy', format('%I.%I %I', p.schemaname, p.tablename, p.policyname),
              format('%s for %s to %s using (%s) with check (%s)', p.permissive, p.cmd, p.roles, p.qual,
                     p.with_check)
       FROM pg_policies p""",
    f"""SELECT 'view', format('%I.%I', n.nspname, c.relname), pg_get_viewdef(c.oid)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {_USER_SCHEMA} AND c.relkind IN ('v', 'm')""",
    f"""SELECT 'sequence', format('%I.%I', n.nspname, c.relname),
               format('type %s; start %s; increment %s; min %s; max %s; cache %s; cycle %s; owned by %s',
                      s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache,
                      s.seqcycle,
                      (SELECT format('%s.%I', d.refobjid::regclass, a.attname) FROM pg_depend d
                       JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                       WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                         AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
        FROM pg_sequence s
        JOIN pg_class c ON c.oid = s.seqrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {_USER_SCHEMA} AND c.relname !~ '^{_ALEMBIC}'""",
    # Types of their own: enums, domains, ranges, standalone composites (not tables' row or array types).
    f"""SELECT 'type', format('%I.%I', n.nspname, t.typname),
               format('kind %s; base %s; not null %s; default %s; labels %s; fields %s; owner %s; grants %s',
                      t.typtype, nullif(t.typbasetype, 0)::regtype, t.typnotnull, t.typdefault,
                      (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e
                       WHERE e.enumtypid = t.oid),
                      (SELECT string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)),
                                         ', ' ORDER BY a.attnum)
                       FROM pg_attribute a
                       WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped),
                      t.typowner::regrole, {_acl('t.typacl', "'T'", 't.typowner')})
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE {_USER_SCHEMA} AND t.typtype IN ('e', 'd', 'r', 'm', 'c')
          AND (t.typrelid = 0 OR (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c')""",
    """SELECT 'publication', p.pubname,
              format('all tables %s; insert %s, update %s, delete %s, truncate %s; via root %s; tables %s',
                     p.puballtables, p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate, p.pubviaroot,
                     (SELECT array_agg(format('%I.%I', t.schemaname, t.tablename)
                                       ORDER BY t.schemaname, t.tablename)
                      FROM pg_publication_tables t WHERE t.pubname = p.pubname))
       FROM pg_publication p""",
    """SELECT 'extension', e.extname,
              format('version %s; schema %s', e.extversion, e.extnamespace::regnamespace)
       FROM pg_extension e""",
    """SELECT 'default privileges', format('%s in %s on %s', d.defaclrole::regrole,
                                          coalesce(d.defaclnamespace::regnamespace::text, 'every schema'),
                                          d.defaclobjtype),
              d.defaclacl::text
       FROM pg_default_acl d""",
    # Oids below 16384 (FirstNormalObjectId) are PostgreSQL's own objects.
    f"""SELECT 'comment', format('%s %s', o.type, o.identity), d.description
        FROM pg_description d
        CROSS JOIN LATERAL pg_identify_object(d.classoid, d.objoid, d.objsubid) o
        WHERE d.objoid >= 16384 AND coalesce(o.schema, o.identity) NOT IN {_SYSTEM}""",
)

_TABLES = f"""
    SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE {_USER_SCHEMA} AND c.relkind IN ('r', 'p') AND c.relname <> '{_ALEMBIC}'
    ORDER BY 1, 2
"""


Catalog = dict[str, str]  # "kind name" -> definition


def catalog(connection: psycopg.Connection[tuple[object, ...]]) -> Catalog:
    """Every object of the database's own schemas, by kind and name."""
    objects: Catalog = {}
    for query in _QUERIES:
        for kind, name, text in connection.execute(query):
            objects[f"{kind} {name}"] = str(text)
    # The rows the schema installs (singletons, defaults), as data: sql/ must insert the same.
    for schema, table in connection.execute(_TABLES).fetchall():
        ignored = list(_UNCOMPARABLE_COLUMNS.get((str(schema), str(table)), ()))
        rows = connection.execute(
            sql.SQL("SELECT coalesce(string_agg(r, E'\\n' ORDER BY r), '(none)') FROM "
                    "(SELECT (to_jsonb(t) - %s::text[])::text AS r FROM {} t) AS rows").format(
                sql.Identifier(str(schema), str(table))),
            (ignored,),
        ).fetchone()
        assert rows is not None
        objects[f"rows {schema}.{table}"] = str(rows[0])
    return objects


def catalog_diff(migrated: Catalog, from_sql: Catalog) -> str:
    """What differs (empty when nothing does): the objects each side lacks, then a diff of each object
    defined differently, for a failing test's message."""
    report = [f"missing from sql/: {key}" for key in sorted(migrated.keys() - from_sql.keys())]
    report += [f"only in sql/ (no migration makes it): {key}"
               for key in sorted(from_sql.keys() - migrated.keys())]
    for key in sorted(migrated.keys() & from_sql.keys()):
        if migrated[key] != from_sql[key]:
            diff = difflib.unified_diff(migrated[key].splitlines(), from_sql[key].splitlines(),
                                        "after every migration", "after sql/", n=2, lineterm="")
            report.append(f"defined differently: {key}\n" + "\n".join(diff))
    return "\n".join(report)


def schema_files() -> list[Path]:
    """sql/'s files in the order of sql/schema.txt (a name a line; blank lines and # comments skipped)."""
    names = []
    for line in SCHEMA_INDEX.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line)
    return [SCHEMA_DIR / name for name in names]


def apply_schema(database_url: str) -> None:
    """Build the current schema from sql/ in one transaction, each file run verbatim (as the migrations run
    theirs: no parameter parsing, several statements per file)."""
    with psycopg.connect(database_url) as connection:
        for path in schema_files():
            try:
                connection.execute(path.read_text().encode())
            except psycopg.Error as error:
                raise AssertionError(f"{path.relative_to(PROJECT_ROOT)} fails: {error}") from error
