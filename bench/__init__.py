"""Benchmarks of the realtime service over real sockets: `python -m bench` (full), `python -m bench.quick`."""
