# Quickstart targets: `make run`, `make test`. Both create .venv on first use and are
# no-ops for the setup afterwards. On a machine without CUDA, torch's CPU build is installed
# first from PyTorch's CPU index (PyPI's Linux torch wheels are the CUDA build, whatever the
# version) and then held by a constraints file, so pip never pulls the multi-GB CUDA wheels.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_CPU_VERSION := 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
MAMBA_SSM_VERSION := 2.3.2.post1
INSTALLED := $(VENV)/.installed
MAMBA := $(VENV)/.mamba-ssm
HAS_CUDA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)

.PHONY: run test bench gpu-check gpu-tune clean

$(INSTALLED): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
ifeq ($(HAS_CUDA),yes)
	$(BIN)/python -m pip install -q -e '.[dev]'
else
	$(BIN)/python -m pip install -q --no-deps --retries 1 --timeout 20 --index-url $(TORCH_CPU_INDEX) \
		torch==$(TORCH_CPU_VERSION) || echo "$(TORCH_CPU_INDEX) not reached: torch from the configured indexes"
	echo "torch==$(TORCH_CPU_VERSION)" > $(VENV)/constraints-cpu.txt
	$(BIN)/python -m pip install -q -c $(VENV)/constraints-cpu.txt -e '.[dev]'
endif
	touch $@

# mamba-ssm is the oracle for the Mamba preset. Without CUDA it installs as pure Python
# (its kernels are not built); models.peers loads it on its reference scan.
$(MAMBA): $(INSTALLED)
ifeq ($(HAS_CUDA),yes)
	$(BIN)/python -m pip install -q --no-build-isolation mamba-ssm==$(MAMBA_SSM_VERSION)
else
	MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE $(BIN)/python -m pip install -q --no-deps \
		--no-build-isolation mamba-ssm==$(MAMBA_SSM_VERSION)
endif
	touch $@

run: $(INSTALLED)
	$(BIN)/python -m ablate

test: $(MAMBA)
	$(BIN)/python -m pytest -n 2 -q

bench: $(MAMBA)
	$(BIN)/python -m models.bench

# GPU acceptance (under 5 minutes on one GPU): the kernel tests natively, the layer's modes
# against `recurrent` with `triton` on CUDA, then the kernel-shape benchmark and its ratio
# table. Uses the environment as it is (an offline GPU box: see the README), installs nothing.
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
GPU_BENCH ?= scale=kernel points=ablations modes=[triton,cuda]
# pytest workers for the kernel tests (triton compiles each kernel variant once per process:
# workers compile in parallel); without pytest-xdist the tests run in one process
GPU_TEST_WORKERS ?= 8
GPU_PYTEST_WORKERS = $(shell $(GPU_PYTHON) -c "import xdist" 2>/dev/null && echo "-n $(GPU_TEST_WORKERS)" || echo "-p no:xdist")

gpu-check:
	@nvidia-smi -L >/dev/null 2>&1 || { echo "make gpu-check: no CUDA device on this machine (nvidia-smi finds none); run it on a GPU machine" >&2; exit 1; }
	@$(GPU_PYTHON) -c "import sys, torch; sys.exit(not torch.cuda.is_available())" || { echo "make gpu-check: torch sees no CUDA device (torch.cuda.is_available() is False: a CPU build of torch?)" >&2; exit 1; }
	$(GPU_PYTHON) -m pytest -q $(GPU_PYTEST_WORKERS) tests/test_triton_scan.py tests/test_step.py tests/test_kernel_resources.py tests/test_modes.py \
		tests/test_frontier.py
	$(GPU_PYTHON) -m ablate.bench $(GPU_BENCH)

# The scan kernels timed over candidate tiles at batch 8, K 1024, L 2048 (minutes on one GPU:
# 499 candidate tiles, a forward and a backward kernel each, and for a shared B or C a backward
# with atomic sums, compiled in parallel, those within the register budget timed): the fastest,
# printed as entries of models/triton_scan.py's tables.
# GPU_TUNE: the tuner's arguments, e.g. GPU_TUNE='--points "mamba channels-first" --chunks 64,128
# --block-k 1,2 --warps 1 --prefetch 0,1 --unroll 1,2' for one point's few tiles, each with and
# without loading ahead and unrolled or not (about a minute); GPU_TUNE='--compare --points "mamba
# channels-first" --repeats 100' for the A/B of the flipped adjoint and the masks.
GPU_TUNE ?=
gpu-tune:
	@$(GPU_PYTHON) -c "import sys, torch; sys.exit(not torch.cuda.is_available())" || { echo "make gpu-tune: torch sees no CUDA device; run it on a GPU machine" >&2; exit 1; }
	$(GPU_PYTHON) -m models.triton_tune $(GPU_TUNE)

clean:
	rm -rf $(VENV)
