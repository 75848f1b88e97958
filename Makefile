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
LINTED := kvideo tests benchmarks train.py eval.py

.PHONY: help install train test test-fast test-unit test-integration lint format bench gpu-carry slurm-up slurm-down clean

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv and install kvideo with its pinned torch

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[dev,slurm,joblib,wandb,remote,remote-test]"
	touch $(STAMP)

train: install  ## train on the embedded default (the sample corpus is generated on first use)
	$(PY) train.py $(ARGS)

test: install  ## the whole test suite (unit, integration, cluster; cluster tests skip without SLURM)
	$(PY) -m pytest -q $(ARGS)

test-fast: install  ## every test that trains no model (not marked slow): the edit-test loop
	$(PY) -m pytest -q -m "not slow" $(ARGS)

test-unit: install  ## unit tests only (one module's contract, no training run), about a minute
	$(PY) -m pytest -q tests/unit $(ARGS)

test-integration: install  ## training runs, the CLI, tools and launchers
	$(PY) -m pytest -q tests/integration $(ARGS)

lint: install  ## ruff (lint + format check), mypy --strict, and the import layers (lint-imports)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: install  ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix $(LINTED)
	$(VENV)/bin/ruff format $(LINTED)

bench: install  ## the benchmark suite (benchmarks/; writes benchmarks/results/)
	$(PY) -m benchmarks.run_all

gpu-carry: install  ## the wheels the GPU machine lacks, in .gpu-carry/wheels, checked to fit (64 MiB with the tree)
	$(PY) -m benchmarks.gpu.carry

NODES ?= 1
slurm-up:  ## start the local SLURM cluster (NODES=2: the 2-node one, one network namespace per node)
	bash scripts/slurm_local.sh start --nodes $(NODES)

slurm-down:  ## stop it (NODES=2: the 2-node one)
	bash scripts/slurm_local.sh stop --nodes $(NODES)

clean:  ## remove run outputs and caches
	rm -rf outputs multirun .pytest_cache .ruff_cache .mypy_cache
