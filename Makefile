# Every target installs what it needs into .venv on first use (and again when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# The Dagster instance of `make demo`/`make dev`: SQLite under .dagster_home, configured by a copy
# of ./dagster.yaml there (refreshed whenever ./dagster.yaml changes; `make dev` says so).
export DAGSTER_HOME := $(CURDIR)/.dagster_home

.PHONY: demo dev sandbox test test-fast bench lint lock clean

$(INSTALLED): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $@

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

# PROJECTS=1: every project of the example projects file (PROJECTS=path/to/file.yaml: that file).
PROJECTS_ARGS := $(if $(PROJECTS),--projects $(filter-out 1,$(PROJECTS)))

demo: $(INSTALLED) $(DAGSTER_HOME)/dagster.yaml  ## the main job, offline, on the local sandbox
	$(BIN)/python -m mixpanel_assets.sandbox.demo $(PROJECTS_ARGS)

dev: $(INSTALLED) $(DAGSTER_HOME)/dagster.yaml  ## the local sandbox plus the Dagster UI
	$(BIN)/python -m mixpanel_assets.sandbox --dagster-dev $(PROJECTS_ARGS)

sandbox: $(INSTALLED)  ## the local sandbox alone, in the foreground
	$(BIN)/python -m mixpanel_assets.sandbox $(PROJECTS_ARGS)

test: $(INSTALLED)  ## the whole test suite (what CI runs)
	$(BIN)/ruff check mixpanel_assets tests bench
	$(BIN)/python -m pytest

test-fast: $(INSTALLED)  ## the unit tests only (no sandbox, Dagster runs, PostgreSQL or S3)
	$(BIN)/python -m pytest -m "not integration" -q

$(VENV)/.bench-installed: $(INSTALLED)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev,bench]'
	touch $@

bench: $(VENV)/.bench-installed  ## the benchmarks, printing their figures (BENCH_ARGS=--events 5000000)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check mixpanel_assets tests bench
	$(BIN)/ruff format --check mixpanel_assets tests bench

lock: $(INSTALLED)  ## requirements.lock from pyproject.toml's ranges (newest versions that fit)
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra bench --python-version 3.11 \
	  --no-header --no-annotate -o requirements.lock.new
	{ sed -n 1,2p requirements.lock; cat requirements.lock.new; } > requirements.lock.tmp
	mv requirements.lock.tmp requirements.lock && rm requirements.lock.new

clean:
	rm -rf data .dagster_home
