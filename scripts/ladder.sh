#!/usr/bin/env bash
# The diagnostic ladder of the recipe work (issue 10), one rung at a time, each run a background-
# friendly, resumable job (rerun the same command to continue after an interruption).
#   scripts/ladder.sh rung1 [LABEL] [SEEDS] -- [train flags...]
#     one weak prompt ("a purple triangle above a green circle"), the shipped defaults with only
#     the prompt file changed (plus the flags given), 150 steps per seed; then 64 ODE samples of
#     the prompt from the trained model and from the SFT model: score and clean-render distance.
#   scripts/ladder.sh summary [LABEL]   the rung-1 table of a label (mean and spread over seeds)
# Results go to runs/ladder/<rung>-<label>-seed<S>/ (train.log, metrics.jsonl, eval.json).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${UNIGRPO_BIN:-./target/release/unigrpo}
model=models/tiny-shapes
rung=${1:?rung1 or summary}
label=${2:-defaults}
seeds=${3:-"1 2 3"}
shift $(( $# < 3 ? $# : 3 ))
[ "${1:-}" = "--" ] && shift
flags=("$@")
root=runs/ladder
mkdir -p "$root"
prompt_file=$root/rung1-prompt.txt
echo "a purple triangle above a green circle" > "$prompt_file"

eval_prompt() { # model-dir out.json
  "$bin" eval --model "$1" --prompts "$prompt_file" --reward shapes --samples 64 --seed 100 --json > "$2"
}

case "$rung" in
rung1)
  [ -f "$root/rung1-sft.json" ] || eval_prompt "$model" "$root/rung1-sft.json"
  for s in $seeds; do
    out=$root/rung1-$label-seed$s
    mkdir -p "$out"
    resume=()
    [ -f "$out/checkpoint.safetensors" ] && resume=(--resume "$out/checkpoint.safetensors")
    if [ ! -f "$out/model/unigrpo.json" ] || [ "$(wc -l < "$out/metrics.jsonl")" -lt 150 ]; then
      "$bin" train --model "$model" --prompts "$prompt_file" --reward shapes --steps 150 --seed "$s" \
        --checkpoint-every 10 --samples-every 50 --out "$out" "${resume[@]}" "${flags[@]}" >> "$out/train.log" 2>&1
    fi
    eval_prompt "$out/model" "$out/eval.json"
  done
  "$0" summary "$label"
  ;;
summary)
  python3 - "$root" "$label" <<'PY'
import glob, json, statistics, sys
root, label = sys.argv[1], sys.argv[2]
sft = json.load(open(f"{root}/rung1-sft.json"))
rows = [json.load(open(p)) for p in sorted(glob.glob(f"{root}/rung1-{label}-seed*/eval.json"))]
def ms(k):
    v = [r[k] for r in rows]
    return f"{statistics.mean(v):.3f} +- {statistics.pstdev(v):.3f} (n={len(v)})" if v else "-"
print(f"rung 1, {label}: score {ms('reward_mean')} (SFT {sft['reward_mean']:.3f}), strict {ms('strict_rate')} "
      f"(SFT {sft['strict_rate']:.3f}), clean distance {ms('clean_distance')} (SFT {sft['clean_distance']:.4f})")
PY
  ;;
*) echo "unknown rung $rung" >&2; exit 2 ;;
esac
