#!/usr/bin/env bash
# The GPU check: one call on a machine with one CUDA GPU, ≤ 8 minutes.
#
#   bash benchmarks/gpu_check.sh OUT_DIR
#
# 1. installs what the image lacks from wheels carried in .whl/ (benchmarks/fetch_gpu_wheels.sh makes them;
#    the lent image has Python 3.12, torch, triton, accelerate but no webdataset/deepspeed), and this package
#    without dependencies;
# 2. runs the gpu-marked tests (kernels compiled for real, bf16, compile, ...);
# 3. runs the full benchmark: OUT_DIR/throughput.json (also written after every section, so a timeout keeps
#    what was measured), OUT_DIR/plots/*.png, OUT_DIR/results/*.csv.
# Everything is logged to OUT_DIR/gpu_check.log. Every part runs under `timeout`; the exit status is non-zero
# when any part failed. Environment: PYTHON (default python3), GPU_CHECK_TEST_S / GPU_CHECK_BENCH_S (limits).
set -uo pipefail

OUT=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
PY=${PYTHON:-python3}
LOG="$OUT/gpu_check.log"
: > "$LOG"
exec > >(tee -a "$LOG") 2>&1

START=$(date +%s)
FAILED=()
part() { echo; echo "=== $* [t=$(( $(date +%s) - START )) s]"; }
run_part() {  # run_part NAME SECONDS CMD...: a timed part; a failure is recorded, never fatal
    local name=$1 limit=$2; shift 2
    local t0=$(date +%s) rc
    timeout --kill-after=15 "$limit" "$@"
    rc=$?
    echo "--- $name: exit $rc after $(( $(date +%s) - t0 )) s (limit ${limit} s)"
    if [ "$rc" -ne 0 ]; then FAILED+=("$name (exit $rc)"); fi
    return 0
}

part "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.memory --format=csv 2>&1 || echo "nvidia-smi not available"
"$PY" - <<'EOF'
import platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| available", torch.cuda.is_available())
try:
    import triton; print("triton", triton.__version__)
except Exception as e:
    print("triton: not importable:", e)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device:", p.name, f"{p.total_memory / 2**30:.0f} GiB", p.multi_processor_count, "SMs")
EOF

part "install missing pieces"
SITE=/tmp/iiae_site
if compgen -G ".whl/*.whl" > /dev/null; then
    echo "installing carried wheels: $(ls .whl/*.whl | xargs -n1 basename | tr '\n' ' ')"
    run_part "carried wheels" 120 "$PY" -m pip install -q --no-index --no-deps --target "$SITE" .whl/*.whl
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "no .whl/ folder: nothing carried (make one with benchmarks/fetch_gpu_wheels.sh)"
fi
# the checkout itself first on the path (the PyPI package `kernels` is someone else's)
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if ! (cd /tmp && "$PY" -c "import engine.cli" 2>/dev/null) || ! command -v iiae > /dev/null; then
    # the `iiae` console script for tests that call it; no dependencies, no network, no build isolation
    timeout 120 "$PY" -m pip install -q --no-deps --no-build-isolation -e . \
        || echo "(editable install failed: using PYTHONPATH=$REPO only)"
fi
"$PY" - <<'EOF'
import importlib
need = ["torch", "triton", "accelerate", "webdataset", "braceexpand", "einops", "huggingface_hub", "safetensors",
        "datasets", "pydantic", "yaml", "numpy", "scipy", "PIL", "tqdm", "matplotlib", "tensorboard", "pytest"]
optional = ["deepspeed", "transformers", "pytest_timeout"]
missing = [m for m in need if importlib.util.find_spec(m) is None]
print("MISSING (carry wheels for these):", " ".join(missing) if missing else "none")
print("optional, absent:", " ".join(m for m in optional if importlib.util.find_spec(m) is None) or "none")
import kernels, engine
print("kernels from", kernels.__file__, "| engine from", engine.__file__)
EOF

part "gpu-marked tests"
run_part "pytest -m gpu" "${GPU_CHECK_TEST_S:-150}" "$PY" -m pytest -q -m gpu -p no:cacheprovider \
    --continue-on-collection-errors -rfEs --junitxml="$OUT/pytest_gpu.xml"

part "benchmark"
# GPU-only sections first: if the limit cuts the run short, the figures a CPU machine cannot take are in.
run_part "throughput.py" "${GPU_CHECK_BENCH_S:-270}" "$PY" benchmarks/throughput.py --json \
    --sections kernels,paper,engine,loader --kernel-budget-s 90 --paper-timeout-s 110 --block-s 0.5 \
    --plot "$OUT/plots" --results "$OUT/results" --json-out "$OUT/throughput.json"

part "done"
echo "outputs in $OUT:"; ls -R "$OUT" | head -40
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "FAILED: ${FAILED[*]}"
    exit 1
fi
echo "all parts passed"
