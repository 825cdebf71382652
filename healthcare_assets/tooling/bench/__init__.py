"""The scale benchmark, `make bench`; what it measures: docs/benchmarks.md. main (the parent) runs
one_size (a child per size) and processes (whole `dagster` processes); every figure is a plain dict."""
