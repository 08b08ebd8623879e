# Every target creates .venv when missing and installs the pinned environment (requirements.lock).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export RAY_USAGE_STATS_ENABLED ?= 0
export PYTHONUNBUFFERED := 1

.PHONY: install demo test test-fast goals bench lint clean browser

install: $(STAMP)

# pip byte-compiles file by file on one core; compileall -j 0 does the same on every core afterwards
# (--no-compile, then compileall: ~1 min less). The .pyc files matter: with PYTHONDONTWRITEBYTECODE
# set, as on our CI machines, a venv without them recompiles torch in every process (2x slower tests).
# compileall's exit code is ignored: some packages ship files for other Python versions.
$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-compile -r requirements.lock
	@# torchattacks (a test oracle only) pins requests~=2.25 for no reason of ours: without --no-deps it
	@# would downgrade the requests that MLflow and boto3 need.
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-compile --no-deps torchattacks==3.5.1
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-compile --no-deps --no-build-isolation -e .
	@$(PY) -m compileall -q -j 0 $(VENV)/lib orchestrator jobs shared vizsweep >/dev/null 2>&1 || true
	@touch $@

demo: install
	$(VENV)/bin/vizsweep demo

# Two workers (pytest-xdist): a module and its prepared store stay on one worker (tests/conftest.py); the
# suite waits on Ray, MLflow and subprocess start-ups as much as it computes. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
XDIST = -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: install browser
	$(PY) -m pytest -q --durations=40 $(XDIST)

# The MLflow compare-page test drives a real headless browser (Debian's chromium).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$(command -v sudo >/dev/null 2>&1 && [ "$$(id -u)" != 0 ] && echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver fonts-liberation >/dev/null; }

test-fast: install
	$(PY) -m pytest -q -m "not slow" $(XDIST)

# The science goals at full size (pretraining accuracy, feature-visualization share): ~15 min.
goals: install
	VIZSWEEP_GOALS=1 $(PY) -m pytest -q -m goals

bench: install
	$(PY) benchmarks/activations.py --quick
	$(PY) benchmarks/kendall.py --quick
	$(PY) benchmarks/attack_goals.py

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

clean:
	rm -rf vizsweep-store vizsweep-data .pytest_cache
