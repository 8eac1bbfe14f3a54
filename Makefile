# Two commands for a fresh machine: `make demo` (set up + train on the embedded synthetic task)
# and `make test` (set up + ruff check + ruff format --check + the whole test suite, slow and
# cluster tests included: what CI runs). `make test-fast` is the inner loop (no slow, numerics,
# integration or cluster tests; about 75 s on 2 quiet cores, 2026-12-07);
# docs/test-time.md lists the tiers.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast test-numerics test-integration bench lint setup

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,cluster]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) train.py

test: $(STAMP)
	$(VENV)/bin/ruff check src tests train.py
	$(VENV)/bin/ruff format --check src tests train.py
	$(PY) -m pytest -q --durations=25 -n 2 --dist loadgroup --timeout=1800

# The inner loop: unit tests of every package, two workers, 60 s per test at most, and XLA's
# backend optimisations off (compiling the tiny steps dominates; ~25 % less CPU time). make test
# (CI) compiles as the code runs, with XLA's defaults.
FAST := not (slow or numerics or integration or cluster)

test-fast: $(STAMP)
	XLA_FLAGS="--xla_backend_optimization_level=0 $$XLA_FLAGS" \
	$(PY) -m pytest -q -p no:cacheprovider --timeout=60 -n 2 -m "$(FAST)"

test-numerics: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider --durations=10 -n 2 -m "numerics"

test-integration: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider --durations=10 -n 2 -m "integration and not cluster"

bench: $(STAMP)
	$(PY) -m qcxr.bench heads

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests train.py
	$(VENV)/bin/ruff format --check src tests train.py
