# Two entry points for a fresh machine: `make demo` and `make test`. Each installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(PYTHON) -m uv
OUT ?= out
# Extras the test tiers need (the PyTorch backends and export, the Pipecat processor); `make demo` stays on the base set.
TEST_EXTRAS := --extra torch --extra pipecat

.PHONY: demo test lint types unit component cluster gpu uv setup setup-test bench images

uv:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv==$(UV_VERSION)

# Inexact: a test-tier environment (with the torch extra) that runs `make cluster-up` or
# `make demo` keeps its extras.
setup: uv
	$(UV) sync --frozen --inexact

# The locked set plus the test extras. `--inexact` keeps packages installed outside the lock
# (tensorrt, onnxruntime-gpu, cuda wheels on a GPU machine) instead of removing them.
setup-test: uv
	$(UV) sync --frozen --inexact $(TEST_EXTRAS)

demo: setup
	$(UV) run lipsync demo --out $(OUT)

lint: setup-test
	$(UV) run ruff check .
	$(UV) run ruff format --check .

types: setup-test
	$(UV) run mypy

# Everything CI runs: lint, types, then every test tier. The cluster tier needs the Go-built
# test bed (cached in ~/.cache/lipsync); hack/test-all.sh builds it alongside the other tiers.
test: setup-test
	UV="$(UV)" hack/test-all.sh

unit: setup-test
	$(UV) run pytest -m unit

component: setup-test
	$(UV) run pytest -m component

cluster: setup-test cluster-build images
	UV="$(UV)" hack/test-cluster.sh

# OCI archives of the operator and runtime-cpu images in out/images (images/build.sh: buildah,
# no Docker daemon; `images/build.sh runtime-gpu` adds the GPU flavour on NVIDIA's NGC base).
images:
	images/build.sh

# On a GPU machine: keep onnxruntime-gpu (installed outside the lock) instead of letting the
# lock's CPU onnxruntime overwrite its files.
gpu: uv
	$(UV) sync --frozen --inexact $(TEST_EXTRAS) \
	  $$($(UV) pip show onnxruntime-gpu >/dev/null 2>&1 && echo --no-install-package onnxruntime)
	$(UV) run --no-sync pytest -m gpu -rs

# Measure and rewrite benchmarks/RESULTS.md on this machine (about 15 minutes on 2 cores).
bench: setup-test
	$(UV) run python benchmarks/results.py

include hack/cluster/Makefile.inc
