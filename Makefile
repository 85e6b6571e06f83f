# Two commands matter: `make demo` (install, then materialize the default pipeline on the
# embedded world) and `make test` (install, then run the tests). Both create .venv if missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/dagster_home
# torch uses both cores; more threads than cores only slows a small machine down
export OMP_NUM_THREADS ?= 2

.PHONY: demo test install install-test ui sql clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(BIN)/.installed-test: $(BIN)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/www materialize
	$(BIN)/www catalog tables

test: $(BIN)/.installed-test
	$(BIN)/python -m pytest -q tests

# UI_PORT=3001 make ui picks another port; WWW_AUTOMATION=off make ui starts automation stopped.
# `www ui` runs `dagster dev` so that Ctrl-C and SIGTERM stop all of it within seconds.
UI_HOST ?= 127.0.0.1
UI_PORT ?= 3000
ui: $(BIN)/.installed
	@echo "Dagster UI on http://$(UI_HOST):$(UI_PORT) (DAGSTER_HOME=$(DAGSTER_HOME))"
	$(BIN)/www ui --host $(UI_HOST) --port $(UI_PORT)

clean:
	rm -rf data/warehouse data/artifacts data/www.duckdb
