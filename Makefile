# make run  – install, start the embedded MongoDB, run the six assets of the chain on the committed export
#             (a short index benchmark; backups, restore drill and audit are on schedules), print the summary
# make test – install and run the test suite without the `slow` tests (starts its own servers on free ports)
# make test-all – the same with the `slow` tests (`make test SLOW=1`; .ci/run, where CI=true, does this)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(if $(HEALTHCARE_DATA_DIR),$(abspath $(HEALTHCARE_DATA_DIR)),$(CURDIR)/.data)/dagster_home
# `dagster asset materialize` (Dagster 1.13) reads neither pyproject.toml nor workspace.yaml; it
# takes the code location from --module-name, or from click's variable for that one command, which
# the venv's activate script exports (`make install`). DAGSTER_MODULE_NAME would reach every
# `dagster` command, and `dagster dev` / `dg dev` refuse it next to their own workspace.
CODE := DAGSTER_CLI_ASSET_MATERIALIZE_MODULE_NAME=healthcare_assets.definitions
# .data holds patient data and secrets: what make's commands write there is owner-only.
OWNER_ONLY := umask 077 &&

# The locks: every package of the dependency tree at one version, with the SHA-256 of its files,
# resolved for Python 3.11 on every platform. requirements.lock: the package and its `deploy`
# extra (the image); requirements-dev.lock: with the `dev` extra (make install), equal where they
# overlap; requirements-nodeps.lock: what goes in without its own dependencies (pycanon).
# The first two include the build backend ([build-system]): the project itself builds from the lock.
# `make lock` after editing pyproject.toml keeps every pin it can; `make lock UPGRADE=--upgrade`
# moves them all.
LOCK = $(BIN)/uv pip compile --quiet --generate-hashes --universal --python-version 3.11 \
	--custom-compile-command 'make lock' $(UPGRADE)
BUILD_REQUIRES = $(BIN)/python -c 'import tomllib; \
	print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")'

.PHONY: install lock run test test-all dev bench mongo-stop clean

# Every dependency from the lock, hashes checked; then this project, resolving nothing more.
# pycanon (the privacy audit's independent judge) pins exact pandas/numpy versions for its PDF
# reports and CLI; pycanon.anonymity needs only numpy and pandas, so it goes in without them.
# The activate script exports what `dagster asset materialize --select '*'` needs to work with no flags.
# pip's output goes to a log, shown when the install fails.
$(BIN)/.installed: pyproject.toml Makefile requirements-dev.lock requirements-nodeps.lock
	@echo "installing into $(VENV) (the first time takes about 2 minutes; pip's output: $(VENV)/install.log)"
	@$(PYTHON) -m venv $(VENV)
	@{ $(BIN)/pip install --upgrade pip \
	  && $(BIN)/pip install --require-hashes -r requirements-dev.lock \
	  && $(BIN)/pip install --no-deps --no-build-isolation -e . \
	  && $(BIN)/pip install --no-deps --require-hashes -r requirements-nodeps.lock; } > $(VENV)/install.log 2>&1 \
	  || { tail -n 40 $(VENV)/install.log; echo "make install failed: the whole log is $(VENV)/install.log"; exit 1; }
	@printf '\nexport DAGSTER_HOME="$${DAGSTER_HOME:-%s}"\nexport %s\n' '$(DAGSTER_HOME)' '$(CODE)' >> $(BIN)/activate
	@touch $@

install: $(BIN)/.installed

lock: install
	$(BUILD_REQUIRES) | $(LOCK) pyproject.toml - --extra deploy -o requirements.lock
	$(BUILD_REQUIRES) | $(LOCK) pyproject.toml - --extra dev -c requirements.lock -o requirements-dev.lock
	$(LOCK) --no-deps requirements-nodeps.lock -o requirements-nodeps.lock

$(DAGSTER_HOME):
	@$(OWNER_ONLY) mkdir -p $@ && printf 'telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n' > $@/dagster.yaml

run: install $(DAGSTER_HOME)
	@echo "starting the embedded MongoDB-compatible server"
	@$(OWNER_ONLY) $(BIN)/healthcare-assets mongo start
	@echo "the chain on the committed export, one line per stage"
	@$(OWNER_ONLY) $(BIN)/healthcare-assets run
	@echo "summary"
	@$(BIN)/healthcare-assets summary

# The suite on WORKERS processes (pytest-xdist; one per core), each test file on one of them, so a
# module's fixtures start once. Without SLOW, the tests marked `slow` are left out; CI (CI=true) runs
# them, and pytest refuses a CI run that leaves them out (fixtures/environment.py). Every run prints
# the 30 slowest steps and writes JUnit XML to $(JUNIT). PYTEST_ARGS: more of pytest's options.
SLOW ?= $(filter true 1,$(CI))
WORKERS ?= 2
JUNIT ?= .ci/junit.xml
PYTEST_ARGS ?=
test: install
	$(BIN)/ruff check healthcare_assets healthcare_assets_tests
	$(BIN)/dg check defs
	$(BIN)/dg list defs > /dev/null
	$(BIN)/pytest -n $(WORKERS) --dist loadfile --durations=30 --junitxml=$(JUNIT) \
	  $(if $(SLOW),,-m "not slow") $(PYTEST_ARGS)

test-all:
	$(MAKE) test SLOW=1

dev: install $(DAGSTER_HOME)
	$(OWNER_ONLY) $(BIN)/dg dev

bench: install
	$(OWNER_ONLY) $(BIN)/python -m healthcare_assets.tooling.bench

mongo-stop: install
	$(BIN)/healthcare-assets mongo stop

clean: mongo-stop
	rm -rf .data
