# `make run` and `make test` set up everything on a fresh Debian machine (run as root).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/hipflex-cds serve

test: $(STAMP)
	$(BIN)/ruff check cds tests
	$(BIN)/mypy cds
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m tests.bench_engine

lint: $(STAMP)
	$(BIN)/ruff check cds tests
	$(BIN)/mypy cds

clean:
	rm -rf $(VENV)
