#!/usr/bin/env bash
# Issue 10's step budget: N = the trainer steps the shipped defaults complete in 45 minutes alone
# on this machine (run nothing else meanwhile). Trains on rl_train.txt (seed SEED), checkpointed;
# rerun the same command to resume after an interruption (the minutes restart). Then evaluates
# the result and the SFT model on the validation split (ODE, reasoning on, 2 samples, seed 100).
#   scripts/budget-run.sh [SEED] [MINUTES]     -> runs/budget-seedSEED/{train.log,eval-*.json}
set -euo pipefail
cd "$(dirname "$0")/.."
seed=${1:-1}
minutes=${2:-45}
out=runs/budget-seed$seed
bin=./target/release/unigrpo
model=models/tiny-shapes
mkdir -p "$out"
resume=()
[ -f "$out/checkpoint.safetensors" ] && resume=(--resume "$out/checkpoint.safetensors")
"$bin" train --model "$model" --prompts $model/prompts/rl_train.txt --reward shapes --steps 100000 \
  --seed "$seed" --max-minutes "$minutes" --checkpoint-every 10 --samples-every 50 --out "$out" \
  "${resume[@]}" >> "$out/train.log" 2>&1 || true
echo "steps completed: $(wc -l < "$out/metrics.jsonl")" | tee -a "$out/train.log"
[ -d "$out/model" ] || exit 0
for m in "$out/model" "$model"; do
  name=$([ "$m" = "$model" ] && echo sft || echo trained)
  "$bin" eval --model "$m" --prompts $model/prompts/val.txt --reward shapes --samples 2 --seed 100 --json \
    > "$out/eval-val-$name.json" 2>> "$out/train.log"
done
