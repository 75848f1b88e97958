# kvideo developer entry points. `make train` and `make test` install what they need first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kvideo-installed
# Pinned so pip takes the local CPU wheel instead of resolving a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0

.PHONY: install train test lint bench slurm-up slurm-down clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
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
