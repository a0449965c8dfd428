# make help: the project's tasks. Every target creates .venv and installs the locked dependencies first.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
LOCK   := requirements/dev.lock


.DEFAULT_GOAL := help
.PHONY: help setup serve serve-demo test lint bench image render lock clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml $(LOCK)
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==0.13.9
	$(BIN)/uv pip sync --quiet -p $(BIN)/python $(LOCK)
	$(BIN)/uv pip install --quiet -p $(BIN)/python --no-deps -e .
	@touch $@

setup: $(BIN)/.installed ## create .venv with the locked dependencies

serve: setup ## fetch CropNet into the cache if it is not there, then serve it on :8080 (REST) :8081 (gRPC)
	@test -f "$$($(BIN)/cassava model path)/saved_model.pb" || $(BIN)/cassava model fetch
	$(BIN)/cassava serve

serve-demo: setup ## offline: write the UNTRAINED stand-in to the cache and serve it
	$(BIN)/cassava model demo
	$(BIN)/cassava serve

lint: setup ## ruff and mypy
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

test: lint ## lint, then every test: unit, integration (real MLServer processes) and deploy validation
	$(BIN)/pytest -q

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

lock: ## regenerate requirements/*.lock from pyproject.toml
	uv pip compile pyproject.toml -p 3.11 --generate-hashes -q --extra tensorflow --extra onnx --extra export --extra data --extra dev -o requirements/dev.lock
	uv pip compile pyproject.toml -p 3.11 --generate-hashes -q --extra tensorflow -o requirements/runtime-tensorflow.lock
	uv pip compile pyproject.toml -p 3.11 --generate-hashes -q --extra onnx -o requirements/runtime-onnx.lock
