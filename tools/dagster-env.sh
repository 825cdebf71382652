# Sourced by .venv/bin/activate (added by `make install`).
# `dagster asset materialize` does not read [tool.dagster] from pyproject.toml, so inside the venv
# `dagster asset ...` gets the module from DAGSTER_MODULE_NAME. Only for `dagster asset`: exported
# for everything, the variable would clash with the workspace `dagster dev` hands its webserver.
dagster() {
    if [ "${1:-}" = "asset" ]; then
        DAGSTER_MODULE_NAME=healthcare_assets.definitions command dagster "$@"
    else
        command dagster "$@"
    fi
}
