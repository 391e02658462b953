# iis — run `make help` for the list of targets, `make experiments` for the training recipes.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONSTRAINTS ?= requirements/constraints.txt
LOCK_VENV ?= .venv-lock
DATA_ROOT ?= $(if $(IIS_DATA_ROOT),$(IIS_DATA_ROOT),../shared/data)

# `make train` alone = the quickstart; `make train METHOD=m [EXP=e]` = experiments/m/e.yaml (default: default.yaml,
# the method's main paper recipe), which names the files it builds on in its `defaults:` list. TRAINER=cpu (or
# DATA=<preset>) layers experiments/trainer/cpu.yaml (experiments/data/<preset>.yaml) on top. The run directory
# root is runs/<m>/<e> (+<preset>), derived by iis-train: each run in its own version_N/, latest/ the newest.
ifdef METHOD
CONFIG ?= experiments/$(METHOD)/$(if $(EXP),$(EXP),default).yaml
else
CONFIG ?= experiments/quickstart.yaml
endif
PRESETS := $(foreach t,$(TRAINER),experiments/trainer/$(t).yaml) $(foreach d,$(DATA),experiments/data/$(d).yaml)
METHODS := $(filter-out trainer data,$(notdir $(patsubst %/,%,$(wildcard experiments/*/))))

.PHONY: help experiments install lock train eval test test-all bench clean

help:  ## show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'
	@echo "  variables: METHOD=<method> EXP=<experiment> TRAINER=cpu DATA=<preset> ARGS='<extra iis-train/iis-eval args>' DATA_ROOT=<dir>"
	@echo "  methods: $(METHODS) (make experiments lists each one's recipes)"

experiments:  ## list every training recipe: make train METHOD=<method> EXP=<experiment>
	@echo "make train                                      experiments/quickstart.yaml: $$(sed -n '1s/^# *//p' experiments/quickstart.yaml)"
	@for m in $(METHODS); do for f in experiments/$$m/[!_]*.yaml; do e=$$(basename $$f .yaml); \
	  printf "make train METHOD=%-13s EXP=%-22s %s\n" "$$m" "$$e" "$$(sed -n '1s/^# *//p' $$f)"; done; done
	@echo "presets: TRAINER=$$(ls experiments/trainer | sed 's/.yaml//' | paste -sd/) DATA=$$(ls experiments/data | sed 's/.yaml//' | paste -sd/)"

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# every version pinned by the lock (torch/torchvision: the pair that installs offline on our machines)
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e '.[test]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install iis with the locked versions of its dependencies

lock:  ## regenerate requirements/constraints.txt: resolve iis[test] afresh (no install) and pin every package
	rm -rf $(LOCK_VENV) && $(PY) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --dry-run --ignore-installed --report $(LOCK_VENV)/report.json -e '.[test]'
	$(LOCK_VENV)/bin/python requirements/lock.py $(LOCK_VENV)/report.json > $(CONSTRAINTS).tmp
	mv $(CONSTRAINTS).tmp $(CONSTRAINTS) && rm -rf $(LOCK_VENV)
	@echo "wrote $(CONSTRAINTS): $$(grep -vc '^#' $(CONSTRAINTS)) pinned packages; \`make install\` applies them"

train: $(STAMP)  ## train (default: tiny SimpleClick on the built-in synthetic set, CPU, a few minutes)
	$(BIN)/iis-train fit --config $(CONFIG) $(foreach p,$(PRESETS),--config $(p)) $(ARGS)

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
