# The user-code image: the same package the tests test, plus Dagster's Postgres storage.
# One image serves every Python service of docker-compose.yml: the gRPC code server (default
# command), dagster-webserver, dagster-daemon and the one-shot `healthcare-assets provision-access`.
# The base is pinned by the digest of the multi-platform index Docker Hub served for the tag
# (Python 3.11.16); a rebuild gets the same bytes. Moving it is a change reviewed like any other.
FROM python:3.11-slim-bookworm@sha256:0bee7276f83efd4a1ee05bbbf4281d95ed28e079220a9457f25a93e3f1e3c31b

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    HEALTHCARE_DATA_DIR=/data

WORKDIR /opt/dagster/app

# Every dependency at the version and SHA-256 of the locks (the whole tree of the package and its
# `deploy` extra; pycanon without its own pins, see the Makefile), in a layer of its own that a code
# change does not rebuild. pip refuses any file whose hash the lock does not list.
COPY requirements.lock requirements-nodeps.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock \
 && pip install --no-cache-dir --no-deps --require-hashes -r requirements-nodeps.lock
# Then the package itself, resolving nothing more, built with the lock's setuptools.
COPY pyproject.toml ./
COPY healthcare_assets ./healthcare_assets
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --no-deps --no-build-isolation .

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
