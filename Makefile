# The two Quick start commands: `make demo` and `make test`. Each sets up what it needs
# (a virtualenv with the package built; redis-server, PostgreSQL and Chromium for the tests) and then runs.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test bench setup redis postgres chromium

demo: $(STAMP)
	$(BIN)/pingpost demo

# Two pytest processes share the suite, a test file each at a time (most tests wait on servers,
# buyers and subprocesses, not on a core). The schemathesis fuzz tests run on their own after:
# under pytest-xdist they try a few operations instead of every one.
test: $(STAMP) redis postgres chromium
	$(BIN)/pytest -n 2 --dist loadfile --ignore=tests/test_openapi.py
	$(BIN)/pytest tests/test_openapi.py

bench: $(STAMP)
	$(BIN)/pytest bench/ --benchmark-only

setup: $(STAMP)

# Re-installs when the package metadata or the Cython sources change, so the compiled
# hot path is never stale.
$(STAMP): pyproject.toml setup.py $(wildcard ext/*.pyx ext/*.pxd)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

redis:
	@scripts/ensure-redis

postgres:
	@scripts/ensure-postgres

chromium:
	@scripts/ensure-chromium
