#!/usr/bin/env bash
# On a machine with a CUDA GPU, one call runs every GPU test and benchmark and writes a JSON
# report (bench/results/gpu_check.json: each part's command, exit status, seconds and last
# lines; a part that could not run says so). Not needed for CI.
#
#   bench/gpu_check.sh [checkpoint [codebook.pt vae.pt]]   (default: the demo's; `python3 tasks.py demo` first)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CKPT=${1:-experiments/transformer/mnist_sample/checkpoints/best.pt}
MODELS=""
if [ $# -ge 3 ]; then MODELS="--codebook_pt $2 --vae_ckpt $3"; fi
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
mkdir -p bench/results
PARTS="$OUT/parts.jsonl"

part() {  # part <name> <command…>: run it, keep its status, time and last lines
  local name=$1; shift
  local start end rc
  start=$(date +%s.%N)
  "$@" > "$OUT/$name.log" 2>&1; rc=$?
  end=$(date +%s.%N)
  tail -25 "$OUT/$name.log"
  "$PY" - "$name" "$rc" "$start" "$end" "$OUT/$name.log" "$*" >> "$PARTS" <<'PYEOF'
import json, sys
name, rc, start, end, log, command = sys.argv[1:]
tail = open(log, errors="replace").read().splitlines()[-25:]
print(json.dumps({"part": name, "command": command, "exit": int(rc), "seconds": round(float(end) - float(start), 1),
                  "ran": not any("needs a CUDA GPU" in line or "not found" in line for line in tail), "tail": tail}))
PYEOF
}

"$PY" bench/machine.py
part gpu_tests "$PY" -m pytest -q -p no:cacheprovider -rs -m gpu tests/test_gpu.py
part compile_tests "$PY" -m pytest -q -p no:cacheprovider tests/test_checkpoint_loop.py -k compile
part sampler "$PY" bench/sampling.py --device cuda --batch 256 --positions 49 256 --bf16 --compile
for preset in B L; do
  part "mfu_$preset" "$PY" bench/mfu.py --model "$preset" --batch 32 --codes 256 --steps 20 --device cuda
done
part mfu_B_activation_checkpointing "$PY" bench/mfu.py --model B --batch 32 --codes 256 --steps 20 --device cuda \
    --activation-checkpointing
N=4096
part generate_local "$PY" -m arplatform generate --transformer_ckpt "$CKPT" $MODELS --num_samples $N \
    --batch_size 512 --out "$OUT/local" --engine local --device cuda
part generate_ray "$PY" -m arplatform generate --transformer_ckpt "$CKPT" $MODELS --num_samples $N \
    --batch_size 512 --out "$OUT/ray" --engine ray --actors 1 --use_gpu true
"$PY" - "$PARTS" <<'PYEOF'
import json, subprocess, sys
parts = [json.loads(line) for line in open(sys.argv[1])]
machine = subprocess.run([sys.executable, "bench/machine.py"], capture_output=True, text=True).stdout.strip()
report = {"machine": machine, "parts": parts, "failed": [p["part"] for p in parts if p["exit"]],
          "not_run": [p["part"] for p in parts if not p["ran"]]}
json.dump(report, open("bench/results/gpu_check.json", "w"), indent=2)
print(f"gpu_check: {len(parts)} parts, failed: {report['failed'] or 'none'}, not run: {report['not_run'] or 'none'}"
      " → bench/results/gpu_check.json")
sys.exit(1 if report["failed"] else 0)
PYEOF
