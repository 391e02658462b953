# iis — run `make help` for the list of targets.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_ROOT ?= $(if $(IIS_DATA_ROOT),$(IIS_DATA_ROOT),../shared/data)

# `make train` alone = the embedded quickstart; `make train METHOD=m [EXP=e]` = experiments/m/_base.yaml
# followed by experiments/m/e.yaml (default: default.yaml, the method's main paper recipe)
ifdef METHOD
CONFIG ?= $(wildcard experiments/$(METHOD)/_base.yaml) experiments/$(METHOD)/$(if $(EXP),$(EXP),default).yaml
else
CONFIG ?= experiments/quickstart.yaml
endif

.PHONY: help install train eval test test-all bench lint clean

help:  ## show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'
	@echo "  variables: METHOD=<method> EXP=<experiment> ARGS='<extra iis-train/iis-eval args>' DATA_ROOT=<dir>"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch/torchvision pinned to the pair that installs offline on our machines (CUDA build, runs on CPU)
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install iis with its dependencies

train: $(STAMP)  ## train (default: tiny SimpleClick on the built-in synthetic set, CPU, a few minutes)
	$(BIN)/iis-train fit $(foreach c,$(CONFIG),--config $(c)) $(ARGS)

eval: $(STAMP)  ## evaluate: make eval ARGS='--ckpt PATH --datasets grabcut,berkeley'
	$(BIN)/iis-eval --data-root $(DATA_ROOT) $(ARGS)

test: $(STAMP)  ## run the test suite (CPU, minutes; excludes slow and gpu tests)
	$(BIN)/python -m pytest -m "not slow and not gpu" -q $(ARGS)

test-all: $(STAMP)  ## run every test including slow ones (training to convergence, real-data runs)
	$(BIN)/python -m pytest -m "not gpu" -q $(ARGS)

bench: $(STAMP)  ## protocol overhead benchmark on real GrabCut (needs DATA_ROOT)
	$(BIN)/python benchmarks/clicker_speed.py --data-root $(DATA_ROOT)

clean:  ## remove run outputs (keeps .venv)
	rm -rf runs wandb lightning_logs .pytest_cache
