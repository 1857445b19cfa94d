"""Does a model's image follow the relation word? (issue 10's layout diagnosis; figures only.)

For fixed pairs of shapes, each of the four relation words and the same generation seeds, it
generates with `unigrpo generate`, reads the shapes analysis with `unigrpo score` (the largest
component of each group's colour) and prints, per prompt, how many images hold the relation
and the mean signed offset between the two objects along the relation's axis (positive: the
relation holds). A model that places shapes by the word gives positive means for all four;
a model that ignores it gives offsets of the same size and opposite sign for "above" and
"below" (and for "left of" and "right of"): the same picture whatever the word.

    python3 scripts/layout_probe.py [--bin target/release/unigrpo] [--model models/tiny-shapes]
                                    [--seeds 12]
"""

import argparse
import os
import re
import statistics
import subprocess
import tempfile

PAIRS = [("blue square", "red triangle"), ("green circle", "yellow square"),
         ("purple triangle", "orange circle")]
# relation -> (axis of the box centre: 0 x, 1 y; sign that makes "holds" positive)
RELATIONS = {"above": (1, -1), "below": (1, 1), "left of": (0, -1), "right of": (0, 1)}
COMPONENT = re.compile(r"  (\w+) (\w+): (\d+) pixels, box centre \(([\d.]+), ([\d.]+)\)")


def largest(components, colour):
    mine = [c for c in components if c[0] == colour]
    return max(mine, key=lambda c: int(c[2])) if mine else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="target/release/unigrpo")
    ap.add_argument("--model", default="models/tiny-shapes")
    ap.add_argument("--seeds", type=int, default=12)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        png = os.path.join(tmp, "img.png")
        for first, second in PAIRS:
            for rel, (axis, sign) in RELATIONS.items():
                prompt = f"a {first} {rel} a {second}"
                ca, cb = first.split()[0].capitalize(), second.split()[0].capitalize()
                offsets = []
                for seed in range(a.seeds):
                    subprocess.run([a.bin, "generate", "--model", a.model, "--prompt", prompt,
                                    "--seed", str(seed), "--threads", "1", "--verify", "size",
                                    "--out", png], check=True, capture_output=True)
                    out = subprocess.run([a.bin, "score", "--prompt", prompt, "--image", png],
                                         check=True, capture_output=True, text=True).stdout
                    comps = COMPONENT.findall(out)
                    pa, pb = largest(comps, ca), largest(comps, cb)
                    if pa and pb:  # both colours drawn: the relation can be judged
                        offsets.append(sign * (float(pa[3 + axis]) - float(pb[3 + axis])))
                holds = sum(d > 1.0 for d in offsets)  # the reward's margin: one pixel
                mean = statistics.mean(offsets) if offsets else float("nan")
                print(f"{prompt:45s} judged {len(offsets):2d}  holds {holds:2d}  "
                      f"mean signed offset {mean:+.2f}", flush=True)


if __name__ == "__main__":
    main()
