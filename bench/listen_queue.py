"""What the kernel did with a storm's connections: TCP counters (nstat's) and the listen queue's length.

A connection the server has not accepted yet waits in its listen socket's accept queue (at most the
backlog, capped by net.core.somaxconn). When that queue is full, the kernel drops the SYN (or the
handshake's last ACK) and counts it in TcpExtListenOverflows/ListenDrops: the client hears nothing and
retransmits its SYN after 1 s, then 2, 4, 8, 16 s more (connect() returns 1, 3, 7, 15, 31 s after it
began), so a client dropped a few times waits far longer than the server's queue would have made it.
The counters are the network namespace's (other processes' connections count too); the samples of the
queue are the server's listening sockets alone (`ss -ltn sport = :PORT`: Recv-Q is its length now; one
socket per worker process with REALTIME_WORKERS, each with its own queue: their lengths are summed).
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from pathlib import Path

# (file, row prefix, field): nstat's TcpExtListenOverflows is TcpExt's ListenOverflows, and so on.
COUNTERS = (
    ("netstat", "TcpExt", "ListenOverflows"),  # accept queue full when a SYN or final ACK came
    ("netstat", "TcpExt", "ListenDrops"),  # every drop at a listener (overflows included)
    ("netstat", "TcpExt", "TCPReqQFullDrop"),  # SYN queue full and no syncookies
    ("netstat", "TcpExt", "TCPReqQFullDoCookies"),  # SYN queue full: answered with a syncookie
    ("netstat", "TcpExt", "SyncookiesSent"),
    ("netstat", "TcpExt", "SyncookiesRecv"),
    ("netstat", "TcpExt", "TCPSynRetrans"),  # SYNs and SYN-ACKs sent again
    ("snmp", "Tcp", "RetransSegs"),
    ("snmp", "Tcp", "AttemptFails"),
)


def counters() -> dict[str, int]:
    """The COUNTERS now, named as nstat names them (TcpExtListenOverflows, TcpRetransSegs, ...)."""
    values: dict[str, int] = {}
    for source in ("netstat", "snmp"):
        with contextlib.suppress(OSError):
            lines = Path(f"/proc/net/{source}").read_text().splitlines()
            for names, numbers in zip(lines[::2], lines[1::2], strict=False):
                prefix, _, fields = names.partition(": ")
                row = dict(zip(fields.split(), numbers.partition(": ")[2].split(), strict=False))
                for file, wanted_prefix, field in COUNTERS:
                    if file == source and prefix == wanted_prefix and field in row:
                        values[f"{prefix}{field}"] = int(row[field])
    return values


def grown(before: dict[str, int], after: dict[str, int], prefix: str) -> dict[str, float]:
    return {f"{prefix}{name}": float(after[name] - before.get(name, 0)) for name in after}


def listen_queues(port: int) -> list[tuple[int, int]]:
    """(connections waiting to be accepted, backlog) of each socket listening on `port` (SO_REUSEPORT:
    one per worker process)."""
    try:
        out = subprocess.run(
            ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    queues = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0] == "LISTEN":
            queues.append((int(fields[1]), int(fields[2])))
    return queues


class QueueSampler:
    """The listen queue of `port` every `interval` s, in a thread: (seconds since `since`, length)."""

    def __init__(self, port: int, since: float, interval: float = 0.1) -> None:
        self.samples: list[tuple[float, int]] = []
        self.backlog = 0  # summed over the sockets
        self.sockets = 0
        self.full_samples = 0  # samples in which one socket or more was at its backlog: dropping
        self._port, self._since, self._interval = port, since, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="listen-queue", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            asked = time.monotonic() - self._since  # ss may take a while on a busy machine
            queues = listen_queues(self._port)
            if queues:
                self.samples.append((asked, sum(waiting for waiting, _ in queues)))
                self.backlog = sum(backlog for _, backlog in queues)
                self.sockets = len(queues)
                self.full_samples += any(waiting >= backlog for waiting, backlog in queues)
            self._stop.wait(self._interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def figures(self) -> dict[str, float]:
        lengths = [n for _, n in self.samples]
        return {
            "listen_backlog": float(self.backlog),
            "listen_sockets": float(self.sockets),
            "listen_queue_max": float(max(lengths, default=0)),
            "listen_queue_samples": float(len(lengths)),
            "listen_queue_full_samples": float(self.full_samples),
            # when the new server was first seen listening (the kill is 0; None: never)
            "listening_s": self.samples[0][0] if self.samples else -1.0,
        }
