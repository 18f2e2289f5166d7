#!/usr/bin/env bash
# The paper tier on a GPU, each stage time-limited: every method on a digits class request (a
# canary for the methods' device handling, seconds), then `pgu bench` on All-CNN / CIFAR-10 (the
# authors' 100-epoch recipe), class 0, seed 0, every method; if that one fails or runs out of time,
# original, retrain and pgu alone from its cached original.
# Usage: PGU_DATA_DIR=... bash benchmarks/gpu_bench.sh OUT_DIR [SECONDS_FOR_THE_PAPER_BENCH]
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_bench.sh OUT_DIR [SECONDS]}
limit=${2:-450}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
work=${TMPDIR:-/tmp}/pgu-gpu-bench
rm -rf "$work" && mkdir -p "$work"
nvidia-smi -L | tee "$out/gpu.log"
start=$SECONDS
timeout 90 python3 -m pgu bench --tier digits --scenario class --methods all --seeds 0 --device cuda --quiet \
  --out "$work/digits" > "$out/digits.log" 2>&1
echo "digits canary: rc $? in $((SECONDS - start)) s" | tee -a "$out/gpu.log"
start=$SECONDS
timeout "$limit" python3 -m pgu bench --tier allcnn-cifar10 --scenario class --methods all --seeds 0 --device cuda \
  --quiet --out "$work/paper-all" > "$out/paper-all.log" 2>&1
rc=$?
echo "allcnn-cifar10 class, all methods: rc $rc in $((SECONDS - start)) s" | tee -a "$out/gpu.log"
cp "$work/paper-all/results.json" "$out/bench-allcnn-cifar10-class-h200.json" 2>/dev/null
cp "$work/paper-all/results.md" "$out/paper-all.md" 2>/dev/null
if [ "$rc" != 0 ] && [ -d "$work/paper-all/cache" ]; then
  mkdir -p "$work/paper-pgu" && cp -r "$work/paper-all/cache" "$work/paper-pgu/"
  start=$SECONDS
  timeout 200 python3 -m pgu bench --tier allcnn-cifar10 --scenario class --seeds 0 --device cuda --quiet \
    --out "$work/paper-pgu" > "$out/paper-pgu.log" 2>&1
  echo "allcnn-cifar10 class, pgu alone: rc $? in $((SECONDS - start)) s" | tee -a "$out/gpu.log"
  cp "$work/paper-pgu/results.json" "$out/bench-allcnn-cifar10-class-pgu-h200.json" 2>/dev/null
fi
tail -c 3000 "$out/paper-all.log"
