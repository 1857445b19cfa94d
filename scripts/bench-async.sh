#!/usr/bin/env bash
# Rewards that arrive late: seconds per trainer step with a slow external reward (an exec:
# program that takes DELAY seconds per step, 0.2 by default), synchronous against
# --async-rewards (the reward computed while the next rollout is drawn), alternating ROUNDS
# times, STEPS steps each, no checkpoint until the end. Figures, not pass/fail.
#   scripts/bench-async.sh [DELAY] [STEPS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
delay=${1:-0.2}
steps=${2:-8}
rounds=${3:-2}
bin=${UNIGRPO_BIN:-target/release/unigrpo}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# the exec protocol (docs/rewards.md): one JSON object per sample on stdin, one number per line
cat > "$tmp/slow.py" <<PY
import sys, time
n = sum(1 for _ in sys.stdin)
time.sleep($delay)
print("\n".join("0.%d" % (i % 7) for i in range(n)))
PY
args=(train --model models/tiny-shapes --prompts models/tiny-shapes/prompts/rl_train.txt
  --reward "exec:python3 $tmp/slow.py" --steps "$steps" --samples-every 0 --checkpoint-every 0)
median() { python3 -c 'import json,statistics,sys; s=[json.loads(l)["seconds"] for l in open(sys.argv[1])][1:]; print("%.3f" % statistics.median(s))' "$1"; }
for r in $(seq "$rounds"); do
  for mode in sync async; do
    rm -rf "$tmp/run"
    flags=()
    [ "$mode" = async ] && flags=(--async-rewards)
    "$bin" "${args[@]}" "${flags[@]}" --out "$tmp/run" > "$tmp/log" 2>&1
    echo "round $r, $mode: $(median "$tmp/run/metrics.jsonl") s/step (reward $delay s)"
  done
done
