# corrdiff — the two set-up commands are `make demo` and `make test`; each builds .venv itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test test-fast demo bench gpu-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, by exact pin, so pip takes the local CPU wheel rather than a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,demo,tensorboard]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# the inner loop: everything but the end-to-end tests marked slow (training runs, torchrun, demo, benchmarks)
test-fast: $(STAMP)
	$(PY) -m pytest -q tests -m "not slow"

demo: $(STAMP)
	$(VENV)/bin/corrdiff demo --out demo-out

bench:
	bash benchmarks/run.sh

# on a GPU machine: builds what it needs, GPU tests, benchmarks at paper size, tables into docs/benchmarks.md (~10 min)
gpu-check:
	bash benchmarks/gpu_check.sh

clean:
	rm -rf $(VENV) .pytest_cache demo-out
