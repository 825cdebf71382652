"""The scale benchmark, `make bench`; what it measures: docs/benchmarks.md."""
