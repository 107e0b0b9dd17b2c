# Set-up and entry points. `make run` and `make test` each do all set-up on a fresh machine first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH_VERSION     ?= 2.13.0
DEEPSPEED_VERSION ?= 0.19.8

.PHONY: setup run test test-fast bench clean

setup: $(VENV)/.installed

# torch goes in first (the CPU wheel here; pip would otherwise pull the CUDA build and gigabytes of
# CUDA packages as a dependency), then deepspeed without build isolation so it builds against it.
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet --no-build-isolation deepspeed==$(DEEPSPEED_VERSION)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# The main job. Until the training loop lands this is the buffer benchmark.
run: setup
	$(BIN)/python benchmarks/buffer_bench.py

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

bench: setup
	$(BIN)/python benchmarks/buffer_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
