# Quickstart targets: `make run`, `make test`. Both create .venv on first use and are
# no-ops for the setup afterwards. On a machine without CUDA, torch is pinned to a CPU
# build through a constraints file, so pip never pulls the multi-GB CUDA wheels.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_CPU_VERSION := 2.13.0
MAMBA_SSM_VERSION := 2.3.2.post1
INSTALLED := $(VENV)/.installed
MAMBA := $(VENV)/.mamba-ssm
HAS_CUDA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)

.PHONY: run test bench clean

$(INSTALLED): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
ifeq ($(HAS_CUDA),yes)
	$(BIN)/python -m pip install -q -e '.[dev]'
else
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

clean:
	rm -rf $(VENV)
