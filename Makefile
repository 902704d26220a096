# Batchly <-> QuickBooks sync. `make run` and `make test` are the two set-up commands; see README.md.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PORT ?= 3000
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: install run test lint typecheck pytest dev dagster-home bench clean

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## the main job against the embedded defaults (SQLite under .batchly/, the local QuickBooks sandbox)
run: install
	$(BIN)/batchly-sync run

## lint (ruff, the layer contracts), type checks and the whole suite
test: lint typecheck pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy batchly_pipelines

# two workers, a test module each at a time (its module-scoped fixtures — a Dagster stack, a browser — stay in one)
pytest: install
	$(BIN)/pytest -n 2 --dist loadfile

## the Dagster UI (http://127.0.0.1:$(PORT), `make dev PORT=3100` for another port) on the same setup as `make run`
dev: install dagster-home
	$(BIN)/batchly-sync dev --port $(PORT)

dagster-home:
	@mkdir -p $(DAGSTER_HOME)
	@cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	@if [ -n "$$DAGSTER_POSTGRES_URL" ]; then cat dagster.postgres.yaml >> $(DAGSTER_HOME)/dagster.yaml; \
		echo "Dagster storage: PostgreSQL (DAGSTER_POSTGRES_URL)"; else echo "Dagster storage: SQLite in $(DAGSTER_HOME)"; fi

## every benchmark scenario; each prints one JSON object as its last line
bench: install
	@for scenario in $$($(BIN)/python -c "import sys; sys.path.insert(0, '.'); from benchmarks.run import available; print(' '.join(available()))"); do \
		echo "== $$scenario"; $(BIN)/python benchmarks/run.py $$scenario || exit 1; done

clean:
	rm -rf $(VENV) .batchly $(DAGSTER_HOME) .tmp_dagster_home_* .pytest_cache .mypy_cache .ruff_cache .hypothesis
