# `make demo` and `make test` work on a machine that has only Python 3.11+ and a RabbitMQ.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo test lint install clean bench test-soak lock schemas asyncapi

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Reckon needs Python 3.11 or newer; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/reckon demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

# requirements.lock and requirements-build.lock, the hashed pins the image installs, resolved from
# pyproject.toml for the Dockerfile's base image (not this machine) by uv; needs PyPI. Run it after
# changing [project].dependencies, [build-system].requires or the base image tag: tests/deploy fails
# until you do. Keeps the pins pyproject still accepts; `make lock LOCK_ARGS=--upgrade` takes the newest.
lock: $(STAMP)
	$(BIN)/python -m scripts.lock $(LOCK_ARGS)

# contracts/schemas/: the JSON Schemas of every message, generated from the models in contracts/
# (`python -m scripts.schemas`). Run it after changing a message model and commit the files:
# tests/unit/test_schemas.py fails until you do, and tests/unit/test_schema_history.py refuses a change
# an old reader cannot ignore unless the message's major version changed.
schemas: $(STAMP)
	$(BIN)/python -m scripts.schemas

# contracts/asyncapi.yaml validated by the AsyncAPI CLI at the exact version tools/asyncapi/package-lock.json
# pins (npm ci from the npm registry, no install scripts; about 1.5 GB in tools/asyncapi/node_modules).
# tests/unit/test_asyncapi.py runs the same validation. No telemetry, no update check.
ASYNCAPI_DIR := tools/asyncapi
ASYNCAPI := $(ASYNCAPI_DIR)/node_modules/.bin/asyncapi
$(ASYNCAPI): $(ASYNCAPI_DIR)/package.json $(ASYNCAPI_DIR)/package-lock.json
	npm ci --prefix $(ASYNCAPI_DIR) --ignore-scripts --no-audit --no-fund
	@touch $@

asyncapi: $(ASYNCAPI)
	@printf '{"analyticsEnabled":"false","infoMessageShown":"true","userID":"reckon"}\n' \
		> $(ASYNCAPI_DIR)/node_modules/.analytics.json
	ASYNCAPI_METRICS_CONFIG_PATH=$(CURDIR)/$(ASYNCAPI_DIR)/node_modules/.analytics.json \
		ASYNCAPI_SKIP_NEW_VERSION_CHECK=true $(ASYNCAPI) validate contracts/asyncapi.yaml --fail-severity warn

# Not part of `make test`: ratios against aio-pika's RPC pattern and raw confirmed publishing, and
# a period end to end at 10,000 and 100,000 accounts on SQLite and PostgreSQL (tens of minutes the
# first time, while the sub-services' stores are seeded into var/bench). See docs/benchmarks.md.
# Not part of `make test` either: 1,000 reports back to back with random faults (processes killed,
# connections closed by the broker), then the fault summary and the coordinator's peak memory.
test-soak: $(STAMP)
	$(BIN)/python -m tests.soak $(SOAK_ARGS)

bench: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .import_linter_cache var
