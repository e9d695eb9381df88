"""`make bench-quick`: every scenario of the suite at its short size, one run, in under a minute.

The same code as `make bench` (bench/suite.py); results go to bench/results/quick-*.json,
quick-latest.md and quick-*.png. `python -m bench.quick --runs 3` gives medians and spreads.
"""

from __future__ import annotations

from bench import suite


def main(argv: list[str] | None = None) -> None:
    suite.main(argv, size="quick")


if __name__ == "__main__":
    main()
