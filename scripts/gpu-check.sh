#!/usr/bin/env bash
# The GPU checks of docs/gpu.md, for a machine with an NVIDIA GPU (no internet needed once built):
#   scripts/gpu-check.sh [DEVICE]      DEVICE: cuda:0 (default), or cpu to run the same checks here
# Needs the GPU build of ONNX Runtime in .cache/onnxruntime/lib (`ORT_PACKAGE=onnxruntime-gpu
# FORCE=1 scripts/fetch-onnxruntime.sh`, run where the package registry is reachable) and the
# CUDA 13 runtime libraries on LD_LIBRARY_PATH (docs/gpu.md). Prints, for docs/gpu.md:
#   1. ONNX Runtime's node placement report for every graph (nodes it would run on the CPU);
#   2. agreement with the CPU on the same inputs (velocity plain and with weights built in, the
#      VJP's gradients, one SDE step's log-prob against the bound 1e-3) and per-graph times with
#      plain weights and with weights built in, then the trainer step by phase (benches/graphs.rs);
#   3. evaluation on the device against the CPU (test prompts, one sample each, the same seed):
#      mean score, clean-render distance, and the largest per-image differences;
#   4. three trainer steps on the device: seconds per step and the first update's log-prob
#      consistency (the VJP's recomputed forward against the rollout's).
set -euo pipefail
cd "$(dirname "$0")/.."
dev=${1:-cuda:0}
bin=./target/release/unigrpo
model=models/tiny-shapes
out=${OUT:-out/gpu-check}
mkdir -p "$out"
cargo build --release -q -p unigrpo-cli

echo "== 1. node placement on $dev"
RUST_LOG=onnxruntime=info "$bin" inspect --model "$model" --device "$dev" 2>&1 >/dev/null |
  grep -E "placed on|loaded" || echo "(no placement report: on cpu there is none)"

echo "== 2. agreement with the CPU, per-graph times, the step by phase"
UNIGRPO_BENCH_DEVICE=$dev UNIGRPO_BENCH_AGREE=1 UNIGRPO_BENCH_STEPS=3 UNIGRPO_BENCH_ROUNDS=5 \
  cargo bench -q --bench graphs

echo "== 3. evaluation on $dev against the CPU"
head -40 "$model/prompts/test.txt" > "$out/prompts.txt"
for d in cpu "$dev"; do
  "$bin" eval --model "$model" --prompts "$out/prompts.txt" --reward shapes --samples 1 --seed 100 \
    --device "$d" --json --records "$out/records-${d/:/}.jsonl" > "$out/eval-${d/:/}.json"
done
python3 - "$out/records-cpu.jsonl" "$out/records-${dev/:/}.jsonl" <<'PY'
import json, sys
a, b = ([json.loads(l) for l in open(p)] for p in sys.argv[1:])
same = sum(x["reasoning"] == y["reasoning"] for x, y in zip(a, b))
ds = max(abs(x["score"] - y["score"]) for x, y in zip(a, b))
dc = max(abs(x["clean_distance"] - y["clean_distance"]) for x, y in zip(a, b))
mean = lambda r, k: sum(x[k] for x in r) / len(r)
print(f"{len(a)} images: reasoning equal in {same}; mean score cpu {mean(a, 'score'):.4f} device "
      f"{mean(b, 'score'):.4f} (largest per-image difference {ds:.4f}); clean distance cpu "
      f"{mean(a, 'clean_distance'):.4f} device {mean(b, 'clean_distance'):.4f} (largest {dc:.4f})")
PY

echo "== 4. three trainer steps on $dev"
"$bin" train --model "$model" --prompts "$model/prompts/rl_train.txt" --reward shapes --steps 3 \
  --seed 1 --device "$dev" --out "$out/train" --force --checkpoint-every 0 2>&1 | grep -E "^step|error" || true
python3 - "$out/train/metrics.jsonl" <<'PY'
import json, sys
for l in open(sys.argv[1]):
    m = json.loads(l)
    print(f"step {m['step']}: {m['seconds']:.2f} s, reward {m['reward_mean']:.3f}, first-update consistency "
          f"text {m['text_consistency']:.1e} image {m['image_consistency']:.1e}")
PY
