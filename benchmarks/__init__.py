"""Benchmarks for tierstore (run each as ``python -m benchmarks.<name>``; see benchmarks/RESULTS.md)."""
