"""Supervised training of the tiny-shapes model (text: next token on reasoning; image: flow matching).

    python -m unigrpo_export.train_tiny_shapes --minutes 25 --work models/tiny-shapes/train-state

Resumable: state (weights, AdamW moments, EMA, step, RNG) is saved every --save-every steps in
--work (an ignored folder); rerunning continues from it. Across machines, --init-from DIR starts
from a committed package's weights (fresh optimiser). Progress goes to --log (JSON lines).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time

import numpy as np
import torch

from . import nets
from .shapes_world import SIZE, all_prompts, splits
from .tokenizer import build_word_tokenizer

SEED = 20261125
# The layout of prompts and reasoning for each model; the exporter writes it into the manifest.
TEMPLATE = {
    "reasoning_prompt": "<bos> {prompt} <think>",
    "image_context": "<think> {reasoning} </think> <img>",
    "image_context_no_reasoning": "<bos> {prompt} <img>",
}
KINDS = ["count", "position", "relation", "knowledge", "arithmetic", "description", "open"]
PROMPT_ONLY_RATE = 0.15
# the reasoning-only context was adopted at image step 3300 (continued training, see README)


def subkind(p):
    if p.kind != "explicit":
        return p.kind
    s = p.readings[0]
    return "relation" if s.relation else "position" if s.position else "count"


class Data:
    def __init__(self, tok, seed, kind_weights=None):
        """kind_weights: {kind: weight} for the image batches' draw of a kind (default: 1 each;
        the text batches always draw the kinds uniformly)."""
        self.tok = tok
        train, _ = splits()
        self.by_kind = {k: [p for p in train if subkind(p) == k] for k in KINDS}
        self.rng = random.Random(seed)
        self.pad = tok.token_to_id("<pad>")
        w = [float((kind_weights or {}).get(k, 1.0)) for k in KINDS]
        self.weights = None if all(x == 1.0 for x in w) else w  # None: the shipped model's uniform draw

    def ids(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids

    def example(self, weighted=False):
        if weighted and self.weights:
            kind = self.rng.choices(KINDS, weights=self.weights)[0]
        else:
            kind = self.rng.choice(KINDS)
        p = self.rng.choice(self.by_kind[kind])
        scene = self.rng.choice(p.readings)
        return p, scene

    def context(self, prompt, reasoning):
        """Token ids of the image model's context (the manifest's template, package.TEMPLATE)."""
        if reasoning is None:
            return self.ids(TEMPLATE["image_context_no_reasoning"].format(prompt=prompt))
        return self.ids(TEMPLATE["image_context"].format(prompt=prompt, reasoning=reasoning))

    def text_batch(self, n):
        seqs, starts = [], []
        for _ in range(n):
            p, scene = self.example()
            a = self.ids(f"<bos> {p.text} <think>")
            b = self.ids(f"{scene.describe()} </think>")
            seqs.append(a + b)
            starts.append(len(a))
        T = max(map(len, seqs))
        ids = np.full((n, T), self.pad, np.int64)
        mask = np.zeros((n, T), np.int64)
        loss_mask = np.zeros((n, T), np.float32)
        for i, (s, st) in enumerate(zip(seqs, starts)):
            ids[i, :len(s)] = s
            mask[i, :len(s)] = 1
            loss_mask[i, st - 1:len(s) - 1] = 1  # predict every reasoning token and </think>
        return [torch.from_numpy(a) for a in (ids, mask, loss_mask)]

    def image_batch(self, n):
        from .shapes_world import render
        imgs, ctxs = [], []
        for _ in range(n):
            p, scene = self.example(weighted=True)
            imgs.append(render(scene, self.rng))
            # The image model reads the explicit description. It sees a bare prompt only for explicit
            # prompts (which are descriptions themselves): it holds no world knowledge of its own, so
            # indirect and open-ended prompts need the text model's reasoning.
            bare = p.kind == "explicit" and self.rng.random() < PROMPT_ONLY_RATE
            r = None if bare else scene.describe()
            ctxs.append(self.context(p.text, r))
        L = max(map(len, ctxs))
        ids = np.full((n, L), self.pad, np.int64)
        mask = np.zeros((n, L), np.int64)
        for i, c in enumerate(ctxs):  # left padding, as in the package format
            ids[i, L - len(c):] = c
            mask[i, L - len(c):] = 1
        x0 = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return x0, torch.from_numpy(ids), torch.from_numpy(mask)


def all_texts():
    out = []
    for p in all_prompts():
        out.append(p.text)
        out.extend(s.describe() for s in p.readings)
    return out


def train_text(cfg, params, data, steps, log):
    for v in params.values():
        v.requires_grad_(True)
    opt = torch.optim.AdamW(params.values(), lr=3e-3, weight_decay=0.01)
    for step in range(steps):
        lr = 3e-3 * min(1.0, (step + 1) / 100) * (0.5 * (1 + np.cos(np.pi * step / steps)))
        for gr in opt.param_groups:
            gr["lr"] = lr
        ids, mask, lm = data.text_batch(128)
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        targets = torch.cat([ids[:, 1:], ids[:, :1]], dim=1)
        logp = nets.lm_token_logprobs(params, cfg, ids, mask, pos, targets, torch.tensor(1.0))
        loss = -(logp * lm).sum() / lm.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log({"phase": "text", "step": step, "loss": round(loss.item(), 5)})
    return {k: v.detach() for k, v in params.items()}


def shift_time(t, shift):
    """SD3's timestep shift: s t / (1 + (s - 1) t); s > 1 moves the training times toward pure
    noise (t = 1), where a sample's layout is decided; s = 1 leaves t as it is."""
    return shift * t / (1 + (shift - 1) * t)


def flow_loss(params, cfg, x0, ids, mask, g, t_shift=1.0):
    B = x0.shape[0]
    u = torch.rand(B, generator=g)
    ln = torch.sigmoid(torch.randn(B, generator=g))
    t = shift_time(torch.where(torch.rand(B, generator=g) < 0.5, u, ln), t_shift)
    eps = torch.randn(x0.shape, generator=g)
    xt = (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * eps
    v = nets.unet_velocity(params, cfg, xt, t, ids, mask)
    return ((v - (eps - x0)) ** 2).mean()


def init_from_package(pkg, work, log, coords=False, attn_pos=False, enc_layers=1):
    """Seed the work folder from a package (the committed weights survive across machines; the
    optimiser state, 24 MB, is not committed, so it restarts). coords / attn_pos: the image
    model gains the coordinate channels / attention position embeddings (nets.UNetConfig); a
    package without them gets zero weights for them, so training starts from exactly the
    package's function. enc_layers: attention blocks of the image model's text encoder; blocks the
    package lacks start as the identity (zero output projections, nets.enc_block_outputs)."""
    import shutil
    from safetensors.torch import load_file
    params = load_file(os.path.join(pkg, "params.safetensors"))
    cfg = json.load(open(os.path.join(pkg, "unigrpo.json")))
    info = cfg.get("export", {}).get("training", {})
    shutil.copy(os.path.join(pkg, "tokenizer.json"), os.path.join(work, "tokenizer.json"))
    vocab = cfg["text"]["vocab_size"]
    text = {k[len("text."):]: v for k, v in params.items() if k.startswith("text.")}
    image = {k[len("image."):]: v for k, v in params.items() if k.startswith("image.")}
    lm_cfg = nets.LMConfig(vocab=vocab, d=cfg["text"]["num_heads"] * cfg["text"]["head_dim"],
                           layers=cfg["text"]["num_layers"], heads=cfg["text"]["num_heads"])
    torch.save({"params": text, "cfg": lm_cfg.to_dict(), "seconds": info.get("text_seconds", 0.0)},
               os.path.join(work, "text.pt"))
    un_cfg = nets.UNetConfig(vocab=vocab, coords=coords, attn_pos=attn_pos, enc_layers=enc_layers)
    have = nets.enc_layers_of(image)
    if have > enc_layers:
        raise SystemExit(f"{pkg}: its image encoder has {have} attention blocks, --enc-layers {enc_layers}")
    zero = {n for i in range(have, enc_layers) for n in nets.enc_block_outputs(f"enc.b{i}")}
    for k, v in nets.unet_init(un_cfg, 0).items():  # new parameters: an identity at the start
        if k not in image:
            if not (k.endswith(".pos") or k.startswith("enc.b")):
                raise SystemExit(f"{pkg}: no parameter image.{k}")
            image[k] = torch.zeros_like(v) if (k.endswith(".pos") or k in zero) else v
    w = image["conv_in.w"]
    want = un_cfg.channels + (2 if coords else 0)
    if w.shape[1] != want:
        if not (coords and w.shape[1] == un_cfg.channels):
            raise SystemExit(f"{pkg}: conv_in takes {w.shape[1]} channels, this model {want}")
        image["conv_in.w"] = torch.cat([w, torch.zeros(w.shape[0], 2, *w.shape[2:], dtype=w.dtype)], 1)
    opt = torch.optim.AdamW([v.clone().requires_grad_(True) for v in image.values()], lr=1e-3)
    torch.save({"params": image, "ema": {k: v.clone() for k, v in image.items()}, "opt": opt.state_dict(),
                "step": info.get("image_steps", 0), "seconds": info.get("image_seconds", 0.0),
                "cfg": un_cfg.to_dict(), "torch_rng": torch.get_rng_state()}, os.path.join(work, "image.pt"))
    log({"event": "init-from", "package": pkg, "image_step": info.get("image_steps", 0)})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=25.0, help="wall-clock budget of the image phase (this run)")
    ap.add_argument("--work", default="models/tiny-shapes/train-state")
    ap.add_argument("--log", default="models/tiny-shapes/train/log.jsonl")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--save-every", type=int, default=100)
    ap.add_argument("--text-steps", type=int, default=1500)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--init-from", default=None,
                    help="a tiny-shapes package: start from its weights (fresh optimiser) when --work holds no state")
    ap.add_argument("--until-step", type=int, default=0,
                    help="also stop when the image model reaches this step (0: the --minutes budget only)")
    ap.add_argument("--t-shift", type=float, default=1.0,
                    help="shift the training times toward noise (shift_time; 1: the shipped schedule)")
    ap.add_argument("--attn-pos", action="store_true",
                    help="the attention layers add a learned position embedding (zero at the start)")
    ap.add_argument("--kind-weight", action="append", default=[], metavar="KIND=W",
                    help=f"draw the image batches' KIND (one of {', '.join(KINDS)}) W times as often "
                         "(repeatable; default 1 each)")
    ap.add_argument("--enc-layers", type=int, default=1,
                    help="attention blocks of the image model's text encoder (with --init-from, the added "
                         "blocks start as the identity)")
    ap.add_argument("--coords", action="store_true",
                    help="the image model reads two coordinate channels (CoordConv; with --init-from, zero "
                         "weights for them at the start)")
    args = ap.parse_args()
    kind_weights = {}
    for kw in args.kind_weight:
        k, _, w = kw.partition("=")
        if k not in KINDS or not w:
            ap.error(f"--kind-weight {kw!r}: want KIND=W with KIND one of {', '.join(KINDS)}")
        kind_weights[k] = float(w)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(os.path.dirname(args.log), exist_ok=True)
    logf = open(args.log, "a")
    t_start = time.time()

    def log(rec):
        rec["time"] = round(time.time() - t_start, 1)
        logf.write(json.dumps(rec) + "\n")
        logf.flush()
        print(json.dumps(rec), flush=True)

    log({"event": "args", "args": {k: v for k, v in vars(args).items() if k not in ("work", "log")}})
    tok_path = os.path.join(args.work, "tokenizer.json")
    if args.init_from and not os.path.exists(os.path.join(args.work, "image.pt")):
        init_from_package(args.init_from, args.work, log, coords=args.coords, attn_pos=args.attn_pos,
                          enc_layers=args.enc_layers)
    if not os.path.exists(tok_path):
        build_word_tokenizer(all_texts()).save(tok_path)
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(tok_path)
    vocab = tok.get_vocab_size()
    lm_cfg = nets.LMConfig(vocab=vocab)
    un_cfg = nets.UNetConfig(vocab=vocab, coords=args.coords, attn_pos=args.attn_pos, enc_layers=args.enc_layers)
    torch.manual_seed(SEED)

    text_path = os.path.join(args.work, "text.pt")
    if not os.path.exists(text_path):
        log({"phase": "text", "event": "start", "params": sum(v.numel() for v in nets.lm_init(lm_cfg, SEED).values())})
        t0 = time.time()
        lm = train_text(lm_cfg, nets.lm_init(lm_cfg, SEED), Data(tok, SEED), args.text_steps, log)
        torch.save({"params": lm, "cfg": lm_cfg.to_dict(), "seconds": time.time() - t0}, text_path)
        log({"phase": "text", "event": "done", "seconds": round(time.time() - t0, 1)})

    img_path = os.path.join(args.work, "image.pt")
    if os.path.exists(img_path):
        st = torch.load(img_path)
        saved = nets.UNetConfig(**st["cfg"])
        if (saved.coords, saved.attn_pos, saved.enc_layers) != (args.coords, args.attn_pos, args.enc_layers):
            raise SystemExit(f"{img_path}: the saved image model has coords={saved.coords}, attn_pos="
                             f"{saved.attn_pos}, enc_layers={saved.enc_layers}; pass the same --coords / "
                             "--attn-pos / --enc-layers")
        params, ema = st["params"], st["ema"]
        step, seconds = st["step"], st["seconds"]
        torch.set_rng_state(st["torch_rng"])
        data = Data(tok, SEED + 1 + step, kind_weights)
        log({"phase": "image", "event": "resume", "step": step})
    else:
        params = nets.unet_init(un_cfg, SEED + 1)
        ema = {k: v.clone() for k, v in params.items()}
        step, seconds, st = 0, 0.0, None
        data = Data(tok, SEED + 1, kind_weights)
        log({"phase": "image", "event": "start", "params": sum(v.numel() for v in params.values())})
    for v in params.values():
        v.requires_grad_(True)
    opt = torch.optim.AdamW(params.values(), lr=args.lr, weight_decay=1e-4)
    warm_from = 0  # a fresh optimiser (new run or --init-from) warms up again
    if st is not None and st["opt"].get("state"):
        opt.load_state_dict(st["opt"])
    else:
        warm_from = step
    g = torch.Generator().manual_seed(SEED + 2 + step)
    deadline = time.time() + args.minutes * 60
    run_t0, run_step0, losses = time.time(), step, []

    def save():
        tmp = img_path + ".tmp"
        torch.save({"params": {k: v.detach() for k, v in params.items()}, "ema": ema, "opt": opt.state_dict(),
                    "step": step, "seconds": seconds + time.time() - run_t0, "cfg": un_cfg.to_dict(),
                    "torch_rng": torch.get_rng_state()}, tmp)
        os.replace(tmp, img_path)

    while time.time() < deadline and not (args.until_step and step >= args.until_step):
        lr = args.lr * min(1.0, (step - warm_from + 1) / 200)
        for gr in opt.param_groups:
            gr["lr"] = lr
        x0, ids, mask = data.image_batch(args.batch)
        loss = flow_loss(params, un_cfg, x0, ids, mask, g, args.t_shift)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()
        with torch.no_grad():
            for k in ema:
                ema[k].mul_(0.998).add_(params[k].detach(), alpha=0.002)
        losses.append(loss.item())
        step += 1
        if step % args.save_every == 0:
            save()
            log({"phase": "image", "step": step, "loss": round(float(np.mean(losses)), 5),
                 "sec_per_step": round((time.time() - run_t0) / (step - run_step0), 3),
                 "train_seconds": round(seconds + time.time() - run_t0, 1)})
            losses = []
    save()
    log({"phase": "image", "event": "stop", "step": step, "train_seconds": round(seconds + time.time() - run_t0, 1)})


if __name__ == "__main__":
    main()
