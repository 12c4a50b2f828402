"""Benchmarks: quality comparisons on real suites (and, later, speed), with JSON output."""
