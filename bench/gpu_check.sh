#!/usr/bin/env bash
# On a machine with a CUDA GPU: the GPU tests, the sampler (eager vs the compiled decode step),
# then generation throughput with one GPU per Ray Data actor against the local engine on the
# same GPU. Not needed for CI.
#
#   bench/gpu_check.sh [checkpoint [codebook.pt vae.pt]]   (default: the demo's; `python3 tasks.py demo` first)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CKPT=${1:-experiments/transformer/mnist_sample/checkpoints/best.pt}
MODELS=()
if [ $# -ge 3 ]; then MODELS=(--codebook_pt "$2" --vae_ckpt "$3"); fi
"$PY" bench/machine.py
status=0  # every part runs; the exit status says whether any failed
"$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py || status=1
"$PY" bench/sampling.py --device cuda --batch 256 --positions 49 256 --bf16 --compile || status=1
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
N=4096
for engine in "--engine local --device cuda" "--engine ray --actors 1 --use_gpu true"; do
  start=$(date +%s.%N)
  "$PY" -m arplatform.generate --transformer_ckpt "$CKPT" "${MODELS[@]}" --num_samples $N --batch_size 512 \
      --out "$OUT/$(echo "$engine" | tr -dc a-z)" $engine | tail -2 || status=1
  end=$(date +%s.%N)
  "$PY" -c "print(\"$engine: %.1f images/s (wall, incl. start-up and compile)\" % ($N / ($end - $start)))"
done
exit $status
