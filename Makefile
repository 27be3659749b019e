# leotwin — the two commands a fresh machine needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test

.PHONY: demo test bench lint install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel

$(STAMP_RUN): pyproject.toml requirements.lock | $(PY)
	$(PIP) install -c requirements.lock -e .
	touch $@

$(STAMP_TEST): pyproject.toml requirements.lock $(STAMP_RUN)
	$(PIP) install -c requirements.lock -e ".[test]"
	touch $@

install: $(STAMP_RUN)

demo: $(STAMP_RUN)
	$(VENV)/bin/leotwin demo

lint: $(STAMP_TEST)
	$(VENV)/bin/ruff check src tests bench

test: $(STAMP_TEST) lint
	$(PY) -m pytest -q

bench: $(STAMP_TEST)
	$(PY) bench/run.py --out bench/results.md

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
