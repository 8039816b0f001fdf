# videoseal-tflite. The first two targets a user needs: `make convert`, `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/videoseal-tflite
STAMP := $(VENV)/.installed
# Conversion defaults. The compact cards ship trained weights, so they convert offline:
#   make convert                                  the default card (store.artifact.DEFAULT_CARD: compact64), all variants + report
#   make convert CARD=compact_robust              the 16-bit card that was the default before compact64
#   make convert CARD=videoseal_1.0 CHECKPOINT=ckpt.pth
#   make convert CARD=videoseal_0.0 RANDOM_INIT=0  official architecture, untrained (labelled random-init)
#   make convert-official                         both official cards, random-init seed 0
CARD ?=
# empty CARD: the package's default card, read when the recipe runs (after setup), so it is written only in cli.py
CARD_OR_DEFAULT = $(or $(CARD),$(shell $(PY) -c 'from videoseal_tflite.store.artifact import DEFAULT_CARD; print(DEFAULT_CARD)'))
CHECKPOINT ?=
RANDOM_INIT ?=
ARTIFACTS ?= artifacts
PYTEST_ARGS ?=
# the browser tests' prerequisites (web/, `make setup-web`): defined before `test`, whose prerequisites they are
CHROMIUM := /usr/bin/chromium
WEB_STAMP := web/node_modules/.installed
WEB_PREREQS := $(WEB_STAMP) $(CHROMIUM)
# make fuzz: random (not derandomized) mutations of a real model through inspect + load; ~2 s per example
FUZZ_EXAMPLES ?= 60

.PHONY: setup setup-npu convert convert-official validate bench test test-fast lint fuzz clean lock setup-web web test-web bench-web

setup: $(STAMP)

# Reuses .venv when it exists; reinstalls only when the lock or pyproject changed.
$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements.lock
	@# triton arrives with some torch installs; with tensorflow in the same process it segfaults
	$(PY) -m pip uninstall -y -q triton 2>/dev/null || true
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

convert: $(STAMP)
	$(CLI) convert --artifacts $(ARTIFACTS) --card $(CARD_OR_DEFAULT) $(if $(CHECKPOINT),--checkpoint "$(CHECKPOINT)") $(if $(RANDOM_INIT),--random-init $(RANDOM_INIT))
	$(CLI) validate --artifacts $(ARTIFACTS) --card $(CARD_OR_DEFAULT)

convert-official: $(STAMP)
	$(CLI) convert --artifacts $(ARTIFACTS) --all-official --random-init 0
	$(CLI) validate --artifacts $(ARTIFACTS) --card videoseal_0.0
	$(CLI) validate --artifacts $(ARTIFACTS) --card videoseal_1.0

# the full report: every card present, full-resolution attacks included, and the false positives of each FP32
# detector on UNMARKED unmarked images (issue #26's minimum: 2,000; about 0.7 s an image on 2 cores)
UNMARKED ?= 2000
validate: $(STAMP)
	$(CLI) validate --artifacts $(ARTIFACTS) --attacks --unmarked $(UNMARKED)

# Benchmark record (artifacts/bench/<card>.json + .md): the default card and both official cards (random-init);
# video fps (video_compact.*), validate's memory from 16 to 10,000 images (validate_scale.*), and the default card
# beside invisible-watermark's three methods on the same images and attacks (peers.*, the [peers] extra)
bench: $(STAMP)
	$(CLI) bench --card compact
	$(CLI) bench --card compact --video --artifacts $(ARTIFACTS)
	$(CLI) bench --card compact --validate-scale --artifacts $(ARTIFACTS)
	$(CLI) bench --card $(CARD_OR_DEFAULT) --sizes --artifacts $(ARTIFACTS)
	$(CLI) bench --card $(CARD_OR_DEFAULT) --peers --artifacts $(ARTIFACTS)
	$(CLI) bench --card videoseal_0.0 --random-init 0
	$(CLI) bench --card videoseal_1.0 --random-init 0
	$(PY) scripts/readme_performance.py

# lint first: a style error fails in seconds, not after the slow tests
test: $(STAMP) lint $(WEB_PREREQS)
	$(PY) -m pytest $(PYTEST_ARGS)

# the fast tier (pytest marker `fast`): no conversion, under a minute
test-fast: $(STAMP)
	$(PY) -m pytest -m fast $(PYTEST_ARGS)

# ruff and mypy (the runtime layer), pinned in requirements.lock, configured in pyproject.toml
lint: $(STAMP)
	$(VENV)/bin/ruff check videoseal_tflite scripts tests experiments
	$(VENV)/bin/ruff format --check videoseal_tflite scripts tests experiments
	$(VENV)/bin/mypy

# the model mutations above, and damaged JPEG/PNG/MP4 files through embed + detect (FUZZ_MEDIA_EXAMPLES per kind,
# default 300, ~0.2 s each)
fuzz: $(STAMP)
	VIDEOSEAL_TFLITE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) VIDEOSEAL_TFLITE_FUZZ_MEDIA_EXAMPLES=$(or $(FUZZ_MEDIA_EXAMPLES),300) \
		VIDEOSEAL_TFLITE_FUZZ_RANDOM=1 $(PY) -m pytest tests/test_fuzz.py tests/test_fuzz_media.py $(PYTEST_ARGS)

clean:
	rm -rf $(ARTIFACTS)/*/ .pytest_cache

# The NPU extra (README, "NPU (offline AOT compile)"): ai-edge-litert + vendor SDK packages in their own venv,
# never in .venv. --no-cache-dir: an SDK sdist built offline is an empty wheel; a later build must not reuse it.
NPU_VENV := .venv-npu
NPU_PY := $(NPU_VENV)/bin/python
setup-npu: $(NPU_VENV)/.installed

$(NPU_VENV)/.installed: requirements-npu.lock
	@test -x $(NPU_PY) || $(PYTHON) -m venv $(NPU_VENV)
	$(NPU_PY) -m pip install -q --disable-pip-version-check --no-cache-dir --no-deps -r requirements-npu.lock
	PYTHONPATH=. $(NPU_PY) -m videoseal_tflite.tflite.npu --list-targets
	@touch $@

lock: $(STAMP)
	$(PY) -m pip freeze --exclude-editable | sort -f > requirements.lock.new && mv requirements.lock.new requirements.lock

# ---- The web page (web/, docs/web.md): the same .tflite files in a browser, with LiteRT.js ----------------------
#   make web                   npm ci, then serve web/ and the release RELEASE on http://127.0.0.1:$(PORT)/ (COOP/COEP)
#   make test-web IMAGES=DIR   browser vs Python runtime on DIR's images, every variant: $(ARTIFACTS)/web/parity.json
#   make bench-web             browser ms per embed/detect beside Python (part of `make bench`): $(ARTIFACTS)/bench/web.*
# The browser tests need WEB_PREREQS (npm packages pinned by web/package-lock.json, Debian's Chromium);
# tests/test_web.py, part of `make test`, fails without them (it never skips).
PORT ?= 8765
RELEASE ?= $(ARTIFACTS)
IMAGES ?=
# the photos the Python tests use too (skimage's bundled data), when IMAGES is not given
WEB_IMAGES = $(or $(IMAGES),$(ARTIFACTS)/web/images)
WEB_SAMPLE_IMAGES = import pathlib, sys, skimage.data; from PIL import Image; d = pathlib.Path(sys.argv[1]); \
	d.mkdir(parents=True, exist_ok=True); \
	[Image.fromarray(getattr(skimage.data, n)()).save(d / f"{n}.png") for n in ("chelsea", "coffee", "camera", "astronaut")]

setup-web: $(WEB_PREREQS)

$(WEB_STAMP): web/package.json web/package-lock.json
	cd web && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund
	@touch $@

# Debian's package (CI runs as root); puppeteer-core drives it and downloads no browser
$(CHROMIUM):
	apt-get update && apt-get install -y chromium

web: $(WEB_STAMP)
	@test -f $(RELEASE)/manifest.json || $(MAKE) convert ARTIFACTS=$(RELEASE)
	PORT=$(PORT) node web/serve.mjs --release $(RELEASE)

test-web: $(STAMP) $(WEB_PREREQS)
	@test -f $(RELEASE)/manifest.json || $(MAKE) convert ARTIFACTS=$(RELEASE)
	@test -n "$(IMAGES)" || $(PY) -c '$(WEB_SAMPLE_IMAGES)' $(WEB_IMAGES)
	node web/test/parity.mjs --release $(RELEASE) --images $(WEB_IMAGES) --out $(ARTIFACTS)/web/parity.json \
		--cli $(CLI) $(if $(CARD),--card $(CARD))

bench-web: $(STAMP) $(WEB_PREREQS)
	@test -f $(RELEASE)/manifest.json || $(MAKE) convert ARTIFACTS=$(RELEASE)
	node web/test/bench.mjs --release $(RELEASE) --out $(ARTIFACTS)/bench/web.json --python $(PY) \
		$(if $(CARD),--card $(CARD))

bench: bench-web
