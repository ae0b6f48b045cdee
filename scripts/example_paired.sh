#!/usr/bin/env bash
# Your own paired images, end to end, on a dataset the engine has never seen: make a pix2pix-style folder of
# shape / silhouette pairs (scripts/shapes.py), prepare it, train recipes/paired.yaml, evaluate, then use the model
# on separate image files (translate, embed, retrieve). `make example-paired`; OUT=DIR (default example_paired).
set -euo pipefail
OUT=${OUT:-example_paired}
PY=${PY:-.venv/bin/python}
IIAE="$PY -m iiae.cli"
STEPS=${STEPS:-1500}
mkdir -p "$OUT"
$PY scripts/shapes.py "$OUT/raw/shapes" --pairs 2000 --size 64                        # X left, Y right
$PY scripts/shapes.py "$OUT/raw/my_images" --pairs 8 --size 64 --layout folders --seed 1  # new files: A/ and B/
$IIAE prepare paired --src "$OUT/raw/shapes" --size 32 --out "$OUT/data/shapes" --overwrite
$IIAE train recipes/paired.yaml data.root="$OUT/data/shapes" model.image_size=32 \
  train.output_dir="$OUT/runs/shapes" train.max_steps="$STEPS" train.select_after=$((STEPS / 3)) --overwrite
$IIAE eval "$OUT/runs/shapes"
$IIAE translate "$OUT/runs/shapes" --input "$OUT/raw/my_images/A" --to y --out "$OUT/translations"
$IIAE translate "$OUT/runs/shapes" --input "$OUT/raw/my_images/B" --to x \
  --exclusive-from "$OUT/raw/my_images/A/0002.png" --out "$OUT/styled"
$IIAE embed "$OUT/runs/shapes" --input "$OUT/raw/my_images/B" --domain y --out "$OUT/gallery.safetensors"
$IIAE retrieve "$OUT/runs/shapes" --query "$OUT/raw/my_images/A" --gallery "$OUT/gallery.safetensors" -k 3 \
  --gallery-images "$OUT/raw/my_images/B" --out "$OUT/results.json"
$PY - "$OUT/results.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
hits = sum(row["matches"][0]["file"] == row["query"] for row in r["results"])
print(f"retrieve: {hits} of {len(r['results'])} new A images find their own silhouette in B first")
PY
