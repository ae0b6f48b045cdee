#!/usr/bin/env bash
# Download, on a machine with network access, the wheels the lent GPU image lacks into .whl/ (git-ignored),
# for Python 3.12 on manylinux x86_64. benchmarks/gpu_check.sh installs them with --no-index --no-deps.
#
#   bash benchmarks/fetch_gpu_wheels.sh                 # webdataset + braceexpand (its pure-Python dependency)
#   bash benchmarks/fetch_gpu_wheels.sh einops pydantic pydantic-core   # plus whatever gpu_check.sh listed as MISSING
#
# --no-deps on purpose: webdataset's other dependencies (numpy, pyyaml) are already on the image (accelerate needs
# them), and a second numpy on PYTHONPATH would shadow the one torch was built against. Name every extra wheel.
# DeepSpeed is not here: it is published as an sdist only (it builds its ops at install or first use), and
# --only-binary=:all: cannot fetch it; the DeepSpeed gpu tests skip without it. To try it anyway, carry the sdist
# (`pip download --no-deps --no-binary=:all: deepspeed -d .whl/`) and install it on the GPU machine with
# `pip install --no-deps --no-build-isolation` (needs a compiler, ninja and py-cpuinfo/hjson/msgpack there).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p .whl
PY=${PYTHON:-python3}
"$PY" -m pip download --dest .whl --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --abi cp312 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    webdataset braceexpand "$@"
ls -l .whl
