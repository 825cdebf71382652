"""The index benchmarks' logic, apart from the Dagster asset that runs it (`defs/index_benchmarks.py`).

`suite` (the client's indexes and questions), `plans` (what the server plans and examines),
`measure` (timing a question with its index, forced to a COLLSCAN and in pandas, memory kept
flat), `report` (what bounds each question, notes, the markdown table) and `chart` (the PNG).
Not to be confused with `tooling/bench`, the scale benchmark of `make bench`, which runs the
asset as one of its steps.
"""
