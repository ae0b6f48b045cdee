#!/usr/bin/env bash
# `make demo`: real MNIST-CDCB at 32 px → train recipes/mnist_cdcb_cpu.yaml → evaluate on the 10,000 test pairs
# → translation grids, curves → results table. Offline. Re-running reuses the data, the finished run and metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
RECIPE=${RECIPE:-recipes/mnist_cdcb_cpu.yaml}
DATA=${DATA:-data/mnist_cdcb_32}
RUN=${RUN:-runs/mnist_cdcb_cpu}
DOCS=${DOCS:-docs}
if $PY -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then LAUNCH=recipes/accelerate/single_gpu.yaml; else LAUNCH=recipes/accelerate/cpu.yaml; fi
MAX_STEPS=$($PY -m engine.cli info "$RECIPE" --json | $PY -c "import json,sys; print(json.load(sys.stdin)['max_steps'])")
start=$(date +%s)

echo "== 1/4 data: $DATA"
if [ -f "$DATA/dataset.json" ]; then echo "reusing $DATA"; else $PY -m engine.cli prepare mnist-cdcb --size 32 --out "$DATA"; fi

echo "== 2/4 train: $RECIPE ($LAUNCH)"
if [ -d "$RUN/checkpoints/checkpoint_$MAX_STEPS" ] && [ -f "$RUN/best/model.safetensors" ]; then
  echo "reusing finished run $RUN"
else
  .venv/bin/accelerate launch --config_file "$LAUNCH" engine/train.py "$RECIPE" \
    "data.root=$DATA" "train.output_dir=$RUN" train.resume=auto
fi

echo "== 3/4 evaluate on the full test split"
if [ -f "$RUN/eval_results.json" ] && [ "$RUN/eval_results.json" -nt "$RUN/best/model.safetensors" ]; then
  echo "reusing $RUN/eval_results.json"
else
  $PY -m engine.cli eval "$RUN" --data "$DATA" --split test --fidelity
fi

echo "== 4/4 pictures -> $DOCS/"
mkdir -p "$DOCS"
$PY -m engine.cli translate "$RUN" --data "$DATA" --split test --n 8 --out "$DOCS/mnist_cdcb_translation.png"
cp "$RUN/curves.png" "$DOCS/mnist_cdcb_curves.png"

$PY scripts/results_table.py "$RUN" --wall-seconds $(( $(date +%s) - start ))
