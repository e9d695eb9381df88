"""A real HAProxy (Debian's package) in front of several instances: a generated configuration on free ports,
round robin, no sticky sessions, health checks on /readyz, and its stats page to see what it thinks of each
server. A missing `haproxy` fails the test that needs it (the Makefile's `haproxy` target installs it)."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx
import pytest

from tests.support.processes import free_port

# Bounds against hanging, never measurements of speed.
READY_TIMEOUT = 30.0
# Health checks: how often. Short, so that a killed instance stops receiving new connections quickly;
# `option redispatch` covers the moments before.
CHECK_INTERVAL_MS = 200


def haproxy_config(port: int, stats_port: int, servers: Sequence[int]) -> str:
    """The configuration: WebSocket-friendly timeouts (an upgraded connection is a tunnel that lives while
    either side speaks), round robin with no cookie or stick table, retries on another server when one
    refuses (a killed instance before its health check fails)."""
    lines = [
        "global",
        "    maxconn 4000",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout client 30s",
        "    timeout server 30s",
        "    timeout tunnel 1h",
        "    timeout client-fin 1s",
        "    timeout server-fin 1s",
        "    retries 3",
        "    option redispatch 1",
        "frontend realtime",
        f"    bind 127.0.0.1:{port}",
        "    option forwardfor",
        "    default_backend instances",
        "frontend stats",
        f"    bind 127.0.0.1:{stats_port}",
        "    stats enable",
        "    stats uri /stats",
        "backend instances",
        "    balance roundrobin",
        "    option httpchk GET /readyz",
        "    http-check expect status 200",
        # A check may take its time on a busy machine (its timeout would otherwise be `inter`); a killed
        # instance refuses at once, so two failures in a row still take it out within two intervals.
        "    timeout check 5s",
        f"    default-server check inter {CHECK_INTERVAL_MS} fall 2 rise 1",
        *(f"    server instance-{i} 127.0.0.1:{server_port}" for i, server_port in enumerate(servers)),
    ]
    return "\n".join(lines) + "\n"


class HAProxy:
    def __init__(self, process: subprocess.Popen[bytes], port: int, stats_port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.stats_port = stats_port
        self.log = log

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/realtime"

    async def server_states(self) -> dict[str, str]:
        """{server name: status} from the stats page's CSV ("UP", "DOWN", "UP 1/2", ...)."""
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.stats_port}") as http:
            text = (await http.get("/stats;csv", timeout=5.0)).text
        rows = csv.DictReader(io.StringIO(text.removeprefix("# ")))
        return {row["svname"]: row["status"] for row in rows if row["pxname"] == "instances"}

    async def until_states(self, expected: dict[str, str]) -> None:
        """Wait until HAProxy reports each named server in the expected status."""
        async with asyncio.timeout(READY_TIMEOUT):
            while True:
                with contextlib.suppress(httpx.TransportError):  # not listening yet
                    states = await self.server_states()
                    if all(states.get(name) == status for name, status in expected.items()):
                        return
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"haproxy exited with {self.process.returncode}:\n{self.log.read_text()}"
                    )
                await asyncio.sleep(0.05)


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(p).exists()), None
    )
    if found is None:
        pytest.fail(
            "haproxy is not installed: `make haproxy` installs Debian's package (as root), or run "
            "`sudo apt-get install haproxy`; the load-balanced test needs a real load balancer",
            pytrace=False,
        )
    return found


@contextlib.asynccontextmanager
async def haproxy(servers: Sequence[int]) -> AsyncIterator[HAProxy]:
    """HAProxy on a free port in front of `servers` (ports on 127.0.0.1), ready when it reports every
    server UP; stopped on exit."""
    binary = haproxy_binary()
    port, stats_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="fluxbase-haproxy-") as directory:
        config = Path(directory) / "haproxy.cfg"
        config.write_text(haproxy_config(port, stats_port, servers))
        log = Path(directory) / "haproxy.log"
        with log.open("wb") as out:
            # -db: stay in the foreground, so that the test owns the process and its exit.
            process = subprocess.Popen(
                [binary, "-db", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT
            )
        proxy = HAProxy(process, port, stats_port, log)
        try:
            await proxy.until_states({f"instance-{i}": "UP" for i in range(len(servers))})
            yield proxy
        finally:
            process.terminate()
            try:
                await asyncio.to_thread(process.wait, 10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
