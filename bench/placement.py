"""How many server instances a number of connections needs, and which client process targets which.

Pure arithmetic, kept apart so that it is tested without a server: the open-file limit is per process,
so N connections on one machine need ceil(N / what one process holds) instances; each instance gets an
even share, and its share is opened by client processes of its own (each targets one instance only, so
that a process's figures and verdicts are that instance's).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def split(total: int, parts: int) -> list[int]:
    """`total` in `parts` shares that differ by one at most, the larger ones first."""
    if parts < 1:
        raise ValueError(f"cannot split {total} into {parts} parts")
    share, extra = divmod(total, parts)
    return [share + (i < extra) for i in range(parts)]


def instances_needed(connections: int, per_instance: int) -> int:
    """The fewest instances that hold `connections` when one holds `per_instance` at most."""
    if per_instance < 1:
        raise ValueError(f"an instance must hold at least one connection, not {per_instance}")
    return max(1, -(-connections // per_instance))


def process_targets(instances: int, per_instance: int) -> list[int]:
    """The instance each client process targets: `per_instance` processes for each instance, in runs
    (0, 0, 1, 1, ...). With FleetPool's even split over processes, each instance then gets an even share."""
    return [instance for instance in range(instances) for _ in range(per_instance)]


def by_target(values: Sequence[float], targets: Sequence[int], instances: int) -> list[float]:
    """Per-process `values` summed per instance (`targets[i]`: process i's instance)."""
    if len(values) != len(targets):
        raise ValueError(f"{len(values)} values for {len(targets)} processes")
    sums = [0.0] * instances
    for value, target in zip(values, targets, strict=True):
        sums[target] += value
    return sums


@dataclass(frozen=True)
class Layout:
    """Connections per instance, and the client processes that open them."""

    shares: list[int]  # connections of each instance
    clients_per_instance: int  # client processes targeting each instance

    @property
    def instances(self) -> int:
        return len(self.shares)

    @property
    def targets(self) -> list[int]:
        return process_targets(self.instances, self.clients_per_instance)


def layout(
    connections: int, fits: int, instances: int | None = None, clients_per_instance: int = 1
) -> Layout:
    """`connections` over `instances` (None: as few as hold them when one process holds `fits`), each
    share opened by `clients_per_instance` client processes (a share fits in one: client processes have
    the same open-file limit as the servers)."""
    count = instances or instances_needed(connections, fits)
    shares = split(connections, count)
    if shares[0] > fits:
        raise ValueError(
            f"{shares[0]:,} connections per instance do not fit under the open-file limit ({fits:,} per "
            f"process): use at least {instances_needed(connections, fits)} instances"
        )
    return Layout(shares, clients_per_instance)
