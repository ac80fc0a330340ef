# Two commands do all the set-up: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 5000
DATA_DIR ?= data

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
BENCH_STAMP := $(VENV)/.installed-bench
BENCH_ARGS ?=
# Test processes: most tests wait on real servers and clients, so two share two cores well.
TEST_WORKERS ?= 2

.PHONY: run test lint format bench screenshots clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: $(STAMP)
	$(BIN)/dockyard serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy dockyard

test: $(STAMP) lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

# Dockyard next to CNCF distribution; writes docs/performance.md and docs/performance.png.
# Needs skopeo, curl, docker-registry, htpasswd and ab: apt-get install skopeo curl docker-registry apache2-utils
# More: make bench BENCH_ARGS="--runs 3"; one item: BENCH_ARGS="--items soak --soak-seconds 30"
bench: $(BENCH_STAMP)
	$(BIN)/python bench/compare.py $(BENCH_ARGS)

# The web console's pages at 1280x800 into docs/console/*.png (needs chromium).
screenshots: $(STAMP)
	$(BIN)/python docs/console/make_screenshots.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
