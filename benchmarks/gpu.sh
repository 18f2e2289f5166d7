#!/usr/bin/env bash
# The issue-4 measurements on a GPU, each stage time-limited: the Gram tests on the GPU; the statistics
# pass against a training epoch on the full training sets of the CPU tiers and of the paper's CIFAR-10
# recipes with the library's GPU defaults (batches of 4096, unfolding convs under 96 channels), then
# every conv unfolded and every conv routed as on a CPU (levers measured in the same run); a profile.
# Usage: PGU_DATA_DIR=... bash benchmarks/gpu.sh OUT_DIR
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu.sh OUT_DIR}
mkdir -p "$out"
log="$out/gpu.log"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi -L | tee "$log"
python3 -c "import torch, sys; print('torch', torch.__version__, 'python', sys.version.split()[0])" | tee -a "$log"
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_stats.py 2>&1 | tail -4 | tee -a "$log"
sp="python3 benchmarks/stats_pass.py --device cuda --samples 60000 --out $out"
timeout 120 $sp --tiers mnist,cifar10-cpu,allcnn-cifar10,smallvgg-cifar10 --repeats 3 --label cuda 2>&1 | tee -a "$log"
timeout 100 $sp --tiers cifar10-cpu,allcnn-cifar10,smallvgg-cifar10 --repeats 2 --conv-route unfold --label cuda-unfold 2>&1 | tee -a "$log"
timeout 60 $sp --tiers mnist,cifar10-cpu --repeats 2 --conv-route cpu-model --label cuda-cpu-routes 2>&1 | tee -a "$log"
timeout 40 python3 benchmarks/stats_profile.py --tier cifar10-cpu --samples 8192 --device cuda --out "$out" 2>&1 | tee -a "$log"
