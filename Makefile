# Every target creates or reuses .venv itself, so each works on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DASK_VENV := .bench-venv-dask

.PHONY: demo test test-fast test-dask test-dask-baseline check bench balance venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test,dev,fast]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/teamster demo

# The whole suite, all four tiers, validation on (tests/conftest.py sets it too),
# then dask's own test modules through a live cluster (about 5-10 minutes on 2 cores).
test: $(STAMP)
	TEAMSTER_VALIDATE=1 $(BIN)/python -m pytest -q -p no:cacheprovider
	TEAMSTER_VALIDATE=1 $(BIN)/python tests/dask_suite/run.py

# dask's curated test modules on teamster (tests/dask_suite/run.py lists them) ...
test-dask: $(STAMP)
	TEAMSTER_VALIDATE=1 $(BIN)/python tests/dask_suite/run.py

# ... and the same modules on dask's own schedulers, for comparison.
test-dask-baseline: $(STAMP)
	$(BIN)/python tests/dask_suite/run.py --baseline

# Pure core and property tests only: seconds, no processes.
test-fast: $(STAMP)
	TEAMSTER_VALIDATE=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/core

check: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

$(DASK_VENV)/.installed:
	test -x $(DASK_VENV)/bin/python || $(PYTHON) -m venv $(DASK_VENV)
	$(DASK_VENV)/bin/python -m pip install -q "distributed==2026.8.0" "dask==2026.8.0" numpy
	touch $@

# Side by side with dask.distributed (in its own venv: teamster never imports it).
bench: $(STAMP) $(DASK_VENV)/.installed
	TEAMSTER_DASK_PYTHON=$(DASK_VENV)/bin/python $(BIN)/python benchmarks/throughput.py --repeat 3

# Placement and stealing: makespan / lower bound on six workloads, side by side with dask.
balance: $(STAMP) $(DASK_VENV)/.installed
	TEAMSTER_DASK_PYTHON=$(DASK_VENV)/bin/python $(BIN)/python benchmarks/balance.py --repeat 3

clean:
	rm -rf $(VENV) $(DASK_VENV)
