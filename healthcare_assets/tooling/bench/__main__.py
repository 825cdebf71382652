"""`python -m healthcare_assets.tooling.bench`: the scale benchmark (see the package's docstring)."""

import sys

from healthcare_assets.tooling.bench.main import main

sys.exit(main())
