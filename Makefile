# videoseal-tflite. The first two targets a user needs: `make convert`, `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/videoseal-tflite
STAMP := $(VENV)/.installed
# Conversion defaults (override: make convert CARD=videoseal_1.0 CHECKPOINT=path/to/ckpt.pth)
CARD ?=
CHECKPOINT ?=
SEED ?= 0
ARTIFACTS ?= artifacts
PYTEST_ARGS ?=

.PHONY: setup convert test inspect clean lock

setup: $(STAMP)

# Reuses .venv when it exists; reinstalls only when the lock or pyproject changed.
$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements.lock
	@# triton arrives with some torch installs; with tensorflow in the same process it segfaults (FINDINGS §1)
	$(PY) -m pip uninstall -y -q triton 2>/dev/null || true
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

convert: $(STAMP)
ifeq ($(CARD),)
	$(CLI) convert --out $(ARTIFACTS) --all-official --random-init $(SEED)
else ifeq ($(CHECKPOINT),)
	$(CLI) convert --out $(ARTIFACTS) --card $(CARD)
else
	$(CLI) convert --out $(ARTIFACTS) --card $(CARD) --checkpoint "$(CHECKPOINT)"
endif

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(ARTIFACTS)/*/ .pytest_cache

lock: $(STAMP)
	$(PY) -m pip freeze --exclude-editable | sort -f > requirements.lock.new && mv requirements.lock.new requirements.lock
