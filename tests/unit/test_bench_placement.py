"""The benchmark's placement of connections over instances and client processes (bench/placement.py),
and the spread100k scenario's layout of its table, without a server."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import placement
from bench.scenarios import BY_NAME, spread100k


@given(st.integers(0, 10**6), st.integers(1, 64))
def test_split_is_even_and_complete(total: int, parts: int) -> None:
    shares = placement.split(total, parts)
    assert len(shares) == parts
    assert sum(shares) == total
    assert max(shares) - min(shares) <= 1
    assert shares == sorted(shares, reverse=True)


def test_split_refuses_no_parts() -> None:
    with pytest.raises(ValueError, match="0 parts"):
        placement.split(10, 0)


def test_instances_needed_under_the_open_file_limit() -> None:
    assert placement.instances_needed(100_000, 19_000) == 6  # this machine: hard limit 20,000
    assert placement.instances_needed(100_000, 20_000) == 5
    assert placement.instances_needed(100_000, 100_000) == 1
    assert placement.instances_needed(0, 19_000) == 1
    with pytest.raises(ValueError, match="at least one connection"):
        placement.instances_needed(10, 0)


@given(st.integers(1, 300_000), st.integers(1_000, 100_000))
def test_every_share_fits(connections: int, fits: int) -> None:
    layout = placement.layout(connections, fits)
    assert sum(layout.shares) == connections
    assert max(layout.shares) <= fits
    # The fewest: one instance fewer would not hold them.
    assert layout.instances == 1 or (layout.instances - 1) * fits < connections


def test_a_fixed_count_that_does_not_fit_says_how_many() -> None:
    with pytest.raises(ValueError, match="at least 6 instances"):
        placement.layout(100_000, 19_000, instances=3)


def test_process_targets_run_per_instance() -> None:
    assert placement.process_targets(3, 2) == [0, 0, 1, 1, 2, 2]
    assert placement.layout(6_000, 19_000, instances=3, clients_per_instance=2).targets == [0, 0, 1, 1, 2, 2]


@given(st.integers(0, 200_000), st.integers(1, 8), st.integers(1, 4))
def test_an_even_split_over_processes_is_an_even_split_over_instances(
    total: int, instances: int, per_instance: int
) -> None:
    """FleetPool splits a call's clients evenly over its processes; each instance's processes then hold
    its share, within one client per process."""
    targets = placement.process_targets(instances, per_instance)
    per_process = placement.split(total, len(targets))
    held = placement.by_target(per_process, targets, instances)
    assert sum(held) == total
    assert max(held) - min(held) <= per_instance


def test_by_target_wants_one_value_per_process() -> None:
    assert placement.by_target([1, 2, 3, 4], [0, 0, 1, 1], 2) == [3.0, 7.0]
    with pytest.raises(ValueError, match="3 values for 4 processes"):
        placement.by_target([1, 2, 3], [0, 0, 1, 1], 2)


def test_spread100k_is_registered_with_a_row_set_per_instance() -> None:
    assert BY_NAME["spread100k"] is spread100k.SCENARIO
    layout = spread100k.layout_of("quick")
    assert layout.shares == [2_000, 2_000, 2_000]
    rows = spread100k.rows("quick")
    keys = [row.key for row in rows]
    assert len(keys) == len(set(keys))
    for instance in (1, 2, 3):
        assert f"instance{instance}_delivery_user_us" in keys
        assert f"instance{instance}_delivery_system_us" in keys
    assert "instance4_connections" not in keys
