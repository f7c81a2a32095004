# medgan — the two commands a user needs are `make book` and `make test`; the rest are their steps.
# Every target is idempotent: stamps and file targets make a second run take seconds.

SHELL        := /bin/bash
.SHELLFLAGS  := -eu -o pipefail -c
PYTHON       ?= python3
VENV         := .venv
PY           := $(VENV)/bin/python
MEDGAN       := $(VENV)/bin/medgan
STAMP        := $(VENV)/.stamp-setup
MATHJAX      := book/_static/mathjax/tex-chtml.js
PROFILE      ?= quick
SEED         ?= 0
DATA         ?= data
RUNS         ?= runs
RAW          := $(DATA)/raw
PREPARED     := $(DATA)/prepared
EXECUTED     := book/executed
NOTEBOOKS    := $(wildcard notebooks/[0-9]*.ipynb)
EXECUTED_NB  := $(patsubst notebooks/%.ipynb,$(EXECUTED)/%.ipynb,$(NOTEBOOKS))
DATASETS     := acdc sliver07 idrid
PYTEST_ARGS  ?=

export PYTHONHASHSEED := 0

.PHONY: help setup phantoms prepare notebooks book lint test test-unit test-notebooks bench clean distclean

help:
	@echo "make book    set up, make phantoms, run notebooks with papermill, build the HTML book (offline)"
	@echo "make test    pytest (unit, round trip, resume, bad input, CLI) + nbval of the executed notebooks"
	@echo "make setup   only the .venv (pinned) + vendored MathJax"
	@echo "make bench   CPU/GPU benchmarks (prints ratios; absolute numbers only on a GPU)"

# ---------------------------------------------------------------- setup (.venv + MathJax)
setup: $(STAMP) $(MATHJAX)

$(STAMP): requirements.txt requirements-lock.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -c requirements-lock.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

# MathJax comes from the npm registry at setup time and is served from the book itself,
# so the HTML renders with no network (jupyter-book 1.x would otherwise link a CDN).
$(MATHJAX): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	rm -rf book/_static/mathjax && mkdir -p book/_static
	cp -r node_modules/mathjax/es5 book/_static/mathjax
	@touch $@

# ---------------------------------------------------------------- data (phantoms in the raw layouts)
# `make phantoms prepare`: the quick profile's raw phantoms and their prepared sets, without the notebooks.
phantoms: $(foreach d,$(DATASETS),$(RAW)/$(d)/PHANTOM.txt)

$(RAW)/%/PHANTOM.txt: | $(STAMP)
	$(MEDGAN) data phantom $* --out $(RAW)/$* --seed $(SEED) --overwrite

prepare: $(foreach d,$(DATASETS),$(PREPARED)/$(d)/dataset.json)

$(PREPARED)/%/dataset.json: $(RAW)/%/PHANTOM.txt
	$(MEDGAN) data prepare $* --raw $(RAW)/$* --out $(PREPARED)/$* --seed $(SEED) --overwrite

# ---------------------------------------------------------------- notebooks -> book
notebooks: $(EXECUTED_NB)

# Paths are injected absolute: nbval re-executes the notebooks from book/executed/, and must find (and
# reuse) the same data and runs instead of training a second copy there.
# Notebooks make what they need themselves (medgan.experiments: phantoms only in the quick profile),
# so `make book PROFILE=paper DATA=/path/to/real` never writes a phantom next to the real data.
$(EXECUTED)/%.ipynb: notebooks/%.ipynb | $(STAMP)
	@mkdir -p $(EXECUTED)
	$(VENV)/bin/papermill --no-progress-bar --cwd . -k python3 $< $@.tmp.ipynb \
	    -p profile $(PROFILE) -p seed $(SEED) -p data_root $(abspath $(DATA)) -p runs_root $(abspath $(RUNS))
	@mv $@.tmp.ipynb $@

book: setup notebooks
	$(VENV)/bin/jupyter-book build . --builder html --warningiserror --keep-going --quiet
	$(PY) book/offline_check.py _build/html
	@echo
	@echo "Book built: open $(CURDIR)/_build/html/index.html"

# ---------------------------------------------------------------- tests
test: setup test-unit test-notebooks

lint: $(STAMP)
	$(VENV)/bin/ruff check medgan tests book

test-unit: $(STAMP) lint
	$(PY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS) tests

test-notebooks: notebooks
	@test -n "$(EXECUTED_NB)" || { echo "no notebooks under notebooks/ to validate" >&2; exit 1; }
	$(PY) -m pytest --nbval-lax -p no:randomly $(EXECUTED_NB)

bench: $(STAMP)
	$(MEDGAN) bench train --model dcgan --size 128 --batch 64
	$(MEDGAN) bench fid --n 200

clean:
	rm -rf _build $(EXECUTED) .pytest_cache

distclean: clean
	rm -rf $(VENV) node_modules book/_static/mathjax $(DATA) runs
