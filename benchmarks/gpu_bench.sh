#!/usr/bin/env bash
# The paper tier on a GPU, each stage time-limited: every method on a digits class request (a canary
# for the methods' device handling, seconds); `pgu bench` on All-CNN / CIFAR-10 (the authors'
# 100-epoch recipe), class 0, seed 0, with original, retrain and pgu; then every method from the
# same cached original, in what time is left of TOTAL seconds.
# Usage: PGU_DATA_DIR=... bash benchmarks/gpu_bench.sh OUT_DIR [TOTAL_SECONDS]
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_bench.sh OUT_DIR [TOTAL_SECONDS]}
total=${2:-560}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
work=${TMPDIR:-/tmp}/pgu-gpu-bench
rm -rf "$work" && mkdir -p "$work"
nvidia-smi -L | tee "$out/gpu.log"
bench="python3 -m pgu bench --tier allcnn-cifar10 --scenario class --seeds 0 --device cuda"
stage() {  # stage NAME SECONDS COMMAND...
  local name=$1 limit=$2 t0=$SECONDS; shift 2
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  echo "$name: rc $? in $((SECONDS - t0)) s (limit $limit)" | tee -a "$out/gpu.log"
}
stage digits 60 python3 -m pgu bench --tier digits --scenario class --methods all --seeds 0 --device cuda --quiet \
  --out "$work/digits"
stage paper-pgu $((total - SECONDS - 30)) $bench --out "$work/paper-pgu"
cp "$work/paper-pgu/results.json" "$out/bench-allcnn-cifar10-class-pgu.json" 2>/dev/null
mkdir -p "$work/paper-all" && cp -r "$work/paper-pgu/cache" "$work/paper-all/" 2>/dev/null
stage paper-all $((total - SECONDS - 5)) $bench --methods all --out "$work/paper-all"
cp "$work/paper-all/results.json" "$out/bench-allcnn-cifar10-class-all.json" 2>/dev/null
cat "$out/gpu.log"; tail -c 1500 "$out/paper-pgu.log"; tail -c 1500 "$out/paper-all.log"
