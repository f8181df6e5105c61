# facevae: `make demo` runs the whole pipeline on the sample clips; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build from this machine's disk; GPU users install their CUDA torch into .venv first.
TORCH ?= torch==2.13.0
export PATH := $(CURDIR)/$(BIN):$(PATH)
# pip installs without compiling every module (~60 s): the stages compile, once, only what they import.
# That needs Python to write the .pyc files, which some images turn off.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup demo test test-fast test-gpu lint-imports bench sweep audit clean-demo help

help:
	@echo "make demo       set up .venv, fetch the sample clips, run 'dvc repro' end to end (CPU; facevae repro)"
	@echo "make test       set up .venv and run every test (slow ones included)"
	@echo "make test-fast  only the quick tests (-m 'not slow')"
	@echo "make test-gpu   the CUDA training tests (-m gpu; skipped without a GPU)"
	@echo "make lint-imports  the import contract: layers import downwards only, no cycles (pyproject.toml)"
	@echo "make bench      run the speed benchmarks in bench/, write their output to docs/bench.md"
	@echo "make sweep      Optuna hyperparameter sweep on the pexels sample (ACTOR=, TRIALS=, WORKERS=)"
	@echo "make audit      expression r read by a second landmark model (MediaPipe FaceMesh, own venv; ACTOR=)"

setup: $(VENV)/.setup-stamp

$(VENV)/.setup-stamp: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q --no-compile "$(TORCH)"
	$(BIN)/python -m pip install -q --no-compile -e ".[test,sweep,pipeline]"
	touch $@

demo: setup
	facevae repro  # dvc repro, with a line per stage saying how long is left

test: setup lint-imports
	pytest

test-fast: setup lint-imports
	pytest -m "not slow and not network"

lint-imports: setup
	lint-imports

test-gpu: setup
	pytest -m gpu -v

# Hyperparameter sweep (needs data/hdf5/$(ACTOR).h5 from `make demo` or `dvc repro build@$(ACTOR)`);
# rerunning it resumes the study. Live view: optuna-dashboard sqlite:///optuna/optuna.db
ACTOR ?= pexels
TRIALS ?= 20
WORKERS ?= 1
sweep: setup
	facevae sweep --actor $(ACTOR) --trials $(TRIALS) --workers $(WORKERS)

bench: setup
	python bench/run_all.py  # writes docs/bench.md

# A second opinion on the evaluation's expression r (audit/second_reader.py): MediaPipe FaceMesh
# reads the driver's and the actor's crops, in its own environment (mediapipe 0.10.21 pins
# numpy<2). Needs models/$(ACTOR)/model.pt (`make demo`). Scores the first 600 frames, as evaluate does.
AUDIT_VENV ?= .venv-audit
AUDIT_DRIVERS ?= carphone franck cap12_edit woman2
AUDIT_DIR := reports/audit/$(ACTOR)
audit: setup
	test -x $(AUDIT_VENV)/bin/python || $(PYTHON) -m venv $(AUDIT_VENV)
	$(AUDIT_VENV)/bin/python -c "import mediapipe" 2>/dev/null || $(AUDIT_VENV)/bin/python -m pip install -q "mediapipe==0.10.21"
	mkdir -p $(AUDIT_DIR)
	for d in $(AUDIT_DRIVERS); do \
	  facevae reconstruct --model models/$(ACTOR)/model.pt --input data/drivers/$$d.mp4 --output $(AUDIT_DIR)/$$d.mp4 \
	    --save-arrays $(AUDIT_DIR)/$$d.npz --no-progress || exit 1; \
	done
	$(AUDIT_VENV)/bin/python audit/second_reader.py $(AUDIT_DIR)/*.npz --max-frames 600 \
	  --json $(AUDIT_DIR)/second_reader.json
