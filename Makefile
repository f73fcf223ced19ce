# gristmill: set-up, checks and benchmarks.
#
#   make install   .venv with the project and its dev tools, generated protobuf code,
#                  system packages, nsjail, bun and uv (idempotent; fast when done)
#   make run       install, then `gristmill demo`: each language's sample job through
#                  an embedded service
#   make test      install, lint, then the test suite (what CI runs: .ci/run)
#   make pytest    the test suite alone (PYTEST_ARGS="-k name -x" to narrow it)
#   make lint      ruff check, ruff format --check, mypy
#   make fmt       ruff format and ruff check --fix (edits files)
#   make bench     install, then latency and throughput against the bare interpreters,
#                  with warm sandboxes and without (BENCH_ARGS="--json"; bench/latency.py --help),
#                  then the cost per job of logs, metrics and traces (bench/telemetry.py)
#   make profile   install, then where a trivial job's time and CPU go (bench/costs.py)
#   make proto     regenerate gristmill/v1/ from proto/ (done by install when stale)
#   make dist      the sdist and the wheel into dist/ (pip install dist/gristmill-*.whl is
#                  the client; 'gristmill[server] @ file://...' the server too)
#   make images    container images per language and `all` (images/build.sh; IMAGES="go all")
#   make images-test  each image under podman, its languages' conformance run from outside
#   make clean     remove the venv, tools, generated code, caches and var/

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
DEPS_STAMP := $(VENV)/.gristmill-deps
PROTO_SRC := proto/gristmill/v1/runtime.proto
PROTO_OUT := gristmill/v1/runtime_pb2.py
# mypy refuses a directory without Python files, so only the ones that have some.
MYPY_DIRS = $(foreach d,gristmill runtimes tests bench,$(if $(shell find $(d) -name '*.py' -print -quit 2>/dev/null),$(d)))
BENCH_ARGS ?=
TELEMETRY_BENCH_ARGS ?=
PROFILE_ARGS ?=
PYTEST_ARGS ?=
DIST ?= dist

export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_NO_INPUT := 1

say = @printf '==> %s\n' "$(1)"

.PHONY: help install proto dist run test pytest lint fmt bench profile clean system images images-test

help:
	@sed -n '3,20p' Makefile | sed 's/^# \{0,1\}//'

# --- install -------------------------------------------------------------------

install: $(DEPS_STAMP) $(PROTO_OUT) system
	$(call say,installed: $(BIN)/gristmill $(BIN)/nsjail $(BIN)/bun $(BIN)/uv)

# The venv uses the real interpreter behind `python3` (not pyenv's slow shim).
$(PY):
	$(call say,creating $(VENV) with $(shell command -v $(PYTHON)) ($(shell $(PYTHON) --version 2>&1)))
	@$(PYTHON) -m venv --clear $(VENV)

# Reinstalled when pyproject.toml changes; the stamp lives in the venv so that a
# new venv always gets its packages.
$(DEPS_STAMP): pyproject.toml | $(PY)
	$(call say,pip install -e '.[dev]')
	@$(PY) -m pip install -q -e '.[dev]'
	@touch $@

proto: $(PROTO_OUT)

# uv builds the sdist, then the wheel from that sdist: so the wheel holds only what the
# sdist ships (MANIFEST.in), and its generated code comes from proto/ (setup.py).
dist: install
	$(call say,building the sdist and the wheel into $(DIST)/)
	@$(BIN)/uv build --quiet --out-dir $(DIST) .
	@ls -1 $(DIST)/gristmill-*

$(PROTO_OUT): $(PROTO_SRC) $(DEPS_STAMP)
	$(call say,generating gristmill/v1/ from $(PROTO_SRC))
	@$(PY) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. $(PROTO_SRC)
	@touch gristmill/v1/__init__.py $@

system: $(DEPS_STAMP)
	$(call say,system packages and tools (scripts/install-system.sh))
	@VENV="$(CURDIR)/$(VENV)" scripts/install-system.sh

# --- use -----------------------------------------------------------------------

run: install
	$(call say,gristmill demo)
	@$(BIN)/gristmill demo

bench: install
	$(call say,bench/latency.py $(BENCH_ARGS))
	@$(PY) bench/latency.py $(BENCH_ARGS)
	$(call say,bench/telemetry.py $(TELEMETRY_BENCH_ARGS))
	@$(PY) bench/telemetry.py $(TELEMETRY_BENCH_ARGS)
	$(call say,bench/network.py)
	@$(PY) bench/network.py

profile: install
	$(call say,bench/costs.py $(PROFILE_ARGS))
	@$(PY) bench/costs.py $(PROFILE_ARGS)

# --- images (not part of `make test`: see README "Deployment") ------------------------

IMAGES ?=

images: install
	$(call say,images/build.sh $(IMAGES))
	@VENV="$(CURDIR)/$(VENV)" images/build.sh $(IMAGES)

images-test: install
	$(call say,images/test.sh $(IMAGES))
	@images/test.sh $(IMAGES)

# --- checks ----------------------------------------------------------------------

lint: $(DEPS_STAMP) $(PROTO_OUT)
	$(call say,ruff check)
	@$(BIN)/ruff check --quiet --output-format=concise .
	$(call say,ruff format --check)
	@$(BIN)/ruff format --check --quiet .
	$(call say,mypy $(MYPY_DIRS))
	@$(BIN)/mypy $(MYPY_DIRS)

fmt: $(DEPS_STAMP)
	@$(BIN)/ruff format --quiet .
	@$(BIN)/ruff check --fix --quiet .

# What CI runs (.ci/run): install, lint, then the suite.
test: install
	@$(MAKE) lint
	@$(MAKE) pytest

# pytest exits 5 when it collected no test: CI counts a run that ran no test as a
# problem, so that is a failure here, with a message. PYTEST_ARGS="-k name -x" narrows it.
pytest: $(DEPS_STAMP) $(PROTO_OUT)
	$(call say,pytest $(PYTEST_ARGS))
	@rc=0; $(PY) -m pytest -q -ra $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then \
		echo "make: FAILED: pytest collected no tests (exit 5); the suite must run at least one" >&2; \
		exit 1; \
	fi; \
	exit $$rc

# --- clean -----------------------------------------------------------------------

clean:
	@if [ -x scripts/postgres.sh ] && [ -d var/postgres ]; then scripts/postgres.sh stop || true; fi
	rm -rf $(VENV) .tools gristmill/v1 var build dist .mypy_cache .ruff_cache .pytest_cache *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
