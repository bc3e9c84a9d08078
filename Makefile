# Everything a fresh machine needs: `make demo` runs a call, `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint setup clean

setup: $(STAMP) node_modules/.bin/azurite

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

node_modules/.bin/azurite: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: setup
	$(PY) -m tools.demo

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; exit 0; fi; exit $$rc

test-fast: setup
	$(PY) -m pytest tests/unit

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) .venv-checkov node_modules .pytest_cache .ruff_cache

# Infrastructure checks: checkov (Bicep, offline) in its own venv, since checkov pins an older
# pycep-parser than tests/infra uses. Parsing and structural tests of infra/ run in `pytest`.
CHECKOV_VENV  := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

.PHONY: infra-check
test: infra-check

$(CHECKOV_STAMP): infra/checks/requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -r infra/checks/requirements-checkov.txt
	touch $(CHECKOV_STAMP)

infra-check: $(CHECKOV_STAMP)
	$(CHECKOV_VENV)/bin/python infra/checks/run_checkov.py
