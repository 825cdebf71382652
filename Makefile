# make run  – install, start the embedded MongoDB, materialize every asset, print where results are
# make test – install and run the test suite (starts its own servers on free ports)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.data/dagster_home
# `dagster asset materialize` does not read [tool.dagster] from pyproject.toml; this does the same.
export DAGSTER_MODULE_NAME := healthcare_assets.definitions

.PHONY: install run test dev bench mongo-stop clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# so that `dagster ...` works with no flags inside the activated venv
	printf '\nexport DAGSTER_MODULE_NAME=%s\nexport DAGSTER_HOME="$${DAGSTER_HOME:-%s}"\n' \
		'$(DAGSTER_MODULE_NAME)' '$(DAGSTER_HOME)' >> $(BIN)/activate
	touch $@

install: $(BIN)/.installed

$(DAGSTER_HOME):
	mkdir -p $@
	printf 'telemetry:\n  enabled: false\n' > $@/dagster.yaml

run: install $(DAGSTER_HOME)
	$(BIN)/healthcare-assets mongo start
	$(BIN)/dagster asset materialize --select '*'
	$(BIN)/healthcare-assets summary

test: install
	$(BIN)/pytest

dev: install $(DAGSTER_HOME)
	$(BIN)/dagster dev

bench: install
	$(BIN)/python -m healthcare_assets.bench

mongo-stop: install
	$(BIN)/healthcare-assets mongo stop

clean: mongo-stop
	rm -rf .data
