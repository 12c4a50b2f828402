"""Benchmarks: quality comparisons on real suites and speed against the original implementations, with
JSON output."""
