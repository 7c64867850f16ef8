# `make run` and `make test` each do the whole set-up first (idempotent): .venv, the project, a Chromium.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup browser run test lint fmt clean

setup: $(STAMP) browser

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

browser: $(STAMP)
	@bash scripts/ensure-browser.sh $(BIN)/python

run: setup
	$(BIN)/sop-engine demo

test: setup
	$(BIN)/ruff check sop_engine web tests
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check sop_engine web tests
	$(BIN)/ruff format --check sop_engine web tests

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache *.egg-info
