import sys

from healthcare_assets.tooling.bench.main import main

if __name__ == "__main__":  # importing the module (a walk over the package) runs nothing
    sys.exit(main())
