# kvideo developer entry points. `make train` and `make test` install what they need first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kvideo-installed
# Installed first and pinned, so the project's `torch` requirement is already satisfied and
# pip never resolves a different (multi-GB CUDA) build. On a machine without a local CPU
# wheel, point TORCH_INDEX at a CPU-only wheel index (or at the CUDA index you want).
TORCH_PIN ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: install train test lint bench slurm-up slurm-down clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[dev,slurm]"
	touch $(STAMP)

# The main job on the embedded default (the sample corpus is generated on first use).
train: install
	$(PY) train.py $(ARGS)

test: install
	$(PY) -m pytest -q $(ARGS)

lint: install
	$(VENV)/bin/ruff check kvideo tests benchmarks train.py

bench: install
	$(PY) -m benchmarks.run_all

slurm-up:
	bash scripts/slurm_local.sh start

slurm-down:
	bash scripts/slurm_local.sh stop

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache
