# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install demo test test-fast test-e2e test-distributed lint bench bench-smoke clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,bench,distributed]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) scripts/demo.py

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check flex_provider
	$(PY) -m mypy

# Unit, emulator-backed integration, and end-to-end tests with a real Airflow (scheduler + triggerer).
test: install lint
	$(PY) -m pytest -q -m "not distributed" -p no:cacheprovider

test-fast: install
	$(PY) -m pytest -q -m "not e2e and not distributed" -p no:cacheprovider

test-e2e: install
	$(PY) -m pytest -q -m "e2e and not distributed" -p no:cacheprovider

# PostgreSQL metadata DB + two triggerers (+ takeover when one is killed).
test-distributed: install
	$(PY) -m pytest -q -m distributed -p no:cacheprovider

# The benchmarks at the sizes the README reports (throughput ~2 min, memory ~5 min). Extra arguments:
#   make bench THROUGHPUT_ARGS="--n 200 --repeat 1" MEMORY_ARGS="--n 300"
bench: install
	$(PY) benchmarks/throughput.py $(THROUGHPUT_ARGS)
	$(PY) benchmarks/memory.py $(MEMORY_ARGS)

# Every benchmark script at a tiny size (~25 s; tests/benchmarks, marker "bench"); `make test` runs these too.
bench-smoke: install
	$(PY) -m pytest -q -m bench -p no:cacheprovider

clean:
	rm -rf .demo .pytest_cache .ruff_cache
