"""Split tiny-shapes' train prompts into the RL training list and a validation list (numpy only).

    cd models && python -m unigrpo_export.make_val_split --out tiny-shapes/prompts

The validation list has exactly the test list's per-kind counts, drawn from train.txt with a
fixed seed; rl_train.txt is train.txt without them (the prompts UniGRPO trains on). Levers and
defaults are chosen on the validation list; the test list is evaluated once per final
configuration. Deterministic: splits.json records the seed, the counts and each file's sha256,
and a test checks the committed files against it. Written before any run of the recipe work.
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import random

from .shapes_world import splits

SEED = 20261201
# as train_tiny_shapes.subkind (that module imports torch)
KINDS = ["count", "position", "relation", "knowledge", "arithmetic", "description", "open"]


def subkind(p):
    if p.kind != "explicit":
        return p.kind
    s = p.readings[0]
    return "relation" if s.relation else "position" if s.position else "count"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    train, test = splits()
    by_text = {p.text: p for p in train + test}
    with open(os.path.join(a.out, "train.txt")) as f:
        train_lines = [l.strip() for l in f if l.strip()]
    with open(os.path.join(a.out, "test.txt")) as f:
        test_lines = [l.strip() for l in f if l.strip()]
    assert [p.text for p in train] == train_lines, "train.txt is not the generator's train split"
    test_mix = collections.Counter(subkind(by_text[t]) for t in test_lines)
    rng = random.Random(SEED)
    val = []
    for k in KINDS:
        pool = sorted(p.text for p in train if subkind(p) == k)
        rng.shuffle(pool)
        assert len(pool) > test_mix[k], f"{k}: {len(pool)} train prompts for {test_mix[k]}"
        val.extend(sorted(pool[: test_mix[k]]))
    chosen = set(val)
    rl = [t for t in train_lines if t not in chosen]
    files = {"val.txt": val, "rl_train.txt": rl}
    record = {"generator": "models/unigrpo_export/make_val_split.py", "seed": SEED, "source": "train.txt",
              "kinds": {"test": dict(sorted(test_mix.items())),
                        "val": dict(sorted(collections.Counter(subkind(by_text[t]) for t in val).items()))},
              "files": {}}
    for name, lines in files.items():
        text = "".join(l + "\n" for l in lines)
        with open(os.path.join(a.out, name), "w") as f:
            f.write(text)
        record["files"][name] = {"lines": len(lines), "sha256": hashlib.sha256(text.encode()).hexdigest()}
    with open(os.path.join(a.out, "splits.json"), "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    print(json.dumps(record["kinds"]), {n: len(l) for n, l in files.items()})


if __name__ == "__main__":
    main()
