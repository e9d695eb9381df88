"""The service as a separate process (`python -m app serve`), for tests that need its own pid: its memory,
signals, exit status. Most tests use the in-process `ServerThread` instead."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Bounds against hanging, never measurements of speed.
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class ServerProcess:
    """A running `python -m app serve` on a loopback port; its stdout and stderr go to a temporary file."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/realtime"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def memory(self) -> dict[str, int]:
        """VmRSS (resident now) and VmHWM (peak resident) of the process, in bytes (Linux /proc)."""
        values: dict[str, int] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                number, unit = rest.split()
                assert unit == "kB", line
                values[key] = int(number) * 1024
        return values

    def reset_peak_memory(self) -> bool:
        """Reset VmHWM to the current VmRSS (Linux >= 4.0, `clear_refs` 5); False when not permitted, in which
        case VmHWM keeps counting from the process's start (an upper bound of any later peak)."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def kill(self) -> int:
        """SIGKILL (no shutdown of any kind: sockets reset, nothing flushed), then the exit status."""
        if self.process.poll() is None:
            self.process.kill()
        return self.process.wait()

    def stop(self) -> int:
        """SIGTERM, then wait for the exit status (SIGKILL if it does not exit in time)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def free_port() -> int:
    # Free now; another process could take it before the server binds, which is unlikely.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def server_process(
    env: Mapping[str, str], *args: str, port: int | None = None
) -> AsyncIterator[ServerProcess]:
    """Starts the service with `env` added to this process's environment and waits until /readyz answers
    200; stops it with SIGTERM on exit. `args` are extra `serve` arguments (e.g. "--no-migrate"); `port`
    (default: a free one) lets a test restart a server where its clients will look for it."""
    port = free_port() if port is None else port
    command = [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    with tempfile.TemporaryDirectory(prefix="fluxbase-server-") as directory:
        log_path = Path(directory) / "server.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command, env={**os.environ, **env}, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        server = ServerProcess(process, port, log_path)
        try:
            await _wait_ready(server)
            yield server
        finally:
            await asyncio.to_thread(server.stop)


async def _wait_ready(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        async with asyncio.timeout(READY_TIMEOUT):
            while True:
                if server.process.poll() is not None:
                    code = server.process.returncode
                    raise RuntimeError(f"the server exited with {code} during startup:\n{server.output()}")
                with contextlib.suppress(httpx.TransportError):  # refused while starting
                    if (await http.get("/readyz", timeout=5.0)).status_code == 200:
                        return
                await asyncio.sleep(0.05)
