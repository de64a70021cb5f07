# `make run` and `make test` set up everything on a fresh Debian machine (run as root).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help run test lint bench bench-long clean debian-packages
.DEFAULT_GOAL := help

help:  ## list the targets
	@awk -F':.*## ' '/^[a-z-]+:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  (variables: HOST, PORT, WORKERS for run; PYTHON for the venv)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

HOST ?= 127.0.0.1
PORT ?= 8080
WORKERS ?= 1

# Its own public URL, so local cards carry their "Why this suggestion" links, and the scenario coverage of the
# last `make test` on the rule pages (set variables win).
run: $(STAMP)  ## start the service on 127.0.0.1:8080 (SQLite, the example rules)
	HIPFLEX_PUBLIC_URL=$${HIPFLEX_PUBLIC_URL:-http://$(HOST):$(PORT)} \
	HIPFLEX_COVERAGE_REPORT=$${HIPFLEX_COVERAGE_REPORT:-test-artifacts/features/rule-coverage.json} \
		$(BIN)/hipflex-cds serve --host $(HOST) --port $(PORT) --workers $(WORKERS)

# The tests start their own throwaway PostgreSQL cluster (tests/support/pgcluster.py: a temporary folder, a free port)
# from Debian's server binaries; HIPFLEX_TEST_POSTGRES=required makes its absence a failure, not a skip.
test: $(STAMP) debian-packages  ## install what the tests need, lint, type-check and run every test
	$(BIN)/ruff check cds tests bench
	$(BIN)/mypy cds tests bench
	HIPFLEX_TEST_POSTGRES=required $(BIN)/python -m pytest --cov --cov-report=term --cucumber-json=test-artifacts/features/cucumber.json
	@test -s test-artifacts/features/cucumber.json && test -s test-artifacts/features/report.md && \
		echo "feature reports: test-artifacts/features/report.md, cucumber.json"

# Debian packages the tests use: PostgreSQL's server binaries (the store's second backend; no cluster of the
# system's is used), curl (the README tour) and chromium (the review page's browser tests; Playwright's own
# browser download does not work here).
debian-packages:  ## apt-get install what the tests use, if missing (run as root)
	@missing=""; ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing=postgresql; \
	for pair in curl:curl chromium:chromium; do \
		command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; fi

# Load tests with wrk (Debian): the service beside a bare FastAPI endpoint and HealthChain (installed into its
# own .venv-healthchain, not a project dependency), the in-process decide beside a pinned copy of the code before
# the performance work, the steps around the decision, the engine figures and population runs of 10,000 and
# 100,000 patients (about 10 minutes). bench-long adds 100,000 calls and the population runs on two workers.
bench: $(STAMP)  ## load, in-process, engine and population benchmarks, as ratios to baselines of the same run
	@command -v wrk >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk)
	@command -v valgrind >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind)
	$(BIN)/python -m bench.service

bench-long: $(STAMP)  ## bench plus 100,000 calls and the population runs on one and two workers
	@command -v wrk >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk)
	$(BIN)/python -m bench.service --long
	$(BIN)/python -m bench.population

lint: $(STAMP)  ## ruff and mypy --strict (package, tests and benchmarks)
	$(BIN)/ruff check cds tests bench
	$(BIN)/mypy cds tests bench

clean:  ## remove the virtual environment
	rm -rf $(VENV)
