# syntax=docker/dockerfile:1
#
# One image for every Reckon role; the command picks the role (ENTRYPOINT is `reckon`):
#   coordinator | worker compute | worker storage | payments | relay | close-period --last-month
#   | conformance SERVICE (checks a running sub-service against the contract)
# and, for demo data only, `python -m workers.compute seed ...` with the entrypoint overridden.
#
# Build:  docker build -t reckon:dev .
#
# Health: this image declares no HEALTHCHECK on purpose. The same image runs one-shot commands
# (close-period, seed, db upgrade) that serve no HTTP, and Kubernetes ignores an image HEALTHCHECK
# anyway, so health is declared where the role is known: per service in compose.yaml and as
# readiness/liveness/startup probes in deploy/ (GET /readyz and /healthz on port 8080).
#
# Secrets: none here. AMQP_URL and RECKON_STORE_URL carry credentials and are given at run time
# (compose environment with demo values, Kubernetes Secrets).

# An exact version tag, for both stages; `make lock` resolves requirements.lock for this CPython, so
# change the tag and run `make lock` together. A release pins the tag's digest too
# (python:<tag>@sha256:<digest>): deploy/README.md, "Releases: pinned dependencies and base image".
ARG PYTHON_IMAGE=python:3.11.17-slim-bookworm

# --- build: install Reckon and its locked runtime dependencies (no dev extras) into a venv ---
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# The runtime dependencies only as the hashed pins of requirements.lock (generated from pyproject.toml
# by `make lock`), and the build backend the same way from requirements-build.lock, in a venv of its
# own that stays in this stage. --no-deps: nothing outside the locks is ever fetched.
COPY requirements.lock requirements-build.lock ./
RUN python -m venv /opt/reckon \
    && /opt/reckon/bin/pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock \
    && python -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir --require-hashes --no-deps -r requirements-build.lock

# Reckon itself: a wheel built from only these sources with the pinned backend (no build isolation,
# so no unpinned setuptools is downloaded), installed with --no-deps; `pip check` fails the build if
# the lock misses a dependency.
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY accounting ./accounting
COPY workers ./workers
COPY observability ./observability
COPY transport ./transport
COPY payments ./payments
COPY conformance ./conformance
RUN /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /tmp/dist . \
    && /opt/reckon/bin/pip install --no-cache-dir --no-deps /tmp/dist/reckon-*.whl \
    && /opt/reckon/bin/pip check \
    && /opt/reckon/bin/reckon --help > /dev/null

# --- runtime ---
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="reckon" \
      org.opencontainers.image.description="Period-end usage billing pulled from sub-services over RabbitMQ"

# A fixed, unprivileged uid/gid (10001) so Kubernetes runAsUser/fsGroup and volume ownership agree.
RUN groupadd --system --gid 10001 reckon \
    && useradd --system --uid 10001 --gid reckon --home-dir /var/lib/reckon --shell /usr/sbin/nologin reckon \
    && mkdir -p /var/lib/reckon /etc/reckon \
    && chown reckon:reckon /var/lib/reckon

COPY --from=build /opt/reckon /opt/reckon
# The repository's configuration as the default; compose and Kubernetes mount theirs over /etc/reckon.
COPY config/reckon.toml config/rate-card.toml /etc/reckon/

ENV PATH=/opt/reckon/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RECKON_CONFIG=/etc/reckon/reckon.toml \
    RECKON_HTTP_PORT=8080 \
    RECKON_LOG_FORMAT=json \
    RECKON_COMPUTE_DB=/var/lib/reckon/compute.sqlite3 \
    RECKON_STORAGE_DB=/var/lib/reckon/storage.sqlite3

WORKDIR /var/lib/reckon
USER 10001:10001
# /healthz, /readyz and /metrics of every long-running role.
EXPOSE 8080

ENTRYPOINT ["reckon"]
CMD ["--help"]
