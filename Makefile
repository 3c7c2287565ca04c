# clipnotes: `make book` builds the site, `make test` verifies everything.
# Both create/refresh the virtual environment in .venv first, and are safe to rerun.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.clipnotes-installed
FINGERPRINT := _build/.clipnotes-fingerprint
EXECUTED := $(CURDIR)/_build/executed
NBVAL := HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 \
	$(BIN)/python -m pytest notebooks --nbval-lax --nbval-current-env --nbval-cell-timeout=900 -p no:randomly -q

# Offline, headless, deterministic, quiet progress bars.
export CLIPNOTES_PROFILE ?= mini
export CLIPNOTES_SEED ?= 0
export CLIPNOTES_CACHE ?= $(CURDIR)/.cache/clipnotes
export PYTHONHASHSEED := 0
export TQDM_DISABLE := 1
export HF_HUB_OFFLINE := 1
export PYDEVD_DISABLE_FILE_VALIDATION := 1
export CLIPNOTES_SITE := 1                  # glued numbers render inline; no `name = value` lines

.PHONY: help env book test unit nbval test-paper seeds bounds break-claims book-strict site-strict times bench pretrain-mini doctor clean

help:
	@echo "make book   - set up .venv, execute every chapter (mini profile), build _build/html"
	@echo "make test   - set up .venv, unit tests, every notebook under nbval, the strict site built from that execution,"
	@echo "              and the paper check (make test-paper)"
	@echo "make test-paper - every chapter's paper path under nbval on this CPU: real architectures at random"
	@echo "              weights, fake datasets in the real formats, tiny counts, on a pretend GPU that refuses"
	@echo "              CPU tensors (as CUDA does); claims reported, not checked"
	@echo "make seeds  - run every notebook under nbval for CLIPNOTES_SEED 1 to 4 too (claims must not hang on one seed;"
	@echo "              SEEDS=\"1 2\" for fewer); the results page of the next make book or make test shows them"
	@echo "make bounds - the unit tests on pyproject's lower bounds (requirements-min.txt, in .venv-min; a second torch)"
	@echo "make break-claims - break chapters 4, 5 and 7's methods on purpose: their claims cells must fail"
	@echo "make times  - every chapter cold (empty cache) and warm: seconds and slowest cells"
	@echo "make bench  - run the benchmarks in benchmarks/"
	@echo "make doctor - check the installation"

$(STAMP): pyproject.toml requirements-lock.txt
	@echo "==> setting up the virtual environment in $(VENV)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-lock.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

env: $(STAMP)

# Throw the notebook execution cache away whenever the package or its checkpoint changed,
# so the book never shows outputs of older code.
cache-guard: $(STAMP)
	@mkdir -p _build
	@fp=$$(find clipnotes -name "*.py" -o -path "clipnotes/assets/*" -type f | LC_ALL=C sort | xargs cat | sha256sum | cut -c1-16); \
	if [ "$$(cat $(FINGERPRINT) 2>/dev/null)" != "$$fp" ]; then \
	  echo "==> clipnotes changed: clearing the notebook execution cache"; \
	  rm -rf _build/.jupyter_cache; echo $$fp > $(FINGERPRINT); fi

book: cache-guard
	@echo "==> executing the chapters (profile $$CLIPNOTES_PROFILE) and building the site"
	$(BIN)/jupyter-book build . --keep-going
	@echo "==> open _build/html/index.html"

book-strict: cache-guard
	@echo "==> building the book with warnings as errors (executing the chapters)"
	$(BIN)/jupyter-book build . -W --keep-going

unit: $(STAMP)
	@echo "==> unit tests (sockets disabled)"
	MPLBACKEND=Agg $(BIN)/python -m pytest tests --disable-socket --allow-unix-socket -q --durations=10

# nbval executes every chapter and asserts its claims; notebooks/conftest.py keeps that
# execution in _build/executed, and the strict site is built from it (no second execution).
nbval: $(STAMP)
	@echo "==> every notebook under nbval"
	rm -rf $(EXECUTED)
	CLIPNOTES_EXECUTED=$(EXECUTED) $(NBVAL)

site-strict: $(STAMP)
	@echo "==> the site from nbval's execution, warnings as errors"
	$(BIN)/python -m clipnotes assemble-site --executed $(EXECUTED) --out _build/site-src
	$(BIN)/jupyter-book build _build/site-src --path-output $(CURDIR) -W --keep-going

# The paper check: every chapter's `paper` path, cell by cell, at random weights on fake data,
# on a pretend GPU (clipnotes/pretend_gpu.py) so that a CPU tensor meeting a GPU one fails here.
test-paper: $(STAMP)
	@echo "==> every notebook's paper path under nbval (the paper check: random weights, fake data, a pretend GPU)"
	CLIPNOTES_PROFILE=paper CLIPNOTES_PAPER_CHECK=1 CLIPNOTES_PRETEND_GPU=1 $(NBVAL)
	@du -sh "$(CLIPNOTES_CACHE)/paper-check" | sed 's/^/==> disk the paper check cached: /'

SEEDS ?= 1 2 3 4
seeds: $(STAMP)
	@for s in $(SEEDS); do echo "==> every notebook under nbval, CLIPNOTES_SEED=$$s"; \
	  CLIPNOTES_SEED=$$s $(NBVAL) || exit 1; done

# The lower bounds are true: pyproject's minimum of every dependency, installed exactly
# (requirements-min.txt, kept in agreement by tests/test_bounds.py), passes the unit tests.
# Not part of make test: it installs a second torch (about 3 GB). The site's tests need
# the book's own stack and are left to make test.
MIN_VENV := .venv-min
bounds:
	test -x $(MIN_VENV)/bin/python || $(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-min.txt pytest pytest-socket
	$(MIN_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	MPLBACKEND=Agg $(MIN_VENV)/bin/python -m pytest tests --disable-socket --allow-unix-socket -q \
	  --ignore=tests/test_site.py

# The claims can fail: each chapter's method broken on purpose (tests/break_claims.py) must
# stop its claims cell with an AssertionError. A few minutes a mutation; not part of make test.
break-claims: $(STAMP)
	$(BIN)/python tests/break_claims.py

# Where the time goes: every chapter from an empty cache (cold), then again (warm).
times: $(STAMP)
	rm -rf _build/times
	-CLIPNOTES_CACHE=$(CURDIR)/_build/times/cache CLIPNOTES_EXECUTED=$(CURDIR)/_build/times/cold $(NBVAL)
	-CLIPNOTES_CACHE=$(CURDIR)/_build/times/cache CLIPNOTES_EXECUTED=$(CURDIR)/_build/times/warm $(NBVAL)
	$(BIN)/python -m clipnotes times _build/times

test: unit nbval site-strict test-paper
	@echo "==> all tests passed"

# On a CPU the model benchmarks run at small sizes; on a CUDA machine drop the size flags
# (gpu_check.py picks its own: every chapter's paper work at full size on a GPU, tiny on a CPU).
bench: $(STAMP)
	$(BIN)/python benchmarks/render_speed.py
	$(BIN)/python benchmarks/coop_epoch.py --model clipnotes-mini
	$(BIN)/python benchmarks/finetune_throughput.py --batch 8 --steps 6
	$(BIN)/python benchmarks/gpu_check.py $$($(BIN)/python -c "import torch; print('' if torch.cuda.is_available() else '--tiny')")

doctor: $(STAMP)
	$(BIN)/python -m clipnotes doctor

pretrain-mini: $(STAMP)
	$(BIN)/python -m clipnotes pretrain-mini
	$(BIN)/python -m clipnotes pretrain-mini --crops

clean:
	rm -rf _build .cache .pytest_cache
