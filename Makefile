# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# `make ui` shows a slow flex run in the Airflow UI; `make test-ui` drives that UI in headless Chromium.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install demo ui browser test test-fast test-e2e test-distributed test-ui screenshots lint bench bench-smoke clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,bench,distributed]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) scripts/demo.py

# Airflow standalone (SQLite, in .ui/) + the emulator with slow answers; triggers the nightly DAG and
# prints the URLs of the task's Flex tab and of the Flex savings page, and the login. Ctrl-C stops it all.
#   make ui UI_ARGS="--latency 4 --port 8081"
ui: install
	$(PY) scripts/ui.py $(UI_ARGS)

# Debian's chromium and chromedriver for the browser tests (no browser download: apt only).
CHROMIUM ?= /usr/bin/chromium
CHROMEDRIVER ?= /usr/bin/chromedriver
browser:
	@if [ ! -x $(CHROMIUM) ] || [ ! -x $(CHROMEDRIVER) ]; then \
		echo "Installing Debian's chromium and chromium-driver"; \
		apt-get update && apt-get install -y chromium chromium-driver; \
	fi

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check flex_provider
	$(PY) -m mypy

# Unit, emulator-backed integration, and end-to-end tests with a real Airflow (scheduler + triggerer).
# (Browser tests are apart: `make test-ui`.)
test: install lint
	$(PY) -m pytest -q -m "not distributed and not ui" -p no:cacheprovider --durations=25

test-fast: install
	$(PY) -m pytest -q -m "not e2e and not distributed and not ui" -p no:cacheprovider

test-e2e: install
	$(PY) -m pytest -q -m "e2e and not distributed" -p no:cacheprovider

# The Flex tab and savings page in headless Chromium against a real Airflow and the emulator (~3 min).
# Screenshots land in .artifacts/ui/ (FLEX_UI_ARTIFACTS to change it).
test-ui: install browser
	FLEX_UI_TESTS=1 $(PY) -m pytest -q -m ui -p no:cacheprovider -rP --durations=0 tests/ui

# test-ui, then its screenshots become the README's images.
screenshots: test-ui
	mkdir -p docs/img
	cp .artifacts/ui/flex-tab-running.png docs/img/flex-tab.png
	cp .artifacts/ui/flex-savings.png docs/img/flex-savings.png

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
	rm -rf .demo .ui .artifacts .pytest_cache .ruff_cache
