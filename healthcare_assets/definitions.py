"""The code location: every Dagster object under `defs/`, found by Dagster, not listed by hand.

`dg`, `dagster dev` and the code server load this module ([tool.dg] in pyproject.toml).
"""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
