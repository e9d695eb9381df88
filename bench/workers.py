"""Load-generator processes that live for a whole benchmark and take commands one at a time.

Spawning a process and importing psycopg or an event loop costs about a second on a small machine, and
connecting a thousand subscribers costs more: workers are started once and reused by every scenario
(which also keeps the load generator out of the server's process, as the benchmark requires). A worker
answers each command with ("ok", result) or ("error", traceback); the coordinator's `call` turns the
latter, a dead worker or a timeout into an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import queue
import resource
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

Command = tuple[str, tuple[Any, ...]]
POLL = 0.2
# Open files a benchmark process should be able to have: 100,000 connections and the storm's spares.
FD_WANTED = 1 << 20


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit (children inherit it); returns the limit.

    Every connection is a file descriptor, and the usual soft limit of 1024 is far below 10,000. A hard
    limit below FD_WANTED is raised too when the process may (root, CAP_SYS_RESOURCE), up to the kernel's
    fs.nr_open; otherwise it stays, and `fd_limit_note` says so.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < FD_WANTED:
        ceiling = min(FD_WANTED, _nr_open())
        with contextlib.suppress(ValueError, OSError):  # not permitted: keep the hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, max(hard, ceiling)))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1 << 20 if hard == resource.RLIM_INFINITY else hard  # Linux refuses an infinite soft limit
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


FD_SPARE = 1_000  # a process's files besides its connections (libraries, pool, pipes)


def fd_limit_note(connections: int) -> str | None:
    """Why one process cannot hold `connections` sockets (and FD_SPARE more), or None."""
    limit = raise_fd_limit()
    if limit >= connections + FD_SPARE:
        return None
    return (
        f"open-file limit {limit} < {connections + FD_SPARE}, and this process may not raise its hard limit "
        "(that takes CAP_SYS_RESOURCE, which root in a container may lack): raise it before running "
        "(ulimit -Hn, /etc/security/limits.conf, or the container's --ulimit nofile=1048576)"
    )


def connections_that_fit(wanted: int) -> int:
    """`wanted`, or the most connections (in thousands) one process can hold under its open-file limit."""
    room = raise_fd_limit() - FD_SPARE
    return wanted if wanted <= room else max(1_000, room // 1_000 * 1_000)


def server_processes(wanted: int) -> int:
    """Worker processes one instance runs (REALTIME_WORKERS) to hold `wanted` connections under the
    per-process open-file limit: 1 where one process holds them all. REALTIME_WORKERS in the benchmark's
    own environment wins, to compare 1 and N side by side (`instance_connections` then caps `wanted`)."""
    chosen = os.environ.get("REALTIME_WORKERS")
    return int(chosen) if chosen else -(-wanted // connections_that_fit(wanted))


def instance_connections(scenario: str, wanted: int) -> int:
    """`wanted`, or as many as the instance's worker processes hold under the open-file limit (said on
    stderr)."""
    held = min(wanted, server_processes(wanted) * connections_that_fit(wanted))
    if held < wanted:
        print(f"[{scenario}] {fd_limit_note(wanted)}: {held:,} connections instead")
    return held


def instance_env(wanted: int) -> dict[str, str]:
    """The server settings for one instance holding `wanted` connections (its worker processes)."""
    processes = server_processes(wanted)
    return {"REALTIME_WORKERS": str(processes)} if processes > 1 else {}


def client_processes(wanted: int, at_least: int) -> int:
    """Load-generator processes for `wanted` connections: `at_least`, or as many as the open-file limit
    needs (each holds what one process may)."""
    return max(at_least, -(-wanted // connections_that_fit(wanted)))


def _nr_open() -> int:
    with contextlib.suppress(OSError, ValueError):
        return int(Path("/proc/sys/fs/nr_open").read_text())
    return 1 << 20


def serve(
    requests: Queue[Command | None], responses: Queue[Any], commands: Mapping[str, Callable[..., Any]]
) -> None:
    """A worker's loop: run each command, answer, until None arrives."""
    while (request := requests.get()) is not None:
        name, args = request
        try:
            responses.put(("ok", commands[name](*args)))
        except Exception:
            responses.put(("error", traceback.format_exc()))


async def serve_async(
    requests: Queue[Command | None],
    responses: Queue[Any],
    commands: Mapping[str, Callable[..., Awaitable[Any]]],
) -> None:
    """`serve` for a worker whose state lives on an event loop (connections keep reading meanwhile)."""
    # A blocking queue read would stall the loop, and with it every connection.
    while (request := await asyncio.to_thread(requests.get)) is not None:
        name, args = request
        try:
            responses.put(("ok", await commands[name](*args)))
        except Exception:
            responses.put(("error", traceback.format_exc()))


class Worker:
    """The coordinator's handle on one worker process."""

    def __init__(self, name: str, target: Callable[[Queue[Command | None], Queue[Any]], None]) -> None:
        spawn = multiprocessing.get_context("spawn")
        self.name = name
        self._requests: Queue[Command | None] = spawn.Queue()
        self._responses: Queue[Any] = spawn.Queue()
        # A daemon: should the coordinator die, the worker dies with it instead of waiting forever.
        self._process = spawn.Process(
            target=target, args=(self._requests, self._responses), name=name, daemon=True
        )
        self._process.start()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def send(self, command: str, *args: Any) -> None:
        self._requests.put((command, args))

    def receive(self, timeout: float) -> Any:
        """The answer to the oldest command sent and not yet answered."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                status, result = self._responses.get(
                    timeout=min(POLL, max(0.01, deadline - time.monotonic()))
                )
            except queue.Empty:
                if not self._process.is_alive():
                    raise RuntimeError(f"{self.name} died (exit code {self._process.exitcode})") from None
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{self.name} did not answer within {timeout:.0f}s") from None
                continue
            if status == "error":
                raise RuntimeError(f"{self.name} failed:\n{result}")
            return result

    def call(self, command: str, *args: Any, timeout: float = 60.0) -> Any:
        self.send(command, *args)
        return self.receive(timeout)

    def stop(self) -> None:
        if self._process.is_alive():
            self._requests.put(None)
            self._process.join(5)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)


def call_all(
    workers: Sequence[Worker], command: str, args: Sequence[tuple[Any, ...]], timeout: float
) -> list[Any]:
    """The same command on several workers at once, with per-worker arguments; answers in order."""
    for worker, worker_args in zip(workers, args, strict=True):
        worker.send(command, *worker_args)
    deadline = time.monotonic() + timeout
    answers: list[Any] = []
    failures: list[Exception] = []
    # Every worker's answer is read, even after one failed, so that no answer is left for the next call.
    for worker in workers:
        try:
            answers.append(worker.receive(max(0.1, deadline - time.monotonic())))
        except (RuntimeError, TimeoutError) as error:
            failures.append(error)
    if failures:
        raise failures[0]
    return answers
