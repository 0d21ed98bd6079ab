# Two commands do everything on a fresh machine:
#   make demo   build/reuse the local control plane, run operator + simulated agents + sample jobs
#   make test   lint, type-check, check the import layers and run every test (unit + integration against the real control plane)
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup control-plane binaries lint test test-unit demo crd clean-cluster bench

# Every fetch from PyPI or the Go module proxy is retried with backoff, then reported with the
# package and the remedy (e2e/retry.sh).
RETRY := e2e/retry.sh --remedy pip --
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(RETRY) $(VENV)/bin/pip install -q --upgrade pip
	$(RETRY) $(VENV)/bin/pip install -q -e '.[dev]'
	touch $(STAMP)

# Each target builds only what it uses: the demo needs the control plane; the tests also need Kueue
# and the JobSet controller.
control-plane:
	e2e/build.sh all

binaries: control-plane
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

demo: $(STAMP) control-plane
	$(PY) -m greenjobs.demo

clean-cluster:
	e2e/cluster.sh down

# The operator and agent images as OCI archives in build/images/ (no Docker engine: mmdebstrap, pip,
# umoci; needs root; installs its apt tools), an SBOM beside each; README "Build and publish the images".
.PHONY: images push
images:
	images/build.sh build

# make push REGISTRY=ghcr.io/OWNER  (any registry/path; 127.0.0.1:5000/greenjobs for a local one)
push:
	@test -n "$(REGISTRY)" || { echo "usage: make push REGISTRY=<registry>/<path>" >&2; exit 2; }
	images/build.sh build
	images/build.sh push "$(REGISTRY)"
