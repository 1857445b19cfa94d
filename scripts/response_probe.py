"""How strongly does the image model respond to each kind of word at pure noise? (issue 10's
layout diagnosis; figures only; needs the export venv: .venv-export/bin/python.)

At t = 1 the flow-matching optimum of the velocity is eps - E[x0 | context] whatever the noise,
so two contexts that differ in one word should differ in velocity by exactly the difference of
their scenes' mean images. For word pairs (a position: top / bottom, left / right; a relation's
direction: A above B / A below B, A left of B / A right of B; and, for scale, a colour and a
shape) it prints the RMS velocity difference of the model (over --noises noise draws) and the
RMS difference of the two scenes' mean renders (--renders draws of the world's own renderer),
and their ratio: 1 is a model that has learnt the word's effect on the picture, 0 one that
ignores it. At t = 1 the sample's layout is decided; smaller t are printed for the model alone.

    PYTHONPATH=models .venv-export/bin/python scripts/response_probe.py [MODEL ...]

MODEL: a package directory (params.safetensors) or a training --work folder (image.pt, its EMA
weights); default models/tiny-shapes.
"""
from __future__ import annotations

import argparse
import os
import random
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "models"))
from unigrpo_export import nets  # noqa: E402
from unigrpo_export.shapes_world import Group, Scene, render  # noqa: E402
from unigrpo_export.train_tiny_shapes import TEMPLATE  # noqa: E402

PAIRS = [
    ("position", Scene((Group(1, "red", "circle"),), position="top"),
     Scene((Group(1, "red", "circle"),), position="bottom")),
    ("position", Scene((Group(1, "blue", "square"),), position="left"),
     Scene((Group(1, "blue", "square"),), position="right")),
    ("relation", Scene((Group(1, "blue", "square"), Group(1, "red", "triangle")), relation="above"),
     Scene((Group(1, "blue", "square"), Group(1, "red", "triangle")), relation="below")),
    ("relation", Scene((Group(1, "green", "circle"), Group(1, "yellow", "square")), relation="left of"),
     Scene((Group(1, "green", "circle"), Group(1, "yellow", "square")), relation="right of")),
    ("colour", Scene((Group(1, "red", "circle"),)), Scene((Group(1, "blue", "circle"),))),
    ("shape", Scene((Group(1, "red", "circle"),)), Scene((Group(1, "red", "square"),))),
]


def load(path):
    """(image params, UNetConfig) of a package or a training work folder."""
    if os.path.exists(os.path.join(path, "image.pt")):
        st = torch.load(os.path.join(path, "image.pt"))
        return st["ema"], nets.UNetConfig(**st["cfg"])
    import json
    from safetensors.torch import load_file
    from unigrpo_export.reexport import configs
    p = load_file(os.path.join(path, "params.safetensors"))
    _, cfg = configs(json.load(open(os.path.join(path, "unigrpo.json"))), p)
    return {k[len("image."):]: v for k, v in p.items() if k.startswith("image.")}, cfg


def rms(z):
    return z.pow(2).mean().sqrt().item()


def mean_render(scene, n, seed):
    rng = random.Random(seed)
    imgs = np.stack([render(scene, rng) for _ in range(n)]).astype(np.float32)
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).mean(0) / 127.5 - 1.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="*", default=[os.path.join(ROOT, "models/tiny-shapes")])
    ap.add_argument("--noises", type=int, default=64)
    ap.add_argument("--renders", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(ROOT, "models/tiny-shapes/tokenizer.json"))

    def ids(scene):
        text = TEMPLATE["image_context"].format(reasoning=scene.describe())
        return torch.tensor(tok.encode(text, add_special_tokens=False).ids)

    ideal = [rms(mean_render(a, args.renders, 1) - mean_render(b, args.renders, 2)) for _, a, b in PAIRS]
    times = (1.0, 0.9, 0.7, 0.5)
    for path in args.models:
        img, cfg = load(path)
        print(f"{path}{' (coordinate channels)' if cfg.coords else ''}"
              f"{' (attention position embeddings)' if cfg.attn_pos else ''}")
        x = torch.randn(args.noises, cfg.channels, cfg.size, cfg.size, generator=torch.Generator().manual_seed(0))
        for (kind, a, b), want in zip(PAIRS, ideal):
            got = []
            for t in times:
                vs = []
                for sc in (a, b):
                    c = ids(sc).expand(args.noises, -1)
                    with torch.no_grad():
                        vs.append(nets.unet_velocity(img, cfg, x, torch.full((args.noises,), t), c,
                                                     torch.ones_like(c)))
                got.append(rms(vs[0] - vs[1]))
            print(f"  {kind:8s} {a.describe()!r} / {b.describe()!r}: renders {want:.3f}, model at t=1 "
                  f"{got[0]:.3f} (ratio {got[0] / want:.2f}); model at t = "
                  + ", ".join(f"{t}: {g:.3f}" for t, g in zip(times[1:], got[1:])))


if __name__ == "__main__":
    main()
