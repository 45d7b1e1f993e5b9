# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck unit bench faults screenshots clean

$(BIN)/shoal: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("Shoal needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.test-deps: $(BIN)/shoal
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

demo: $(BIN)/shoal
	$(BIN)/shoal demo

lint: $(VENV)/.test-deps
	$(BIN)/ruff check src tests bench faults
	$(BIN)/ruff format --check src tests bench faults

typecheck: $(VENV)/.test-deps
	$(BIN)/mypy

unit: $(VENV)/.test-deps
	$(BIN)/pytest tests/unit -q

# Two test processes: most tests wait on real nodes and servers rather than compute. Each test
# has its own datastore (a SQLite file, or a PostgreSQL database cloned per test), and most tests
# that stop or fail over PostgreSQL run throwaway servers of their own on free ports. The few
# that restart the shared server run after the others, alone.
test: $(VENV)/.test-deps
	bash scripts/ensure-postgres.sh
	bash scripts/ensure-chromium.sh
	$(BIN)/ruff check src tests bench faults
	$(BIN)/ruff format --check src tests bench faults
	$(BIN)/mypy
	$(BIN)/pytest -q -n 2 --durations=15 -m "not restarts_shared_postgres"
	$(BIN)/pytest -q -m restarts_shared_postgres

bench: $(BIN)/shoal
	bash scripts/ensure-postgres.sh
	$(BIN)/python bench/run.py
	$(BIN)/python bench/scenarios.py

# The chaos soak and the poison set on both datastores (a few minutes); FAULTS_ARGS passes
# options, e.g. make faults FAULTS_ARGS="--seed 2 --minutes 1 --datastores sqlite".
FAULTS_ARGS ?= --seed 1
faults: $(BIN)/shoal
	$(BIN)/python faults/run.py $(FAULTS_ARGS)

screenshots: $(VENV)/.test-deps
	$(BIN)/python tests/observer/make_screenshots.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
