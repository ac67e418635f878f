# Every target sets up .venv when it is missing. torch goes in first, pinned, so that nothing
# else can pull an unpinned torch (and gigabytes of CUDA wheels) as a dependency.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export MLFLOW_DISABLE_TELEMETRY ?= true
export PYTHONUNBUFFERED := 1

.PHONY: setup setup-ui demo test test-all check-install lint ui bench server server-stop cluster cluster-stop

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==$$(sed -n 's/^torch==//p' constraints.txt)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

setup-ui: setup  # Debian's chromium + Playwright (driving /usr/bin/chromium; no browser download)
	bash scripts/setup_browser.sh $(VENV)

demo: setup
	$(BIN)/python -m harness.train -m +sweep=demo
	$(BIN)/python scripts/report.py --experiment demo

# The default tests in one pytest-xdist worker per CPU (most are CLI processes, one core each); the slow ones one
# at a time (they share the one test cluster and tracking server).
test: setup
	$(BIN)/python -m pytest -q -m "not slow" -n auto

test-all: setup setup-ui
	$(BIN)/python -m pytest -q -m "not slow" -n auto
	$(BIN)/python -m pytest -q -m slow

check-install:  # a wheel from a clean checkout, in a fresh venv, runs a sweep and a report outside the repository
	bash scripts/check_install.sh

lint: setup
	$(BIN)/ruff check harness scripts tests
	$(BIN)/ruff format --check harness scripts tests

bench: setup
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,bench]'
	$(BIN)/python benchmarks/bench_single_run.py
	$(BIN)/python benchmarks/bench_eval.py
	$(BIN)/python benchmarks/bench_dataloader.py
	$(BIN)/python benchmarks/bench_sweep.py overhead
	$(BIN)/python benchmarks/bench_sweep.py launchers
	$(BIN)/python benchmarks/bench_report.py

server: setup  # MLflow tracking server on PostgreSQL, loopback only: http://127.0.0.1:5001
	bash scripts/server.sh start

server-stop:
	bash scripts/server.sh stop

cluster:  # a SLURM cluster of one node on this machine (Debian's slurm-wlm; needs root): hydra/launcher=slurm runs here
	bash scripts/slurm.sh start

cluster-stop:
	bash scripts/slurm.sh stop

ui: setup
	$(BIN)/python scripts/ui.py serve --store sqlite:///$(CURDIR)/mlruns/mlflow.db --port 5000
