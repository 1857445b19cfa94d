"""Write the tiny-shapes prompt splits and the reward fixtures (numpy only, no torch).

    python -m unigrpo_export.make_data --out models/tiny-shapes --fixtures tests/data/shapes_fixtures.json

Deterministic: the same seed writes the same files (a test checks the committed ones).
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import random

from .shapes_world import COLOURS, SHAPES, Group, Scene, perturb, render, splits
from .train_tiny_shapes import KINDS, subkind

SEED = 1234
TEST_PER_KIND = 48


def write_prompts(out_dir):
    train, test = splits()
    rng = random.Random(SEED)
    os.makedirs(os.path.join(out_dir, "prompts"), exist_ok=True)
    with open(os.path.join(out_dir, "prompts", "train.txt"), "w") as f:
        for p in train:
            f.write(p.text + "\n")
    # a balanced test list: up to TEST_PER_KIND prompts of each kind
    chosen = []
    for k in KINDS:
        ps = [p for p in test if subkind(p) == k]
        rng.shuffle(ps)
        chosen.extend(sorted(ps[:TEST_PER_KIND], key=lambda p: p.text))
    with open(os.path.join(out_dir, "prompts", "test.txt"), "w") as f:
        for p in chosen:
            f.write(p.text + "\n")
    return train, chosen


def fixtures(path):
    """Rendered ground truth (score 1) and single-constraint perturbations with their expected score."""
    rng = random.Random(SEED)
    items = []

    def add(prompt, scene, expected, what):
        img = render(scene, rng)
        items.append({"prompt": prompt, "what": what, "expected": expected,
                      "rgb": base64.b64encode(img.tobytes()).decode()})

    cs, ss = list(COLOURS), SHAPES
    for k in range(40):
        c, s = cs[k % 6], ss[k % 3]
        n = 1 + k % 3
        word = {1: "a", 2: "two", 3: "three"}[n]
        sc = Scene((Group(n, c, s),))
        prompt = f"{word} {c} {s if n == 1 else s + 's'}"
        add(prompt, sc, 1.0, "truth")
        add(prompt, perturb(sc, "colour", rng), 0.0, "colour")
        add(prompt, perturb(sc, "shape", rng), 2 / 3, "shape")
        bad = perturb(sc, "count", rng)
        # fewer objects of the right kind: colour and shape still met
        add(prompt, bad, 2 / 3, "count")
        pos = ["left", "right", "top", "bottom", "centre"][k % 5]
        where = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
                 "centre": "in the centre"}[pos]
        sp = Scene((Group(1, c, s),), position=pos)
        add(f"a {c} {s} {where}", sp, 1.0, "truth")
        add(f"a {c} {s} {where}", perturb(sp, "position", rng), 3 / 4, "position")
        c2, s2 = cs[(k + 2) % 6], ss[(k + 1) % 3]
        rel = ["left of", "right of", "above", "below"][k % 4]
        sr = Scene((Group(1, c, s), Group(1, c2, s2)), relation=rel)
        add(f"a {c} {s} {rel} a {c2} {s2}", sr, 1.0, "truth")
        add(f"a {c} {s} {rel} a {c2} {s2}", perturb(sr, "relation", rng), 6 / 7, "relation")
    # indirect and open-ended prompts, rendered from one valid reading
    for prompt, sc in [("a circle the colour of the sky", Scene((Group(1, "blue", "circle"),))),
                       ("as many red squares as a triangle has corners", Scene((Group(3, "red", "square"),))),
                       ("a green shape with three corners", Scene((Group(1, "green", "triangle"),))),
                       ("a few warm-coloured shapes", Scene((Group(2, "orange", "triangle"),))),
                       ("something round in a cold colour", Scene((Group(1, "purple", "circle"),))),
                       ("some squares in a cold colour", Scene((Group(3, "green", "square"),))),
                       ("one or two yellow shapes", Scene((Group(2, "yellow", "circle"),)))]:
        add(prompt, sc, 1.0, "truth")
    with open(path, "w") as f:
        json.dump({"seed": SEED, "size": 16, "generator": "models/unigrpo_export/make_data.py", "items": items}, f,
                  indent=0)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="models/tiny-shapes")
    ap.add_argument("--fixtures", default="tests/data/shapes_fixtures.json")
    a = ap.parse_args()
    train, test = write_prompts(a.out)
    os.makedirs(os.path.dirname(a.fixtures), exist_ok=True)
    fixtures(a.fixtures)
    print(f"{len(train)} train prompts, {len(test)} test prompts; fixtures in {a.fixtures}")


if __name__ == "__main__":
    main()
