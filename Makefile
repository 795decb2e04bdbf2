# The book: `make book` runs every chapter notebook with papermill, then jupyter-book (see scripts/build_book.py).
# Variables pass through the environment: make book DATA=../shared/data/jsrt_scr MODEL=vit_b MAX_IMAGES=8 ...
PYTHON ?= .venv/bin/python
SITE ?= _build/html

export DATA MODEL CHECKPOINT MASK_OUTPUT STRUCTURE SPLIT_FILE MAX_IMAGES EPOCHS STEPS LR SEED DEVICE OUT \
	PHANTOM_N PHANTOM_SIZE HEATMAP_IMAGES SAMPOT_THREADS \
	BOX_IMAGES BOX_EPOCHS BOX_SEEDS BOX_STRUCTURES BOX_EXTRA_JITTERS BOX_COMPARE_IMAGES SEEDS COMPARE_IMAGES \
	SAMPOT_EMBEDDINGS \
	SAMPOT_REPO_URL BOOK_LANES

.PHONY: book book-quick book-test app-test api-check results results-check lowest-direct

book:
	$(PYTHON) scripts/build_book.py

# A quick look, not numbers to quote: 6 images per split (3 in the LiteMedSAM chapter), short training and evolution.
book-quick:
	MAX_IMAGES=$${MAX_IMAGES:-6} EPOCHS=$${EPOCHS:-5} STEPS=$${STEPS:-10} PHANTOM_N=$${PHANTOM_N:-24} \
		BOX_IMAGES=$${BOX_IMAGES:-3} BOX_EPOCHS=$${BOX_EPOCHS:-5} $(PYTHON) scripts/build_book.py

# The API page alone, with the book's autodoc and napoleon settings, failing on any Sphinx warning (seconds).
api-check:
	$(PYTHON) scripts/check_api_docs.py

# Headless Chromium, network off: every page loads without a console error and every plotly figure draws.
book-test:
	$(PYTHON) -m pytest tests/browser --site $(SITE) -v

# The live app in headless Chromium: `sampot app` (Voila) on 127.0.0.1 with SAM-Nano, clicked, evolved, its mask
# downloaded, a broken image named on the page; network off, no console error (about two minutes).
app-test:
	$(PYTHON) -m pytest tests/browser --live -v

# The full-size results on JSRT/SCR (DATA, default ../shared/data/jsrt_scr) into results/: resumable, hours on 2 CPU
# cores (scripts/make_results.py; ONLY="run ..." and SEEDS="0 1 2" narrow it).
results:
	$(PYTHON) scripts/make_results.py $(if $(ONLY),--only $(ONLY)) $(if $(SEEDS),--seeds $(SEEDS))

# Re-run the first CHECK_IMAGES test images of a committed run (of each run ONLY names) and fail unless every
# per-image row is the same.
results-check:
	$(PYTHON) scripts/make_results.py --check $${CHECK_IMAGES:-3} $(if $(ONLY),--only $(ONLY))

# The lower bounds in pyproject.toml, tried: a fresh venv where every direct dependency is the lowest release its
# bound allows (uv's --resolution lowest-direct; what they depend on is resolved as usual), then the fast tests.
# torch and torchvision come first, from pip, and are held at what pip installed (--override): uv does not see
# the wheels a machine's pip is set up to take from its own disk and would download a CUDA build of several GB;
# so this target does not try torch's own lower bound. What pip brought along with them (numpy, pillow,
# filelock) is re-resolved (--upgrade-package for each direct dependency), else uv would keep it as installed.
# LOWEST_TESTS chooses the tests (default: all fast ones); the resolved versions land in $(LOWEST_VENV)/resolved.txt.
# Measured on a shared 2-core machine: 12 min (pip and uv 6, the 430 fast tests 6), all passed.
LOWEST_VENV ?= .venv-lowest
LOWEST_TESTS ?= -m "not slow"
lowest-direct:
	rm -rf $(LOWEST_VENV)
	python3 -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/pip install -q uv torch torchvision
	$(LOWEST_VENV)/bin/python scripts/lowest_direct_args.py $(LOWEST_VENV)/torch-held.txt > $(LOWEST_VENV)/uv-args.txt
	$(LOWEST_VENV)/bin/uv pip install --python $(LOWEST_VENV)/bin/python --resolution lowest-direct \
		$$(cat $(LOWEST_VENV)/uv-args.txt) -e ".[test,book]"
	$(LOWEST_VENV)/bin/uv pip freeze --python $(LOWEST_VENV)/bin/python > $(LOWEST_VENV)/resolved.txt
	SAMPOT_THREADS=$${SAMPOT_THREADS:-1} OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} \
		$(LOWEST_VENV)/bin/python -m pytest -q -p no:cacheprovider $(LOWEST_TESTS)
