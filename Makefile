# Two commands for a fresh machine: `make run` and `make test`. Everything else builds on them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint migrate bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

## Serve on :8080 (migrations first); without DATABASE_URL, an embedded PostgreSQL under .data/.
run: $(VENV)/.installed
	$(BIN)/fluxbase-realtime serve

migrate: $(VENV)/.installed
	$(BIN)/fluxbase-realtime migrate

## Lint, type-check and run the whole suite against a real PostgreSQL (see README: TEST_DATABASE_URL).
test: $(VENV)/.installed-dev lint
	$(BIN)/pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check app tests bench alembic
	$(BIN)/mypy app

bench: $(VENV)/.installed-dev
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench --runs 3
	$(BIN)/python -m bench --runs 3 --capture both --only latency ingest

bench-quick: $(VENV)/.installed-dev
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench.quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
