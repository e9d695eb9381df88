"""The migrations' SQL files are history: each is run by exactly one migration, and none changes once written.

A database that has run a migration never runs it again, so an edit of its file would reach new databases
only, and the two would differ without any test noticing (the schema test compares sql/ with a fresh
migration run). alembic/versions/sql/SHA256SUMS records each file's digest (`sha256sum -c` reads it); a
new migration adds its files' lines, and no existing line changes.
"""

from __future__ import annotations

import hashlib
import re

from app.migrations import MIGRATION_SQL, PROJECT_ROOT

VERSIONS = PROJECT_ROOT / "alembic" / "versions"
MANIFEST = MIGRATION_SQL / "SHA256SUMS"


def files_run_by_migrations() -> dict[str, list[str]]:
    """Each frozen file's name -> the migrations (file names) that run it."""
    runs: dict[str, list[str]] = {}
    for migration in sorted(VERSIONS.glob("*.py")):
        for name in re.findall(r"run_sql_file\(\"([^\"]+)\"\)", migration.read_text()):
            runs.setdefault(name, []).append(migration.name)
    return runs


def recorded_digests() -> dict[str, str]:
    digests = {}
    for line in MANIFEST.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        digests[name.lstrip("*")] = digest
    return digests


def test_each_frozen_file_is_run_by_exactly_one_migration() -> None:
    runs = files_run_by_migrations()
    frozen = sorted(path.name for path in MIGRATION_SQL.glob("*.sql"))
    assert sorted(runs) == frozen, "every file in alembic/versions/sql/ is run by a migration, and exists"
    shared = {name: migrations for name, migrations in runs.items() if len(migrations) > 1}
    assert not shared, f"a frozen file belongs to one migration: {shared}"


def test_no_frozen_file_has_changed() -> None:
    recorded = recorded_digests()
    frozen = {path.name: path for path in MIGRATION_SQL.glob("*.sql")}
    assert sorted(recorded) == sorted(frozen), f"{MANIFEST.name} lists every frozen file, and only those"
    changed = [name for name, path in sorted(frozen.items())
               if hashlib.sha256(path.read_bytes()).hexdigest() != recorded[name]]
    assert not changed, (
        f"{changed} changed: a migration that has run cannot change. Write a new migration with its own "
        "frozen file, and edit sql/ in place (sql/README.md)"
    )

