"""What a scenario is: how it measures, and how its figures are presented and judged."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bench.measure import Bench
from bench.stats import Summary

Size = Literal["quick", "full"]


@dataclass(frozen=True)
class Target:
    """A figure issue 5 asks for: `op` `value` (in the figure's unit)."""

    op: Literal["<=", ">="]
    value: float
    text: str

    def met(self, measured: float) -> bool:
        return measured <= self.value if self.op == "<=" else measured >= self.value


@dataclass(frozen=True)
class Row:
    """One line of the results table: a figure of a scenario, how to print it, and its target if any."""

    scenario: str  # empty: same scenario as the line above
    figure: str
    key: str
    fmt: str  # format of the number alone, e.g. "{:.1f}"
    unit: str = ""
    target: Target | None = None


@dataclass
class RunResult:
    """One run of a scenario: flat numeric figures, latency CDFs by label, anything else worth keeping."""

    figures: dict[str, Any] = field(default_factory=dict)
    cdfs: dict[str, list[float]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, prefix: str, figures: dict[str, Any]) -> None:
        self.figures.update({f"{prefix}{key}": value for key, value in figures.items()})


@dataclass(frozen=True)
class Scenario:
    """A scenario module's entry points.

    `measure(bench, size, earlier)` is one run, against a fresh database and server; `earlier` are the
    results of the runs before it (a search can start near their answer). `rows(size)` lays out its
    table lines; `load(size)` names the figure prefixes whose CPU shares describe the conditions it ran
    in, with a title for each. `server_env`: settings of the suite's server beyond the benchmark's (a
    raised limit); `sized_env(size)`, when given, adds settings that depend on the size (the instance's
    worker processes). `derive(summaries)`, given every scenario's summary once all ran, returns figures
    to add to this one's (a comparison with another scenario of the same run). `max_runs`: at most this
    many runs whatever `--runs` says (a run of 100,000 connections takes minutes).
    """

    name: str
    measure: Callable[[Bench, Size, list[RunResult]], RunResult]
    rows: Callable[[Size], list[Row]]
    load: Callable[[Size], list[tuple[str, str]]]
    params: Callable[[Size], Any]
    server_env: Mapping[str, str] = field(default_factory=dict)
    sized_env: Callable[[Size], Mapping[str, str]] | None = None
    derive: Callable[[Mapping[str, Summary]], Summary] | None = None
    max_runs: int | None = None

    def env(self, size: Size) -> dict[str, str]:
        """The settings of this scenario's server at `size`."""
        return {**self.server_env, **(self.sized_env(size) if self.sized_env else {})}


def settle(seconds: float) -> None:
    """Let the machine go quiet between measurements (the OS, PostgreSQL's background writers)."""
    time.sleep(seconds)
