#!/usr/bin/env bash
# The paper tier on a GPU, each stage time-limited. For each SCENARIO (default: class): every method
# on the digits tier (a canary for the methods' device handling, seconds); then `pgu bench` on
# All-CNN / CIFAR-10 (the authors' 100-epoch recipe; PGU_GPU_TIER names another tier), seed 0, with
# original, retrain and pgu, one scenario after the other; then every method from each scenario's
# cached original, in what time is left of TOTAL seconds. PGU_GPU_CANARY_SECONDS (default 60) limits
# each canary; 0 skips them (after they passed on the same code). PGU_GPU_METHODS (default pgu) names the
# methods of the first bench stage: issue 21's paper sample setting is
#   PGU_GPU_METHODS=pgu,pgu-heldout bash benchmarks/gpu_bench.sh OUT 560 subclass
# Usage: PGU_DATA_DIR=... bash benchmarks/gpu_bench.sh OUT_DIR [TOTAL_SECONDS] [SCENARIO...]
# OUT_DIR gets gpu.log (stage, exit status, seconds), logs.tar.gz (every stage's log) and, for each
# scenario that finished, bench-TIER-SCENARIO-pgu.json / -all.json (the bench's results.json).
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_bench.sh OUT_DIR [TOTAL_SECONDS] [SCENARIO...]}
total=${2:-560}
scenarios=("${@:3}")
[ ${#scenarios[@]} -eq 0 ] && scenarios=(class)
tier=${PGU_GPU_TIER:-allcnn-cifar10}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
work=${TMPDIR:-/tmp}/pgu-gpu-bench
rm -rf "$work" && mkdir -p "$work/logs"
nvidia-smi -L | tee "$out/gpu.log"
stage() {  # stage NAME SECONDS COMMAND...
  local name=$1 limit=$2 t0=$SECONDS; shift 2
  if [ "$limit" -lt 20 ]; then echo "$name: skipped (limit $limit s)" | tee -a "$out/gpu.log"; return; fi
  timeout "$limit" "$@" > "$work/logs/$name.log" 2>&1
  echo "$name: rc $? in $((SECONDS - t0)) s (limit $limit)" | tee -a "$out/gpu.log"
}
bench=(python3 -m pgu bench --tier "$tier" --seeds 0 --device cuda)
for s in "${scenarios[@]}"; do
  stage "digits-$s" "${PGU_GPU_CANARY_SECONDS:-60}" python3 -m pgu bench --tier digits --scenario "$s" \
    --methods all --seeds 0 --device cuda --quiet --out "$work/digits-$s"
done
for s in "${scenarios[@]}"; do
  stage "paper-$s-pgu" $((total - SECONDS - 30)) "${bench[@]}" --scenario "$s" --methods "${PGU_GPU_METHODS:-pgu}" \
    --out "$work/$s-pgu"
  cp "$work/$s-pgu/results.json" "$out/bench-$tier-$s-pgu.json" 2>/dev/null
done
for s in "${scenarios[@]}"; do
  mkdir -p "$work/$s-all" && cp -r "$work/$s-pgu/cache" "$work/$s-all/" 2>/dev/null
  stage "paper-$s-all" $((total - SECONDS - 10)) "${bench[@]}" --scenario "$s" --methods all --out "$work/$s-all"
  cp "$work/$s-all/results.json" "$out/bench-$tier-$s-all.json" 2>/dev/null
done
tar -czf "$out/logs.tar.gz" -C "$work" logs
cat "$out/gpu.log"
for s in "${scenarios[@]}"; do tail -c 1200 "$work/logs/paper-$s-pgu.log"; done
