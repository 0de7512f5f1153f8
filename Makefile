# One entry point for humans and CI: `make check` = format check, lint, types, tests.
PY ?= .venv/bin/python
SRC := $(wildcard crawlq crawlq_api crawlq_local producer workers crawlq_cli tests bench)

.PHONY: install format lint mypy test check bench bench-smoke
install:
	python3 -m venv .venv
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e ".[test]"

format:
	$(PY) -m ruff format $(SRC)
	$(PY) -m ruff check --fix $(SRC)

lint:
	$(PY) -m ruff format --check $(SRC)
	$(PY) -m ruff check $(SRC)

mypy:
	$(PY) -m mypy

test:
	$(PY) -m pytest -q

check: lint mypy test

bench:
	$(PY) -m bench --full

bench-smoke:
	$(PY) -m bench --smoke
