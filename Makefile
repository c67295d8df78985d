# neuracrm-mlops: the README's commands. `make demo` runs the platform on embedded defaults,
# `make test` runs lint, types and the test suite. Both install from uv.lock first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv from PATH, else a private copy under .tools/ (bootstrapped with the system python3)
UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV_BIN := .venv/bin
PYTEST_ARGS ?=
# `make pytest` runs the suite on this many pytest-xdist workers (0: serially, in one process). 2 was
# the fastest measured on a 2-core machine (3 and 4 were slower): the suite is CPU-bound (about 15
# CPU-minutes, servers included), so more workers than cores only add contention. See README.
PYTEST_WORKERS ?= 2

.PHONY: help install demo ui stop serve bento test test-tools lint typecheck pytest clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet 'uv>=0.5'

.venv/.installed: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --python 3.11
	@touch $@

install: .venv/.installed  ## install the locked dependencies into .venv

demo: install  ## the whole loop on the embedded defaults: train, canary to champion, rollback and alert
	$(VENV_BIN)/neuracrm-mlops demo

ui: install  ## Airflow UI (+ model health page) on :8080 and MLflow UI on :5000, in the background
	$(VENV_BIN)/neuracrm-mlops ui

stop:  ## stop what `make demo` or `make ui` left running
	@if [ -x $(VENV_BIN)/neuracrm-mlops ]; then $(VENV_BIN)/neuracrm-mlops stop; fi

serve: install  ## run the prediction service on 127.0.0.1:3000 (models from the MLflow registry)
	$(VENV_BIN)/bentoml serve neuracrm_mlops.serving.service:PredictionService --host 127.0.0.1 --port 3000

bento: install  ## build the prediction service's Bento (locked requirements + this project's wheel)
	@mkdir -p build/bento
	$(UV) export --frozen --no-dev --no-hashes --no-emit-project --format requirements-txt \
		--quiet -o build/bento/requirements.txt
	$(UV) build --wheel --quiet -o build/bento
	BENTOML_DO_NOT_TRACK=true $(VENV_BIN)/bentoml build -f serving/bentofile.yaml .

test: install test-tools lint typecheck pytest  ## lint, type-check and run every test (needs PostgreSQL on 127.0.0.1:5432)

# Debian packages the tests drive: headless Chromium (the model health page) and docker-compose
# (validates docker-compose.yml; no Docker engine needed). Installed when missing, as root.
TEST_PACKAGES := chromium chromium-driver docker-compose
test-tools:  ## install the Debian packages the tests need (chromium, chromedriver, docker-compose)
	@echo "Debian packages the tests need: $(TEST_PACKAGES)"; \
	missing=""; \
	for package in $(TEST_PACKAGES); do \
		case $$package in chromium-driver) command=chromedriver;; *) command=$$package;; esac; \
		if command -v $$command >/dev/null; then \
			echo "  $$package: present ($$(command -v $$command))"; \
		else \
			echo "  $$package: missing, installing"; missing="$$missing $$package"; \
		fi; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing (apt-get)"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

lint: install  ## ruff check, format check and the package layer contract (import-linter)
	$(VENV_BIN)/ruff check .
	$(VENV_BIN)/ruff format --check .
	$(VENV_BIN)/lint-imports --no-cache

typecheck: install  ## mypy on the library
	$(VENV_BIN)/mypy

# --dist loadgroup: tests in one xdist_group (a shared server, stack or module fixture) run on one
# worker; --no-loadscope-reorder: work is handed out in collection order, so the long groups
# (tests/airflow_live, the demo) start first instead of after the groups with more (short) tests.
pytest: install  ## the test suite only (PYTEST_WORKERS=0: serially; PYTEST_ARGS: extra pytest arguments)
	$(VENV_BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup --no-loadscope-reorder $(PYTEST_ARGS)

clean:  ## remove the venv, tools and the embedded data dir
	rm -rf .venv .tools .neuracrm
