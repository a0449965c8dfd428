# make help: the project's tasks. Every target creates .venv and installs the locked dependencies first.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
LOCK   := requirements/dev.lock


.DEFAULT_GOAL := help
.PHONY: help setup serve serve-demo test lint bench image render lock clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

# --compile-bytecode: with PYTHONDONTWRITEBYTECODE set (common on CI and in images) Python would
# otherwise recompile MLServer, pandas and TensorFlow at every start: `import mlserver` 6 s -> 2 s.
$(BIN)/.installed: pyproject.toml $(LOCK)
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==0.13.9
	$(BIN)/uv pip sync --quiet --compile-bytecode -p $(BIN)/python $(LOCK)
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

bench: setup ## the benchmark matrix on the CropNet graph (~12 min, 2 cores): docs/performance.md (MODEL=DIR to change)
	$(BIN)/python -m cassava.bench_matrix $(if $(MODEL),--model $(MODEL))

image: setup ## build the server image with docker/podman (IMAGE=name:tag, BACKEND=onnx, MODEL_SOURCE=url|file|demo)
	$(BIN)/cassava build $(if $(IMAGE),--tag $(IMAGE)) $(if $(BACKEND),--backend $(BACKEND)) $(if $(MODEL_SOURCE),--model-source $(MODEL_SOURCE))

render: setup ## print the manifests of TARGET (seldon-v1|seldon-v2|kserve|kubernetes) for IMAGE, e.g. make render TARGET=kserve IMAGE=reg/cassava:0.1.0
	@test -n "$(TARGET)" -a -n "$(IMAGE)" || { echo "usage: make render TARGET=seldon-v1|seldon-v2|kserve|kubernetes IMAGE=NAME:TAG [NAMESPACE=ns] [REPLICAS=n]"; exit 2; }
	@$(BIN)/cassava deploy render --target $(TARGET) --image $(IMAGE) $(if $(NAMESPACE),--namespace $(NAMESPACE)) $(if $(REPLICAS),--replicas $(REPLICAS))

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

lock: ## regenerate requirements/*.lock from pyproject.toml
	$(BIN)/uv pip compile pyproject.toml -p 3.11 --generate-hashes -q --extra tensorflow --extra onnx --extra export --extra data --extra dev -o requirements/dev.lock
	$(BIN)/uv pip compile pyproject.toml -p 3.11 --generate-hashes -q --extra tensorflow -o requirements/runtime-tensorflow.lock
	$(BIN)/uv pip compile pyproject.toml -p 3.11 --generate-hashes -q --extra onnx -o requirements/runtime-onnx.lock
