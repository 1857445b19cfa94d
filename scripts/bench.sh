#!/usr/bin/env bash
# Benchmarks: figures and ratios, no pass/fail. Run on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== generation ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
cargo bench --bench generate 2>/dev/null
cargo bench --bench reward 2>/dev/null
echo "== velocity graphs and the trainer step by phase: plain weights vs weights built into the session"
cargo bench --bench graphs 2>/dev/null
echo "== trainer step by thread settings, alone and beside a busy process"
scripts/bench-threads.sh 3
echo "== rewards that arrive late: a 0.2 s exec: reward, synchronous vs --async-rewards"
scripts/bench-async.sh 0.2 8 2
