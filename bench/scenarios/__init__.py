"""The benchmark's scenarios (issue 5; broadcast and presence: issue 9; idle100k, spread100k and storm:
issue 14), in the order they run."""

from __future__ import annotations

from bench.scenarios import (
    broadcast,
    capture,
    connections,
    fanout,
    filters,
    idle100k,
    ingest,
    instances,
    latency,
    overhead,
    payload,
    pgbench,
    presence,
    rls,
    spread100k,
    storm,
)
from bench.scenarios.base import Scenario

ALL: tuple[Scenario, ...] = (
    latency.SCENARIO,
    fanout.SCENARIO,
    ingest.SCENARIO,
    connections.SCENARIO,
    overhead.SCENARIO,
    pgbench.SCENARIO,
    capture.SCENARIO,
    payload.SCENARIO,
    rls.SCENARIO,
    broadcast.SCENARIO,
    presence.SCENARIO,
    filters.SCENARIO,
    instances.SCENARIO,
    idle100k.SCENARIO,
    spread100k.SCENARIO,
    storm.SCENARIO,
)
BY_NAME = {scenario.name: scenario for scenario in ALL}
