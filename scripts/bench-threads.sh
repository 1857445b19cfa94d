#!/usr/bin/env bash
# Trainer step time under thread settings, alone and beside one busy competing process, in
# alternating rounds (the machine is shared and noisy): the default (one process-wide pool,
# threads not spinning) against --threads 1 and against a spinning pool. Figures and ratios only.
#   scripts/bench-threads.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
cargo bench --bench step --no-run 2>/dev/null
bin=$(ls -t target/release/deps/step-* | grep -v '\.d$' | head -1)
declare -A all
run() { # name threads spin
  UNIGRPO_BENCH_THREADS=$2 UNIGRPO_BENCH_SPIN=$3 "$bin" | sed -n 's/.*median=\([0-9]*\).*/\1/p'
}
for r in $(seq 1 "$rounds"); do
  for load in alone busy; do
    comp=""
    if [ "$load" = busy ]; then
      (while :; do :; done) & comp=$!
    fi
    for cfg in "default 0 0" "threads1 1 0" "spinning 0 1"; do
      set -- $cfg
      ms=$(run "$1" "$2" "$3")
      all["$load/$1"]+="$ms "
      echo "round $r $load $1: $ms ms"
    done
    [ -n "$comp" ] && kill "$comp" 2>/dev/null && wait "$comp" 2>/dev/null || true
  done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "== medians over $rounds rounds ($(nproc) cores)"
for load in alone busy; do
  d=$(echo "${all[$load/default]}" | median)
  t=$(echo "${all[$load/threads1]}" | median)
  s=$(echo "${all[$load/spinning]}" | median)
  echo "$load: default $d ms, --threads 1 $t ms, spinning $s ms; default / threads1 = $(awk "BEGIN {printf \"%.2f\", $d/$t}"), default / spinning = $(awk "BEGIN {printf \"%.2f\", $d/$s}")"
done
