# Everything a fresh machine needs: `make demo` runs a call, `make test` runs the tests.
# The app runs on Python 3.13 (Azure Functions' 3.13 runtime, azure-functions-runtime from requirements.txt).
PYTHON ?= $(shell sh tools/find_python.sh)
# Tools beside the app that pin their own stack (checkov) keep the machine's python3.
TOOL_PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-py313

.PHONY: demo test test-fast lint setup clean

setup: $(STAMP) node_modules/.bin/azurite

$(STAMP): requirements.txt requirements-dev.txt devhost/rpc/functions_rpc.proto
	@test -n "$(PYTHON)" || { echo "no Python 3.13: see tools/find_python.sh"; exit 1; }
	$(PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m devhost.rpc.compile
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
	$(TOOL_PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -r infra/checks/requirements-checkov.txt
	touch $(CHECKOV_STAMP)

infra-check: $(CHECKOV_STAMP)
	$(CHECKOV_VENV)/bin/python infra/checks/run_checkov.py
