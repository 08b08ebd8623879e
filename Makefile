# Every target creates .venv when missing and installs the pinned environment (requirements.lock).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
JIT := $(VENV)/.jit-compiled
export RAY_USAGE_STATS_ENABLED ?= 0
export PYTHONUNBUFFERED := 1

.PHONY: install demo test test-fast goals bench lint clean browser

install: $(STAMP) $(JIT)

# tools/install_lock.sh: the lock in five pip processes at once (no resolution: every package is
# pinned), then compileall (the .pyc files matter where PYTHONDONTWRITEBYTECODE is set, as on our CI
# machines). torchattacks (a test oracle only) pins requests~=2.25 for no reason of ours: it comes
# with --no-deps like everything else, so it cannot downgrade the requests that MLflow and boto3 need.
$(STAMP): requirements.lock pyproject.toml tools/install_lock.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	tools/install_lock.sh $(VENV) requirements.lock torchattacks==3.5.1
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-compile --no-deps --no-build-isolation -e .
	@$(PY) -m compileall -q -j 0 orchestrator jobs shared vizsweep >/dev/null 2>&1 || true
	@touch $@

# numba's cache of the Kendall-τ kernels (~20 s), so that the first trials do not each compile them;
# numba drops it when the source changes, so it is compiled again after a change to that file.
$(JIT): $(STAMP) shared/metrics/kendall.py
	$(PY) -c "from shared.metrics.kendall import warm_jit; warm_jit()"
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
