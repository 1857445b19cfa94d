"""The default trainer step in PyTorch eager on the same networks and weights as a unigrpo
package, timed against unigrpo's own step alternately (`make bench-torch`; figures only).

The networks are `models/unigrpo_export/nets.py` with the package's parameters loaded, with
PyTorch's native layer norm, group norm and attention (F.layer_norm, F.group_norm,
F.scaled_dot_product_attention): the fastest eager form of the same functions. Before timing, the
velocity field is checked against the package's velocity.onnx in ONNX Runtime (same weights, same
function).

One step, as unigrpo's default (the manifest's `training` block): 4 prompts x group 8; reasoning
decoded with a KV cache (up to 24 tokens); 10 SDE denoising steps at noise level 0.7 keeping log-
probs; then 2 optimiser steps, each on half of the samples: the text log-probs forward and
backward (and the reference's forward for the k3 KL), the reference velocity (no grad) and the
current velocity forward and backward on the share's 5 trained steps per sample (80 rows) and its
`mse_anchor_steps` anchor steps (5 per sample in the shipped recipe: 160 rows in all), the clipped
surrogate on the trained rows plus the velocity MSE on all of them, gradient clipping and AdamW.

    .venv-export/bin/python scripts/bench_torch.py [--rounds 6] [--steps 3] [--threads 2]

Each round times --steps torch steps in this process, then runs unigrpo's step benchmark
(`cargo bench --bench step`, the same step) with as many steps; prints both medians, the ratio
torch / unigrpo (above 1: unigrpo is faster) and each one's phase split.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "models"))
from unigrpo_export import nets  # noqa: E402


def native_norms():
    """nets.py's hand-written norms and attention replaced by PyTorch's fused kernels."""
    nets.layer_norm = lambda x, w, b, eps=1e-5: F.layer_norm(x, (x.shape[-1],), w, b, eps)
    nets.group_norm = lambda x, groups, w, b, eps=1e-5: F.group_norm(x, groups, w, b, eps)

    def attention(q, k, v, bias):
        mask = None if isinstance(bias, float) else bias.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    nets.attention = attention


def load_package(model_dir):
    from safetensors.torch import load_file
    from unigrpo_export.reexport import configs
    man = json.load(open(os.path.join(model_dir, "unigrpo.json")))
    p = load_file(os.path.join(model_dir, man["params"]["file"]))
    text = {k[len("text."):]: v for k, v in p.items() if k.startswith("text.")}
    img = {k[len("image."):]: v for k, v in p.items() if k.startswith("image.")}
    lm, un = configs(man, p)
    return man, text, img, lm, un


def check_against_onnx(model_dir, img, un):
    import onnxruntime as ort
    from safetensors.numpy import load_file
    pn = load_file(os.path.join(model_dir, "params.safetensors"))
    s = ort.InferenceSession(os.path.join(model_dir, "velocity.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, un.channels, un.size, un.size)).astype(np.float32)
    t = rng.uniform(0.1, 1, 4).astype(np.float32)
    ids = rng.integers(1, un.vocab, (4, 12)).astype(np.int64)
    mask = np.ones((4, 12), np.int64)
    mask[0, :3] = 0
    feed = {i.name: pn[i.name] for i in s.get_inputs() if i.name in pn}
    feed.update(x=x, t=t, cond_ids=ids, cond_mask=mask)
    want = s.run(["velocity"], feed)[0]
    with torch.no_grad():
        got = nets.unet_velocity(img, un, torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(ids),
                                 torch.from_numpy(mask)).numpy()
    err = float(np.abs(got - want).max() / np.abs(want).max())
    if err > 1e-4:
        raise SystemExit(f"PyTorch's velocity differs from the package's velocity.onnx: relative {err:.1e}")
    return err


class Step:
    """The trainer step's work in PyTorch, on fixed prompts."""

    def __init__(self, man, text, img, lm, un):
        tr = man["training"]
        self.lm, self.un = lm, un
        self.group, self.n_prompts = tr["group_size"], tr["prompts_per_step"]
        self.updates = tr["updates_per_step"]
        self.steps = tr["rollout_steps"]
        self.trained = max(1, round(self.steps * tr["train_timestep_fraction"]))
        self.noise = tr["noise_level"]
        self.mse_w = tr["velocity_mse_weight"]
        # velocity-MSE anchors: K untrained steps per sample carrying the MSE alone (off without
        # the MSE, as in unigrpo)
        self.anchors = tr.get("mse_anchor_steps", 0) if self.mse_w > 0 else 0
        self.kl_w = tr.get("text_kl_weight", 0.0)
        self.max_tokens = man["generation"]["max_reasoning_tokens"]
        self.policy = {k: v.clone().requires_grad_(True) for k, v in {**text, **{"i." + k: v for k, v in img.items()}}.items()}
        self.ref_text = {k: v.clone() for k, v in text.items()}
        self.ref_img = {k: v.clone() for k, v in img.items()}
        self.opt = torch.optim.AdamW(self.policy.values(), lr=tr["learning_rate"], weight_decay=tr["weight_decay"])
        self.max_grad_norm = tr["max_grad_norm"]
        self.gen = torch.Generator().manual_seed(0)
        b = self.group * self.n_prompts
        self.prompt_ids = torch.randint(5, lm.vocab, (b, 10), generator=self.gen)

    def text_p(self):
        return {k: v for k, v in self.policy.items() if not k.startswith("i.")}

    def img_p(self):
        return {k[2:]: v for k, v in self.policy.items() if k.startswith("i.")}

    def decode(self):
        lm, b = self.lm, self.prompt_ids.shape[0]
        p = self.text_p()
        ids = self.prompt_ids
        hd = lm.d // lm.heads
        past = [(torch.zeros(b, lm.heads, 0, hd), torch.zeros(b, lm.heads, 0, hd)) for _ in range(lm.layers)]
        mask = torch.ones(b, ids.shape[1], dtype=torch.int64)
        pos = torch.arange(ids.shape[1]).expand(b, -1)
        out = []
        with torch.no_grad():
            cur = ids
            for i in range(self.max_tokens):
                logits, past = nets.lm_forward_kv(p, lm, cur, mask, pos, past)
                nxt = torch.multinomial(torch.softmax(logits[:, -1], -1), 1, generator=self.gen)
                out.append(nxt)
                cur = nxt
                mask = torch.cat([mask, torch.ones(b, 1, dtype=torch.int64)], 1)
                pos = pos[:, -1:] + 1
        return torch.cat([ids, torch.cat(out, 1)], 1)

    def coefficients(self, t, t_next):
        """unigrpo's SDE step (src/sampler): mu = cx x + cv v, std."""
        dt = t_next - t
        sigma = self.noise * math.sqrt(t / ((1 - self.grid[1]) if t >= 1 else (1 - t)))
        s2 = sigma * sigma
        return 1 + s2 / (2 * t) * dt, (1 + s2 * (1 - t) / (2 * t)) * dt, sigma * math.sqrt(-dt)

    def rollout(self, ctx):
        un, b = self.un, ctx.shape[0]
        self.grid = [1 - i / self.steps for i in range(self.steps + 1)]
        x = torch.randn(b, un.channels, un.size, un.size, generator=self.gen)
        mask = torch.ones_like(ctx)
        lat, lps = [x], []
        p = self.img_p()
        with torch.no_grad():
            for j in range(self.steps):
                t, tn = self.grid[j], self.grid[j + 1]
                v = nets.unet_velocity(p, un, x, torch.full((b,), t), ctx, mask)
                cx, cv, std = self.coefficients(t, tn)
                mu = cx * x + cv * v
                x = mu + std * torch.randn(x.shape, generator=self.gen)
                lps.append(-((x - mu) ** 2).mean((1, 2, 3)) / (2 * std ** 2) - math.log(std))
                lat.append(x)
        return lat, torch.stack(lps, 1)

    def update(self, ctx, lat, lps, adv, share):
        un = self.un
        rows = [(i, j) for i in share for j in range(self.trained)]
        n_trained = len(rows)
        untrained = list(range(self.trained, self.steps))
        for i in share:  # all untrained steps when at most K remain, else K drawn per sample
            if len(untrained) <= self.anchors:
                rows += [(i, j) for j in untrained]
            elif self.anchors > 0:
                pick = torch.randperm(len(untrained), generator=self.gen)[: self.anchors]
                rows += [(i, untrained[k]) for k in pick.tolist()]
        ii = torch.tensor([i for i, _ in rows])
        jj = [j for _, j in rows]
        x = torch.stack([lat[j][i] for i, j in rows])
        t = torch.tensor([self.grid[j] for j in jj])
        c = ctx[ii]
        m = torch.ones_like(c)
        # the policy term's inputs: the trained rows only (the first n_trained)
        trained = rows[:n_trained]
        xn = torch.stack([lat[j + 1][i] for i, j in trained])
        coef = [self.coefficients(self.grid[j], self.grid[j + 1]) for _, j in trained]
        cx = torch.tensor([k[0] for k in coef]).view(-1, 1, 1, 1)
        cv = torch.tensor([k[1] for k in coef]).view(-1, 1, 1, 1)
        std = torch.tensor([k[2] for k in coef]).view(-1)
        old = torch.stack([lps[i, j] for i, j in trained])
        a = adv[ii[:n_trained]]
        # text: token log-probs of the share's sequences, policy with grad, reference without
        seq = ctx[torch.tensor(share)]
        sm = torch.ones_like(seq)
        sp = torch.arange(seq.shape[1]).expand(seq.shape[0], -1)
        tgt = torch.roll(seq, -1, 1)
        lp = nets.lm_token_logprobs(self.text_p(), self.lm, seq, sm, sp, tgt, 1.0)
        with torch.no_grad():
            lp_ref = nets.lm_token_logprobs(self.ref_text, self.lm, seq, sm, sp, tgt, 1.0)
        ratio_t = torch.exp(lp - lp.detach())
        at = adv[torch.tensor(share)].unsqueeze(1)
        loss_t = -torch.min(ratio_t * at, ratio_t.clamp(0.8, 1.2) * at).mean()
        d = lp_ref - lp
        loss_t = loss_t + self.kl_w * (torch.exp(d) - d - 1).mean()
        # image: reference velocity without grad, current forward and backward over the trained
        # rows and the anchors (one batch, as unigrpo's VJP rows); the policy term on the trained
        # rows, the velocity MSE on all of them with the trained rows' weight
        with torch.no_grad():
            v_ref = nets.unet_velocity(self.ref_img, un, x, t, c, m)
        v_all = nets.unet_velocity(self.img_p(), un, x, t, c, m)
        mu = cx * x[:n_trained] + cv * v_all[:n_trained]
        lpi = -((xn - mu) ** 2).mean((1, 2, 3)) / (2 * std ** 2) - torch.log(std)
        ratio = torch.exp(lpi - old)
        loss_i = -torch.min(ratio * a, ratio.clamp(1 - 1e-3, 1 + 1e-3) * a).mean()
        loss_i = loss_i + self.mse_w * ((v_all - v_ref) ** 2).mean((1, 2, 3)).sum() / n_trained
        self.opt.zero_grad(set_to_none=True)
        (loss_t + loss_i).backward()
        torch.nn.utils.clip_grad_norm_(self.policy.values(), self.max_grad_norm)
        self.opt.step()

    def step(self):
        marks = [time.perf_counter()]
        ctx = self.decode()
        marks.append(time.perf_counter())
        lat, lps = self.rollout(ctx)
        marks.append(time.perf_counter())
        b = ctx.shape[0]
        adv = torch.randn(b, generator=self.gen)
        order = list(range(b))
        per = b // self.updates
        for u in range(self.updates):
            self.update(ctx, lat, lps, adv, order[u * per:(u + 1) * per])
            marks.append(time.perf_counter())
        return [marks[i + 1] - marks[i] for i in range(len(marks) - 1)], marks[-1] - marks[0]


def unigrpo_round(steps, threads, plain=False, recompute=False):
    env = dict(os.environ, UNIGRPO_BENCH_STEPS=str(steps), UNIGRPO_BENCH_THREADS=str(threads),
               UNIGRPO_BENCH_PLAIN="1" if plain else "0", UNIGRPO_BENCH_RECOMPUTE="1" if recompute else "0")
    out = subprocess.run(["cargo", "bench", "-q", "--bench", "step"], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout
    step = float(re.search(r"step_ms median=(\d+)", out).group(1))
    phases = re.search(r"phases_ms (.*)", out)
    return step, phases.group(1).strip() if phases else ""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "models/tiny-shapes"))
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--plain", action="store_true",
                    help="also time unigrpo with plain weights (--plain-weights) in every round")
    ap.add_argument("--recompute", action="store_true",
                    help="also time unigrpo on session 6's path (the later updates recomputing "
                         "their forward, every denoising step running the whole velocity graph) "
                         "in every round")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    native_norms()
    man, text, img, lm, un = load_package(args.model)
    err = check_against_onnx(args.model, img, un)
    print(f"PyTorch {torch.__version__}, {args.threads} threads; velocity agrees with velocity.onnx "
          f"(relative {err:.1e})")
    step = Step(man, text, img, lm, un)
    step.step()  # warm-up
    torch_steps, torch_phases, ours, our_phases, plain, recomp = [], [], [], [], [], []
    for r in range(args.rounds):
        for _ in range(args.steps):
            ph, total = step.step()
            torch_steps.append(total)
            torch_phases.append(ph)
        s, ph = unigrpo_round(args.steps, args.threads)
        ours.append(s / 1e3)
        our_phases.append(ph)
        extra = ""
        if args.plain:
            sp, _ = unigrpo_round(args.steps, args.threads, plain=True)
            plain.append(sp / 1e3)
            extra = f", unigrpo with plain weights {sp / 1e3:.3f} s/step"
        if args.recompute:
            sr, _ = unigrpo_round(args.steps, args.threads, recompute=True)
            recomp.append(sr / 1e3)
            extra += f", unigrpo on session 6's path {sr / 1e3:.3f} s/step"
        print(f"round {r + 1}: torch {np.median(torch_steps[-args.steps:]):.3f} s/step, unigrpo {s / 1e3:.3f} s/step"
              + extra, flush=True)
    tm, um = float(np.median(torch_steps)), float(np.median(ours))
    ph = np.median(np.array(torch_phases), 0)
    names = ["reasoning decode", "SDE rollout"] + [f"update {u + 1}" for u in range(step.updates)]
    print(f"PyTorch eager: {tm:.3f} s per step (median of {len(torch_steps)}): "
          + ", ".join(f"{n} {v:.3f}" for n, v in zip(names, ph)))
    print(f"unigrpo:       {um:.3f} s per step (median of {len(ours)} rounds' medians); last round's phases: "
          f"{our_phases[-1]}")
    print(f"ratio torch / unigrpo = {tm / um:.2f} (above 1: unigrpo is faster)")
    if plain:
        pm = float(np.median(plain))
        print(f"unigrpo with plain weights: {pm:.3f} s per step; ratio torch / plain = {tm / pm:.2f}")
    if recomp:
        rm = float(np.median(recomp))
        print(f"unigrpo on session 6's path (recomputing): {rm:.3f} s per step; "
              f"ratio torch / recompute = {tm / rm:.2f}")


if __name__ == "__main__":
    main()
