# paygrid — two commands on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTHON ?= python3

.PHONY: install run run-prod test test-deps lint unit integration browser bench mutate clean

install: $(VENV)/.installed  ## .venv with the paygrid entry point

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip >/dev/null
	$(PIP) install -q -e .
	touch $@

run: install  ## start the whole platform on the embedded default
	$(VENV)/bin/paygrid up

run-prod: install  ## the production profile: a process per context, PostgreSQL, NATS
	bash scripts/install-system-deps.sh
	@# The production profile requires a KEK: a local one in .paygrid-kek unless one is set.
	if [ -z "$$PAYGRID_KEK$$PAYGRID_KEK_FILE" ]; then \
	  [ -s .paygrid-kek ] || (umask 077; head -c32 /dev/urandom | base64 > .paygrid-kek); \
	  export PAYGRID_KEK_FILE=.paygrid-kek; fi; \
	$(VENV)/bin/paygrid up --profile prod

$(VENV)/.test-installed: $(VENV)/.installed
	$(PIP) install -q -e '.[test]'
	touch $@

test-deps: $(VENV)/.test-installed  ## test tools, PostgreSQL and Chromium
	bash scripts/install-system-deps.sh

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy --strict src/paygrid
	$(VENV)/bin/lint-imports

# Most tests wait on processes they start: two workers (pytest-xdist, a module per worker) keep
# both cores busy. The load-sensitive ones (marker `serial`) then run alone.
test: test-deps lint  ## the whole suite: unit, integration (SQLite + PostgreSQL), browser
	$(VENV)/bin/pytest -q -ra -n 2 --dist loadfile -m "not serial"
	$(VENV)/bin/pytest -q -ra -m serial

unit: $(VENV)/.test-installed
	$(VENV)/bin/pytest -q tests/unit

bench: install
	$(PY) bench/e2e_payments.py

$(VENV)/.mutate-installed: $(VENV)/.test-installed
	$(PIP) install -q -e '.[test,mutate]'
	touch $@

mutate: $(VENV)/.mutate-installed  ## mutation testing of the money-critical modules (on demand, long)
	MUTANTS='$(MUTANTS)' bash scripts/mutate.sh

clean:
	rm -rf $(VENV) var mutants .pytest_cache .mypy_cache .ruff_cache
