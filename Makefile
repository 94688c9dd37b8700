# llm-gateway developer entry points.
#
#   make install       runtime deps (requirements.lock) + the project, editable, into .venv
#   make install-dev   the same with requirements-dev.lock (pytest, ruff, ...)
#   make run           migrate, then serve (GATEWAY_ADMIN_KEY defaults to "dev-admin-key")
#   make test          start throwaway PostgreSQL + Redis, run pytest, stop them (first fetches
#                      the pinned axe-core into .cache/axe-core for the UI a11y checks)
#                      (extra pytest args: make test PYTEST_ARGS="-k redis -x")
#   make fuzz          the long fuzz run of tests/fuzz (Schemathesis + Hypothesis against a real
#                      gateway; `make test` runs the same tests bounded, ~70 s): 10x the
#                      examples plus Schemathesis's coverage phase, fixed seed
#                      (make fuzz FUZZ_SCALE=50 FUZZ_SEED=random for a longer, new search)
#   make lint          ruff, the import layers (import-linter) and mypy; make test runs it first
#   make bench         bench/run.py (extra args: make bench BENCH_ARGS="...")
#   make lock          regenerate requirements.lock and requirements-dev.lock with uv
#                      (pins are kept; to move them: make lock LOCK_ARGS=--upgrade)
#   make deploy-sync   refresh deploy/kubernetes/base/config/ from gateway.yaml, policies/, prompts/
#   make clean         remove .venv, tool cache and build/test caches
#
# Installs are guarded by stamp files inside .venv that depend on the lock file and
# pyproject.toml, so re-running a target is a no-op until one of those changes.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
PIP    := $(VPY) -m pip

# litellm must never try to download its model cost map at import time (no internet).
export LITELLM_LOCAL_MODEL_COST_MAP := True
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# `make run` only: documented dev default admin key, used when GATEWAY_ADMIN_KEY is not set
# (override with `GATEWAY_ADMIN_KEY=... make run`). Not exported to other targets (tests).
DEV_ADMIN_KEY := dev-admin-key
ifeq ($(origin GATEWAY_ADMIN_KEY),undefined)
ADMIN_KEY_NOTE := GATEWAY_ADMIN_KEY not set: using the dev default admin key '$(DEV_ADMIN_KEY)'
else
ADMIN_KEY_NOTE := using GATEWAY_ADMIN_KEY from the $(origin GATEWAY_ADMIN_KEY) (value not shown)
endif

PYTEST_ARGS ?=
BENCH_ARGS  ?=
FUZZ_SCALE  ?= 10
FUZZ_SEED   ?= 22

# pip warns once per package about this machine's missing local index folders;
# drop only those lines, keep everything else (and pip's exit status, via pipefail).
PIP_FILTER := { grep -v -e "is ignored: it is neither a file nor a directory" >&2 || true; }

# uv for `make lock`: the one on PATH, else a private copy under .cache/tools.
TOOLS_VENV := .cache/tools
UV ?= $(shell command -v uv 2>/dev/null || echo $(TOOLS_VENV)/bin/uv)
# Existing pins are kept; `make lock LOCK_ARGS=--upgrade` (or --upgrade-package X) moves them.
LOCK_FLAGS := --generate-hashes --python-version 3.11 --python-platform x86_64-unknown-linux-gnu
LOCK_ARGS ?=

LINT_PATHS := $(wildcard gateway tests bench migrations)

.PHONY: help install install-dev run test fuzz lint bench lock clean deploy-sync node-clients \
	compliance

help:
	@sed -n 's/^#   make/  make/p' $(firstword $(MAKEFILE_LIST))

$(VPY):
	$(PYTHON) -m venv $(VENV)

# Shared recipe: $(1) = lock file. The lock is complete (every package, the build backend
# setuptools included) and hashed, so pip installs exactly its files with --no-deps: nothing
# is resolved against the index, whatever it publishes later and whichever pip the venv has
# (the one `python3 -m venv` bundles is enough). `pip check` then proves the set consistent.
define install_from_lock
	@echo ">> installing $(1) into $(VENV) (exact files from the lock, nothing resolved)"
	@$(PIP) install -q --no-deps --require-hashes --only-binary :all: -r $(1) 2>&1 | $(PIP_FILTER)
	@$(PIP) check >/dev/null || { $(PIP) check >&2; echo "error: $(1) is not a consistent set: run make lock" >&2; exit 1; }
	@echo ">> installing the project (editable, no deps)"
	@$(PIP) install -q --no-deps --no-build-isolation -e . 2>&1 | $(PIP_FILTER)
	@test -x $(VENV)/bin/gateway || { echo "error: $(VENV)/bin/gateway was not created" >&2; exit 1; }
endef

$(VENV)/.installed-runtime: requirements.lock pyproject.toml | $(VPY)
	$(call install_from_lock,requirements.lock)
	@touch $@

$(VENV)/.installed-dev: requirements-dev.lock pyproject.toml | $(VPY)
	$(call install_from_lock,requirements-dev.lock)
	@touch $@

install: $(VENV)/.installed-runtime

install-dev: $(VENV)/.installed-dev

run: export GATEWAY_ADMIN_KEY ?= $(DEV_ADMIN_KEY)
run: install
	@echo ">> $(ADMIN_KEY_NOTE)"
	$(VENV)/bin/gateway migrate
	$(VENV)/bin/gateway serve --banner

# axe-core for the UI accessibility tests, exactly as pinned (npm ci checks its integrity).
AXE_DIR := .cache/axe-core
AXE_JS  := $(AXE_DIR)/node_modules/axe-core/axe.min.js
$(AXE_JS): tests/a11y/package.json tests/a11y/package-lock.json
	@mkdir -p $(AXE_DIR) && cp tests/a11y/package.json tests/a11y/package-lock.json $(AXE_DIR)/
	@if command -v npm >/dev/null; then \
	  echo ">> installing axe-core into $(AXE_DIR)"; \
	  npm ci --prefix $(AXE_DIR) --no-audit --no-fund --silent; \
	else echo ">> npm not found: the UI accessibility checks will be skipped" >&2; fi

test: install-dev lint $(AXE_JS) node-clients
	bash scripts/test-services.sh -- $(VPY) -m pytest $(PYTEST_ARGS)

# The Open Responses compliance CLI against the gateway (demo model, fake upstream by Chat
# translation and by passthrough). Needs a checkout of openresponses/openresponses with its
# packages installed (GitHub only: not reachable from an offline build; the same scenarios
# run in `make test` as tests/protocols/test_responses_compliance.py).
compliance: install-dev
	$(VPY) -m tests.clients.open_responses --suite $(OPENRESPONSES_DIR)

# Outside clients the tests drive from Node (the Vercel AI SDK, Claude Code), from the npm registry at the
# versions in tests/clients/node/package-lock.json; without npm their tests skip, saying so.
node-clients:
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix tests/clients/node --no-audit --no-fund --loglevel=error \
	    || echo ">> npm ci failed: the Node client tests will skip"; \
	else echo ">> npm not found: the Node client tests will skip"; fi

fuzz: install-dev
	FUZZ_SCALE=$(FUZZ_SCALE) FUZZ_SEED=$(FUZZ_SEED) FUZZ_COVERAGE=1 \
	  $(VPY) -m pytest tests/fuzz -p no:randomly -o timeout=0 --durations=15 \
	  --hypothesis-show-statistics $(PYTEST_ARGS)

lint: install-dev
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy

bench: install-dev
	$(VPY) bench/run.py $(BENCH_ARGS)

$(TOOLS_VENV)/bin/uv:
	$(PYTHON) -m venv $(TOOLS_VENV)
	@$(TOOLS_VENV)/bin/python -m pip install --quiet uv 2>&1 | $(PIP_FILTER)

lock: $(if $(filter $(TOOLS_VENV)/bin/uv,$(UV)),$(TOOLS_VENV)/bin/uv)
	$(UV) pip compile --quiet pyproject.toml --extra build $(LOCK_FLAGS) $(LOCK_ARGS) -o requirements.lock
	$(UV) pip compile --quiet pyproject.toml --extra build --extra dev $(LOCK_FLAGS) $(LOCK_ARGS) -o requirements-dev.lock

clean:
	rm -rf $(VENV) .cache build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} + 2>/dev/null || true

deploy-sync:
	$(PYTHON) deploy/kubernetes/sync-config.py
