# `make demo` and `make test` work on a fresh machine with only Python 3.11:
# both create .venv when it is missing and install reel into it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
REEL := $(VENV)/bin/reel
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= demo_out

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, from its CPU wheel, so nothing else can pull a CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e .
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests

demo: $(STAMP)
	$(REEL) data make-shapes out_dir=$(DEMO_DIR)/shapes num_clips=24 height=64 width=64 num_frames=17
	$(REEL) eval world manifest=$(DEMO_DIR)/shapes/metadata.jsonl
	$(REEL) data check data=folder data.metadata=$(DEMO_DIR)/shapes/metadata.jsonl \
		train.batch_size=4 contact_sheet=$(DEMO_DIR)/contact_sheet.png

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
