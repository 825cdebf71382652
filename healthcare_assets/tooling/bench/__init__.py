"""The scale benchmark, `make bench` (`python -m healthcare_assets.tooling.bench`): the chain at
several sizes, the load against its insert_many ceiling, backups, drops and the client's script
as whole processes, and the analysts' release as a stream of drops, against targets. What it
measures and how: `main.py`.

Not the `index_benchmarks` asset (`defs/index_benchmarks.py`), which this benchmark runs as one
of its steps at every size.

main (command line, parent) > sizes (a child process per size) > one_size (the child: chain,
ceiling, index benchmarks; a backup) > steps, run_figures, ceiling; stream_files (the child of a
size's release stream: its exports as the release reads them) > release_stream (the analysts'
release simulated as a stream of drops, no database), stream_figures; processes > drops, client >
launcher (whole processes); figures (the typed rows), targets, report (printed tables, bench.json).
"""

from healthcare_assets.tooling.bench.one_size import measure_backup

__all__ = ["measure_backup"]
