# fedproto: every target sets up what it needs on its own (a local .venv with pinned dependencies).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck unit proto snapshot bench venv clean

# The main job: federated training across three local workers.
demo: $(STAMP)
	$(PY) -m fedproto demo

# Everything CI runs: linters, types, then the test suite.
test: $(STAMP) lint typecheck unit

lint: $(STAMP)
	$(PY) -m ruff check .

typecheck: $(STAMP)
	$(PY) -m mypy

unit: $(STAMP)
	$(PY) -m pytest

# Regenerate generated/ from proto/ with the pinned generator.
proto: $(STAMP)
	$(PY) tools/protogen.py

# Accept the current schema as the wire-compatibility baseline (after a reviewed, compatible change).
snapshot: $(STAMP)
	$(PY) tools/wire_snapshot.py --write

bench: $(STAMP)
	$(PY) -m benchmarks

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt setuptools wheel
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt --no-build-isolation -e ".[dev,demo,bench]"
	touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .hypothesis
