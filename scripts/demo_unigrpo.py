#!/usr/bin/env python3
"""UniGRPO demonstration on tiny-shapes: the SFT model against UniGRPO, and ablations.

Trains with `unigrpo train` on the train split, evaluates with `unigrpo eval` on the test split
(several noise seeds), and prints markdown tables (append them to docs/results.md).

    python3 scripts/demo_unigrpo.py main --minutes 10 --seeds 0 1 2
    python3 scripts/demo_unigrpo.py ablations --minutes 5
Standard library only; run from the repository root after `make build`.
"""
import argparse
import json
import os
import subprocess
import sys

BIN = "./target/release/unigrpo"
MODEL = "models/tiny-shapes"
TRAIN = f"{MODEL}/prompts/train.txt"
TEST = f"{MODEL}/prompts/test.txt"


def evaluate(model, eval_seeds, extra=()):
    rows = []
    for s in eval_seeds:
        out = subprocess.run([BIN, "eval", "--model", model, "--prompts", TEST, "--reward", "shapes", "--samples", "2",
                              "--seed", str(s), "--json", *extra], check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out))
    n = len(rows)
    mean = sum(r["reward_mean"] for r in rows) / n
    strict = sum(r["strict_rate"] for r in rows) / n
    spread = max(r["reward_mean"] for r in rows) - min(r["reward_mean"] for r in rows)
    return {"reward_mean": mean, "strict_rate": strict, "spread": spread, "runs": rows}


def train(run_dir, minutes, seed, flags=()):
    if os.path.exists(os.path.join(run_dir, "model", "unigrpo.json")):
        return  # already trained (runs may span sessions)
    subprocess.run([BIN, "train", "--model", MODEL, "--prompts", TRAIN, "--reward", "shapes", "--steps", "100000",
                    "--max-minutes", str(minutes), "--seed", str(seed), "--samples-every", "25",
                    "--checkpoint-every", "10", "--out", run_dir, *flags], check=True)


def steps_of(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return sum(1 for _ in f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["main", "ablations", "reasoning"])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--eval-seeds", type=int, nargs="+", default=[100, 101, 102])
    ap.add_argument("--runs", default="runs/demo")
    ap.add_argument("--only", nargs="+", default=None, help="ablations to run, by slug (e.g. image-only text-only)")
    a = ap.parse_args()
    os.makedirs(a.runs, exist_ok=True)
    if a.what == "reasoning":
        base = evaluate(MODEL, a.eval_seeds)
        bare = evaluate(MODEL, a.eval_seeds, ["--no-reasoning"])
        print("| model | reasoning | mean score | all constraints met | seed spread |\n|---|---|---|---|---|")
        print(f"| SFT | on | {base['reward_mean']:.3f} | {base['strict_rate']:.1%} | {base['spread']:.3f} |")
        print(f"| SFT | off | {bare['reward_mean']:.3f} | {bare['strict_rate']:.1%} | {bare['spread']:.3f} |")
        return
    if a.what == "main":
        base = evaluate(MODEL, a.eval_seeds)
        print(f"| run | train seed | steps | test mean | all met | eval-seed spread |\n|---|---|---|---|---|---|")
        print(f"| SFT | - | 0 | {base['reward_mean']:.3f} | {base['strict_rate']:.1%} | {base['spread']:.3f} |", flush=True)
        for s in a.seeds:
            d = os.path.join(a.runs, f"main-seed{s}")
            train(d, a.minutes, s)
            r = evaluate(os.path.join(d, "model"), a.eval_seeds)
            print(f"| UniGRPO | {s} | {steps_of(d)} | {r['reward_mean']:.3f} ({r['reward_mean'] - base['reward_mean']:+.3f}) "
                  f"| {r['strict_rate']:.1%} | {r['spread']:.3f} |", flush=True)
        return
    variants = [
        ("both, velocity MSE", []),
        ("image only", ["--no-train-text"]),
        ("text only", ["--no-train-image"]),
        ("latent KL instead of MSE", ["--velocity-mse-weight", "0", "--image-kl-weight", "0.05"]),
        ("no regulariser", ["--velocity-mse-weight", "0"]),
    ]
    print("| variant | steps | test mean | all met |\n|---|---|---|---|")
    for name, flags in variants:
        slug = name.split(",")[0].replace(" ", "-")
        if a.only and slug not in a.only:
            continue
        d = os.path.join(a.runs, "abl-" + slug)
        train(d, a.minutes, a.seeds[0], flags)
        r = evaluate(os.path.join(d, "model"), a.eval_seeds)
        print(f"| {name} | {steps_of(d)} | {r['reward_mean']:.3f} | {r['strict_rate']:.1%} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
