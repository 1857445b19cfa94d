#!/usr/bin/env python3
"""UniGRPO demonstration on tiny-shapes: the SFT model against UniGRPO, and ablations.

Trains with `unigrpo train` on the train split, evaluates with `unigrpo eval` on the test split
(several noise seeds), and prints markdown tables (append them to docs/results.md).

    python3 scripts/demo_unigrpo.py main --minutes 10 --seeds 0 1 2
    python3 scripts/demo_unigrpo.py ablations --minutes 5
    python3 scripts/demo_unigrpo.py main --tag r2 --flags "--prompts-per-step 8 --lr 3e-4"
    python3 scripts/demo_unigrpo.py readings --runs runs/demo   # open-ended prompts: readings sampled
Standard library only; run from the repository root after `make build`.
"""
import argparse
import collections
import json
import os
import shlex
import subprocess
import sys

BIN = os.environ.get("UNIGRPO_BIN", "./target/release/unigrpo")
MODEL = "models/tiny-shapes"
TRAIN = f"{MODEL}/prompts/train.txt"
TEST = f"{MODEL}/prompts/test.txt"


def evaluate(model, eval_seeds, extra=(), records=None):
    rows = []
    for s in eval_seeds:
        rec = ["--records", f"{records}-{s}.jsonl"] if records else []
        out = subprocess.run([BIN, "eval", "--model", model, "--prompts", TEST, "--reward", "shapes", "--samples", "2",
                              "--seed", str(s), "--json", *rec, *extra], check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out))
    n = len(rows)
    mean = sum(r["reward_mean"] for r in rows) / n
    strict = sum(r["strict_rate"] for r in rows) / n
    clean = sum(r["clean_distance"] for r in rows) / n
    spread = max(r["reward_mean"] for r in rows) - min(r["reward_mean"] for r in rows)
    return {"reward_mean": mean, "strict_rate": strict, "clean_distance": clean, "spread": spread, "runs": rows}


def readings(model, out_prefix, samples=32, seed=200):
    """Open-ended test prompts: the readings the text policy samples and how well each is drawn."""
    with open(TEST) as f:
        prompts = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    probe = f"{out_prefix}-kinds.jsonl"
    subprocess.run([BIN, "eval", "--model", MODEL, "--prompts", TEST, "--samples", "1", "--steps", "2",
                    "--records", probe, "--json"], check=True, capture_output=True)
    with open(probe) as f:
        open_prompts = sorted({json.loads(l)["prompt"] for l in f if json.loads(l)["kind"] == "open"})
    path = f"{out_prefix}-open.txt"
    with open(path, "w") as f:
        f.write("\n".join(open_prompts) + "\n")
    rec = f"{out_prefix}-open.jsonl"
    subprocess.run([BIN, "eval", "--model", model, "--prompts", path, "--samples", str(samples), "--seed", str(seed),
                    "--records", rec, "--json"], check=True, capture_output=True)
    by = collections.defaultdict(list)
    with open(rec) as f:
        for l in f:
            r = json.loads(l)
            by[(r["prompt"], r["reasoning"])].append(r["score"])
    return by


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
    ap.add_argument("what", choices=["main", "ablations", "reasoning", "readings"])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--eval-seeds", type=int, nargs="+", default=[100, 101, 102])
    ap.add_argument("--runs", default="runs/demo")
    ap.add_argument("--tag", default="", help="prefix of the run directories (a recipe variant)")
    ap.add_argument("--flags", default="", help="extra `unigrpo train` flags for every run, e.g. \"--lr 3e-4\"")
    ap.add_argument("--only", nargs="+", default=None, help="ablations to run, by slug (e.g. image-only text-only)")
    a = ap.parse_args()
    os.makedirs(a.runs, exist_ok=True)
    extra = shlex.split(a.flags)
    tag = a.tag + "-" if a.tag else ""
    if a.what == "reasoning":
        base = evaluate(MODEL, a.eval_seeds)
        bare = evaluate(MODEL, a.eval_seeds, ["--no-reasoning"])
        print("| model | reasoning | mean score | all constraints met | seed spread |\n|---|---|---|---|---|")
        print(f"| SFT | on | {base['reward_mean']:.3f} | {base['strict_rate']:.1%} | {base['spread']:.3f} |")
        print(f"| SFT | off | {bare['reward_mean']:.3f} | {bare['strict_rate']:.1%} | {bare['spread']:.3f} |")
        return
    if a.what == "readings":
        # every finished run under --runs (and the SFT model): readings of the open-ended prompts
        models = [("SFT", MODEL)] + [(d, os.path.join(a.runs, d, "model")) for d in sorted(os.listdir(a.runs))
                                     if os.path.exists(os.path.join(a.runs, d, "model", "unigrpo.json"))]
        for name, m in models:
            by = readings(m, os.path.join(a.runs, f"readings-{name.replace('/', '_')}"))
            print(f"\n{name}:")
            for prompt in sorted({p for p, _ in by}):
                items = sorted(((r, s) for (p, r), s in by.items() if p == prompt), key=lambda x: -len(x[1]))
                n = sum(len(s) for _, s in items)
                mean = sum(sum(s) for _, s in items) / n
                print(f"  {prompt!r}: {len(items)} readings in {n} samples, mean score {mean:.3f}")
                for r, sc in items[:6]:
                    print(f"    {len(sc) / n:5.1%}  score {sum(sc) / len(sc):.3f}  {r}")
        return
    header = ("| train seed | steps | test mean | all met | eval-seed spread | clean distance | mean without reasoning |\n"
              "|---|---|---|---|---|---|---|")

    def row(name, steps, r, bare, base=None):
        delta = f" ({r['reward_mean'] - base['reward_mean']:+.3f})" if base else ""
        return (f"| {name} | {steps} | {r['reward_mean']:.3f}{delta} | {r['strict_rate']:.1%} | {r['spread']:.3f} "
                f"| {r['clean_distance']:.4f} | {bare['reward_mean']:.3f} |")

    base = evaluate(MODEL, a.eval_seeds)
    base_bare = evaluate(MODEL, a.eval_seeds, ["--no-reasoning"])
    if a.what == "main":
        print(f"train flags: {a.flags or '(the manifest defaults)'}\n")
        print(header)
        print(row("SFT", 0, base, base_bare), flush=True)
        for s in a.seeds:
            d = os.path.join(a.runs, f"{tag}main-seed{s}")
            train(d, a.minutes, s, extra)
            m = os.path.join(d, "model")
            print(row(f"UniGRPO {s}", steps_of(d), evaluate(m, a.eval_seeds),
                      evaluate(m, a.eval_seeds, ["--no-reasoning"]), base), flush=True)
        return
    variants = [
        ("both, velocity MSE", []),
        ("image only", ["--no-train-text"]),
        ("text only", ["--no-train-image"]),
        ("latent KL instead of MSE", ["--velocity-mse-weight", "0", "--image-kl-weight", "0.05"]),
        ("no regulariser", ["--velocity-mse-weight", "0"]),
        ("text KL 1.0, both policies", ["--text-kl-weight", "1.0"]),
        ("image only lr 5e-4", ["--no-train-text", "--lr", "5e-4"]),
    ]
    print(f"train flags: {a.flags or '(the manifest defaults)'}\n")
    print(header.replace("| train seed", "| variant"))
    print(row("SFT", 0, base, base_bare), flush=True)
    for name, flags in variants:
        slug = name.split(",")[0].replace(" ", "-").replace(".", "")
        if a.only and slug not in a.only:
            continue
        d = os.path.join(a.runs, f"{tag}abl-" + slug)
        train(d, a.minutes, a.seeds[0], extra + flags)
        m = os.path.join(d, "model")
        print(row(name, steps_of(d), evaluate(m, a.eval_seeds), evaluate(m, a.eval_seeds, ["--no-reasoning"]), base),
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
