# cellstudy: set up, test, reproduce the study, build the book.
# Every target sets itself up (creates .venv) when needed.
#   make reproduce            default profile (fits a 2-core laptop)
#   make reproduce PROFILE=quick   smoke run (minutes)
#   make reproduce PROFILE=full    full CPJUMP1 on GPUs (see README)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.cellstudy-installed
PROFILE ?= default
# Idle OpenMP threads sleep instead of spinning: with spinning, torch on 2 cores slows ten-fold as soon as
# another process shares them.
export OMP_WAIT_POLICY ?= PASSIVE
BUILD := build
EXECUTED_DIR := $(BUILD)/book/notebooks
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
EXECUTED := $(NOTEBOOKS:notebooks/%=$(EXECUTED_DIR)/%)
PACKAGE := $(shell find cellstudy -name '*.py' -o -name '*.csv')
BOOK_SOURCES := $(wildcard book/*.md book/*.yml book/*.bib)
BOOK_HTML := book/_build/html/index.html

.PHONY: setup test reproduce notebooks book check-book lab bench clean help

help:
	@echo "make setup | test | reproduce [PROFILE=quick|default|full] | book | check-book | lab | bench | clean"

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.14.1 torchvision==0.29.1
	$(PIP) install --quiet -e '.[notebooks,test]'
	touch $@

test: $(STAMP)
	$(PY) -m pytest

# --- the study ---------------------------------------------------------------
# A notebook re-runs when it, the package or the profile changed.
$(BUILD)/profile: FORCE
	@mkdir -p $(BUILD)
	@echo "$(PROFILE)" | cmp -s - $@ || echo "$(PROFILE)" > $@

$(EXECUTED_DIR)/%.ipynb: notebooks/%.ipynb $(PACKAGE) $(BUILD)/profile | $(STAMP)
	@mkdir -p $(EXECUTED_DIR) $(BUILD)/tmp
	$(PY) -m papermill --cwd notebooks -p profile $(PROFILE) $< $(BUILD)/tmp/$*.ipynb
	mv $(BUILD)/tmp/$*.ipynb $@

# Later notebooks read what earlier ones wrote under build/ (the full profile's downloads, the simulated
# screen, models, profiles).
$(EXECUTED_DIR)/02_simulated_benchmark.ipynb: $(EXECUTED_DIR)/01_data_exploration.ipynb
$(EXECUTED_DIR)/03_mae_pretraining.ipynb $(EXECUTED_DIR)/04_dino_pretraining.ipynb: $(EXECUTED_DIR)/02_simulated_benchmark.ipynb
$(EXECUTED_DIR)/05_embedding.ipynb: $(EXECUTED_DIR)/03_mae_pretraining.ipynb $(EXECUTED_DIR)/04_dino_pretraining.ipynb
$(EXECUTED_DIR)/06_evaluation.ipynb: $(EXECUTED_DIR)/05_embedding.ipynb
$(EXECUTED_DIR)/07_applications.ipynb: $(EXECUTED_DIR)/06_evaluation.ipynb
$(EXECUTED_DIR)/08_summary.ipynb: $(EXECUTED_DIR)/07_applications.ipynb

notebooks: $(EXECUTED)

$(BOOK_HTML): $(EXECUTED) $(BOOK_SOURCES)
	cp book/*.md book/*.yml book/*.bib $(BUILD)/book/
	rm -rf book/_build
	$(VENV)/bin/jupyter-book build $(BUILD)/book --path-output book --warningiserror --keep-going

book: $(BOOK_HTML)

check-book: $(BOOK_HTML) | $(STAMP)
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null)
	$(PY) -m cellstudy.bookcheck book/_build/html --screenshots $(BUILD)/screenshots

reproduce: check-book
	@echo "Book: $(BOOK_HTML)   executed notebooks: $(EXECUTED_DIR)   figures and CSVs: $(BUILD)/figures"

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

# Benchmarks run alone: spinning threads are fastest there.
bench: export OMP_WAIT_POLICY = ACTIVE
bench: $(STAMP)
	$(PY) -m cellstudy.bench

clean:
	rm -rf $(BUILD) book/_build

FORCE:
