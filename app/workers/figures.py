"""The instance's figures from its workers' own: the stats folded, the metrics labelled by worker.

With REALTIME_WORKERS = 1 none of this runs: the stats and /metrics are the process's own, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from app.metrics import PREFIX

Figure = int | float | str | bool | None
OwnStats = dict[str, Figure]
InstanceStats = dict[str, Figure | list[int] | list[OwnStats]]

# How a figure of each worker folds into the instance's. Counts of what each worker did or holds are summed
# (a channel with subscribers on two workers counts twice, as across instances). Figures not listed are
# the same on every worker (capture mode, bus transport, slot status): the answering worker's.
SUMMED = (
    "connections",
    "channels",
    "slow_consumer_disconnects",
    "rls_checks",
    "rls_changes",
    "broadcasts_sent",
    "bus_messages_received",
    "bus_messages_dropped",
    "logical_changes_written",
)
LARGEST = ("last_change_id", "slot_lag_bytes", "slot_lag_seconds")  # the newest id, the worst lag
SMALLEST = ("bus_peers",)  # the worker that hears the fewest others (its siblings count as peers)
ANY = ("feed_polling", "consumer")  # true when some worker's feed polls, or some worker consumes
ALL = ("bus_healthy",)  # true when every worker's bus is up
PER_WORKER = ("worker", "pid")  # in each worker's own entry only


def fold_stats(own: OwnStats, others: Mapping[int, OwnStats | None]) -> InstanceStats:
    """The instance's stats: `own` (the answering worker's, with its "worker" index) folded with the
    siblings' (None: it did not answer), each worker's own under "workers", the silent ones' indexes under
    "workers_missing"."""
    index = own["worker"]
    assert isinstance(index, int)
    present = {index: own, **{i: stats for i, stats in others.items() if stats is not None}}
    folded: InstanceStats = {key: value for key, value in own.items() if key not in PER_WORKER}
    folds: tuple[tuple[tuple[str, ...], Callable[[list[Any]], Figure]], ...] = (
        (SUMMED, sum),
        (LARGEST, max),
        (SMALLEST, min),
        (ANY, any),
        (ALL, all),
    )
    for keys, fold in folds:
        for key in keys:
            values = [value for stats in present.values() if (value := stats.get(key)) is not None]
            if key in own:
                folded[key] = fold(values) if values else None
    folded["workers"] = [present[i] for i in sorted(present)]
    folded["workers_missing"] = sorted(i for i, stats in others.items() if stats is None)
    return folded


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def merged_exposition(
    own: CollectorRegistry, index: int, count: int, others: Mapping[int, str | None]
) -> bytes:
    """Every worker's samples in Prometheus' text format, each with a `worker` label: this worker's from its
    registry, the siblings' parsed from their own exposition (None: it did not answer), and
    `workers_up{worker}` saying which answered. `sum` in PromQL folds the label: queries are unchanged."""
    merged: dict[str, Metric] = {}

    def add(worker: int, families: Iterable[Metric]) -> None:
        for family in families:
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            label = {"worker": str(worker)}
            into.samples.extend(s._replace(labels={**s.labels, **label}) for s in family.samples)

    add(index, own.collect())
    for worker in sorted(others):
        text = others[worker]
        if text is not None:
            add(worker, text_string_to_metric_families(text))
    up = GaugeMetricFamily(
        PREFIX + "workers_up",
        "1 for each worker of this instance that gave its figures to this scrape, 0 for one that did not "
        "answer in time (REALTIME_WORKER_TIMEOUT).",
        labels=["worker"],
    )
    for worker in range(count):
        up.add_metric([str(worker)], 1 if worker == index or others.get(worker) is not None else 0)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([*merged.values(), up]))
    return generate_latest(registry)
