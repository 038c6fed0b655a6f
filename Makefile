# funnelrank: one command to set up and run, one to set up and test.
#   make run    - create .venv from the lock (if needed), run the TFX pipeline on synthetic data
#   make test   - create .venv from the lock (if needed), run the whole test suite
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.10 2>/dev/null || echo python)
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= configs/synthetic_mmoe.yaml
PYTEST_ARGS ?=
# The suite uses about one core per process (measured: 101% CPU), so two pytest-xdist workers
# halve its wall time on the 2-core CI machine; a file stays on one worker (module fixtures).
PYTEST_WORKERS ?= 2

export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONHASHSEED := 0

.PHONY: venv run test test-fast lock clean

$(STAMP): requirements/lock.txt setup.py
	$(PYTHON) -m pip install -q uv
	$(PYTHON) -m uv venv --allow-existing --seed --python $$($(PYTHON) -c 'import sys; print(sys.executable)') $(VENV)
	$(PYTHON) -m uv pip sync --python $(VPY) requirements/lock.txt
	$(PYTHON) -m uv pip install --python $(VPY) --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/funnelrank run --config $(CONFIG)

test: $(STAMP)
	$(VPY) -m pytest tests -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(VPY) -m pytest tests -m "not slow" -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lock:
	$(PYTHON) -m uv pip compile requirements/requirements.in -o requirements/lock.txt --python-version 3.10

clean:
	rm -rf $(VENV) build *.egg-info
