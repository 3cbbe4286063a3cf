# cellstudy: set up, test, reproduce the study, build the book.
# Every target sets itself up (creates .venv) when needed.
#   make reproduce            default run size (fits a 2-core laptop)
#   make reproduce SIZE=quick      smoke run (minutes)
#   make reproduce SIZE=full       full CPJUMP1 on GPUs (see README)
#   make rehearse-full             the full path at quick size against a local Gallery (CPU, minutes)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.cellstudy-installed
LOCK := requirements.lock
# SIZE: the run size (quick, default or full); PROFILE= is accepted as its old name.
PROFILE ?= default
SIZE ?= $(PROFILE)
# Idle OpenMP threads sleep instead of spinning: with spinning, torch on 2 cores slows ten-fold as soon as
# another process shares them.
export OMP_WAIT_POLICY ?= PASSIVE
# BUILD: where the notebooks write; BOOK_OUT: the folder above the built book's _build/.
BUILD ?= build
BOOK_OUT ?= book
EXECUTED_DIR := $(BUILD)/book/notebooks
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
EXECUTED := $(NOTEBOOKS:notebooks/%=$(EXECUTED_DIR)/%)
PACKAGE := $(shell find cellstudy -name '*.py' -o -name '*.csv')
BOOK_SOURCES := $(wildcard book/*.md book/*.yml book/*.bib)
BOOK_HTML := $(BOOK_OUT)/_build/html/index.html

.PHONY: setup test lint lock reproduce rehearse-full notebooks book check-book lab bench clean help

help:
	@echo "make setup | test | lint | lock | reproduce [SIZE=quick|default|full] | rehearse-full | book | check-book | lab | bench | clean"

setup: $(STAMP)

# The pinned environment: every package at the exact version and hash in $(LOCK), then the package itself.
# pip check fails when the package's dependencies ask for something the lock lacks: run make lock.
$(STAMP): $(LOCK) pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r $(LOCK)
	$(PIP) install --quiet --no-deps -e .
	$(PIP) check
	touch $@

# Re-resolves $(LOCK) from pyproject.toml (all extras) and requirements.in (the torch pins) for Linux, macOS,
# Windows and Python 3.11+ (zarr 3 needs 3.11); run it after changing a dependency. It keeps the pins it can
# (delete $(LOCK) first to take the newest of everything) and needs only uv, not an up-to-date venv.
lock:
	test -x $(VENV)/bin/uv || { $(PYTHON) -m venv $(VENV) && $(PIP) install --quiet uv; }
	$(VENV)/bin/uv pip compile pyproject.toml requirements.in --extra notebooks --extra test --extra dev \
		--universal --python-version 3.11 --generate-hashes --custom-compile-command 'make lock' \
		--quiet --output-file $(LOCK)

test: $(STAMP)
	$(PY) -m pytest

# Style and formatting (ruff) and the layers between sub-packages (import-linter); see pyproject.toml.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

# --- the study ---------------------------------------------------------------
# A notebook re-runs when it, the package or the run size changed.
$(BUILD)/run_size: FORCE
	@mkdir -p $(BUILD)
	@echo "$(SIZE)" | cmp -s - $@ || echo "$(SIZE)" > $@

$(EXECUTED_DIR)/%.ipynb: notebooks/%.ipynb $(PACKAGE) $(BUILD)/run_size | $(STAMP)
	@mkdir -p $(EXECUTED_DIR) $(BUILD)/tmp
	$(PY) -m papermill --cwd notebooks -p run_size $(SIZE) -p build_dir $(abspath $(BUILD)) $< $(BUILD)/tmp/$*.ipynb
	$(PY) tools/book_cells.py $(BUILD)/tmp/$*.ipynb
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
	rm -rf $(BOOK_OUT)/_build
	$(VENV)/bin/jupyter-book build $(BUILD)/book --path-output $(BOOK_OUT) --warningiserror --keep-going

book: $(BOOK_HTML)

check-book: $(BOOK_HTML) | $(STAMP)
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null)
	$(PY) tools/bookcheck.py $(BOOK_OUT)/_build/html --screenshots $(BUILD)/screenshots

reproduce: check-book
	@echo "Book: $(BOOK_HTML)   executed notebooks: $(EXECUTED_DIR)   figures and CSVs: $(BUILD)/figures"

# Every notebook at the full-rehearsal run size (the full path at quick size) against a local S3 server serving
# a simulated screen in the Cell Painting Gallery's layout, then the book and its check (tools/rehearse_full.py).
REHEARSAL_BUILD ?= build/rehearsal
rehearse-full: $(STAMP)
	$(PY) tools/rehearse_full.py $(REHEARSAL_BUILD)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

# Benchmarks run alone: spinning threads are fastest there.
bench: export OMP_WAIT_POLICY = ACTIVE
bench: $(STAMP)
	$(PY) tools/bench.py

clean:
	rm -rf $(BUILD) $(BOOK_OUT)/_build

FORCE:
