# neuracrm-mlops: the README's commands. `make demo` runs the platform on embedded defaults,
# `make test` runs lint, types and the test suite. Both install from uv.lock first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv from PATH, else a private copy under .tools/ (bootstrapped with the system python3)
UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV_BIN := .venv/bin
PYTEST_ARGS ?=

.PHONY: help install demo test lint typecheck pytest clean

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
