"""Client sockets spread over loopback source addresses, and the kernel limits a 100k benchmark meets.

Each TCP connection to the server is a (source address, source port, 127.0.0.1, server port) tuple, and
one source address has only the ephemeral port range (about 28,000 ports) to offer: 100,000 clients,
and the TIME_WAIT tuples a reconnect storm leaves behind, need several source addresses. The whole
127.0.0.0/8 is loopback on Linux, so 127.0.0.2, 127.0.0.3, ... need no configuration. The socket is bound
with IP_BIND_ADDRESS_NO_PORT, so that the port is chosen at connect time for the whole tuple (a plain
bind to port 0 would reserve the port for every destination, and run out sooner).
"""

from __future__ import annotations

import contextlib
import inspect
import socket
from pathlib import Path
from typing import Any

import uvicorn

FIRST_SOURCE = 2  # 127.0.0.1 is the server's address; clients come from 127.0.0.2 upwards
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux's value
# Connections per source address: well under the ephemeral range, which TIME_WAIT tuples also use.
PER_SOURCE = 8_000


def source_addresses(connections: int) -> list[str]:
    """Enough loopback source addresses for `connections` (and as many again in TIME_WAIT)."""
    count = min(250, max(1, -(-2 * connections // PER_SOURCE)))
    return [f"127.0.0.{FIRST_SOURCE + i}" for i in range(count)]


def bound_socket(source: str) -> socket.socket:
    """A non-blocking TCP socket bound to `source`, its port left for connect() to choose."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((source, 0))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _sysctl(name: str) -> str | None:
    with contextlib.suppress(OSError):
        return Path("/proc/sys", *name.split(".")).read_text().strip().replace("\t", " ")
    return None


def process_fd_limit(pid: int) -> str | None:
    """'soft/hard' open files of a running process (its /proc limits)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return f"{soft}/{hard}"
    return None


def kernel_limits() -> dict[str, Any]:
    """The limits that decide whether 100,000 connections fit, and how a storm of them is accepted."""
    backlog = inspect.signature(uvicorn.Config).parameters["backlog"].default
    names = (
        "net.core.somaxconn",  # caps every listen() backlog
        "net.ipv4.tcp_max_syn_backlog",  # half-open connections waiting for their ACK
        "net.ipv4.ip_local_port_range",  # ephemeral ports per source address
        "net.ipv4.tcp_syncookies",
        "net.ipv4.tcp_tw_reuse",
        "net.netfilter.nf_conntrack_max",  # loopback connections are tracked too, when conntrack is on
        "fs.nr_open",  # the highest RLIMIT_NOFILE a process can get
        "fs.file-max",
    )
    return {"uvicorn_backlog": backlog, **{name: _sysctl(name) for name in names}}
