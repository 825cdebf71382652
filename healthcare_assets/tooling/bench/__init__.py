"""The scale benchmark, `make bench` (`python -m healthcare_assets.tooling.bench`); what it
measures: docs/benchmarks.md. Not the `index_benchmarks` asset, which it runs at every size.

main (command line, parent; a child process per size) > one_size (the child: chain, ceiling, index
benchmarks; a backup) > steps (a run's figures); stream (the analysts' release simulated as a
stream of drops, no database); processes (whole `dagster` processes and the client's script);
targets; report (printed tables, bench.json). Every figure is a plain dict, as bench.json has it.
"""
