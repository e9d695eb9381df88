"""How the workers' own figures fold into the instance's (app.workers.figures): no process, no socket."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.workers.figures import OwnStats, fold_stats, merged_exposition


def _own(worker: int, **figures: int | float | str | bool | None) -> OwnStats:
    base: OwnStats = {"worker": worker, "pid": 100 + worker, "connections": 1, "capture": "trigger"}
    return {**base, **figures}


def test_stats_sum_counts_and_fold_the_rest_by_their_meaning() -> None:
    own = _own(0, connections=2, last_change_id=7, feed_polling=False, bus_healthy=True, bus_peers=4)
    sibling = _own(1, connections=3, last_change_id=9, feed_polling=True, bus_healthy=False, bus_peers=2)
    folded = fold_stats(own, {1: sibling, 2: None})
    assert folded["connections"] == 5
    assert folded["last_change_id"] == 9
    assert folded["feed_polling"] is True
    assert folded["bus_healthy"] is False
    assert folded["bus_peers"] == 2
    assert folded["capture"] == "trigger"
    assert "worker" not in folded and "pid" not in folded  # each worker's own, under "workers"
    assert folded["workers"] == [own, sibling]
    assert folded["workers_missing"] == [2]


def test_a_lag_only_the_consumer_knows_is_the_consumers() -> None:
    folded = fold_stats(_own(0, slot_lag_seconds=None), {1: _own(1, slot_lag_seconds=0.5)})
    assert folded["slot_lag_seconds"] == 0.5
    assert fold_stats(_own(0, slot_lag_seconds=None), {1: None})["slot_lag_seconds"] is None


def _registry(connections: float) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    Gauge("fluxbase_realtime_connections", "Open WebSocket connections.", registry=registry).set(connections)
    return registry


def test_every_sample_gets_its_workers_label_and_a_silent_worker_is_down() -> None:
    sibling = generate_latest(_registry(3)).decode()
    text = merged_exposition(_registry(2), 0, 3, {1: sibling, 2: None}).decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples == {
        ("fluxbase_realtime_connections", (("worker", "0"),)): 2,
        ("fluxbase_realtime_connections", (("worker", "1"),)): 3,
        ("fluxbase_realtime_workers_up", (("worker", "0"),)): 1,
        ("fluxbase_realtime_workers_up", (("worker", "1"),)): 1,
        ("fluxbase_realtime_workers_up", (("worker", "2"),)): 0,
    }
    assert text.count("# TYPE fluxbase_realtime_connections gauge") == 1  # one family, every worker's samples
