"""One worker process: its own application on the instance's port, shared with SO_REUSEPORT.

Each worker is a whole instance to the database (its own feed, pool, listener and bus peer, like one more
`fluxbase-realtime serve`), started by app.workers.supervisor with the "spawn" start method. Why SO_REUSEPORT
rather than uvicorn's `--workers` (one socket inherited by every process): each worker has an accept queue
of its own and the kernel spreads new connections evenly over them, which matters in a reconnect storm,
where a process accepts one connection per event-loop turn (docs/benchmarks.md) and a shared queue would
feed whichever process wakes first; uvicorn's Multiprocess also wants an import string and runs its own
Server class, where this service needs RealtimeServer (close 1001) and an application built from settings.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import logging.config
import os
import signal
import socket
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection

import uvicorn
from fastapi import FastAPI

from app.config import Settings
from app.logs import logging_config
from app.main import create_app
from app.server import RealtimeServer, uvicorn_config
from app.workers.siblings import Siblings, WorkerPlace

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything a worker is started with (pickled to the spawned process)."""

    place: WorkerPlace
    settings: Settings
    host: str
    port: int
    supervisor_pid: int


def serve_worker(spec: WorkerSpec, ready: Connection) -> None:
    """The worker's whole life; `ready` gets one message once it accepts connections."""
    _exit_with_supervisor(spec.supervisor_pid)
    settings = spec.settings
    logging.config.dictConfig(logging_config(settings.log_level, settings.log_format))
    # uvicorn shuts down on SIGTERM, then re-raises it: a normal exit (status 0) from there.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    place = spec.place
    try:
        public = bound_socket(spec.host, spec.port, shared=True)
        private = private_listener(place.socket_path(place.index))
    except OSError as error:
        # An operator's error (another program holds the port, say), told without a traceback.
        log.error("worker_bind_failed index=%d port=%d error=%s", place.index, spec.port, error)
        sys.exit(3)  # uvicorn's status for a failed startup
    app = create_app(settings, siblings=Siblings(place, settings.realtime_worker_timeout))
    # As in the single process (app.cli): what is loaded by now lives as long as the worker.
    gc.freeze()
    config = uvicorn_config(
        app, settings, host=spec.host, port=spec.port, backlog=backlog_share(settings, place.count)
    )
    server = WorkerServer(config, app, place, ready)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C reaches the whole process group: a normal stop
        server.run(sockets=[public, private])


class WorkerServer(RealtimeServer):
    """RealtimeServer telling the supervisor when it serves."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, place: WorkerPlace, ready: Connection) -> None:
        super().__init__(config, app)
        self._place = place
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            log.info("worker_started index=%d pid=%d", self._place.index, os.getpid())
            self._ready.send_bytes(b"ready")
            self._ready.close()


def backlog_share(settings: Settings, workers: int) -> int:
    """A worker's share of REALTIME_LISTEN_BACKLOG, which is the instance's.

    A connection waits in its worker's accept queue for as long as the queue ahead of it takes that worker
    to accept, and a worker accepts about 1/N of what the instance does: with the whole backlog each, a
    storm's connections waited N times longer, past their clients' patience (seen with 6 workers and
    100,000 clients: the second half waited 28 s from connect() to the 101, and 80,340 attempts were given
    up without an ack; with the backlog shared, 9 s and 27,920).
    """
    return max(1, -(-settings.realtime_listen_backlog // workers))


def bound_socket(host: str, port: int, *, shared: bool) -> socket.socket:
    """A TCP socket bound to host:port, not listening. `shared`: with SO_REUSEPORT, next to the other
    workers' (same user only: the kernel refuses another user's socket in the group).

    A worker's is not listening yet: uvicorn's startup calls listen() with its share of the backlog once
    the application's lifespan has started, so that the kernel sends no connection to a worker that cannot
    answer it yet (a worker being restarted, or one whose startup fails). Without `shared` the bind fails
    while anything listens on the port (the supervisor's check, app.workers.supervisor).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn's own bind
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT of an earlier run is fine
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def private_listener(path: str) -> socket.socket:
    """This worker's unix socket in the run directory, where its siblings ask for its own figures."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # left by this worker's killed predecessor
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    return sock


def _exit_with_supervisor(supervisor_pid: int) -> None:
    """Have the kernel send SIGTERM to this worker when the supervisor dies, even by SIGKILL.

    PR_SET_PDEATHSIG rather than watching os.getppid(): the kernel acts the moment the parent goes, with no
    timer in every worker; SIGTERM rather than SIGKILL so that clients still get 1001 and reconnect
    elsewhere. It fires when the thread that started this process exits: the supervisor starts workers
    from its main thread only. A supervisor that died before the prctl took effect is caught by the check.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != supervisor_pid:
        sys.exit(0)
