"""Benchmarks: not tests. Each module's ``run(quick)`` returns figures in ../shared/BENCH.md's format."""
