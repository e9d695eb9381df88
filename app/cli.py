"""Command line: `fluxbase-realtime serve`, `fluxbase-realtime migrate` and `fluxbase-realtime drop-slot`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging.config
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from app import migrations
from app.config import Settings
from app.logs import logging_config
from app.services.embedded_home import UnsafeLocation, embedded_home
from app.services.embedded_postgres import EmbeddedPostgres, EmbeddedPostgresError
from app.workers import WorkersError

log = logging.getLogger("app.cli")


@contextlib.contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """DATABASE_URL, or an embedded server for as long as the command runs: its cluster is under the
    project's .data/, or where the server's user can reach it (app.services.embedded_home)."""
    if settings.database_url:
        yield settings.database_url
        return
    try:
        home = embedded_home(Path.cwd())
    except UnsafeLocation as error:
        raise EmbeddedPostgresError(str(error)) from None
    if home.moved_because:
        print(f"{home.moved_because}: the embedded cluster lives in {home.data_dir}", flush=True)
    with EmbeddedPostgres(home.data_dir) as embedded:
        print(
            f"DATABASE_URL is unset: using the embedded PostgreSQL at {embedded.url} "
            f"(data in {home.data_dir})",
            flush=True,
        )
        yield embedded.url


def _serve(settings: Settings, host: str, port: int, migrate: bool) -> None:
    with database_url(settings) as url:
        if migrate:
            migrations.upgrade(url)
        settings = settings.model_copy(update={"database_url": url})
        if settings.realtime_inspector:
            shown = "localhost" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 - only for the message
            print(f"inspector: http://{shown}:{port}/inspector (asks for a service_role token)", flush=True)
        if settings.realtime_workers > 1:
            from app.workers.supervisor import Supervisor

            # Several processes on the port (app.workers); the embedded cluster, if any, outlives them all.
            status = Supervisor(settings, host, port).run()
        else:
            status = _serve_here(settings, host, port)
    if status:
        raise SystemExit(status)


def _serve_here(settings: Settings, host: str, port: int) -> int:
    """This process serves (REALTIME_WORKERS=1); 130 when stopped by Ctrl+C."""
    from app.main import create_app
    from app.server import RealtimeServer, uvicorn_config

    app = create_app(settings)
    # What is loaded by now (modules, the app) lives as long as the process: keep it out of the cyclic
    # collector's full passes, which would otherwise walk ~110k objects each time (a pause of tens of
    # milliseconds in the middle of a fan-out).
    gc.freeze()
    try:
        RealtimeServer(uvicorn_config(app, settings, host=host, port=port), app).run()
    except KeyboardInterrupt:
        # uvicorn re-raises Ctrl+C once it has shut down gracefully (and the embedded cluster stops on the
        # way out of `database_url`): the log already says so, a traceback would only alarm.
        return 130
    return 0


def _migrate(settings: Settings) -> None:
    with database_url(settings) as url:
        migrations.upgrade(url)
        log.info("migrations_applied")


def _drop_slot(settings: Settings) -> int:
    """Drop the logical mode's replication slot (it keeps WAL on the server until consumed or dropped)."""
    import psycopg

    from app.services.replication_slot import SlotError, drop_slot

    async def run(url: str) -> bool:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            return await drop_slot(conn, settings.realtime_slot)

    with database_url(settings) as url:
        try:
            dropped = asyncio.run(run(url))
        except SlotError as error:
            print(f"not dropped: {error}", file=sys.stderr)
            return 1
    if dropped:
        print(
            f"dropped replication slot {settings.realtime_slot}; a service started in logical mode creates a "
            "new one and reports the changes committed meanwhile as a replay_gap"
        )
    else:
        print(f"no replication slot {settings.realtime_slot} in this database: nothing to drop")
    return 0


def _exit_cleanly_on_sigterm() -> None:
    """uvicorn shuts down gracefully on SIGTERM and then re-raises it; this makes that re-raise a normal
    exit, so context managers (the embedded database) are closed and the exit status is 0."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))


def main(argv: Sequence[str] | None = None) -> None:
    settings = Settings()
    parser = argparse.ArgumentParser(prog="fluxbase-realtime", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="apply pending migrations, then serve WebSockets and HTTP")
    serve.add_argument("--host", default=settings.host)
    serve.add_argument("--port", type=int, default=settings.port)
    serve.add_argument("--no-migrate", action="store_true", help="do not apply migrations first")
    commands.add_parser("migrate", help="apply pending migrations and exit")
    commands.add_parser(
        "drop-slot",
        help="drop the logical capture mode's replication slot (REALTIME_SLOT); refused while in use",
    )
    args = parser.parse_args(argv)

    logging.config.dictConfig(logging_config(settings.log_level, settings.log_format))
    try:
        if args.command == "serve":
            _exit_cleanly_on_sigterm()
            _serve(settings, args.host, args.port, migrate=not args.no_migrate)
        elif args.command == "drop-slot":
            sys.exit(_drop_slot(settings))
        else:
            _migrate(settings)
    except (EmbeddedPostgresError, WorkersError) as error:
        # An operator's error, not a bug: what to do, without a traceback.
        sys.exit(f"fluxbase-realtime: {error}")
