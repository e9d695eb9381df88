"""Benchmarks of the realtime service over real sockets; `python -m bench.quick` is the quick one."""
