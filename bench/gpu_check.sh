#!/usr/bin/env bash
# On a machine with a CUDA GPU: the GPU tests, then generation throughput with one GPU
# per Ray Data actor against the local engine on the GPU. Not needed for CI.
#
#   bench/gpu_check.sh [checkpoint]      (default: the demo's; run `python3 tasks.py demo` first)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CKPT=${1:-experiments/transformer/mnist_sample/checkpoints/best.pt}
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print('GPU:', torch.cuda.get_device_name(0))"
"$PY" -m pytest -q -m gpu tests/test_gpu.py
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
for engine in "--engine local --device cuda" "--engine ray --actors 1 --use_gpu true"; do
  start=$(date +%s.%N)
  "$PY" -m arplatform.generate --transformer_ckpt "$CKPT" --num_samples 2048 --batch_size 256 \
      --out "$OUT/$(echo "$engine" | tr -dc a-z)" $engine | tail -1
  end=$(date +%s.%N)
  echo "$engine: $(echo "2048 / ($end - $start)" | bc -l | cut -c1-6) images/s (wall, incl. start-up)"
done
