# regtune developer tasks. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel of torch, used where no NVIDIA GPU is present (pyproject keeps `torch>=2.2`, so
# GPU hosts get their CUDA build from the same metadata).
TORCH_CPU ?= torch==2.13.0
HOST ?= 127.0.0.1
PORT ?= 8000

.DEFAULT_GOAL := help
.PHONY: help venv run test test-fast lint typecheck imports check bench browsers clean

help: ## List the tasks
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(BIN)/regtune: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "NVIDIA GPU found: installing torch from the project metadata"; \
	else \
		echo "no GPU: installing the CPU build ($(TORCH_CPU))"; \
		$(BIN)/pip install -q "$(TORCH_CPU)"; \
	fi
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(BIN)/regtune

venv: $(BIN)/regtune ## Create .venv and install regtune (editable) with dev tools

run: venv ## Set up, migrate and serve the API with one worker on ./regtune.db
	$(BIN)/regtune db upgrade
	$(BIN)/regtune serve --host $(HOST) --port $(PORT) --workers 1

test: venv ## Set up and run the whole test suite (PostgreSQL tests included)
	$(BIN)/python -m tests.setup_env
	$(BIN)/pytest

test-fast: venv ## Run the tests not marked slow or browser
	$(BIN)/pytest -m "not slow and not browser"

lint: venv ## ruff lint + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv ## mypy (strict)
	$(BIN)/mypy

imports: venv ## Import contracts (lint-imports; pyproject [tool.importlinter])
	$(BIN)/lint-imports

check: lint typecheck imports ## Lint, type-check, import contracts

bench: venv ## Short versions of the benchmarks (< 10 min; each prints `ratio: X.XX` last)
	$(BIN)/python -m tests.setup_env
	TZ=UTC $(BIN)/python bench/trainer_overhead.py --short
	TZ=UTC $(BIN)/python bench/service_overhead.py --short
	TZ=UTC $(BIN)/python bench/search_efficiency.py --short
	TZ=UTC $(BIN)/python bench/gate_reliability.py --short
	TZ=UTC $(BIN)/python bench/sampler_regret.py --short
	TZ=UTC $(BIN)/python bench/scaling.py --short
	TZ=UTC $(BIN)/python bench/api_latency.py --short

clean: ## Remove the venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
