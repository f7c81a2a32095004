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

.PHONY: help setup phantoms prepare notebooks book lint test test-unit test-notebooks test-book bench clean distclean

help:
	@echo "make book    set up, make phantoms, run notebooks with papermill, build the HTML book (offline)"
	@echo "make test    pytest (unit, round trip, resume, bad input, CLI) + nbval of the executed notebooks"
	@echo "make setup   only the .venv (pinned) + vendored MathJax"
	@echo "make bench   CPU/GPU benchmarks (prints ratios; absolute numbers only on a GPU)"
	@echo "make bench-gpu   on a GPU machine: every model at 128²/256² fp32+bf16 and FID 10k -> $(RUNS)/bench-gpu/"
	@echo "make wheelhouse  download the bench's pure-Python dependencies into wheelhouse/ (for an offline GPU box)"

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
# An executed notebook is as old as the code that made its numbers: a change under medgan/ re-executes it
# (medgan.experiments then redoes only the runs/sets/U-Nets whose code version or config hash changed,
# moving the stale ones aside as <name>.stale-<version>).
# The kernel draws inline whatever MPLBACKEND the caller exports (Agg would leave the pages without figures);
# book/publish.py hides the injected-parameters cell (kept for nbval) and moves stderr to book/executed/<name>.log.
MEDGAN_SRC   := $(shell find medgan -name '*.py' 2>/dev/null)

$(EXECUTED)/%.ipynb: notebooks/%.ipynb $(MEDGAN_SRC) | $(STAMP)
	@mkdir -p $(EXECUTED)
	@start=$$(date +%s); \
	env -u MPLBACKEND $(VENV)/bin/papermill --no-progress-bar --cwd . -k python3 $< $@.tmp.ipynb \
	    -p profile $(PROFILE) -p seed $(SEED) -p data_root $(abspath $(DATA)) -p runs_root $(abspath $(RUNS)) \
	    2> >(grep -v -e "Kernel is running over TCP" -e "^Executing" -e "^Input Notebook" -e "^Output Notebook" \
	         -e "^Working directory" -e "^Black is not installed" >&2); \
	echo "$*: executed in $$(( $$(date +%s) - start )) s (profile $(PROFILE), $$(date -u +%FT%TZ))" | tee -a $(EXECUTED)/times.txt
	$(PY) book/publish.py $@.tmp.ipynb
	@mv $@.tmp.ipynb $@
	@rm -f $(basename $@).log; if [ -f $@.tmp.log ]; then mv $@.tmp.log $(basename $@).log; fi

book: setup notebooks
	$(VENV)/bin/jupyter-book build . --builder html --warningiserror --keep-going --quiet
	$(PY) book/offline_check.py _build/html
	@echo
	@echo "Book built: open $(CURDIR)/_build/html/index.html"

# ---------------------------------------------------------------- tests
# the book is built from the notebooks test-notebooks executed (jupyter-book only: seconds), then browser-tested
test: setup test-unit test-notebooks book test-book

# A built book (from `make book`) is checked again for anything that would need the network, every figure and table
# of the executed notebooks for its provenance caption (profile, data source, features, seed, kimg), then every page
# is opened in headless Chromium with the network cut (no request, console error or broken image; math typeset).
test-book:
	@if [ -d _build/html ]; then $(PY) book/offline_check.py _build/html && $(PY) book/provenance_check.py $(EXECUTED) \
	  && $(PY) book/browser_check.py _build/html; \
	else echo "test-book: no _build/html (run 'make book' to build and check it)"; fi

lint: $(STAMP)
	$(VENV)/bin/ruff check medgan tests book

# One test file, one worker (--dist loadfile): a module's expensive fixtures (the trained U-Net, a notebook rerun's
# data and runs) are built once. Not --dist loadgroup: pytest 9 ignores the group xdist 3.8 writes into
# Item._nodeid (pytest reads Item._id), so xdist_group marks silently split a module across workers.
# tests/test_test_runner.py checks this line does what it says.
XDIST        ?= -n 2 --dist loadfile
test-unit: $(STAMP) lint
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS) tests

# nbval re-executes every executed notebook in a fresh kernel: cells tagged nbval-check-output (the study's
# numbers, printed rounded) must print exactly what they printed at execution; every other cell must run.
test-notebooks: notebooks
	@test -n "$(EXECUTED_NB)" || { echo "no notebooks under notebooks/ to validate" >&2; exit 1; }
	$(PY) -m pytest --nbval-lax -p no:randomly $(EXECUTED_NB)

bench: $(STAMP)
	$(MEDGAN) bench train --model dcgan --size 128 --batch 64
	$(MEDGAN) bench fid --n 200

# GPU readiness in one command, on a machine with its own python3 + torch (+ torchvision) and no registry:
# dependencies whose import fails are installed from wheelhouse/ (no index, no deps); medgan is this checkout.
# One JSON + one markdown table in $(RUNS)/bench-gpu/ (≤ 8 min on one H100/H200).
BENCH_PY       ?= python3
WHEELHOUSE     ?= wheelhouse
WHEEL_PYTHONS  ?=
BENCH_WHEELS   := pytorch-fid==0.3.0 tqdm==4.70.1
BINARY_WHEELS  := numpy==2.4.6 scipy==1.17.1 Pillow==13.0.0

bench-gpu:
	$(BENCH_PY) benchmarks/bench_gpu.py --wheelhouse $(WHEELHOUSE) --out $(RUNS)/bench-gpu

# Pure-Python wheels always; `make wheelhouse WHEEL_PYTHONS="3.12"` adds numpy/scipy/Pillow for those CPython
# versions (manylinux x86-64) when the GPU machine lacks them too.
wheelhouse: | $(STAMP)
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: -d $(WHEELHOUSE) $(BENCH_WHEELS)
	for v in $(WHEEL_PYTHONS); do \
	  $(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version $$v \
	    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d $(WHEELHOUSE) $(BINARY_WHEELS); \
	done
	@ls $(WHEELHOUSE)

clean:
	rm -rf _build $(EXECUTED) .pytest_cache

distclean: clean
	rm -rf $(VENV) node_modules book/_static/mathjax $(DATA) runs
