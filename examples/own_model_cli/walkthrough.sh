#!/usr/bin/env bash
# Your own model through pgu's command line, start to finish (a minute or two on a CPU).
# Run from this folder: bash walkthrough.sh   (PGU="python -m pgu" runs pgu from a checkout)
set -euo pipefail
PGU=${PGU:-pgu}
OUT=${OUT:-runs/own-model-cli}

# 1. Train the model from model.py on scikit-learn's bundled digits; pgu prints the coverage table
#    (each trainable parameter: projected, or frozen and why) after caching the statistics.
$PGU train --dataset digits --model model.py:build --epochs 8 --out "$OUT/run" --quiet

# 2. A store keeps the model, its statistics and every request; it records model.py's absolute path.
$PGU store init "$OUT/store" --from "$OUT/run"

# 3. Serve deletion requests: a whole class, then another; each is a new version of the model.
$PGU forget "$OUT/store" --class 3 --quiet
$PGU forget "$OUT/store" --class 7 --quiet
$PGU history "$OUT/store"

# 4. Check every file of the store against its recorded hash (and that model.py is still there).
$PGU verify "$OUT/store"

# 5. Bench pgu and a baseline on a tier of your own against retraining from scratch, with your model.
$PGU bench --tier my_tier.toml --model model.py:build --scenario class --seeds 0 --methods pgu,neggrad \
    --out "$OUT/bench" --quiet
echo "results: $OUT/bench/results.md"
