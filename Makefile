# leotwin — the two commands a fresh machine needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test
# PostgreSQL server binaries for the store tests (tests/conftest.py starts a throwaway cluster)
PG_CTL_GLOB := /usr/lib/postgresql/*/bin/pg_ctl
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: demo test bench lint install clean postgresql chromium serve dashboard

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

# Installs the Debian package `postgresql` only when no server binaries are present.
postgresql:
	@ls $(PG_CTL_GLOB) >/dev/null 2>&1 || { \
		echo "installing PostgreSQL (Debian package postgresql) for the store tests"; \
		$(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive \
		$(SUDO) apt-get install -y -q --no-install-recommends postgresql; }
	@ls $(PG_CTL_GLOB) >/dev/null 2>&1 || { echo "PostgreSQL install failed" >&2; exit 1; }

# Installs Debian's `chromium` (the dashboard's browser tests drive it headless through
# Playwright; Playwright's own browser download is never used).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Chromium (Debian package chromium) for the browser tests"; \
		$(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive \
		$(SUDO) apt-get install -y -q --no-install-recommends chromium; }
	@command -v chromium >/dev/null 2>&1 || { echo "Chromium install failed" >&2; exit 1; }

test: $(STAMP_TEST) lint postgresql chromium
	$(PY) -m pytest -q

# The REST service and the dashboard on http://127.0.0.1:8000 (the demo's store and runs).
serve: $(STAMP_RUN)
	$(VENV)/bin/leotwin serve --host 127.0.0.1 --port 8000

# Rebuilds the dashboard's committed assets (src/leotwin/service/static) from dashboard/.
dashboard:
	cd dashboard && npm ci && npm run build

bench: $(STAMP_TEST)
	$(PY) bench/run.py --out bench/results.md

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
