# Two commands do everything on a fresh machine:
#   make demo   build/reuse the local control plane, run operator + simulated agents + sample jobs
#   make test   lint, type-check, check the import layers and run every test (unit + integration against the real control plane)
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup binaries lint test test-unit demo crd clean-cluster bench

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $(STAMP)

binaries:
	e2e/build.sh all
	e2e/build.sh kueue

setup: $(STAMP) binaries

crd: $(STAMP)
	$(VENV)/bin/greenjobs crd -o crds/greentrainingjobs.yaml
	cp crds/greentrainingjobs.yaml helm/greenjobs/crds/greentrainingjobs.yaml

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports  # the layer contracts in pyproject.toml [tool.importlinter]

test: setup lint
	$(VENV)/bin/pytest

test-unit: $(STAMP)
	$(VENV)/bin/pytest -m "not cluster"

demo: setup
	$(PY) -m greenjobs.demo

clean-cluster:
	e2e/cluster.sh down
