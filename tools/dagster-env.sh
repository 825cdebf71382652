# Sourced by .venv/bin/activate (added by `make install`).
# `dagster asset materialize` does not read [tool.dagster] from pyproject.toml, so inside the venv
# `dagster asset ...` gets the module from DAGSTER_MODULE_NAME. Only for `dagster asset`: exported
# for everything, the variable would clash with the workspace `dagster dev` hands its webserver.
# Runs under umask 077 (in a subshell, the caller's umask is kept): DAGSTER_HOME and the data
# directory hold patient data.
dagster() (
    umask 077
    if [ "${1:-}" = "asset" ]; then
        DAGSTER_MODULE_NAME=healthcare_assets.definitions command dagster "$@"
    else
        command dagster "$@"
    fi
)
