# The user-code image: the same package the tests test, plus Dagster's Postgres storage.
# One image serves every Python service of docker-compose.yml: the gRPC code server (default
# command), dagster-webserver, dagster-daemon and the one-shot `healthcare-assets provision-access`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    HEALTHCARE_DATA_DIR=/data

WORKDIR /opt/dagster/app

# Install the package first (its own layer, rebuilt only when the code or pins change).
COPY pyproject.toml ./
COPY healthcare_assets ./healthcare_assets
# Versions are pinned in pyproject.toml (dagster==, dagster-postgres== in the `deploy` extra).
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[deploy]" \
 && pip install --no-cache-dir --no-deps "pycanon==1.3.6"

# The instance (Postgres storage, queued runs) and the workspace (the gRPC code server).
COPY deploy/dagster.yaml ${DAGSTER_HOME}/dagster.yaml
COPY deploy/workspace.yaml /opt/dagster/workspace.yaml
# The committed export: what "Materialize all" loads when no S3 file is given.
COPY data ./data

# Run as a non-root user; the named volumes mounted on /data and the Dagster storage folder
# inherit this ownership when they are first created.
RUN useradd --create-home --uid 10001 dagster \
    && mkdir -p /data "${DAGSTER_HOME}/storage" \
    && chown -R dagster:dagster /data "${DAGSTER_HOME}"
USER 10001

EXPOSE 4000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "healthcare_assets.definitions"]
