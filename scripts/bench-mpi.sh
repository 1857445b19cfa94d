#!/usr/bin/env bash
# Data-parallel scaling on this machine: one process x 4 prompts per step against mpirun -n 2 x 2
# prompts per rank (the same global batch), one intra-op thread per rank, the manifest's other
# training defaults, STEPS steps each, alternating ROUNDS times. Prints per run the median
# seconds per step, samples per second and (2 ranks) the share of the run spent in the all-reduce.
#   scripts/bench-mpi.sh [STEPS] [ROUNDS]      (needs the mpi build: make mpi)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-6}
rounds=${2:-2}
bin=${UNIGRPO_MPI_BIN:-target/mpi/release/unigrpo}
[ -x "$bin" ] || { echo "build it first: make mpi" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prompts=models/tiny-shapes/prompts/rl_train.txt
group=$(python3 -c 'import json; print(json.load(open("models/tiny-shapes/unigrpo.json"))["training"]["group_size"])')
args=(train --model models/tiny-shapes --prompts "$prompts" --reward shapes --steps "$steps" --threads 1 --samples-every 0 --checkpoint-every 0)
report() { # label run-dir log world
  python3 - "$1" "$2/metrics.jsonl" "$3" "$4" "$group" <<'PY'
import json, re, statistics, sys
label, metrics, log, world, group = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
secs = [json.loads(l)["seconds"] for l in open(metrics)][1:]  # the first step warms up
med = statistics.median(secs)
line = f"{label:28s} {med:.2f} s/step  {4 * group / med:6.1f} samples/s"
m = [re.search(r"rank \d+ of \d+: ([0-9.]+) s in (\d+) all-reduce calls over ([0-9.]+) s;", l) for l in open(log)]
m = [x for x in m if x]
if m:
    share = max(float(x.group(1)) / float(x.group(3)) for x in m)
    line += f"  all-reduce {100 * share:.1f}% of the run ({m[0].group(2)} calls per rank)"
print(line)
PY
}
for r in $(seq "$rounds"); do
  rm -rf "$tmp/one" "$tmp/two"
  "$bin" "${args[@]}" --prompts-per-step 4 --out "$tmp/one" > "$tmp/one.log" 2>&1
  report "round $r: 1 process x 4" "$tmp/one" "$tmp/one.log" 1
  mpirun -n 2 --bind-to none --tag-output --mca btl self,vader "$bin" "${args[@]}" --prompts-per-step 2 --out "$tmp/two" > "$tmp/two.log" 2>&1
  report "round $r: 2 ranks x 2" "$tmp/two" "$tmp/two.log" 2
done
