# The book: `make book` runs every chapter notebook with papermill, then jupyter-book (see scripts/build_book.py).
# Variables pass through the environment: make book DATA=../shared/data/jsrt_scr MODEL=vit_b MAX_IMAGES=8 ...
PYTHON ?= .venv/bin/python
SITE ?= _build/html

export DATA MODEL CHECKPOINT MASK_OUTPUT STRUCTURE SPLIT_FILE MAX_IMAGES EPOCHS STEPS LR SEED DEVICE OUT \
	PHANTOM_N PHANTOM_SIZE HEATMAP_IMAGES SAMPOT_THREADS \
	BOX_IMAGES BOX_EPOCHS BOX_SEEDS BOX_STRUCTURES BOX_EXTRA_JITTERS BOX_COMPARE_IMAGES SEEDS COMPARE_IMAGES \
	SAMPOT_EMBEDDINGS \
	SAMPOT_REPO_URL BOOK_LANES

.PHONY: book book-quick book-test app-test results results-check

book:
	$(PYTHON) scripts/build_book.py

# A quick look, not numbers to quote: 6 images per split (3 in the LiteMedSAM chapter), short training and evolution.
book-quick:
	MAX_IMAGES=$${MAX_IMAGES:-6} EPOCHS=$${EPOCHS:-5} STEPS=$${STEPS:-10} PHANTOM_N=$${PHANTOM_N:-24} \
		BOX_IMAGES=$${BOX_IMAGES:-3} BOX_EPOCHS=$${BOX_EPOCHS:-5} $(PYTHON) scripts/build_book.py

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

# Re-run the first CHECK_IMAGES test images of a committed run and fail unless every per-image row is the same.
results-check:
	$(PYTHON) scripts/make_results.py --check $${CHECK_IMAGES:-3}
