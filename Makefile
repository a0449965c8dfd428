# make help: the project's tasks. Every target creates .venv and installs the locked dependencies first.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
LOCK   := requirements/dev.lock


.DEFAULT_GOAL := help
.PHONY: help setup serve serve-demo test test-fast lint bench image mlserver-folder render lock clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

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
	$(BIN)/cassava model fetch --if-missing
	$(BIN)/cassava serve

serve-demo: setup ## offline: write the UNTRAINED stand-in to the cache and serve it
	$(BIN)/cassava model demo
	$(BIN)/cassava serve

lint: setup ## ruff and mypy
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

# -n 2 --dist loadfile: two processes, each taking whole test files (so a module's server is started
# once); the suite spends most of its time waiting on servers it starts. 10.4 min -> 6.0 min here.
test: lint ## lint, then every test: unit, in-process runtime, integration (real servers), deploy, browser
	$(BIN)/pytest -q -n 2 --dist loadfile

test-fast: lint ## the quick loop (about a minute): lint, unit and in-process runtime tests, no server processes
	$(BIN)/pytest -q -m "not integration and not slow and not browser" tests/unit tests/server

bench: setup ## the benchmark matrix -> docs/performance.md (~22 min, 2 cores); MODEL=DIR (or CASSAVA_BENCH_MODEL), e.g. the CropNet graph
	$(BIN)/python -m benchmarks $(if $(MODEL),--model $(MODEL))

image: setup ## build the server image with docker/podman (IMAGE=name:tag, BACKEND=onnx, MODEL_SOURCE=url|file|demo)
	$(BIN)/cassava build $(if $(IMAGE),--tag $(IMAGE)) $(if $(BACKEND),--backend $(BACKEND)) $(if $(MODEL_SOURCE),--model-source $(MODEL_SOURCE))

mlserver-folder: setup ## write DIR (default build/mlserver) for the seed's `mlserver build DIR -t IMAGE` (BACKEND=onnx, MODEL=dir)
	$(BIN)/cassava build --mlserver-folder $(or $(DIR),build/mlserver) --force $(if $(BACKEND),--backend $(BACKEND)) $(if $(MODEL),--model $(MODEL))

render: setup ## print the manifests of TARGET (seldon-v1|seldon-v2|kserve|kubernetes) for IMAGE, e.g. make render TARGET=kserve IMAGE=reg/cassava:0.1.0
	@test -n "$(TARGET)" -a -n "$(IMAGE)" || { echo "usage: make render TARGET=seldon-v1|seldon-v2|kserve|kubernetes IMAGE=NAME:TAG [NAMESPACE=ns] [REPLICAS=n] [AUTOSCALE=1]"; exit 2; }
	@$(BIN)/cassava deploy render --target $(TARGET) --image $(IMAGE) $(if $(NAMESPACE),--namespace $(NAMESPACE)) $(if $(REPLICAS),--replicas $(REPLICAS)) $(if $(AUTOSCALE),--autoscale)

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

lock: ## regenerate requirements/*.lock from pyproject.toml
	$(BIN)/uv pip compile pyproject.toml -p 3.11 --generate-hashes -q --extra tensorflow --extra onnx --extra export --extra data --extra cli --extra bench --extra compare --extra dev -o requirements/dev.lock
	$(BIN)/uv pip compile pyproject.toml -p 3.11 --generate-hashes -q --extra tensorflow -o requirements/runtime-tensorflow.lock
	$(BIN)/uv pip compile pyproject.toml -p 3.11 --generate-hashes -q --extra onnx -o requirements/runtime-onnx.lock
	$(BIN)/uv pip compile pyproject.toml -p 3.11 --generate-hashes -q --extra tensorflow --extra cli --extra export -o requirements/fetch.lock
