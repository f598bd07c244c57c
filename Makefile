# ask-batch front door: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# `make run PARAMS=deployments/example-acs.yaml`: the same run on an ACS cluster
PARAMS ?= deployments/example.yaml
STAMP := $(VENV)/.installed

.PHONY: install run cleanup test test-slow test-deps lint sandbox bench clean up down

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python requirements.txt requirements-dev.txt
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

## run the whole pipeline on the sandbox (starts one if none is running); history in .prefect/, as `make up` shows it
##   (SANDBOX=DIR, PARAMS=FILE, PREFECT_DIR=DIR and RUN_ARGS="--set a.b=v ..." change what it runs)
SANDBOX ?= .sandbox
PARAMS ?= deployments/example.yaml
PREFECT_DIR ?= $(CURDIR)/.prefect
RUN_ARGS ?=
run: install
	PREFECT_HOME=$(PREFECT_DIR) $(BIN)/python -m flows.ask_batch --sandbox $(SANDBOX) --params $(PARAMS) $(RUN_ARGS)

## list everything ask-batch created (by its tags and labels) with its hourly cost, and delete it on confirmation
##   (SANDBOX=DIR, PARAMS=FILE; CLEANUP_ARGS="--yes" deletes without asking, "--dry-run" only lists). On a real
##   account: make cleanup SANDBOX= PARAMS=my-spec.yaml
CLEANUP_ARGS ?=
cleanup: install
	$(BIN)/python -m flows.cleanup $(if $(SANDBOX),--sandbox $(SANDBOX)) --params $(PARAMS) $(CLEANUP_ARGS)

## install the test needs and run every test but the slow ones (`make test-slow`; .ci/run runs both)
test: install test-deps
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -rs -m "not slow"

## the slow end-to-end tests (marker `slow`: several minutes each, e.g. the Kubernetes work pool)
test-slow: install test-deps
	$(BIN)/python -m pytest -q -rs -m slow

## Debian packages of the browser and PostgreSQL tests (chromium, chromium-driver, postgresql); as root only,
## quick when present; without them those tests skip, naming the packages
test-deps:
	bash scripts/install-test-deps.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

## run the sandbox in the foreground (state in .sandbox/)
sandbox: install
	$(BIN)/python -m sandbox serve --dir .sandbox

## local Prefect server (UI http://127.0.0.1:4200) + sandbox + wiring + deployments + a worker, in the background
up: install
	$(BIN)/python -m deployments.local up

## stop what `make up` started (state stays in .prefect/ and .sandbox/)
down:
	$(BIN)/python -m deployments.local down

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .sandbox outputs
