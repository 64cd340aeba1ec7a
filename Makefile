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
	rm -rf $(DEMO_DIR)
	# two canvas sizes, so the folder dataset has two buckets to fill
	$(REEL) data make-shapes out_dir=$(DEMO_DIR)/shapes/64x64 num_clips=24 height=64 width=64 num_frames=17
	$(REEL) data make-shapes out_dir=$(DEMO_DIR)/shapes/64x96 num_clips=12 height=64 width=96 num_frames=17 seed=1
	$(REEL) eval world manifest=$(DEMO_DIR)/shapes/64x64
	$(REEL) data scan dir=$(DEMO_DIR)/shapes out=$(DEMO_DIR)/shapes/all.jsonl
	$(REEL) data check data=folder data.metadata=$(DEMO_DIR)/shapes/all.jsonl data.crop=center \
		data.buckets=[64x64x17:4,64x96x17:3] contact_sheet=$(DEMO_DIR)/contact_sheet.png \
		train.run_dir=$(DEMO_DIR)/run
	# the bundled demo autoencoder reconstructs a few clips: side-by-side PNG and PSNR/SSIM
	$(REEL) eval autoencoder data=folder data.metadata=$(DEMO_DIR)/shapes/64x64/metadata.jsonl \
		data.start=center data.crop=center num_clips=6 side_by_side=$(DEMO_DIR)/reconstructions.png
	# the bundled demo DiT draws twelve prompts (mp4s + contact sheet); the oracle scores what it drew
	$(REEL) sample prompts=tools/demo_prompts.txt out_dir=$(DEMO_DIR)/samples seed=0
	$(REEL) eval world manifest=$(DEMO_DIR)/samples
	# the bundled block-causal DiT makes one long video (8 training lengths, the direction switching every
	# length) chunk by chunk; the oracle scores it window by window
	$(REEL) sample checkpoint=bundled:demo_causal long=true prompts=tools/demo_long.jsonl out_dir=$(DEMO_DIR)/long
	$(REEL) eval world manifest=$(DEMO_DIR)/long

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
