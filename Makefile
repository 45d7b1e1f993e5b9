# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck unit bench screenshots clean

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
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(VENV)/.test-deps
	$(BIN)/mypy

unit: $(VENV)/.test-deps
	$(BIN)/pytest tests/unit -q

test: $(VENV)/.test-deps
	bash scripts/ensure-postgres.sh
	bash scripts/ensure-chromium.sh
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q

bench: $(BIN)/shoal
	bash scripts/ensure-postgres.sh
	$(BIN)/python bench/run.py

screenshots: $(VENV)/.test-deps
	$(BIN)/python tests/observer/make_screenshots.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
