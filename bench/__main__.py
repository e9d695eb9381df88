"""`python -m bench`: the full suite (`make bench`); see bench/suite.py."""

from bench import suite

suite.main()
