#!/usr/bin/env bash
# The diagnostic ladder of the recipe work (issue 10), one rung at a time, each run a background-
# friendly, resumable job (rerun the same command to continue after an interruption).
#   scripts/ladder.sh RUNG [LABEL] [SEEDS] -- [train flags...]
#     rung1  one weak explicit prompt ("a purple triangle above a green circle"), the shipped
#            defaults with only the prompt file changed, 150 steps per seed; evaluated on 64 ODE
#            samples of the prompt (both policies train; for an explicit prompt the text term
#            has little to do)
#     rung2  one open-ended prompt ("something round in a warm colour"), text only
#            (--no-train-image added), 150 steps; 64 ODE samples of the prompt: readings the
#            image model draws well should win
#     rung3  8 relation prompts of rl_train.txt (a fixed seeded pick), both policies, 150 steps;
#            evaluated on the 48 held-out relation prompts of val.txt, 2 samples each
#     rung4  the whole rl_train.txt, both policies, STEPS (default 1149, the 45-minute budget of
#            docs/results.md) steps; evaluated on val.txt, 2 samples each
#   scripts/ladder.sh summary RUNG [LABEL]   the table of a label (mean and spread over seeds)
# The SFT model is evaluated the same way once per rung (RUNG-sft.json). Evaluations use noise
# seed 100, the ODE sampler and reasoning on. Results go to runs/ladder/RUNG-LABEL-seedS/
# (train.log, metrics.jsonl, eval.json). UNIGRPO_BIN overrides the binary (copy it there first
# when you keep building while runs go on), STEPS the number of steps.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${UNIGRPO_BIN:-./target/release/unigrpo}
model=models/tiny-shapes
prompts_dir=$model/prompts
rung=${1:?rung1..rung4 or summary}
if [ "$rung" = summary ]; then
  sub=${2:?summary RUNG [LABEL]}
  label=${3:-defaults}
else
  label=${2:-defaults}
fi
seeds=${3:-"1 2 3"}
shift $(( $# < 3 ? $# : 3 ))
[ "${1:-}" = "--" ] && shift
flags=("$@")
root=runs/ladder
mkdir -p "$root"

# rung -> train prompt file, eval prompt file, samples per eval prompt, steps, extra flags
setup() {
  case "$1" in
  rung1)
    echo "a purple triangle above a green circle" > "$root/rung1-prompt.txt"
    train=$root/rung1-prompt.txt; evalp=$train; samples=64; steps=150; extra=() ;;
  rung2)
    echo "something round in a warm colour" > "$root/rung2-prompt.txt"
    train=$root/rung2-prompt.txt; evalp=$train; samples=64; steps=150; extra=(--no-train-image) ;;
  rung3)
    grep -E " (above|below|left of|right of) " "$prompts_dir/rl_train.txt" |
      python3 -c 'import random,sys; l=sys.stdin.read().split("\n")[:-1]; print("\n".join(random.Random(3).sample(l, 8)))' \
      > "$root/rung3-train.txt"
    grep -E " (above|below|left of|right of) " "$prompts_dir/val.txt" > "$root/rung3-val.txt"
    train=$root/rung3-train.txt; evalp=$root/rung3-val.txt; samples=2; steps=150; extra=() ;;
  rung4)
    train=$prompts_dir/rl_train.txt; evalp=$prompts_dir/val.txt; samples=2; steps=${STEPS:-1149}; extra=() ;;
  *) echo "unknown rung $1" >&2; exit 2 ;;
  esac
}

evaluate() { # model-dir out.json
  "$bin" eval --model "$1" --prompts "$evalp" --reward shapes --samples "$samples" --seed 100 --json > "$2"
}

case "$rung" in
rung1|rung2|rung3|rung4)
  setup "$rung"
  [ -f "$root/$rung-sft.json" ] || evaluate "$model" "$root/$rung-sft.json"
  for s in $seeds; do
    out=$root/$rung-$label-seed$s
    mkdir -p "$out"
    resume=()
    [ -f "$out/checkpoint.safetensors" ] && resume=(--resume "$out/checkpoint.safetensors")
    if [ ! -f "$out/model/unigrpo.json" ] || [ "$(wc -l < "$out/metrics.jsonl")" -lt "$steps" ]; then
      "$bin" train --model "$model" --prompts "$train" --reward shapes --steps "$steps" --seed "$s" \
        --checkpoint-every 10 --samples-every 50 --out "$out" "${resume[@]}" "${extra[@]}" "${flags[@]}" \
        >> "$out/train.log" 2>&1
    fi
    evaluate "$out/model" "$out/eval.json"
  done
  "$0" summary "$rung" "$label"
  ;;
summary)
  python3 - "$root" "$sub" "$label" <<'PY'
import glob, json, statistics, sys
root, rung, label = sys.argv[1:4]
sft = json.load(open(f"{root}/{rung}-sft.json"))
rows = [json.load(open(p)) for p in sorted(glob.glob(f"{root}/{rung}-{label}-seed*/eval.json"))]
def ms(k):
    v = [r[k] for r in rows]
    return f"{statistics.mean(v):.3f} +- {statistics.pstdev(v):.3f} (n={len(v)})" if v else "-"
print(f"{rung}, {label}: score {ms('reward_mean')} (SFT {sft['reward_mean']:.3f}), strict {ms('strict_rate')} "
      f"(SFT {sft['strict_rate']:.3f}), clean distance {ms('clean_distance')} (SFT {sft['clean_distance']:.4f})")
PY
  ;;
*) echo "unknown rung $rung" >&2; exit 2 ;;
esac
