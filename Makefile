# fedproto: every target sets up what it needs on its own (a local .venv with pinned dependencies).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The Node package (node/): its exact dependencies come from the committed package-lock.json.
NODE_STAMP := node/node_modules/.installed-stamp

.PHONY: demo test lint typecheck unit proto snapshot bench venv wheel clean node node-build node-test

# The main job: federated training across three local workers.
demo: $(STAMP)
	$(PY) -m fedproto demo

# Everything CI runs: linters, types, the Node package's build and tests, then the Python test suite
# (which runs the conformance suite against the built Node worker too).
test: $(STAMP) lint typecheck node-test unit

lint: $(STAMP)
	$(PY) -m ruff check .

typecheck: $(STAMP)
	$(PY) -m mypy

# Two test processes (the machines have 2 CPUs): many tests wait on subprocesses and sockets. A file's
# tests stay together in one process (--dist loadfile), so module fixtures are built once.
unit: $(STAMP) node-build
	$(PY) -m pytest -n 2 --dist loadfile

# The Node package: install (npm ci from the lock file), build (tsc), test (node --test).
node: $(NODE_STAMP)

$(NODE_STAMP): node/package.json node/package-lock.json
	cd node && npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

node-build: $(NODE_STAMP)
	cd node && npm run build

node-test: node-build
	cd node && npm test

# Regenerate generated/ (Python) and node/src/gen/ (TypeScript) from proto/ with the pinned generators.
proto: $(STAMP) $(NODE_STAMP)
	$(PY) tools/protogen.py

# Accept the current schema as the wire-compatibility baseline (after a reviewed, compatible change).
snapshot: $(STAMP)
	$(PY) tools/wire_snapshot.py --write

bench: $(STAMP) node-build
	$(PY) -m benchmarks

# The wheel, in dist/; setuptools' scratch directories (build/, *.egg-info) do not stay in the tree.
wheel: $(STAMP)
	$(PY) -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation -w dist .
	rm -rf build fedproto.egg-info

# Reliability, once and bounded (stops by itself): the full load (200 clients x 500 requests) and
# 1,000,000 fuzzed frames against a worker process (100,000 against the Node worker), then
# docs/reliability.md. The stress extra (atheris, for python -m stress.fuzz_targets) is installed here only.
.PHONY: stress
stress: $(STAMP) node-build
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt --no-build-isolation -e ".[stress]"
	$(PY) -m stress --node-frames 100000

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt setuptools wheel
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt --no-build-isolation -e ".[dev,conformance,demo,bench,ray]"
	touch $(STAMP)

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .hypothesis node/node_modules node/dist node/dist-test
