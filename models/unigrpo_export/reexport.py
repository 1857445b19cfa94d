"""Export a tiny-shapes package's image graphs again, from the package's own parameters, with the
exporter as it is now (a faster formulation of the same function), and update the manifest.

    python -m unigrpo_export.reexport models/tiny-shapes [--graphs velocity]

The parameters, tokenizer, prompts and every other manifest entry stay as they are; the new
`velocity.onnx` and `velocity_vjp.onnx` are verified against PyTorch and autograd exactly as in a
full export (`graphs.export_and_verify`) before they replace the old ones, and the manifest's
`files` entries (size, sha256) and `export.checks.velocity` are rewritten. The network
configuration is read off the parameter shapes (`configs`), so no training state is needed.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

import torch

from . import nets
from .graphs import export_and_verify
from .package import sha256, velocity_spec


def configs(man: dict, params: dict):
    """(LMConfig, UNetConfig) of a tiny-shapes package, from its manifest and parameter shapes."""
    t = man["text"]
    lm = nets.LMConfig(vocab=t["vocab_size"], d=t["num_heads"] * t["head_dim"], layers=t["num_layers"],
                       heads=t["num_heads"], ff=params["text.l0.ff1.w"].shape[1],
                       max_pos=params["text.pos_emb"].shape[0])
    lat = man["image"]["latent_shape"]
    un = nets.UNetConfig(vocab=params["image.enc.tok_emb"].shape[0], channels=lat[0], size=lat[1],
                         c0=params["image.conv_in.w"].shape[0], c1=params["image.down0.w"].shape[0],
                         c2=params["image.down1.w"].shape[0], emb=params["image.temb1.w"].shape[0],
                         max_pos=params["image.enc.pos_emb"].shape[0],
                         coords=params["image.conv_in.w"].shape[1] == lat[0] + 2,
                         attn_pos="image.x1.pos" in params,
                         enc_layers=nets.enc_layers_of(k[len("image."):] for k in params if k.startswith("image.")))
    return lm, un


def same_computation(a_path: str, b_path: str) -> bool:
    """Whether two graph files compute the same thing: equal nodes, initializers, inputs and
    outputs (the exporter's graph-level metadata, such as its symbolic range constraints, may
    differ from run to run)."""
    import onnx
    a, b = onnx.load(a_path).graph, onnx.load(b_path).graph
    return all(getattr(a, f) == getattr(b, f) for f in ("node", "initializer", "input", "output"))


def main():
    from safetensors.torch import load_file
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("package")
    ap.add_argument("--graphs", default="velocity", choices=["velocity"])
    args = ap.parse_args()
    torch.manual_seed(0)
    mpath = os.path.join(args.package, "unigrpo.json")
    man = json.load(open(mpath))
    params = load_file(os.path.join(args.package, man["params"]["file"]))
    names = [t["name"] for t in man["params"]["tensors"]]
    _, un = configs(man, params)
    order = [k for k in names if k.startswith("image.")]  # the manifest's order: the graph inputs' order
    iparams = {k: params[k].float().contiguous() for k in order}
    tmp = tempfile.mkdtemp(prefix="reexport-", dir=os.path.dirname(os.path.abspath(args.package)))
    try:
        t0 = time.time()
        report = export_and_verify(velocity_spec(un, iparams), tmp, vjp=True, log=lambda r: print(json.dumps(r)[:300]))
        # a graph whose computation did not change keeps its file (and its bytes)
        files = [f for f in ("velocity.onnx", "velocity_vjp.onnx")
                 if not same_computation(os.path.join(args.package, f), os.path.join(tmp, f))]
        print(json.dumps({"replaced": files}))
        for f in files:
            man["files"][f] = {"bytes": os.path.getsize(os.path.join(tmp, f)), "sha256": sha256(os.path.join(tmp, f))}
        man["export"]["checks"]["velocity"] = report
        man["export"]["reexported"] = {"tool": "models/unigrpo_export/reexport.py", "graphs": files,
                                       "torch": torch.__version__, "seconds": round(time.time() - t0, 1)}
        with open(os.path.join(tmp, "unigrpo.json"), "w") as f:
            json.dump(man, f, indent=1)
            f.write("\n")
        for f in files + ["unigrpo.json"]:
            os.replace(os.path.join(tmp, f), os.path.join(args.package, f))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
