"""Judging what subscribers received against what the writer committed.

Each client process judges its own connections (in parallel, close to the data) and sends back a
`Sample`: a latency per delivery plus counts of what was missing, doubled, out of order or unexpected.
The coordinator merges the samples of all client processes.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class Received(Protocol):
    """One connection's record of broadcasts: row ids and when their frames arrived."""

    ids: array[int]
    received_at: array[float]
    other_frames: int
    close_code: int | None
    tag: int  # whose changes it may receive, when changes have owners


@dataclass
class WriterReport:
    """What a writer committed, in commit order: row ids and the wall-clock time right after the COMMIT
    (the statement, in autocommit) returned; rows of one statement share that time."""

    ids: array[int]
    committed_at: array[float]
    elapsed: float = 0.0
    statements: int = 0
    late: int = 0  # paced writes that started more than one interval behind schedule
    cpu: float = 0.0  # the writer process's CPU seconds when it finished
    # When rows have owners: each row's owner (an index), in commit order; empty otherwise.
    owners: array[int] = field(default_factory=lambda: array("q"))

    @property
    def rate(self) -> float:
        """Rows committed per second."""
        return len(self.ids) / self.elapsed if self.elapsed else 0.0


@dataclass
class Sample:
    """What a set of connections received during one measurement."""

    subscribers: int = 0
    changes: int = 0
    delivered: int = 0  # (connection, change) pairs received once, in order
    missing: int = 0
    disordered: int = 0  # received twice or after a later change
    unexpected: int = 0  # ids the writer did not commit in this measurement
    stale: int = 0  # ids from an earlier measurement, still arriving
    closed_by_server: int = 0
    other_frames: int = 0
    leaked: int = 0  # changes a connection received that belong to another owner
    latencies: array[float] = field(default_factory=lambda: array("d"))  # seconds, one per delivery
    # Per change, in commit order: the latency of its last delivery (when every subscriber had it), or -1.
    completion: array[float] = field(default_factory=lambda: array("d"))
    first_received: float = float("inf")
    last_received: float = float("-inf")


def judge(connections: Sequence[Received], ids: Sequence[int], committed_at: Sequence[float]) -> Sample:
    """Latency of every delivery: receive time minus the COMMIT return time of that row (same clock).

    A single writer commits in id order, so each connection must receive the ids in that order, once.
    """
    position = {row_id: index for index, row_id in enumerate(ids)}
    first_id = ids[0] if ids else 0
    sample = Sample(subscribers=len(connections), changes=len(ids))
    sample.completion = array("d", [-1.0]) * len(ids)
    completion, latencies = sample.completion, sample.latencies
    for connection in connections:
        previous = -1
        delivered = 0
        first = last = 0.0
        for row_id, received in zip(connection.ids, connection.received_at, strict=True):
            index = position.get(row_id)
            if index is None:
                if row_id < first_id:
                    sample.stale += 1
                else:
                    sample.unexpected += 1
                continue
            if index <= previous:
                sample.disordered += 1
                continue
            previous = index
            if not delivered:
                first = received
            delivered += 1
            last = received
            latency = received - committed_at[index]
            latencies.append(latency)
            if latency > completion[index]:
                completion[index] = latency
        if delivered:  # receive times only grow along a connection
            sample.first_received = min(sample.first_received, first)
            sample.last_received = max(sample.last_received, last)
        sample.delivered += delivered
        sample.missing += len(ids) - delivered
        sample.other_frames += connection.other_frames
        sample.closed_by_server += connection.close_code is not None
    return sample


def judge_owned(
    connections: Sequence[Received], ids: Sequence[int], committed_at: Sequence[float], owners: Sequence[int]
) -> Sample:
    """`judge` when each change is for its owner's connections only (those whose `tag` is the owner):
    each connection is judged against its owner's changes; another owner's change it received is
    `leaked` (and also `unexpected` or `stale`)."""
    groups: dict[int, list[Received]] = {}
    for connection in connections:
        groups.setdefault(connection.tag, []).append(connection)
    owner_of = dict(zip(ids, owners, strict=True))
    sample = Sample(subscribers=len(connections), changes=len(ids))
    sample.completion = array("d", [-1.0]) * len(ids)
    for owner, group in groups.items():
        indexes = [index for index, row_owner in enumerate(owners) if row_owner == owner]
        part = judge(group, [ids[i] for i in indexes], [committed_at[i] for i in indexes])
        for position, index in enumerate(indexes):
            sample.completion[index] = part.completion[position]
        for name in ("delivered", "missing", "disordered", "unexpected", "stale", "closed_by_server"):
            setattr(sample, name, getattr(sample, name) + getattr(part, name))
        sample.other_frames += part.other_frames
        sample.latencies.extend(part.latencies)
        sample.first_received = min(sample.first_received, part.first_received)
        sample.last_received = max(sample.last_received, part.last_received)
        sample.leaked += sum(owner_of.get(row_id, owner) != owner for c in group for row_id in c.ids)
    return sample


def merge(samples: Iterable[Sample]) -> Sample:
    """One sample for all client processes (which judged the same commits)."""
    merged = Sample()
    for sample in samples:
        if not merged.completion:
            merged.completion = array("d", [-1.0]) * len(sample.completion)
            merged.changes = sample.changes
        for name in ("subscribers", "delivered", "missing", "disordered", "unexpected", "stale", "leaked"):
            setattr(merged, name, getattr(merged, name) + getattr(sample, name))
        merged.closed_by_server += sample.closed_by_server
        merged.other_frames += sample.other_frames
        merged.latencies.extend(sample.latencies)
        merged.completion = array("d", map(max, merged.completion, sample.completion))
        merged.first_received = min(merged.first_received, sample.first_received)
        merged.last_received = max(merged.last_received, sample.last_received)
    return merged
