# make run  – install, start the embedded MongoDB, materialize every asset, print where results are
# make test – install and run the test suite (starts its own servers on free ports)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.data/dagster_home
# `dagster asset materialize` does not read [tool.dagster] from pyproject.toml (only `dagster dev`
# does); it gets the module from this variable, set for that command only (see tools/dagster-env.sh).
MODULE := healthcare_assets.definitions
# .data holds patient data and secrets: what make's commands write there is owner-only.
OWNER_ONLY := umask 077 &&

.PHONY: install run test dev bench mongo-stop clean

$(BIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# pycanon (the privacy audit's independent judge) pins exact pandas/numpy versions for its PDF
	# reports and CLI; pycanon.anonymity needs only numpy and pandas, so it goes in without them
	$(BIN)/pip install --quiet --no-deps 'pycanon==1.3.6'
	# so that `dagster asset materialize --select '*'` works with no flags inside the activated venv
	printf '\nexport DAGSTER_HOME="$${DAGSTER_HOME:-%s}"\n. "%s/tools/dagster-env.sh"\n' \
		'$(DAGSTER_HOME)' '$(CURDIR)' >> $(BIN)/activate
	touch $@

install: $(BIN)/.installed

$(DAGSTER_HOME):
	$(OWNER_ONLY) mkdir -p $@ && printf 'telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n' > $@/dagster.yaml

run: install $(DAGSTER_HOME)
	$(OWNER_ONLY) $(BIN)/healthcare-assets mongo start
	$(OWNER_ONLY) DAGSTER_MODULE_NAME=$(MODULE) $(BIN)/dagster asset materialize --select '*'
	$(BIN)/healthcare-assets summary

test: install
	$(BIN)/ruff check healthcare_assets healthcare_assets_tests
	$(BIN)/pytest

dev: install $(DAGSTER_HOME)
	$(OWNER_ONLY) $(BIN)/dagster dev

bench: install
	$(OWNER_ONLY) $(BIN)/python -m healthcare_assets.bench

mongo-stop: install
	$(BIN)/healthcare-assets mongo stop

clean: mongo-stop
	rm -rf .data
