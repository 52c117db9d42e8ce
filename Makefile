# maskwatch: `make test` sets everything up from nothing (venv, pinned dependencies, models, a local broker for the
# tests) and runs the tests. Slow-to-build things live in a cache outside the clone, keyed by their inputs, so a
# second run reuses them and a fresh machine builds them from nothing.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
CACHE ?= $(HOME)/.cache/maskwatch
export MASKWATCH_CACHE_DIR := $(CACHE)
export MASKWATCH_MODEL_DIR ?= $(CACHE)/models
export RAY_USAGE_STATS_ENABLED := 0
export PYTHONUNBUFFERED := 1

VENV := .venv
BIN := $(VENV)/bin
VENV_KEY := $(shell cat requirements.lock | sha256sum | cut -c1-12)-$(shell $(PYTHON) -c 'import sys; print("py%d%d" % sys.version_info[:2])')
VENV_DIR := $(CACHE)/venv-$(VENV_KEY)
# The editable install maps the project's packages: redo it when the clone moves or pyproject.toml changes.
PROJECT_KEY := $(CURDIR) $(shell sha256sum pyproject.toml | cut -c1-12)
TRAIN_KEY := $(shell cat requirements.lock requirements-train.txt | sha256sum | cut -c1-12)
BROKER_PORT ?= 19092
PYTEST_ARGS ?=

.PHONY: help venv venv-train models system-deps test test-fast test-slow demo broker-start broker-stop lint bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

# No file prerequisite: the directory name carries the hash of requirements.lock, and a fresh clone's newer mtimes
# must not force a rebuild of a venv that is already complete.
$(VENV_DIR)/.complete:
	rm -rf $(VENV_DIR)
	$(PYTHON) -m venv $(VENV_DIR)
	$(VENV_DIR)/bin/pip install -q --upgrade "pip>=24" "setuptools>=68" wheel
	$(VENV_DIR)/bin/pip install -q --no-deps -r requirements.lock
	$(VENV_DIR)/bin/pip check
	touch $@

venv: $(VENV_DIR)/.complete  ## the runtime + test venv (cached by requirements.lock), with this clone installed
	ln -sfn $(VENV_DIR) $(VENV)
	@if [ "$$(cat $(VENV_DIR)/.project 2>/dev/null)" != "$(PROJECT_KEY)" ]; then \
	  $(BIN)/pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v "^WARNING: Location" || true; \
	  (cd / && $(CURDIR)/$(BIN)/python -c "import pipeline, actors, services, maskwatch.cli") \
	    && echo "$(PROJECT_KEY)" > $(VENV_DIR)/.project; fi

venv-train: venv  ## add the training extra (torch CPU, onnxscript) to the venv
	@if [ ! -f $(VENV_DIR)/.train-$(TRAIN_KEY) ]; then \
	  $(BIN)/pip install -q -r requirements-train.txt -c requirements.lock && touch $(VENV_DIR)/.train-$(TRAIN_KEY); fi

models: venv  ## export the default pose model to ONNX (cached; offline after the first build)
	$(BIN)/maskwatch models build > /dev/null

# Two tiers that together are the whole suite, each test in exactly one: the fast tier (pure tests, under a minute)
# and the rest (real models, Ray, the broker; the `soak` scenarios too).
FAST_TIER := not slow and not ray and not kafka
SLOW_TIER := not ($(FAST_TIER))

system-deps:  ## the Debian packages of the RTSP, browser and Prometheus tests (apt-get; sudo when not root)
	bash scripts/install-system-deps.sh

# As root (CI, a fresh container) the Debian packages are installed first; otherwise the tests that need them are
# skipped, and the last lines name them and the command that enables them (devtools/skip_report.py).
test: venv models  ## everything, as CI runs it: the fast tier first, then the rest
	@if [ "$$(id -u)" -eq 0 ]; then bash scripts/install-system-deps.sh; fi
	@skips=$$(mktemp); trap 'rm -f "$$skips"' EXIT; export MASKWATCH_SKIP_LOG="$$skips"; rc=0; \
	echo "== make test 1/2: the fast tier (-m \"$(FAST_TIER)\")"; \
	$(BIN)/python -m pytest -m "$(FAST_TIER)" $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 0 ]; then \
	  echo "== make test 2/2: the rest (-m \"$(SLOW_TIER)\")"; \
	  $(BIN)/python -m pytest -m "$(SLOW_TIER)" $(PYTEST_ARGS) || rc=$$?; \
	fi; \
	$(BIN)/python -m devtools.skip_report "$$skips"; \
	exit $$rc

test-fast: venv  ## the pure tests only (no models, Ray or broker): under a minute
	$(BIN)/python -m pytest -m "$(FAST_TIER)" $(PYTEST_ARGS)

test-slow: venv models  ## the rest of `make test`: real models, Ray, the broker, the soak scenarios
	$(BIN)/python -m pytest -m "$(SLOW_TIER)" $(PYTEST_ARGS)

demo: venv models  ## a real video through local Ray into a local broker, statistics read back from Kafka
	BIN=$(BIN) BROKER_PORT=$(BROKER_PORT) SOURCE="$(SOURCE)" scripts/demo.sh

bench: venv models  ## frames/s of the whole pipeline next to the bare pose model
	$(BIN)/python bench/pipeline_fps.py $(BENCH_ARGS)
	$(BIN)/python bench/classifier_throughput.py

# ruff and import-linter are pinned and live in their own small venv in the cache (not in the runtime venv or the
# image). import-linter reads the layer contracts in pyproject.toml from the source tree; it imports nothing.
RUFF_VERSION := 0.17.6
IMPORT_LINTER_VERSION := 2.17
LINT_DIR := $(CACHE)/lint-ruff$(RUFF_VERSION)-il$(IMPORT_LINTER_VERSION)

$(LINT_DIR)/.complete:
	rm -rf $(LINT_DIR)
	$(PYTHON) -m venv $(LINT_DIR)
	$(LINT_DIR)/bin/pip install -q "ruff==$(RUFF_VERSION)" "import-linter==$(IMPORT_LINTER_VERSION)"
	touch $@

lint: $(LINT_DIR)/.complete  ## ruff check and the import layers (schemas <- pipeline <- actors <- ...), as CI runs them
	$(LINT_DIR)/bin/ruff check .
	PYTHONPATH=$(CURDIR) $(LINT_DIR)/bin/lint-imports --no-cache

clean:  ## remove the venv link and caches in the clone (not the shared cache)
	rm -rf $(VENV) .pytest_cache
