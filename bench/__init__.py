"""Benchmarks (`make bench`) and demo data (`make seed`); results in docs/benchmarks.md."""
