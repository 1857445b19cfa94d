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
#   scripts/ladder.sh test RUNG LABEL [SEEDS] the final measurement of a configuration: each run's
#            model and the SFT model on the held-out test split (test.txt), 2 samples per prompt,
#            noise seeds 100, 101 and 102 (ODE, reasoning on); prints the mean over training seeds
#            of each run's 3-noise-seed mean, with the spread, and the SFT model's noise-seed spread
# The SFT model is evaluated the same way once per rung and model (RUNG-sft-ID.json, ID from the
# parameters' sha256; a run directory remembers the model it started from in sft-id). Evaluations use noise
# seed 100, the ODE sampler and reasoning on. Results go to runs/ladder/RUNG-LABEL-seedS/
# (train.log, metrics.jsonl, eval.json). UNIGRPO_BIN overrides the binary (copy it there first
# when you keep building while runs go on), STEPS the number of steps. RANKS=N trains as N MPI
# ranks (`mpirun -n N`, the binary of `make mpi` or UNIGRPO_MPI_BIN, one intra-op thread each)
# with the global batch unchanged (the manifest's prompts per step split over the ranks; the
# samples are the single process's by global index, so results agree to rounding): 1.6-1.9x one
# process on a 2-core machine. A run may change RANKS between interruptions.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${UNIGRPO_BIN:-./target/release/unigrpo}
model=models/tiny-shapes
prompts_dir=$model/prompts
rung=${1:?rung1..rung4, summary or test}
if [ "$rung" = summary ] || [ "$rung" = test ]; then
  sub=${2:?summary|test RUNG [LABEL] [SEEDS]}
  label=${3:-defaults}
  seeds=${4:-"1 2 3"}
  shift $(( $# < 4 ? $# : 4 ))
else
  label=${2:-defaults}
  seeds=${3:-"1 2 3"}
  shift $(( $# < 3 ? $# : 3 ))
fi
[ "${1:-}" = "--" ] && shift
flags=("$@")
root=runs/ladder
mkdir -p "$root"
# the SFT model's evaluations are cached per model (the first 12 hex digits of its parameters'
# sha256), so that a new shipped model is never compared with the previous one's figures
sft=sft-$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["files"]["params.safetensors"]["sha256"][:12])' "$model/unigrpo.json")
export LADDER_SFT=$sft

# how `train` starts: alone, or as RANKS MPI ranks sharing the manifest's prompts per step
ranks=${RANKS:-1}
launch=("$bin")
if [ "$ranks" -gt 1 ]; then
  mpibin=${UNIGRPO_MPI_BIN:-target/mpi/release/unigrpo}
  [ -x "$mpibin" ] || { echo "RANKS=$ranks needs the MPI build: make mpi (or UNIGRPO_MPI_BIN)" >&2; exit 1; }
  per_step=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["training"]["prompts_per_step"])' "$model/unigrpo.json")
  (( per_step % ranks == 0 )) || { echo "RANKS=$ranks does not divide the $per_step prompts per step" >&2; exit 1; }
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  launch=(mpirun -n "$ranks" --bind-to none "$mpibin")
  flags+=(--prompts-per-step $(( per_step / ranks )) --threads 1)
fi

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
  [ -f "$root/$rung-$sft.json" ] || evaluate "$model" "$root/$rung-$sft.json"
  for s in $seeds; do
    out=$root/$rung-$label-seed$s
    mkdir -p "$out"
    # a run continues only from the model it started from
    if [ -f "$out/sft-id" ]; then
      [ "$(cat "$out/sft-id")" = "$sft" ] ||
        { echo "$out was started from $(cat "$out/sft-id"), the shipped model is now $sft: use another label" >&2; exit 1; }
    elif [ ! -f "$out/metrics.jsonl" ]; then
      echo "$sft" > "$out/sft-id"
    fi
    resume=()
    [ -f "$out/checkpoint.safetensors" ] && resume=(--resume "$out/checkpoint.safetensors")
    if [ ! -f "$out/model/unigrpo.json" ] || [ "$(wc -l < "$out/metrics.jsonl")" -lt "$steps" ]; then
      "${launch[@]}" train --model "$model" --prompts "$train" --reward shapes --steps "$steps" --seed "$s" \
        --checkpoint-every 10 --samples-every 50 --out "$out" "${resume[@]}" "${extra[@]}" "${flags[@]}" \
        >> "$out/train.log" 2>&1
    fi
    evaluate "$out/model" "$out/eval.json"
  done
  "$0" summary "$rung" "$label"
  ;;
test)
  evalp=$prompts_dir/test.txt; samples=2
  tag=test; reason=()
  [ "${NO_REASONING:-0}" = 1 ] && { tag=test-noreason; reason=(--no-reasoning); }
  for ns in 100 101 102; do
    [ -f "$root/$tag-$sft-noise$ns.json" ] ||
      "$bin" eval --model "$model" --prompts "$evalp" --reward shapes --samples 2 --seed "$ns" --json \
        "${reason[@]}" > "$root/$tag-$sft-noise$ns.json"
    for s in $seeds; do
      out=$root/$sub-$label-seed$s
      [ -f "$out/model/unigrpo.json" ] || { echo "$out has no exported model" >&2; exit 1; }
      [ -f "$out/$tag-noise$ns.json" ] ||
        "$bin" eval --model "$out/model" --prompts "$evalp" --reward shapes --samples 2 --seed "$ns" --json \
          "${reason[@]}" > "$out/$tag-noise$ns.json"
    done
  done
  python3 - "$root" "$sub" "$label" "$tag" $seeds <<'PY'
import json, os, statistics, sys
root, rung, label, tag, *seeds = sys.argv[1:]
noise = (100, 101, 102)
keys = ("reward_mean", "strict_rate", "clean_distance", "reasoning_agreement")
def load(prefix):
    return [json.load(open(f"{prefix}{ns}.json")) for ns in noise]
def mean(rows, k):
    return statistics.mean(r[k] for r in rows)
sft = load(f"{root}/{tag}-{os.environ['LADDER_SFT']}-noise")
runs = {s: load(f"{root}/{rung}-{label}-seed{s}/{tag}-noise") for s in seeds}
print(f"{tag} split ({len(noise)} noise seeds x 2 samples per prompt), {rung} {label}, training seeds {' '.join(seeds)}")
for k in keys:
    sv = [r[k] for r in sft]
    if None in sv:  # reasoning agreement without reasoning
        continue
    per = [mean(runs[s], k) for s in seeds]
    print(f"  {k:20s} SFT {statistics.mean(sv):.4f} (noise-seed spread {statistics.pstdev(sv):.4f})   "
          f"trained {statistics.mean(per):.4f} +- {statistics.pstdev(per):.4f}   per seed "
          + " ".join(f"{v:.4f}" for v in per))
kinds = sorted(sft[0].get("by_kind", {}))
for kind in kinds:
    sv = statistics.mean(r["by_kind"][kind]["reward_mean"] for r in sft)
    per = [statistics.mean(r["by_kind"][kind]["reward_mean"] for r in runs[s]) for s in seeds]
    print(f"  kind {kind:15s} SFT {sv:.3f}   trained {statistics.mean(per):.3f} +- {statistics.pstdev(per):.3f}")
PY
  ;;
summary)
  python3 - "$root" "$sub" "$label" <<'PY'
import glob, json, os, statistics, sys
root, rung, label = sys.argv[1:4]
sft = json.load(open(f"{root}/{rung}-{os.environ['LADDER_SFT']}.json"))
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
