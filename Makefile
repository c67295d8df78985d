# neuracrm-mlops: the README's commands. `make demo` runs the platform on embedded defaults,
# `make test` runs lint, types and the test suite. Both install from uv.lock first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv from PATH, else a private copy under .tools/ (bootstrapped with the system python3)
UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV_BIN := .venv/bin
PYTEST_ARGS ?=

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
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing (apt-get)"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

lint: install  ## ruff check and format check
	$(VENV_BIN)/ruff check .
	$(VENV_BIN)/ruff format --check .

typecheck: install  ## mypy on the library
	$(VENV_BIN)/mypy

pytest: install  ## the test suite only
	$(VENV_BIN)/pytest $(PYTEST_ARGS)

clean:  ## remove the venv, tools and the embedded data dir
	rm -rf .venv .tools .neuracrm
