"""Two instances of the service on the run's database, joined by a bus: what the broadcast and presence
scenarios measure across instances."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator

from bench.harness import Server
from bench.measure import Bench

REDIS_URL = "redis://127.0.0.1:6379/0"
BUSES = ("postgres", "redis")
PEER_TIMEOUT = 30.0


@contextlib.contextmanager
def two_instances(bench: Bench, bus: str, env: dict[str, str]) -> Iterator[tuple[Server, Server]]:
    """Two instances on `bus`, each having heard of the other (so that broadcasts cross at once).

    Through PostgreSQL, the suite's server (started with `env`, the scenario's server_env) is the first:
    NOTIFY channels are per database and the database is the run's own, so the default bus channel is
    private to the run, and one server start is saved. Through Redis, which everyone on the machine
    shares, two new instances on a channel of this run's own.
    """
    if bus == "postgres":
        instances = bench.instances(1, env, with_server=True)
    else:
        channel = f"bench_bus_{secrets.token_hex(6)}"
        instances = bench.instances(
            2, {**env, "REALTIME_BUS_CHANNEL": channel, "REALTIME_REDIS_URL": REDIS_URL}
        )
    with instances as (first, second):
        deadline = time.monotonic() + PEER_TIMEOUT
        while not all(server.stats()["bus_peers"] >= 1 for server in (first, second)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the two instances did not hear of each other over {bus}")
            time.sleep(0.05)
        yield first, second
