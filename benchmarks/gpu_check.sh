#!/usr/bin/env bash
# The GPU check: the one call a session with a lent CUDA GPU makes. On CUDA its parts' time limits add up to 455 s
# (7.6 min) at worst, about 5 min expected on one H200; every part writes its results before the next starts, and
# one tarball holds everything.
#
#   bash benchmarks/gpu_check.sh OUT_DIR [--gpu-sections-anyway] [--no-deepspeed] [--work DIR] [--parts LIST]
#
# Beforehand, on a machine with network: bash benchmarks/fetch_gpu_wheels.sh (→ .whl/, git-ignored). Then, with
# the device tool: run(command="bash benchmarks/gpu_check.sh $OUT --work /tmp/gpu_check", carry=[".whl"],
# timeout_s=540). What comes back: $OUT/gpu_check.log, $OUT/summary.txt, $OUT/gpu_check.tar.gz (the log, every
# part's log, junit XML, throughput JSON, plots, CSV, the training runs without their weights).
#
# Parts, each under `timeout` (limits: GPU_CHECK_<PART>_S, in seconds):
#   install    carried wheels of .whl/ not present at that version → a temp folder first on PYTHONPATH
#              (pip --no-index --no-deps --target); the DeepSpeed sdist is built meanwhile, in the background
#              (--no-build-isolation --no-deps, DS_BUILD_OPS=0), into its own folder
#   preflight  one Python that imports every required module: any missing → the list and the fetch command,
#              exit 3 within seconds, before any test or benchmark
#   data       64 synthetic MNIST-CDCB pairs at 32 px (engine/data/synthetic.py + iiae prepare)
#   tests          the kernel test files on CUDA (the gpu twins of the parity, gradcheck, Philox and forced
#                  multi-split cases, every unmarked case, the gpu tests; junit XML), then gpu tests elsewhere
#   train_bf16     engine/train.py recipes/debug.yaml train.mixed_precision=bf16
#   train_compile  the same with train.compile=true
#   train_zero2    accelerate launch --config_file recipes/accelerate/deepspeed_zero2.yaml --num_processes 1
#                  engine/train.py recipes/debug.yaml (after the DeepSpeed build)
#   bench_gpu  throughput.py --sections kernels,paper: fused kernels in fp32/bf16/fp16 vs eager and compile,
#              the paper-scale step (fp32 eager vs bf16 + fused + compile); plots, CSV, JSON
#   bench_engine  throughput.py --sections engine,loader: engine vs bare step, loader vs step
# On CUDA the four correctness parts (tests, train_*) run side by side (16 cores; separate logs), the two
# benchmarks alone afterwards. Limits on CUDA: install 30, preflight 30, data 30, then tests 130 | train_bf16 60 |
# train_compile 120 | deepspeed_build 75 (from the start) + train_zero2 90, then bench_gpu 175, bench_engine 60.
#
# --gpu-sections-anyway (no CUDA): the same parts on CPU, one at a time, in tiny sizes, to check the code paths:
# a subset of the kernel gpu twins through the Triton interpreter (IIAE_GPU_TWIN_DEVICE=cpu), 4-step training
# runs (ZeRO-2 where deepspeed is importable), the benchmark in --quick with recipes/debug.yaml as the paper step.
#
# --parts LIST: a comma list of correctness (data, tests, train_*; the default runs all), bench_gpu, bench_engine:
# a second call within the same lease re-runs only what the first left unfinished (install and preflight always
# run; DeepSpeed is built only with correctness). The benchmark's own budgets on CUDA: GPU_CHECK_KERNEL_BUDGET
# (45 s of kernel cases) and GPU_CHECK_PAPER_TIMEOUT (75 s per paper-step variant).
#
# Exit: 0 every part passed; 1 some part failed or timed out; 2 usage, or no CUDA without --gpu-sections-anyway;
# 3 required modules missing. Environment: PYTHON (default python3), GPU_CHECK_WHEELS (default .whl).
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
usage() { sed -n '2,/^set -uo/p' "$REPO/benchmarks/gpu_check.sh" | sed -e '$d' -e 's/^# \{0,1\}//'; }

OUT="" WORK="" ANYWAY=0 NO_DS=0 PARTS=correctness,bench_gpu,bench_engine
while [ $# -gt 0 ]; do
    case "$1" in
        --gpu-sections-anyway) ANYWAY=1 ;;
        --no-deepspeed) NO_DS=1 ;;
        --work) WORK=${2:?--work needs a folder}; shift ;;
        --work=*) WORK=${1#--work=} ;;
        --parts) PARTS=${2:?--parts needs a list}; shift ;;
        --parts=*) PARTS=${1#--parts=} ;;
        -h | --help) usage; exit 0 ;;
        -*) echo "gpu_check.sh: unknown option $1" >&2; exit 2 ;;
        *) if [ -n "$OUT" ]; then echo "gpu_check.sh: one OUT_DIR only" >&2; exit 2; fi; OUT=$1 ;;
    esac
    shift
done
if [ -z "$OUT" ]; then usage >&2; exit 2; fi
wants() { case ",$PARTS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
for part in ${PARTS//,/ }; do
    case "$part" in
        correctness | bench_gpu | bench_engine) ;;
        *) echo "gpu_check.sh: --parts takes correctness, bench_gpu, bench_engine; got $part" >&2; exit 2 ;;
    esac
done
wants correctness || NO_DS=1
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || exit 2
WORK=${WORK:-$OUT/work}
mkdir -p "$WORK" && WORK=$(cd "$WORK" && pwd) || exit 2
cd "$REPO" || exit 2

PY=${PYTHON:-python3}
WHEELS=${GPU_CHECK_WHEELS:-$REPO/.whl}
LOG=$OUT/gpu_check.log
TARBALL=$OUT/gpu_check.tar.gz
SUMMARY=$OUT/summary.txt
STATUS=$WORK/status.tsv
DATA=$WORK/data/debug
SITE=$(mktemp -d /tmp/iiae_gpu_check_site.XXXXXX)
DS_SITE=$SITE/deepspeed
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Ops that DeepSpeed JIT-builds (on CPU its shared-memory comm op, ~2 min on 2 cores; none for ZeRO-2 on CUDA) go
# to a folder of this script's own, kept between its runs: a build cut off by a time limit leaves a lock file that
# would make every later build in ~/.cache/torch_extensions wait for ever. One gpu_check.sh at a time per machine.
export TORCH_EXTENSIONS_DIR=${GPU_CHECK_TORCH_EXTENSIONS:-/tmp/iiae_gpu_check_torch_extensions}
mkdir -p "$TORCH_EXTENSIONS_DIR" && find "$TORCH_EXTENSIONS_DIR" -name lock -type f -delete
# The checkout as the installed package would lay it out (engine/ is `iiae`, kernels/ `iiae.kernels`, recipes/
# `iiae.shipped_recipes`), made of links so that nothing is installed or copied; first on the path, then the
# carried wheels.
mkdir -p "$SITE/project/iiae"
ln -s "$REPO"/engine/* "$SITE/project/iiae/"
ln -s "$REPO/kernels" "$SITE/project/iiae/kernels"
ln -s "$REPO/recipes" "$SITE/project/iiae/shipped_recipes"
export PYTHONPATH="$SITE/project:$SITE/wheels${PYTHONPATH:+:$PYTHONPATH}"

rm -f "$WORK"/*.log "$WORK"/*.xml "$WORK"/*.json "$WORK"/*.check.txt "$WORK"/preflight.env "$SUMMARY"
: > "$LOG"
printf 'part\texit\tseconds\tlimit\tresult\n' > "$STATUS"
exec > >(tee -a "$LOG") 2>&1

START=$(date +%s)
FAILED=()
declare -A PID=() T0=() LIMIT=()
note() { echo "[t=$(($(date +%s) - START)) s] $*"; }

pack() {  # everything in WORK (and the log) into OUT/gpu_check.tar.gz, atomically; no weights, no shards
    [ "$WORK" = "$OUT" ] || cp -f "$LOG" "$WORK/gpu_check.log" 2>/dev/null
    [ -f "$SUMMARY" ] && [ "$WORK" != "$OUT" ] && cp -f "$SUMMARY" "$WORK/summary.txt"
    tar --warning=no-file-changed --exclude=./data --exclude=./fake_mnist --exclude=checkpoints \
        --exclude='*.safetensors' --exclude='*.pt' --exclude='*.bin' --exclude='gpu_check.tar.gz*' \
        -czf "$TARBALL.tmp" -C "$WORK" . 2>/dev/null && mv -f "$TARBALL.tmp" "$TARBALL"
}

record() {  # record NAME EXIT SECONDS LIMIT RESULT
    printf '%s\t%s\t%s\t%s\t%s\n' "$@" >> "$STATUS"
    case "$5" in ok | skipped*) ;; *) FAILED+=("$1 ($5)") ;; esac
}

skip_part() { note "--- $1: skipped: $2"; record "$1" - 0 - "skipped: $2"; }

start_part() {  # start_part NAME LIMIT CMD...: in the background, output to WORK/NAME.log
    local name=$1 limit=$2 arg shown=(); shift 2
    if running "$name"; then echo "gpu_check.sh: $name is already running" >&2; return 1; fi
    for arg in "$@"; do [[ $arg == *$'\n'* ]] && shown+=("<python code>") || shown+=("$arg"); done
    note "=== $name (limit $limit s): ${shown[*]}"
    T0[$name]=$(date +%s) LIMIT[$name]=$limit
    timeout --kill-after=10 "$limit" "$@" > "$WORK/$name.log" 2>&1 &
    PID[$name]=$!
}

finish_part() {  # finish_part NAME EXIT: log tail, status line, record, pack
    local name=$1 rc=$2 secs=$(($(date +%s) - ${T0[$1]})) result tail_lines=12
    case "$rc" in 0) result=ok ;; 124 | 137) result="TIMED OUT" ;; *) result=FAILED ;; esac
    case "$name" in bench_*) tail_lines=40 ;; tests) tail_lines=25 ;; esac
    [ "$rc" = 0 ] || tail_lines=$((tail_lines + 15))
    # without progress bars (tqdm's carriage-return frames) and blank lines
    tr '\r' '\n' < "$WORK/$name.log" | grep -v -E '^\s*$|[0-9]+%\||\[A$' | tail -n "$tail_lines" \
        | sed "s/^/  [$name] /"
    note "--- $name: $result (exit $rc) after $secs s (limit ${LIMIT[$name]} s)"
    record "$name" "$rc" "$secs" "${LIMIT[$name]}" "$result"
    unset "PID[$name]"
    after_part "$name" "$rc"
    pack
}

running() {  # running [NAMES...]: true while one of them (default: any part) has not ended
    local name
    if [ $# = 0 ]; then [ ${#PID[@]} -gt 0 ]; return; fi
    for name in "$@"; do [ -n "${PID[$name]:-}" ] && return 0; done
    return 1
}

wait_parts() {  # wait_parts [NAMES...]: until those (default: all) have ended; any part that ends is handled
    local name rc
    while running "$@"; do
        for name in "${!PID[@]}"; do
            if ! kill -0 "${PID[$name]}" 2>/dev/null; then
                wait "${PID[$name]}"
                rc=$?
                finish_part "$name" "$rc"
            fi
        done
        if running "$@"; then sleep 1; fi
    done
}

run_part() { start_part "$@"; wait_parts "$1"; }  # run_part NAME LIMIT CMD...: one part, waited for

PHASE=setup DS_READY=pending ZERO2_STATE=pending
after_part() {  # after_part NAME EXIT: what follows a part that ended
    case "$1" in
        train_*) if [ "$2" = 0 ]; then check_run "$1"; fi ;;
        deepspeed_build)
            if [ "$2" = 0 ]; then DS_READY=yes; else DS_READY=failed; fi
            if [ "$PHASE" = zero2 ]; then start_zero2; fi ;;  # its turn came while the build was running
    esac
}

summarize() {
    "$PY" - "$WORK" "$SUMMARY" $(($(date +%s) - START)) <<'EOF' || echo "(summary failed)"
import json, sys
import xml.etree.ElementTree as ET
from pathlib import Path

work, out = Path(sys.argv[1]), Path(sys.argv[2])


def fmt(v):
    return f"{v:.3g}" if isinstance(v, float) else str(v)


lines = [f"GPU check summary ({sys.argv[3]} s in all)", "", "part           exit  seconds  limit  result"]
rows = [ln.split("\t") for ln in (work / "status.tsv").read_text().splitlines()[1:] if ln.strip()]
lines += [f"{p:<14} {e:>4}  {s:>7}  {lim:>5}  {r}" for p, e, s, lim, r in rows]
for xml in sorted(work.glob("pytest_*.xml")):
    try:
        suites = ET.parse(xml).getroot()
        suites = [suites] if suites.tag == "testsuite" else list(suites)
        n = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
        bad = [f"{c.get('classname')}::{c.get('name')}" for s in suites for c in s.iter("testcase")
               if c.find("failure") is not None or c.find("error") is not None]
        lines.append(f"\n{xml.name}: {n['tests']} tests, {n['tests'] - n['failures'] - n['errors'] - n['skipped']} "
                     f"passed, {n['failures']} failed, {n['errors']} errors, {n['skipped']} skipped")
        lines += [f"  FAILED {b}" for b in bad[:20]]
    except Exception as err:
        lines.append(f"\n{xml.name}: unreadable ({err})")
for check in sorted(work.glob("train_*.check.txt")):
    lines.append(check.read_text().strip())
gpu = work / "throughput_gpu.json"
if gpu.exists():
    r = json.loads(gpu.read_text())
    k = r.get("kernels", {})
    lines.append(f"\ndevice: {r.get('device', {}).get('name')}; kernels backend {k.get('backend')}, peak "
                 f"{fmt(k.get('peak_gbs'))} GB/s, copy {fmt(k.get('copy_gbs'))} GB/s")
    for kernel, shapes in (k.get("results") or {}).items():
        for label, m in shapes.items():
            full = m.get("full") if isinstance(m, dict) else None
            if full:
                lines.append(f"  {kernel:<20} {label:<22} full {1e3 * full['fused_ms']:9.1f} µs  "
                             f"×eager {full['vs_eager']:.2f}  ×compile {full['vs_compile']:.2f}  "
                             f"{full['fused_gbs']:.0f} GB/s")
            else:
                lines.append(f"  {kernel:<20} {label:<22} {m.get('error') or m.get('skipped')}")
    for name, t in (k.get("targets") or {}).items():
        lines.append(f"  target {name}: {fmt(t.get('value'))} (≥ {t.get('target')}: {t.get('meets_target')})")
    p = r.get("paper_step", {})
    for v in ("fp32_eager", "bf16_fused_compile"):
        d = p.get(v)
        if d:
            lines.append(f"  paper {v}: " + (d.get("error") or f"{d['img_per_s']:.1f} img/s, warm-up "
                                                               f"{d['warmup_s']:.0f} s, recompiles "
                                                               f"{d.get('recompiles_while_timed')}"))
    if p.get("speedup"):
        lines.append(f"  paper speed-up {p['speedup']:.2f} (≥ 2: {p.get('meets_target')})")
eng = work / "throughput_engine.json"
if eng.exists():
    r = json.loads(eng.read_text())
    for name, d in r.get("engine_vs_bare", {}).items():
        lines.append(f"  engine/bare {name}: {fmt(d.get('ratio', d.get('error')))}")
    for name, d in r.get("loader_vs_step", {}).items():
        lines.append(f"  loader/step {name}: {fmt(d.get('ratio', d.get('error')))}")
out.write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
}

SUMMARIZED=0
# shellcheck disable=SC2329  # the EXIT trap calls it
cleanup() {
    local rc=$? name
    trap - EXIT INT TERM
    for name in "${!PID[@]}"; do kill "${PID[$name]}" 2>/dev/null; done  # timeout passes it on to its command
    if [ "$SUMMARIZED" = 0 ]; then echo; summarize; fi
    note "exit $rc; everything in $TARBALL"
    pack
    rm -rf "$SITE"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- install ------------------------------------------------------------------------------------------------
note "gpu_check.sh in $REPO → $OUT (work: $WORK); python: $(command -v "$PY" || echo "$PY: not found")"
git -C "$REPO" log -1 --format='git %h %s' 2>/dev/null
if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.memory --format=csv,noheader
fi
GPU_MODE=0
if command -v nvidia-smi > /dev/null && nvidia-smi -L > /dev/null 2>&1; then GPU_MODE=1; fi
lim() { local v="GPU_CHECK_${1}_S"; if [ "$GPU_MODE" = 1 ]; then echo "${!v:-$2}"; else echo "${!v:-$3}"; fi; }

CARRIED=() SDIST=""
if [ -d "$WHEELS" ]; then
    for f in "$WHEELS"/*.whl; do [ -e "$f" ] && CARRIED+=("$f"); done
    for f in "$WHEELS"/deepspeed-*.tar.gz; do [ -e "$f" ] && SDIST=$f; done
fi
TO_INSTALL=()
if [ ${#CARRIED[@]} -gt 0 ]; then
    # only what this Python lacks at the carried version (a venv that has them installs nothing)
    mapfile -t TO_INSTALL < <("$PY" - "${CARRIED[@]}" <<'EOF'
import importlib.metadata as md, re, sys
from pathlib import Path
for f in sys.argv[1:]:
    name, version = re.match(r"(.+?)-(\d[^-]*?)-", Path(f).name).groups()
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        have = None
    if have != version:
        print(f)
EOF
    )
fi
if [ ${#TO_INSTALL[@]} -gt 0 ]; then
    echo "installing carried wheels: $(for f in "${TO_INSTALL[@]}"; do basename "$f"; done | tr '\n' ' ')"
    run_part install "$(lim INSTALL 30 60)" "$PY" -m pip install -q --disable-pip-version-check --no-index \
        --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE/wheels" "${TO_INSTALL[@]}"
else
    echo "carried wheels: ${#CARRIED[@]} in $WHEELS, none needed here"
fi

if [ "$NO_DS" = 0 ] && [ -n "$SDIST" ] && ! "$PY" -c "import importlib.util as u, sys
sys.exit(u.find_spec('deepspeed') is None)" 2> /dev/null; then
    # with a GPU built while preflight, data and tests run (train_zero2 starts when it is done); else first
    start_part deepspeed_build "$(lim DS_BUILD 75 150)" env DS_BUILD_OPS=0 "$PY" -m pip install -q \
        --disable-pip-version-check --no-index --no-deps --no-build-isolation --no-cache-dir --target "$DS_SITE" "$SDIST"
    [ "$GPU_MODE" = 1 ] || wait_parts deepspeed_build
fi

# ---- preflight ----------------------------------------------------------------------------------------------
note "=== preflight"
timeout --kill-after=5 "$(lim PREFLIGHT 30 60)" "$PY" - "$WORK/preflight.env" "$NO_DS" "$SDIST" "${CARRIED[@]}" <<'EOF'
import importlib, importlib.metadata as md, importlib.util, os, platform, re, sys, time
from pathlib import Path

env_out, no_ds, sdist, carried = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4:]
tick = time.perf_counter()
REQUIRED = [  # (module, distribution): what the tests, the training runs and the benchmark import
    ("torch", "torch"), ("triton", "triton"), ("accelerate", "accelerate"), ("numpy", "numpy"),
    ("yaml", "PyYAML"), ("PIL", "pillow"), ("scipy", "scipy"), ("einops", "einops"),
    ("huggingface_hub", "huggingface_hub"), ("safetensors", "safetensors"), ("tqdm", "tqdm"),
    ("matplotlib", "matplotlib"), ("tensorboard", "tensorboard"), ("typing_extensions", "typing-extensions"),
    ("annotated_types", "annotated-types"), ("typing_inspection", "typing-inspection"),
    ("pydantic_core", "pydantic-core"), ("pydantic", "pydantic"), ("braceexpand", "braceexpand"),
    ("webdataset", "webdataset"), ("pytest", "pytest"),
]
DEEPSPEED_NEEDS = [("hjson", "hjson"), ("cpuinfo", "py-cpuinfo"), ("psutil", "psutil"), ("msgpack", "msgpack"),
                   ("ninja", "ninja")]
missing, problems = [], []


def version(dist):
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "?"


def need(module, dist):
    try:
        importlib.import_module(module)
        return True
    except Exception as err:  # ImportError, or a broken install (pydantic with another pydantic-core: SystemError)
        missing.append(f"{dist} (import {module}: {type(err).__name__}: {str(err).splitlines()[0][:120]})")
        return False


for module, dist in REQUIRED:
    need(module, dist)
cuda = False
if "torch" in sys.modules:
    import torch

    cuda = torch.cuda.is_available()
    print(f"python {platform.python_version()} ({sys.executable}) | torch {torch.__version__} (CUDA "
          f"{torch.version.cuda}, available: {cuda})")
    if cuda:
        p = torch.cuda.get_device_properties(0)
        print(f"device: {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, "
              f"capability {p.major}.{p.minor}, {torch.cuda.device_count()} visible")
ds = "off"
if not no_ds:
    if importlib.util.find_spec("deepspeed") is not None:
        ds = "importable"
    elif sdist:
        ds = "sdist"
    elif cuda:
        missing.append("deepspeed (carry the sdist: fetch_gpu_wheels.sh puts deepspeed-X.tar.gz in .whl/; "
                       "or pass --no-deepspeed)")
    else:
        ds = "absent"
    if ds == "sdist":  # built with --no-build-isolation: the build backend comes from this Python
        DEEPSPEED_NEEDS.append(("setuptools", "setuptools"))
    if ds in ("importable", "sdist"):
        for module, dist in DEEPSPEED_NEEDS:
            need(module, dist + " (for deepspeed)")
# carried wheels must be what Python imports (not shadowed by another copy on the path)
for f in carried:
    name, want = re.match(r"(.+?)-(\d[^-]*?)-", Path(f).name).groups()
    if version(name) != want:
        problems.append(f"carried {Path(f).name}, but Python finds {name} {version(name)}")
if not missing:
    try:
        from iiae import kernels
        import iiae.training.trainer  # noqa: F401  (accelerate, pydantic, the models)

        if Path(kernels.__file__).resolve().parent != Path.cwd().resolve() / "kernels":
            problems.append(f"`from iiae import kernels` gives {kernels.__file__}, not this checkout's")
        if cuda and kernels._TRITON_ERROR is not None:
            problems.append(f"Triton is not usable: {kernels._TRITON_ERROR!r} (the kernel tests will fail)")
    except Exception as err:
        missing.append(f"the project itself (iiae.kernels, iiae.training.trainer: {type(err).__name__}: {err})")
xdist = importlib.util.find_spec("xdist") is not None
print("versions: " + ", ".join(f"{d} {version(d)}" for d in ("triton", "accelerate", "pydantic", "pydantic-core",
                                                              "typing-extensions", "webdataset", "deepspeed",
                                                              "pytest", "pytest-xdist")))
print(f"deepspeed: {ds}; pytest-xdist: {xdist}; preflight took {time.perf_counter() - tick:.1f} s")
for p in problems:
    print("PROBLEM:", p)
Path(env_out).write_text(f"CUDA={int(cuda)}\nXDIST={int(xdist)}\nDS={ds}\n")
if missing:
    print(f"\nMISSING ({len(missing)}):\n  " + "\n  ".join(missing))
    print("\nNothing else was run. On a machine with network access:\n"
          "  bash benchmarks/fetch_gpu_wheels.sh              # the pinned set (pydantic and companions, webdataset,\n"
          "                                                   # braceexpand, hjson; the DeepSpeed sdist) into .whl/\n"
          "  bash benchmarks/fetch_gpu_wheels.sh NAME==VER    # plus anything else listed above\n"
          "then carry .whl (device tool: carry=[\".whl\"]) and run gpu_check.sh again.")
    sys.exit(3)
if problems:
    sys.exit(4)
EOF
rc=$?
if [ "$rc" = 3 ] || [ ! -f "$WORK/preflight.env" ]; then
    record preflight "$rc" $(($(date +%s) - START)) "$(lim PREFLIGHT 30 60)" "MISSING modules (or no Python)"
    note "--- preflight: stopped (exit $rc)"
    exit 3
fi
if [ "$rc" = 0 ]; then result=ok; else result="problems (exit $rc): see above"; fi
record preflight "$rc" $(($(date +%s) - START)) "$(lim PREFLIGHT 30 60)" "$result"
CUDA=0 XDIST=0 DS=absent
# shellcheck disable=SC1091
source "$WORK/preflight.env"
GPU_MODE=$CUDA
if [ "$CUDA" = 0 ] && [ "$ANYWAY" = 0 ]; then
    note "no CUDA device: nothing to check here (--gpu-sections-anyway runs the parts' code paths on CPU)"
    exit 2
fi
if [ "$CUDA" = 1 ]; then MODE=cuda; else MODE=cpu; fi
note "mode: $MODE"
pack

# ---- data ---------------------------------------------------------------------------------------------------
# (a part runs in the background, where stdin is /dev/null: its Python comes with -c, not a here-document)
DATA_PY=$(cat <<'EOF'
import shutil, sys
from pathlib import Path

from iiae.cli import main
from iiae.data.synthetic import write_mnist_idx

raw, out = Path(sys.argv[1]), Path(sys.argv[2])
write_mnist_idx(raw)
shutil.rmtree(out, ignore_errors=True)
sys.exit(main(["prepare", "mnist-cdcb", "--mnist", str(raw), "--size", "32", "--limit", "64", "--out", str(out)]))
EOF
)
wants correctness && run_part data "$(lim DATA 30 60)" "$PY" -c "$DATA_PY" "$WORK/fake_mnist" "$DATA"

# ---- correctness: tests and training runs ---------------------------------------------------------------------
# CPU: the gpu twins run on CPU through the interpreter; a subset of them (~10 s) and the gpu tests (they skip)
CPU_SUBSET="(multi_split and float32 and 5000) or philox_determinism or reparam_eps or shared_philox"
CPU_SUBSET+=" or (parity and float32 and 37 and not pair) or test_gpu_ or auto_on_cuda"
PYTEST=("$PY" -m pytest -q -p no:cacheprovider)
if [ "$MODE" = cuda ]; then
    XDIST_ARGS=()
    # Triton compiles every kernel variant the cases need: 4 workers share that, one test file each at a time
    # (a file's cases reuse its compiled variants)
    [ "$XDIST" = 1 ] && XDIST_ARGS=(-n 4 --dist loadfile)
    # the whole kernel test files (gpu-marked cases included), then gpu tests of other files if there are any
    KERNEL_TESTS=$(printf '%q ' "${PYTEST[@]}" -rfE -m "not slow and not distributed" "${XDIST_ARGS[@]}" \
                   --junitxml="$WORK/pytest_kernels.xml" tests/test_kernel_*.py)
    mapfile -t OTHER_GPU < <(grep -l "mark\.gpu" tests/test_*.py | grep -v "^tests/test_kernel_")
    OTHER_TESTS=":"
    if [ ${#OTHER_GPU[@]} -gt 0 ]; then
        OTHER_TESTS=$(printf '%q ' "${PYTEST[@]}" -rfEs -m gpu --junitxml="$WORK/pytest_gpu_other.xml" "${OTHER_GPU[@]}")
    fi
    TESTS=(bash -c "$KERNEL_TESTS; rc=\$?; $OTHER_TESTS; r=\$?; if [ \$rc = 0 ] && [ \$r != 5 ]; then rc=\$r; fi; exit \$rc")
    STEPS=()
else
    TESTS=(env IIAE_GPU_TWIN_DEVICE=cpu "${PYTEST[@]}" -rfEs -m gpu -k "$CPU_SUBSET"
           --junitxml="$WORK/pytest_kernels.xml" tests/test_kernel_*.py)
    STEPS=(train.max_steps=4)
fi
TRAIN=(engine/train.py recipes/debug.yaml "data.root=$DATA" "${STEPS[@]}" --overwrite)
ZERO2=(env "PYTHONPATH=$DS_SITE:$PYTHONPATH" "$PY" -m accelerate.commands.launch
       --config_file recipes/accelerate/deepspeed_zero2.yaml --num_processes 1 "${TRAIN[@]}"
       "train.output_dir=$WORK/train_zero2")

# shellcheck disable=SC2329  # after_part calls it
check_run() {  # check_run NAME: the run folder's record matches what the part asked for
    "$PY" - "$WORK/$1" "$1" "$MODE" > "$WORK/$1.check.txt" 2>&1 <<'EOF'
import json, math, sys
from pathlib import Path

import yaml

run, name, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
info = json.loads((run / "run.json").read_text())
recipe = yaml.safe_load((run / "recipe.yaml").read_text())
logs = [json.loads(ln) for ln in (run / "train_log.jsonl").read_text().splitlines() if ln.strip()]
train = [r for r in logs if r.get("kind") == "train"]
valid = [r for r in logs if r.get("kind") == "valid"]
bad = []
if not train or not all(math.isfinite(r["loss"]) for r in train):
    bad.append("no finite training losses")
if name == "train_bf16" and info.get("mixed_precision") != "bf16":
    bad.append(f"mixed precision {info.get('mixed_precision')}, not bf16")
if name == "train_compile" and recipe["train"].get("compile") is not True:
    bad.append("train.compile is not true in recipe.yaml")
if name == "train_zero2" and "DEEPSPEED" not in str(info.get("distributed_type")):
    bad.append(f"distributed type {info.get('distributed_type')}, not DeepSpeed")
if mode == "cuda" and (info.get("device", "").split(":")[0] != "cuda" or info.get("kernels_backend") != "triton"):
    bad.append(f"device {info.get('device')}, kernels {info.get('kernels_backend')} (want cuda, triton)")
if not (run / "best").is_dir():
    bad.append("no best/ model")
last = valid[-1] if valid else {}
losses = f"loss {train[0]['loss']:.1f} → {train[-1]['loss']:.1f} in {train[-1]['step']} steps" if train else "no log"
print(f"{name}: {'OK' if not bad else 'CHECK FAILED: ' + '; '.join(bad)} — {losses}; valid recall@1 x2y "
      f"{last.get('recall_at_1_x2y')}; {info.get('device')}, mixed precision {info.get('mixed_precision')}, compile "
      f"{recipe['train'].get('compile')}, kernels {info.get('kernels_backend')}, {info.get('distributed_type')}, "
      f"torch {info.get('torch')}")
sys.exit(1 if bad else 0)
EOF
    local rc=$?
    sed 's/^/  /' "$WORK/$1.check.txt"
    [ "$rc" = 0 ] || record "$1" "$rc" 0 - "run check failed"
}

start_zero2() {  # train_zero2 once it is its turn (PHASE=zero2) and DeepSpeed is there; started once
    [ "$ZERO2_STATE" = started ] && return
    case "$DS:$DS_READY" in
        sdist:pending) return ;;  # after_part calls again when the build ends
    esac
    ZERO2_STATE=started
    case "$DS:$DS_READY" in
        importable:* | sdist:yes) start_part train_zero2 "$(lim TRAIN_ZERO2 90 240)" "${ZERO2[@]}" ;;
        sdist:failed) skip_part train_zero2 "the DeepSpeed build failed (deepspeed_build.log)" ;;
        off:*) skip_part train_zero2 "--no-deepspeed" ;;
        *) skip_part train_zero2 "deepspeed not importable (without CUDA not required)" ;;
    esac
}

start_correctness() {  # CUDA: all at once; CPU: one at a time (2 shared cores)
    local each=wait_parts
    if [ "$MODE" = cuda ]; then each=:; fi
    PHASE=correctness
    start_part tests "$(lim TESTS 130 150)" "${TESTS[@]}"
    $each tests
    start_part train_bf16 "$(lim TRAIN_BF16 60 120)" "$PY" "${TRAIN[@]}" "train.output_dir=$WORK/train_bf16" \
        train.mixed_precision=bf16
    $each train_bf16
    start_part train_compile "$(lim TRAIN_COMPILE 120 240)" "$PY" "${TRAIN[@]}" \
        "train.output_dir=$WORK/train_compile" train.compile=true
    $each train_compile
    PHASE=zero2
    start_zero2
    wait_parts  # everything, the DeepSpeed build and train_zero2 included
    PHASE=benchmarks
}
if wants correctness; then start_correctness; fi

# ---- benchmarks, alone ---------------------------------------------------------------------------------------
BENCH=("$PY" benchmarks/throughput.py --results "$WORK/results")
if [ "$MODE" = cuda ]; then
    # kernel cases stop starting after 45 s (the targets' and the bf16 cases come first); ≤ 75 s per paper variant
    GPU_ARGS=(--kernel-budget-s "${GPU_CHECK_KERNEL_BUDGET:-45}" --paper-timeout-s "${GPU_CHECK_PAPER_TIMEOUT:-75}")
    CPU_ARGS=(--block-s 0.25)
else
    GPU_ARGS=(--gpu-sections-anyway --quick --paper-recipe debug --kernel-budget-s 20 --paper-timeout-s 150)
    CPU_ARGS=(--quick)
fi
wants bench_gpu && run_part bench_gpu "$(lim BENCH_GPU 175 300)" "${BENCH[@]}" --sections kernels,paper \
    "${GPU_ARGS[@]}" --plot "$WORK/plots" --json-out "$WORK/throughput_gpu.json"
wants bench_engine && run_part bench_engine "$(lim BENCH_ENGINE 60 180)" "${BENCH[@]}" --sections engine,loader \
    "${CPU_ARGS[@]}" --plot "$WORK/plots" --json-out "$WORK/throughput_engine.json"

# ---- done ---------------------------------------------------------------------------------------------------
echo
SUMMARIZED=1
summarize
if [ ${#FAILED[@]} -gt 0 ]; then
    note "FAILED: ${FAILED[*]}"
    exit 1
fi
note "all parts passed"
exit 0
