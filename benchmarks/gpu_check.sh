#!/usr/bin/env bash
# Every benchmark on the GPU (under 5 minutes on one H200); JSON lines to ${1:-gpu_results.jsonl}.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu_results.jsonl}
: > "$out"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
for cmd in \
  "benchmarks/bench_mras.py --T 20 --d 96 --N 100 --K 50 --device cuda" \
  "benchmarks/bench_supernet.py --batch 64 --cells-per-stage 3 --channels 20 --device cuda" \
  "benchmarks/bench_supernet.py --batch 256 --cells-per-stage 3 --channels 20 --device cuda" \
  "benchmarks/bench_child.py --batch 128 --cells-per-stage 6 --channels 36 --device cuda" \
  "benchmarks/bench_child.py --batch 256 --cells-per-stage 6 --channels 36 --device cuda"; do
  echo "== python $cmd" >&2
  timeout 120 python $cmd | tee -a "$out"
done
