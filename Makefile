# `make run` and `make test` set up everything on a fresh Debian machine (run as root).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The tests run the store against a real PostgreSQL server too: `make postgres` installs and starts one.
PG_URL := postgresql://hipflex:hipflex@127.0.0.1:5432/hipflex_test
PSQL := su postgres -c

.PHONY: run test lint bench bench-long clean postgres debian-packages

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

HOST ?= 127.0.0.1
PORT ?= 8080
WORKERS ?= 1

run: $(STAMP)
	$(BIN)/hipflex-cds serve --host $(HOST) --port $(PORT) --workers $(WORKERS)

test: $(STAMP) postgres
	$(BIN)/ruff check cds tests
	$(BIN)/mypy cds
	HIPFLEX_TEST_DATABASE_URL=$(PG_URL) $(BIN)/python -m pytest --cucumber-json=test-artifacts/features/cucumber.json
	@test -s test-artifacts/features/cucumber.json && test -s test-artifacts/features/report.md && \
		echo "feature reports: test-artifacts/features/report.md, cucumber.json"

# Debian packages the tests use: PostgreSQL (the store's second backend), curl (the README tour) and
# chromium (the review page's browser tests; Playwright's own browser download does not work here).
debian-packages:
	@missing=""; for pair in pg_lsclusters:postgresql curl:curl chromium:chromium; do \
		command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; fi

postgres: debian-packages
	@pg_lsclusters -h | grep -q . || pg_createcluster --start 15 main
	@pg_lsclusters -h | awk '$$4 != "online" {print $$1, $$2}' | while read v c; do pg_ctlcluster $$v $$c start; done
	@$(PSQL) "psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname='hipflex'\"" | grep -q 1 || \
		$(PSQL) "psql -qc \"CREATE ROLE hipflex LOGIN PASSWORD 'hipflex'\""
	@$(PSQL) "psql -tAc \"SELECT 1 FROM pg_database WHERE datname='hipflex_test'\"" | grep -q 1 || \
		$(PSQL) "createdb -O hipflex hipflex_test"

# Load tests with wrk (Debian): the service beside a bare FastAPI endpoint and HealthChain (installed into its
# own .venv-healthchain, not a project dependency), plus the engine figures. bench-long adds 100,000 calls.
bench: $(STAMP)
	@command -v wrk >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk)
	$(BIN)/python -m tests.bench_service

bench-long: $(STAMP)
	@command -v wrk >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk)
	$(BIN)/python -m tests.bench_service --long
	$(BIN)/python -m tests.bench_population

lint: $(STAMP)
	$(BIN)/ruff check cds tests
	$(BIN)/mypy cds

clean:
	rm -rf $(VENV)
