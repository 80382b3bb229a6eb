# Each target sets up what it needs: a virtual environment in .venv with the project installed.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

# The agentex tests need agentex-sdk, which needs Python 3.12: a second environment from the
# machine's pyenv interpreter (never downloaded; PY312=/path/to/python3.12 to choose another).
PY312 ?= $(lastword $(sort $(wildcard $(shell pyenv root 2>/dev/null)/versions/3.12*/bin/python3.12) \
	$(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12 /root/.pyenv/versions/3.12*/bin/python3.12)))
VENV312 := .venv312
STAMP312 := $(VENV312)/.installed
# What runs there: the agentex tests (skipped in the 3.11 run) and every example, now with
# agentex installed. litellm, which agentex imports, would fetch a price list from the internet.
AGENTEX_TESTS := tests/test_agentex_*.py tests/test_embedded_agentex.py tests/test_integration_examples.py
export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: demo test test-agentex lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The latest agentex-sdk within the bound of the `agentex` extra (pyproject.toml).
$(STAMP312): pyproject.toml
	@test -n "$(PY312)" || { echo "make: no Python 3.12 under pyenv; set PY312=" >&2; exit 1; }
	$(PY312) -m venv $(VENV312)
	$(VENV312)/bin/python -m pip install --quiet --upgrade pip
	$(VENV312)/bin/python -m pip install --quiet --upgrade -e '.[dev,agentex]'
	touch $(STAMP312)

demo: $(STAMP)
	$(VENV)/bin/spool-ship demo

# The suite takes about 4 minutes here, the agentex tests 2 more; a hang (in a test, or at
# interpreter exit) is interrupted after 30 so that it fails with pytest's report instead of
# running out CI's time.
test: $(STAMP) $(STAMP312)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	timeout --signal=INT --kill-after=60 1800 $(VENV)/bin/python -m pytest
	$(MAKE) test-agentex

test-agentex: $(STAMP312)
	timeout --signal=INT --kill-after=60 1800 $(VENV312)/bin/python -m pytest $(AGENTEX_TESTS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(VENV)/bin/python bench/append.py

clean:
	rm -rf $(VENV) $(VENV312) .pytest_cache .mypy_cache .ruff_cache
