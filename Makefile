# Two commands for a fresh machine: `make run` and `make test`. Everything else builds on them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint migrate bench bench-quick clean clients-test clients-typescript-test clients-react-test \
	clients-inspector-test inspector inspector-screenshot chromium node haproxy

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml clients/python/pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]' -e clients/python
	touch $@ $(VENV)/.installed

## Serve on :8080 (migrations first); without DATABASE_URL, an embedded PostgreSQL under .data/.
## The inspector (/inspector, service_role tokens only) is on unless REALTIME_INSPECTOR says otherwise.
run: $(VENV)/.installed
	REALTIME_INSPECTOR=$${REALTIME_INSPECTOR:-true} $(BIN)/fluxbase-realtime serve

migrate: $(VENV)/.installed
	$(BIN)/fluxbase-realtime migrate

# HAProxy from Debian's package, for the three-instance test behind a real load balancer
# (tests/integration/test_load_balanced.py): installed when missing if we are root (as in CI).
haproxy:
	@if ! command -v haproxy >/dev/null && [ ! -x /usr/sbin/haproxy ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null; \
		else \
			echo "make: haproxy is missing and this is not root: run 'sudo apt-get install haproxy'" \
			     "to run the load-balanced test" >&2; exit 1; \
		fi; \
	fi

## Lint, type-check and run the whole suite against a real PostgreSQL (see docs/tests.md: TEST_DATABASE_URL).
test: $(VENV)/.installed-dev lint haproxy
	$(BIN)/pytest
	$(MAKE) clients-test

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check app tests bench alembic clients/typescript/test/support clients/python
	$(BIN)/mypy app clients/python/src

bench: $(VENV)/.installed-dev
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench --runs 3
	$(BIN)/python -m bench --runs 3 --capture both --only latency ingest

bench-quick: $(VENV)/.installed-dev
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench.quick

## The client packages (clients/typescript, clients/react): npm ci, build, and their tests against the real
## server (Node's test runner) and, for the React hooks, headless Chromium (Debian's package).
CHROMIUM ?= /usr/bin/chromium
TS_CLIENT := clients/typescript
REACT_CLIENT := clients/react
INSPECTOR := clients/inspector

clients-test: clients-typescript-test clients-react-test clients-inspector-test

node:
	@command -v node >/dev/null && command -v npm >/dev/null || { \
		echo "make: the client tests need Node.js >= 20 and npm on PATH" >&2; exit 1; }
	@node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' || { \
		echo "make: the client tests need Node.js >= 20 (found $$(node --version))" >&2; exit 1; }

$(TS_CLIENT)/node_modules/.package-lock.json: $(TS_CLIENT)/package-lock.json | node
	cd $(TS_CLIENT) && npm ci --no-audit --no-fund --loglevel=error

$(REACT_CLIENT)/node_modules/.package-lock.json: $(REACT_CLIENT)/package-lock.json | node
	cd $(REACT_CLIENT) && npm ci --no-audit --no-fund --loglevel=error

$(INSPECTOR)/node_modules/.package-lock.json: $(INSPECTOR)/package-lock.json | node
	cd $(INSPECTOR) && npm ci --no-audit --no-fund --loglevel=error

clients-typescript-test: $(VENV)/.installed-dev $(TS_CLIENT)/node_modules/.package-lock.json
	cd $(TS_CLIENT) && npm test

# Chromium from Debian's package (no browser download): installed when missing if we are root (as in CI).
chromium:
	@if [ ! -x "$(CHROMIUM)" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else \
			echo "make: $(CHROMIUM) is missing and this is not root: run 'sudo apt-get install chromium'" \
			     "(or set CHROMIUM=/path/to/chromium) to run the React hooks' browser test" >&2; exit 1; \
		fi; \
	fi

clients-react-test: $(VENV)/.installed-dev $(TS_CLIENT)/node_modules/.package-lock.json \
		$(REACT_CLIENT)/node_modules/.package-lock.json chromium
	cd $(TS_CLIENT) && npm run build
	cd $(REACT_CLIENT) && CHROMIUM=$(CHROMIUM) npm test

## The inspector page (app/inspector) in headless Chromium against the real server; it also checks that the
## committed bundle, app/inspector/static/inspector.js, is a fresh build (`make inspector` rebuilds it).
clients-inspector-test: $(VENV)/.installed-dev $(TS_CLIENT)/node_modules/.package-lock.json \
		$(INSPECTOR)/node_modules/.package-lock.json chromium
	cd $(TS_CLIENT) && npm run build
	cd $(INSPECTOR) && CHROMIUM=$(CHROMIUM) npm test

inspector: $(INSPECTOR)/node_modules/.package-lock.json
	cd $(INSPECTOR) && npm run build

## docs/inspector.png, from the inspector test's live-row step.
inspector-screenshot: $(VENV)/.installed-dev $(TS_CLIENT)/node_modules/.package-lock.json \
		$(INSPECTOR)/node_modules/.package-lock.json chromium
	cd $(TS_CLIENT) && npm run build
	cd $(INSPECTOR) && CHROMIUM=$(CHROMIUM) INSPECTOR_SCREENSHOT=$(CURDIR)/docs/inspector.png npm test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
	rm -rf $(TS_CLIENT)/node_modules $(TS_CLIENT)/dist $(REACT_CLIENT)/node_modules $(REACT_CLIENT)/dist
	rm -rf $(INSPECTOR)/node_modules
