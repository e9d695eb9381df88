"""The supervisor of `fluxbase-realtime serve` with REALTIME_WORKERS > 1: it starts the workers
(app.workers.process), restarts one that exits unexpectedly, and stops them all on SIGTERM or SIGINT.

The CLI has resolved the database (the embedded one included) and applied migrations before; the
supervisor itself holds no database connection and no socket of the port.

Workers are started with multiprocessing's "spawn" method: a fresh interpreter per worker, so nothing of the
supervisor's (the embedded cluster's handle, threads, logging) is inherited by fork; the settings are handed
over as they are (pickled), not read again from an environment that the command line may have overridden;
and each process's `sentinel` lets one wait() watch every worker, its readiness and the signals at once.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType

from app.config import Settings
from app.workers import WorkersError
from app.workers.process import WorkerSpec, bound_socket, serve_worker
from app.workers.siblings import WorkerPlace

log = logging.getLogger(__name__)

# A worker that served at least this long before exiting is restarted at once; one that exits sooner
# again and again (it crashes at start) waits twice as long each time, up to the cap, so it cannot spin.
STABLE_SECONDS = 10.0
BACKOFF_FIRST = 0.5
BACKOFF_CAP = 30.0
# Longest wait for the workers to close their connections and stop (uvicorn's graceful shutdown, 5 s,
# plus the lifespan's); past it the rest are killed.
STOP_TIMEOUT = 30.0


@dataclass
class _Worker:
    index: int
    process: BaseProcess | None = None
    ready: Connection | None = None
    started_at: float = 0.0
    served: bool = False
    quick_exits: int = 0
    restart_at: float | None = None
    last_exit: int | None = None


class Supervisor:
    """Runs REALTIME_WORKERS workers on host:port until SIGTERM (exit status 0) or SIGINT (130)."""

    def __init__(self, settings: Settings, host: str, port: int) -> None:
        if not sys.platform.startswith("linux"):
            # SO_REUSEPORT spreads connections over a group only on Linux; PR_SET_PDEATHSIG is Linux's too.
            raise WorkersError("REALTIME_WORKERS > 1 needs Linux; run one worker per instance elsewhere")
        if port == 0:
            raise WorkersError("REALTIME_WORKERS > 1 needs a fixed port: every worker binds the same one")
        self._settings = settings
        self._host = host
        self._port = port
        self._context = multiprocessing.get_context("spawn")
        self._workers = [_Worker(index) for index in range(settings.realtime_workers)]
        self._stop_signal: int | None = None
        self._all_served = False

    def run(self) -> int:
        _refuse_a_port_in_use(self._host, self._port)
        # mkdtemp: mode 0700, so only this user reaches the workers' unix sockets.
        run_dir = tempfile.mkdtemp(prefix="fluxbase-realtime-workers-")
        wake_read, wake_write = socket.socketpair()
        wake_read.setblocking(False)
        wake_write.setblocking(False)
        # A signal's handler runs between bytecodes, but wait() would go on waiting: the wakeup fd ends it.
        previous_fd = signal.set_wakeup_fd(wake_write.fileno(), warn_on_full_buffer=False)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            place = WorkerPlace(0, len(self._workers), run_dir, secrets.token_hex(32))
            status = self._supervise(place, wake_read)
            self._stop()
            return status
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(previous_fd)
            wake_read.close()
            wake_write.close()
            shutil.rmtree(run_dir, ignore_errors=True)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stop_signal is None:
            self._stop_signal = signum

    def _supervise(self, place: WorkerPlace, wake: socket.socket) -> int:
        for worker in self._workers:
            self._start(worker, place)
        while self._stop_signal is None:
            waiting: list[Connection | socket.socket | int] = [wake]
            for worker in self._workers:
                if worker.process is not None:
                    waiting.append(worker.process.sentinel)
                if worker.ready is not None:
                    waiting.append(worker.ready)
            due = [w.restart_at for w in self._workers if w.restart_at is not None]
            timeout = max(0.0, min(due) - time.monotonic()) if due else None
            woken = wait(waiting, timeout)
            if wake in woken:
                while True:
                    try:
                        if not wake.recv(64):
                            break
                    except BlockingIOError:
                        break
            if self._stop_signal is not None:
                break  # workers that exit now (Ctrl+C reaches the whole process group) are not restarted
            for worker in self._workers:
                if worker.ready is not None and worker.ready in woken:
                    self._on_ready(worker)
                if worker.process is not None and worker.process.sentinel in woken:
                    if not self._all_served:
                        log.error(
                            "worker_failed_at_start index=%d exit=%s: stopping (see the worker's log above)",
                            worker.index,
                            worker.process.exitcode,
                        )
                        return 1
                    self._on_exit(worker)
            now = time.monotonic()
            for worker in self._workers:
                if worker.restart_at is not None and worker.restart_at <= now and self._stop_signal is None:
                    self._start(worker, place)
                    assert worker.process is not None
                    log.warning(
                        "worker_restarted index=%d exit=%s pid=%s",
                        worker.index,
                        worker.last_exit,
                        worker.process.pid,
                    )
        return 130 if self._stop_signal == signal.SIGINT else 0

    def _start(self, worker: _Worker, place: WorkerPlace) -> None:
        spec = WorkerSpec(
            place=WorkerPlace(worker.index, place.count, place.run_dir, place.secret),
            settings=self._settings,
            host=self._host,
            port=self._port,
            supervisor_pid=os.getpid(),
        )
        ready, ready_in_worker = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=serve_worker, args=(spec, ready_in_worker), name=f"fluxbase-realtime-worker-{worker.index}"
        )
        process.start()
        ready_in_worker.close()  # the worker holds its own end: EOF here once it exits
        worker.process, worker.ready = process, ready
        worker.started_at, worker.served, worker.restart_at = time.monotonic(), False, None

    def _on_ready(self, worker: _Worker) -> None:
        assert worker.ready is not None
        try:
            worker.ready.recv_bytes()
            worker.served = True
        except EOFError:
            pass  # it exited before serving: its sentinel says so
        worker.ready.close()
        worker.ready = None
        if not self._all_served and all(w.served for w in self._workers):
            self._all_served = True
            log.info("workers_ready count=%d port=%d", len(self._workers), self._port)

    def _on_exit(self, worker: _Worker) -> None:
        assert worker.process is not None
        worker.process.join()
        worker.last_exit = worker.process.exitcode
        worker.process.close()
        worker.process = None
        if worker.ready is not None:
            worker.ready.close()
            worker.ready = None
        now = time.monotonic()
        if worker.served and now - worker.started_at >= STABLE_SECONDS:
            worker.quick_exits = 0
        delay = (
            0.0
            if worker.quick_exits == 0
            else min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** (worker.quick_exits - 1))
        )
        worker.quick_exits += 1
        worker.restart_at = now + delay
        log.warning("worker_exited index=%d exit=%s restart_in=%.1f", worker.index, worker.last_exit, delay)

    def _stop(self) -> None:
        """SIGTERM to every worker (each closes its WebSockets with 1001), then wait for them all."""
        running = [w.process for w in self._workers if w.process is not None]
        for process in running:
            if process.pid is not None and process.exitcode is None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in running:
            if process.exitcode is None:
                log.error("worker_killed pid=%s: it did not stop within %.0f s", process.pid, STOP_TIMEOUT)
                process.kill()
                process.join()
        log.info("workers_stopped count=%d", len(running))


def _refuse_a_port_in_use(host: str, port: int) -> None:
    """Fail as a single process would when something already listens on the port.

    The workers bind with SO_REUSEPORT, which would let them join another instance's workers on the same
    port (same user) without a word, each instance then getting a share of the other's clients. A bind
    without SO_REUSEPORT fails while any socket listens there, theirs included; it is released at once.
    """
    try:
        bound_socket(host, port, shared=False).close()
    except OSError as error:
        raise WorkersError(f"cannot serve on {host}:{port}: {error.strerror or error}") from None
