# neuracrm-mlops: the README's commands. `make demo` runs the platform on embedded defaults,
# `make test` runs lint, types and the test suite. Both install from uv.lock first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv from PATH, else a private copy under .tools/ (bootstrapped with the system python3)
UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV_BIN := .venv/bin
PYTEST_ARGS ?=

.PHONY: help install demo serve bento test lint typecheck pytest clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet 'uv>=0.5'

.venv/.installed: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --python 3.11
	@touch $@

install: .venv/.installed  ## install the locked dependencies into .venv

demo: install  ## run the platform end to end on the embedded defaults (SQLite, local MLflow)
	$(VENV_BIN)/neuracrm-mlops demo

serve: install  ## run the prediction service on 127.0.0.1:3000 (models from the MLflow registry)
	$(VENV_BIN)/bentoml serve neuracrm_mlops.serving.service:PredictionService --host 127.0.0.1 --port 3000

bento: install  ## build the prediction service's Bento (locked requirements + this project's wheel)
	@mkdir -p build/bento
	$(UV) export --frozen --no-dev --no-hashes --no-emit-project --format requirements-txt \
		--quiet -o build/bento/requirements.txt
	$(UV) build --wheel --quiet -o build/bento
	BENTOML_DO_NOT_TRACK=true $(VENV_BIN)/bentoml build -f serving/bentofile.yaml .

test: install lint typecheck pytest  ## lint, type-check and run every test (needs PostgreSQL on 127.0.0.1:5432)

lint: install  ## ruff check and format check
	$(VENV_BIN)/ruff check .
	$(VENV_BIN)/ruff format --check .

typecheck: install  ## mypy on the library
	$(VENV_BIN)/mypy

pytest: install  ## the test suite only
	$(VENV_BIN)/pytest $(PYTEST_ARGS)

clean:  ## remove the venv, tools and the embedded data dir
	rm -rf .venv .tools .neuracrm
