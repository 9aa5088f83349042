# Two entry points for a fresh machine: `make demo` and `make test`. Each installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(PYTHON) -m uv
OUT ?= out

.PHONY: demo test lint types unit component cluster gpu setup bench

setup:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv==$(UV_VERSION)
	$(UV) sync --frozen

demo: setup
	$(UV) run lipsync demo --out $(OUT)

lint: setup
	$(UV) run ruff check .
	$(UV) run ruff format --check .

types: setup
	$(UV) run mypy

# Everything CI runs: lint, types, then every test tier (the cluster tier needs the
# Go-built control plane, cached in ~/.cache/lipsync after the first build).
test: lint types cluster-build
	$(UV) run pytest

unit: setup
	$(UV) run pytest -m unit

component: setup
	$(UV) run pytest -m component

cluster: setup cluster-build
	$(UV) run pytest -m cluster

gpu: setup
	$(UV) run pytest -m gpu -rs

# Measure and rewrite benchmarks/RESULTS.md on this machine (about 15 minutes on 2 cores).
bench: setup
	$(UV) run python benchmarks/results.py

include hack/cluster/Makefile.inc
