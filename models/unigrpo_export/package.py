"""Write a complete unigrpo model package: graphs (FORWARD + VJP), manifest, tokenizer, params.

    python -m unigrpo_export.package tiny-shapes --state models/tiny-shapes/train-state --out models/tiny-shapes
    python -m unigrpo_export.package tiny-shared --out models/tiny-shared

Every graph is checked against PyTorch (FORWARD) and autograd (VJP) in ONNX Runtime on random
inputs at several batch sizes and lengths before the package is written; any error beyond
tolerance aborts the export.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time

import numpy as np
import torch
from safetensors.numpy import save_file

from . import nets, shared_net, train_tiny_shapes
from .graphs import GraphSpec, export_and_verify

FORMAT_VERSION = 1
SPECIALS = {"pad": "<pad>", "bos": "<bos>", "begin_reasoning": "<think>", "end_reasoning": "</think>",
            "begin_image": "<img>"}
SHARED_TEMPLATE = {
    "reasoning_prompt": "<bos> {prompt} <think>",
    "image_context": "<bos> {prompt} <think> {reasoning} </think> <img>",
    "image_context_no_reasoning": "<bos> {prompt} <img>",
}
DIMS = {"batch": (1, 4096), "seq": (1, 48), "past": (0, 48), "ctx": (1, 48)}
EXAMPLE = {"batch": 3, "seq": 5, "past": 4, "ctx": 7}
CHECKS_TEXT = [{"batch": 1, "seq": 1, "past": 0}, {"batch": 4, "seq": 6, "past": 3}, {"batch": 9, "seq": 20, "past": 17},
               {"batch": 2, "seq": 1, "past": 30}]
CHECKS_IMAGE = [{"batch": 1, "ctx": 3}, {"batch": 5, "ctx": 12}, {"batch": 16, "ctx": 30}]


def strip(p, prefix):
    return {k[len(prefix):]: v for k, v in p.items() if k.startswith(prefix)}


def left_padded_mask(rng, B, S):
    m = np.ones((B, S), np.int64)
    for b in range(B):
        m[b, :rng.integers(0, max(1, S // 2) + 1) if S > 1 else 0] = 0
    m[:, -1] = 1
    return m


def positions(mask):
    return np.clip(np.cumsum(mask, axis=1) - 1, 0, None)


# ---------------------------------------------------------------- text graphs

def text_specs(prefix, cfg: nets.LMConfig, trainable, frozen):
    H, Dh = cfg.heads, cfg.d // cfg.heads
    L = cfg.layers

    def fn_decode(p, ids, past_mask, mask, pos, *past):
        kv = [(past[2 * l], past[2 * l + 1]) for l in range(L)]
        full = torch.cat([past_mask, mask], dim=1)
        logits, pres = nets.lm_forward_kv(strip(p, prefix), cfg, ids, full, pos, kv)
        return (logits, *[t for kv in pres for t in kv])

    def in_decode(rng, batch, seq, past, **_):
        mask = left_padded_mask(rng, batch, past + seq)
        return [torch.from_numpy(rng.integers(0, cfg.vocab, (batch, seq))), torch.from_numpy(mask[:, :past].copy()),
                torch.from_numpy(mask[:, past:].copy()), torch.from_numpy(positions(mask)[:, past:].copy())] + \
               [torch.from_numpy(rng.standard_normal((batch, H, past, Dh)).astype(np.float32)) for _ in range(2 * L)]

    kv_names = [f"past_{kv}.{l}" for l in range(L) for kv in ("key", "value")]
    decode = GraphSpec(
        name="text_decode", fn=fn_decode, trainable=trainable, frozen=frozen,
        input_names=["input_ids", "past_attention_mask", "attention_mask", "position_ids"] + kv_names,
        output_names=["logits"] + [n.replace("past_", "present_") for n in kv_names],
        make_inputs=in_decode, dims=DIMS, example=EXAMPLE, checks=CHECKS_TEXT,
        input_dims=[("batch", "seq"), ("batch", "past"), ("batch", "seq"), ("batch", "seq")]
        + [("batch", H, "past", Dh)] * (2 * L))

    def fn_logprob(p, ids, mask, pos, targets, temperature):
        return (nets.lm_token_logprobs(strip(p, prefix), cfg, ids, mask, pos, targets, temperature),)

    def in_logprob(rng, batch, seq, **_):
        mask = left_padded_mask(rng, batch, seq)
        return [torch.from_numpy(rng.integers(0, cfg.vocab, (batch, seq))), torch.from_numpy(mask),
                torch.from_numpy(positions(mask)), torch.from_numpy(rng.integers(0, cfg.vocab, (batch, seq))),
                torch.tensor(float(rng.uniform(0.5, 1.5)), dtype=torch.float32)]

    logprob = GraphSpec(
        name="text_logprob", fn=fn_logprob, trainable=trainable, frozen=frozen,
        input_names=["input_ids", "attention_mask", "position_ids", "targets", "temperature"],
        output_names=["token_logprobs"], make_inputs=in_logprob, dims=DIMS, example=EXAMPLE,
        checks=CHECKS_TEXT, input_dims=[("batch", "seq")] * 4 + [()],
        output_dims={"token_logprobs": ("batch", "seq")})
    return decode, logprob


# ---------------------------------------------------------------- tiny-shapes

def velocity_spec(un: nets.UNetConfig, iparams: dict) -> GraphSpec:
    """The U-Net velocity graph (and its VJP) of tiny-shapes, trainables named `image.*`."""
    C, S = un.channels, un.size

    def fn_vel(p, x, t, ids, mask):
        return (nets.unet_velocity(strip(p, "image."), un, x, t, ids, mask),)

    def in_vel(rng, batch, ctx, **_):
        return [torch.from_numpy(rng.standard_normal((batch, C, S, S)).astype(np.float32)),
                torch.from_numpy(rng.uniform(0.01, 1.0, batch).astype(np.float32)),
                torch.from_numpy(rng.integers(0, un.vocab, (batch, ctx))),
                torch.from_numpy(left_padded_mask(rng, batch, ctx))]

    return GraphSpec(name="velocity", fn=fn_vel, trainable=iparams, frozen={},
                     input_names=["x", "t", "cond_ids", "cond_mask"], output_names=["velocity"],
                     make_inputs=in_vel, dims=DIMS, example=EXAMPLE, checks=CHECKS_IMAGE,
                     input_dims=[("batch", C, S, S), ("batch",), ("batch", "ctx"), ("batch", "ctx")],
                     output_dims={"velocity": ("batch", C, S, S)})


def tiny_shapes_specs(state_dir):
    text = torch.load(os.path.join(state_dir, "text.pt"))
    img = torch.load(os.path.join(state_dir, "image.pt"))
    lm_cfg = nets.LMConfig(**text["cfg"])
    un_cfg = nets.UNetConfig(**img["cfg"])
    tparams = {"text." + k: v.detach().float().contiguous() for k, v in text["params"].items()}
    iparams = {"image." + k: v.detach().float().contiguous() for k, v in img["ema"].items()}
    decode, logprob = text_specs("text.", lm_cfg, tparams, {})
    C, S = un_cfg.channels, un_cfg.size

    vel = velocity_spec(un_cfg, iparams)

    def fn_dec(p, latent):
        return (nets.pixel_decoder(latent),)

    def in_dec(rng, batch, **_):
        return [torch.from_numpy((rng.standard_normal((batch, C, S, S)) * 0.8).astype(np.float32))]

    dec = GraphSpec(name="decoder", fn=fn_dec, trainable={}, frozen={}, input_names=["latent"],
                    output_names=["image"], make_inputs=in_dec, dims=DIMS, example=EXAMPLE,
                    checks=CHECKS_IMAGE, input_dims=[("batch", C, S, S)])
    conditioning = [{"input": "cond_ids", "source": "context_ids", "gradient": "stop"},
                    {"input": "cond_mask", "source": "context_mask", "gradient": "stop"}]
    info = {
        "name": "tiny-shapes",
        "description": "A tiny reasoning-then-draw model of a world of flat coloured shapes (16x16 RGB, pixel space).",
        "text_cfg": lm_cfg, "latent": [C, S, S], "image_size": [S, S], "conditioning": conditioning,
        "template": train_tiny_shapes.TEMPLATE,
        "sampler": {"steps": 20, "shift": 1.0, "noise_level": 0.0},
        "generation": {"max_reasoning_tokens": 24, "temperature": 1.0, "top_k": 0, "top_p": 1.0},
        "training": {"learning_rate": 1e-4, "group_size": 8, "prompts_per_step": 4, "updates_per_step": 2,
                     "rollout_steps": 10, "noise_level": 0.7, "velocity_mse_weight": 0.005,
                     "train_timestep_fraction": 0.5, "temperature": 1.0, "text_clip_range": 0.2,
                     "image_clip_range": 1e-3, "advantage_clip": 5.0, "weight_decay": 1e-4, "max_grad_norm": 1.0,
                     # the recipe of docs/results.md, session 4: the text policy 10x slower and
                     # anchored by k3 (it drifted into garbled readings without); session 8: the
                     # velocity MSE at 0.005 on the trained steps and 5 untrained ones (anchors)
                     "text_learning_rate": 1e-5, "text_kl_weight": 0.1, "mse_anchor_steps": 5},
        "training_info": {"text_seconds": round(text["seconds"], 1), "image_seconds": round(img["seconds"], 1),
                          "image_steps": img["step"]},
    }
    return [decode, logprob, vel, dec], {"text": tparams, "image": iparams}, {}, info


# ---------------------------------------------------------------- tiny-shared

def tiny_shared_specs(vocab):
    cfg = shared_net.SharedConfig(vocab=vocab)
    allp = {k: v.float().contiguous() for k, v in shared_net.init(cfg, 7).items()}
    frozen = {k: allp.pop(k) for k in ["tok_emb", "pos_emb", "dec.w"]}
    dec_w = {"dec.w": frozen.pop("dec.w")}
    trainable = allp
    lm_cfg = cfg.lm()
    decode, logprob = text_specs("", lm_cfg, {k: v for k, v in trainable.items() if not k.startswith("img_")},
                                 frozen)
    H, Dh, L = cfg.heads, cfg.d // cfg.heads, cfg.layers
    C, S = cfg.latent_c, cfg.latent_s

    def fn_vel(p, x, t, mask, *kv):
        return (shared_net.velocity(p, cfg, x, t, mask, [(kv[2 * l], kv[2 * l + 1]) for l in range(L)]),)

    def in_vel(rng, batch, ctx, **_):
        return [torch.from_numpy(rng.standard_normal((batch, C, S, S)).astype(np.float32)),
                torch.from_numpy(rng.uniform(0.01, 1.0, batch).astype(np.float32)),
                torch.from_numpy(left_padded_mask(rng, batch, ctx))] + \
               [torch.from_numpy(rng.standard_normal((batch, H, ctx, Dh)).astype(np.float32)) for _ in range(2 * L)]

    vtrain = {k: v for k, v in trainable.items() if k not in ("head.w",)}
    vfrozen = dict(frozen)
    kv_names = [f"ctx_{kv}.{l}" for l in range(L) for kv in ("key", "value")]
    vel = GraphSpec(name="velocity", fn=fn_vel, trainable=vtrain, frozen=vfrozen,
                    input_names=["x", "t", "ctx_mask"] + kv_names, output_names=["velocity"],
                    make_inputs=in_vel, dims=DIMS, example=EXAMPLE, checks=CHECKS_IMAGE,
                    input_dims=[("batch", C, S, S), ("batch",), ("batch", "ctx")] + [("batch", H, "ctx", Dh)] * (2 * L),
                    output_dims={"velocity": ("batch", C, S, S)})

    def fn_dec(p, latent):
        return (shared_net.decoder(p, latent),)

    def in_dec(rng, batch, **_):
        return [torch.from_numpy(rng.standard_normal((batch, C, S, S)).astype(np.float32))]

    dec = GraphSpec(name="decoder", fn=fn_dec, trainable={}, frozen=dec_w, input_names=["latent"],
                    output_names=["image"], make_inputs=in_dec, dims=DIMS, example=EXAMPLE, checks=CHECKS_IMAGE,
                    input_dims=[("batch", C, S, S)])
    conditioning = [{"input": "ctx_mask", "source": "context_mask", "gradient": "stop"}] + \
                   [{"input": f"ctx_{kv}.{l}", "source": f"text_decode:present_{kv}.{l}", "gradient": "stop"}
                    for l in range(L) for kv in ("key", "value")]
    info = {
        "name": "tiny-shared",
        "description": "Random-weight BAGEL-like shared transformer (untrained): image tokens attend to the "
                       "text context's per-layer key/value cache. A test fixture for the package format.",
        "text_cfg": lm_cfg, "latent": [C, S, S], "image_size": [2 * S, 2 * S], "conditioning": conditioning,
        "template": SHARED_TEMPLATE,
        "sampler": {"steps": 8, "shift": 3.0, "noise_level": 0.0},
        "generation": {"max_reasoning_tokens": 12, "temperature": 1.0, "top_k": 0, "top_p": 1.0},
        "training": {"learning_rate": 1e-4, "group_size": 4, "prompts_per_step": 2, "updates_per_step": 2,
                     "rollout_steps": 6, "noise_level": 0.7, "velocity_mse_weight": 1.0,
                     "train_timestep_fraction": 0.99, "temperature": 1.0, "text_clip_range": 0.2,
                     "image_clip_range": 1e-4, "advantage_clip": 5.0, "weight_decay": 1e-4, "max_grad_norm": 1.0},
    }
    return [decode, logprob, vel, dec], {"": trainable}, frozen, info


# ---------------------------------------------------------------- manifest

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_package(kind, specs, trainable_groups, info, tokenizer_path, out_dir, log):
    t0 = time.time()
    tmp = tempfile.mkdtemp(prefix=f"{kind}-", dir=os.path.dirname(os.path.abspath(out_dir)))
    reports = {}
    for spec in specs:
        reports[spec.name] = export_and_verify(spec, tmp, vjp=spec.name in ("text_logprob", "velocity"), log=log)
    all_train = {}
    for group in trainable_groups.values():
        all_train.update(group)
    consumers = {k: [] for k in all_train}
    for spec in specs:
        for k in spec.trainable:
            consumers[k].append(spec.name)
            if spec.name in ("text_logprob", "velocity"):
                consumers[k].append(spec.name + "_vjp")
    save_file({k: v.numpy() for k, v in all_train.items()}, os.path.join(tmp, "params.safetensors"),
              metadata={"format": "unigrpo-params"})  # one key: safetensors orders keys by hash
    shutil.copy(tokenizer_path, os.path.join(tmp, "tokenizer.json"))
    cfg = info["text_cfg"]
    manifest = {
        "format": "unigrpo-model-package",
        "format_version": FORMAT_VERSION,
        "name": info["name"],
        "description": info["description"],
        "tokenizer": "tokenizer.json",
        "special_tokens": SPECIALS,
        "template": info["template"],
        "max_sequence": cfg.max_pos,
        "graphs": {s.name: f"{s.name}.onnx" for s in specs} | {"text_logprob_vjp": "text_logprob_vjp.onnx",
                                                                  "velocity_vjp": "velocity_vjp.onnx"},
        "text": {"vocab_size": cfg.vocab, "num_layers": cfg.layers, "num_heads": cfg.heads,
                 "head_dim": cfg.d // cfg.heads},
        "image": {"latent_shape": info["latent"], "image_size": info["image_size"],
                  "conditioning": info["conditioning"]},
        "sampler": info["sampler"],
        "generation": info["generation"],
        "training": info["training"],
        "params": {"file": "params.safetensors",
                   "tensors": [{"name": k, "shape": list(v.shape), "dtype": "f32", "graphs": consumers[k]}
                               for k, v in all_train.items()]},
        "export": {"tool": "models/unigrpo_export/package.py", "torch": torch.__version__, "opset": 18,
                   "seconds": round(time.time() - t0, 1), "checks": reports,
                   **({"training": info["training_info"]} if "training_info" in info else {})},
    }
    files = sorted(f for f in os.listdir(tmp))
    manifest["files"] = {f: {"bytes": os.path.getsize(os.path.join(tmp, f)), "sha256": sha256(os.path.join(tmp, f))}
                         for f in files}
    with open(os.path.join(tmp, "unigrpo.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    os.makedirs(out_dir, exist_ok=True)
    for f in files + ["unigrpo.json"]:
        os.replace(os.path.join(tmp, f), os.path.join(out_dir, f))
    shutil.rmtree(tmp)
    log({"package": out_dir, "seconds": round(time.time() - t0, 1), "files": manifest["files"]})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["tiny-shapes", "tiny-shared"])
    ap.add_argument("--state", default="models/tiny-shapes/train-state")
    ap.add_argument("--tokenizer", default=None, help="tokenizer.json (default: the tiny-shapes one)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--log", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    logf = open(args.log, "a") if args.log else None

    def log(rec):
        line = json.dumps(rec)
        print(line[:400], flush=True)
        if logf:
            logf.write(line + "\n")

    tok = args.tokenizer or os.path.join(args.state, "tokenizer.json")
    if args.kind == "tiny-shapes":
        specs, groups, frozen, info = tiny_shapes_specs(args.state)
    else:
        from tokenizers import Tokenizer
        specs, groups, frozen, info = tiny_shared_specs(Tokenizer.from_file(tok).get_vocab_size())
    write_package(args.kind, specs, groups, info, tok, args.out, log)


if __name__ == "__main__":
    main()
