"""tiny-shared: a BAGEL-like single transformer. Text tokens and image tokens go through the same
blocks; the image tokens attend to the text context's per-layer key/value cache (from the text
decode graph) and to each other. Random weights, untrained: it exists to prove the package format."""
from __future__ import annotations

from dataclasses import dataclass, asdict

import torch

from . import nets
from .nets import NEG, attention, heads, layer_norm, lin, merge, silu


@dataclass
class SharedConfig:
    vocab: int
    d: int = 64
    layers: int = 2
    heads: int = 2
    ff: int = 128
    max_pos: int = 48
    latent_c: int = 4
    latent_s: int = 8
    patch: int = 2

    def lm(self):
        return nets.LMConfig(vocab=self.vocab, d=self.d, layers=self.layers, heads=self.heads, ff=self.ff,
                             max_pos=self.max_pos)

    def to_dict(self):
        return asdict(self)


def init(cfg: SharedConfig, seed: int) -> dict:
    p = nets.lm_init(cfg.lm(), seed)
    g = torch.Generator().manual_seed(seed + 1)
    pd = cfg.latent_c * cfg.patch * cfg.patch
    n = (cfg.latent_s // cfg.patch) ** 2
    nets._lin(g, "img_in", pd, cfg.d, p)
    p["img_pos"] = torch.randn(n, cfg.d, generator=g) * 0.02
    nets._lin(g, "img_t1", cfg.d, cfg.d, p)
    nets._lin(g, "img_t2", cfg.d, cfg.d, p)
    nets._norm("img_ln", cfg.d, p)
    nets._lin(g, "img_out", cfg.d, pd, p, scale=0.1)
    p["dec.w"] = torch.randn(3, cfg.latent_c, generator=g) * 0.7
    return p


def velocity(p, cfg: SharedConfig, x, t, ctx_mask, ctx_kv):
    """x [B, C, S, S]; ctx_kv = [(k, v)] per layer, each [B, H, L, D/H]; ctx_mask [B, L]."""
    B, C, S, _ = x.shape
    P, n = cfg.patch, S // cfg.patch
    tok = x.reshape(B, C, n, P, n, P).permute(0, 2, 4, 1, 3, 5).reshape(B, n * n, C * P * P)
    temb = lin(p, "img_t2", silu(lin(p, "img_t1", nets.timestep_embedding(t, cfg.d))))
    h = lin(p, "img_in", tok) + p["img_pos"] + temb[:, None, :]
    own = torch.ones(B, n * n, dtype=ctx_mask.dtype)
    bias = ((torch.cat([ctx_mask, own], dim=1) <= 0).to(torch.float32) * NEG)[:, None, None, :]
    for l in range(cfg.layers):
        pk, pv = ctx_kv[l]
        h, _, _ = nets.lm_block(p, cfg.lm(), l, h, bias, pk, pv)
    out = lin(p, "img_out", layer_norm(h, p["img_ln.w"], p["img_ln.b"]))
    return out.reshape(B, n, n, C, P, P).permute(0, 3, 1, 4, 2, 5).reshape(B, C, S, S)


def decoder(p, latent):
    """latent [B, 4, 8, 8] -> RGB8 [B, 16, 16, 3]: a fixed 1x1 colour map, tanh, 2x nearest upsampling."""
    rgb = torch.tanh(torch.einsum("oc,bchw->bohw", p["dec.w"], latent))
    return nets.pixel_decoder(nets.upsample2(rgb))
