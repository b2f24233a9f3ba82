"""Benchmarks, each a `python -m benchmarks.<name>` with `--help`: timings live here."""
