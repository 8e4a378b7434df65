# claimflow: `make help` lists the targets. Quickstart is `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
export CLAIMFLOW_HOME ?= $(CURDIR)/.claimflow
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export BENTOML_DO_NOT_TRACK := true
# pytest workers for `make test` (pytest-xdist). Each test file stays on one worker
# (`--dist loadfile`), so a file's module fixtures start once; `loadgroup` would not do that
# here: xdist 3.8 marks groups through a node attribute pytest 9.2 no longer reads.
TEST_WORKERS ?= 2

.PHONY: help
help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

.PHONY: setup
setup: setup-system setup-python setup-kafka setup-synthea setup-containers setup-composecheck ## Install everything (idempotent)

.PHONY: setup-system
setup-system: ## System packages (Java, Maven, podman, runc, Chromium) via apt, when missing
	bash scripts/setup-system.sh

.PHONY: setup-python
setup-python: $(BIN)/.synced ## Python virtualenv from the committed lock file

$(BIN)/.synced: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "uv==$(UV_VERSION)"
	$(BIN)/uv pip sync --python $(BIN)/python -q --compile-bytecode requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python -q --no-deps -e .
	$(BIN)/python -m pip check
	touch $@

.PHONY: setup-kafka
setup-kafka: setup-python ## Kafka jars from Maven Central into the cache
	bash scripts/setup-kafka.sh

.PHONY: setup-synthea
setup-synthea: setup-python ## Synthea jars (synthetic patients for --profile synthea) into the cache
	bash scripts/setup-synthea.sh

.PHONY: setup-containers
setup-containers: setup-kafka ## podman API socket + locally built Kafka image (for testcontainers)
	bash scripts/setup-containers.sh
	bash deploy/build-local-image.sh

.PHONY: setup-composecheck
setup-composecheck: ## Compose file checker (compose-go loader + schema) built with Go into the cache
	bash scripts/setup-composecheck.sh

.PHONY: lock
lock: ## Re-resolve requirements.lock from pyproject.toml
	$(BIN)/uv pip compile pyproject.toml --extra dev -o requirements.lock --python-version 3.11 -q --no-header

.PHONY: lint
lint: setup-python ## ruff + mypy
	$(BIN)/ruff check .
	$(BIN)/mypy claimflow schemas features modelstore scoring producer trainer scorer gateway broker bench tests

.PHONY: unit
unit: setup-python ## Unit tests only (no services)
	$(BIN)/pytest tests/unit

.PHONY: test
test: setup ## Lint, type-check and run the whole test suite (unit + integration)
	$(MAKE) lint
	$(BIN)/pytest tests -n $(TEST_WORKERS) --dist loadfile --durations=15

.PHONY: demo
demo: setup ## Run the whole pipeline locally (Ctrl-C stops it)
	$(BIN)/claimflow up

# Extra options for bench/drills, e.g. BENCH_ARGS=--allow-dirty (a dirty tree otherwise refuses
# to overwrite the committed results; see docs/bench.md).
BENCH_ARGS ?=

.PHONY: bench
bench: setup ## Run every benchmark, write bench/results/latest.{json,md} (clean tree only)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

.PHONY: drills
drills: setup ## Fault drills against the real stack, write bench/results/drills.json (clean tree only)
	$(BIN)/python -m bench.drills $(BENCH_ARGS)

# quixstreams pins confluent-kafka < 2.13 (the project runs 2.16): it is no project
# dependency; the A/B installs it into a virtualenv of its own under .claimflow/.
QUIX_VENV := $(CLAIMFLOW_HOME)/quix-venv
QUIX_VERSION := 3.28.1

$(QUIX_VENV)/.installed: | setup-python
	$(BIN)/uv venv -q --python $(BIN)/python $(QUIX_VENV)
	$(BIN)/uv pip install -q --python $(QUIX_VENV)/bin/python "quixstreams==$(QUIX_VERSION)"
	touch $@

.PHONY: bench-ab
bench-ab: setup-kafka $(QUIX_VENV)/.installed ## A/B of the member stage: quixstreams vs our worker (docs/member-stage.md)
	$(BIN)/python -m bench.ab_quixstreams --quix-python $(QUIX_VENV)/bin/python $(BENCH_ARGS)

.PHONY: drills-smoke
drills-smoke: setup ## The fault drills at smoke size, as pytest checks (also part of `make test`)
	$(BIN)/pytest tests/integration/test_drills_smoke.py

.PHONY: clean
clean: ## Remove local state (.claimflow, with the A/B's quixstreams virtualenv) but keep the .venv
	rm -rf .claimflow
