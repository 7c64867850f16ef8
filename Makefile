# `make run` and `make test` each do the whole set-up first (idempotent): .venv, the project, a Chromium.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup browser services run demo test bench lint fmt clean cluster

setup: $(STAMP) browser node_modules/.installed
	@# the project's own modules compiled once, as an install does: each command starts without compiling them
	@$(BIN)/python -m compileall -q sop_engine web >/dev/null

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

browser: $(STAMP)
	@bash scripts/ensure-browser.sh $(BIN)/python

# PostgreSQL and Redis for the tests (each test run starts its own on loopback); `make run` needs neither
services:
	@bash scripts/ensure-services.sh

# the page's third-party JavaScript (the Socket.IO client), from the npm registry, never a CDN
node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { echo "Node.js and npm are needed for the web page's packages"; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

run: setup
	$(BIN)/sop-engine serve

# PostgreSQL, Redis, two servers that only serve and two workers, on this machine: prints the page's URLs
cluster: setup services
	$(BIN)/python scripts/cluster.py

demo: setup
	$(BIN)/sop-engine demo

test: setup services
	$(BIN)/ruff check sop_engine web tests bench
	$(BIN)/python -m pytest

# rewrites docs/benchmarks.md (about 55 minutes, scale 35 of them; installs peer runners into bench/.peers); `python -m bench --only PARTS` redoes some
bench: setup
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check sop_engine web tests bench
	$(BIN)/ruff format --check sop_engine web tests bench

clean:
	rm -rf $(VENV) data node_modules .pytest_cache .ruff_cache *.egg-info
