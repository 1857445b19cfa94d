"""Functional network definitions: every network is `f(params: dict[str, Tensor], *inputs)`.

Written with plain tensor ops (matmul, softmax, manual norms) so that both the FORWARD graph and
the VJP graph traced through torch.func export to default-domain ONNX ops (opset 18).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, asdict

import torch
import torch.nn.functional as F

NEG = -1e9  # additive mask value: finite, so a fully masked row (left padding) gives no NaN


def silu(x):
    return x * torch.sigmoid(x)


def layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def group_norm(x, groups, w, b, eps=1e-5):
    B, C, H, W = x.shape
    g = x.reshape(B, groups, C // groups * H * W)
    mu = g.mean(-1, keepdim=True)
    var = ((g - mu) ** 2).mean(-1, keepdim=True)
    g = (g - mu) / torch.sqrt(var + eps)
    return g.reshape(B, C, H, W) * w.reshape(1, C, 1, 1) + b.reshape(1, C, 1, 1)


def attention(q, k, v, bias):
    """q [B,H,Tq,D], k/v [B,H,Tk,D], bias broadcastable to [B,H,Tq,Tk]."""
    s = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1])) + bias
    return torch.matmul(torch.softmax(s, dim=-1), v)


def heads(x, n):
    B, T, D = x.shape
    return x.reshape(B, T, n, D // n).transpose(1, 2)


def merge(x):
    B, H, T, D = x.shape
    return x.transpose(1, 2).reshape(B, T, H * D)


def timestep_embedding(t, dim):
    """t in [0, 1] (1 = noise), shape [B] -> [B, dim] sinusoidal features of 1000 t."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    a = (t * 1000.0)[:, None] * freqs[None, :]
    return torch.cat([torch.cos(a), torch.sin(a)], dim=-1)


def _lin(g, name, fan_in, fan_out, params, bias=True, scale=1.0):
    params[name + ".w"] = torch.randn(fan_in, fan_out, generator=g) * (scale / math.sqrt(fan_in))
    if bias:
        params[name + ".b"] = torch.zeros(fan_out)


def _norm(name, dim, params):
    params[name + ".w"] = torch.ones(dim)
    params[name + ".b"] = torch.zeros(dim)


def _conv(g, name, cin, cout, k, params, scale=1.0):
    params[name + ".w"] = torch.randn(cout, cin, k, k, generator=g) * (scale / math.sqrt(cin * k * k))
    params[name + ".b"] = torch.zeros(cout)


def lin(p, name, x):
    y = torch.matmul(x, p[name + ".w"])
    b = p.get(name + ".b")
    return y if b is None else y + b


def conv(p, name, x, stride=1):
    w = p[name + ".w"]
    return F.conv2d(x, w, p[name + ".b"], stride=stride, padding=w.shape[-1] // 2)


# ------------------------------------------------------------------ text: decoder-only LM

@dataclass
class LMConfig:
    vocab: int
    d: int = 128
    layers: int = 2
    heads: int = 4
    ff: int = 512
    max_pos: int = 48

    def to_dict(self):
        return asdict(self)


def lm_init(cfg: LMConfig, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    p = {"tok_emb": torch.randn(cfg.vocab, cfg.d, generator=g) * 0.02,
         "pos_emb": torch.randn(cfg.max_pos, cfg.d, generator=g) * 0.02}
    for l in range(cfg.layers):
        _norm(f"l{l}.ln1", cfg.d, p)
        _lin(g, f"l{l}.qkv", cfg.d, 3 * cfg.d, p)
        _lin(g, f"l{l}.o", cfg.d, cfg.d, p, scale=0.5)
        _norm(f"l{l}.ln2", cfg.d, p)
        _lin(g, f"l{l}.ff1", cfg.d, cfg.ff, p)
        _lin(g, f"l{l}.ff2", cfg.ff, cfg.d, p, scale=0.5)
    _norm("ln_f", cfg.d, p)
    _lin(g, "head", cfg.d, cfg.vocab, p, bias=False)
    return p


def lm_block(p, cfg, l, h, bias, past_k, past_v):
    """One pre-LN block; returns (h, k_all, v_all) where k_all/v_all include the past."""
    x = layer_norm(h, p[f"l{l}.ln1.w"], p[f"l{l}.ln1.b"])
    q, k, v = lin(p, f"l{l}.qkv", x).chunk(3, dim=-1)
    q, k, v = heads(q, cfg.heads), heads(k, cfg.heads), heads(v, cfg.heads)
    if past_k is not None:
        k = torch.cat([past_k, k], dim=2)
        v = torch.cat([past_v, v], dim=2)
    h = h + lin(p, f"l{l}.o", merge(attention(q, k, v, bias)))
    x = layer_norm(h, p[f"l{l}.ln2.w"], p[f"l{l}.ln2.b"])
    h = h + lin(p, f"l{l}.ff2", silu(lin(p, f"l{l}.ff1", x)))
    return h, k, v


def causal_bias(attention_mask, T):
    """attention_mask [B, P+T] (1 = real token) -> additive bias [B, 1, T, P+T]; query i sits at P+i."""
    S = attention_mask.shape[1]
    qpos = torch.arange(T)[:, None] + (S - T)
    kpos = torch.arange(S)[None, :]
    allowed = (kpos <= qpos)[None, None] & (attention_mask[:, None, None, :] > 0)
    return (~allowed).to(torch.float32) * NEG


def lm_forward_kv(p, cfg: LMConfig, input_ids, attention_mask, position_ids, past):
    """KV-cache FORWARD: past = [(k, v)] per layer, each [B, H, P, D/H]. Returns logits and presents."""
    h = p["tok_emb"][input_ids] + p["pos_emb"][position_ids]
    bias = causal_bias(attention_mask, input_ids.shape[1])
    presents = []
    for l in range(cfg.layers):
        h, k, v = lm_block(p, cfg, l, h, bias, past[l][0], past[l][1])
        presents.append((k, v))
    h = layer_norm(h, p["ln_f.w"], p["ln_f.b"])
    return lin(p, "head", h), presents


def lm_token_logprobs(p, cfg: LMConfig, input_ids, attention_mask, position_ids, targets, temperature):
    """Training FORWARD: log-prob of targets[b, i] (the token after input_ids[b, i]) under logits / temperature."""
    h = p["tok_emb"][input_ids] + p["pos_emb"][position_ids]
    bias = causal_bias(attention_mask, input_ids.shape[1])
    for l in range(cfg.layers):
        h, _, _ = lm_block(p, cfg, l, h, bias, None, None)
    h = layer_norm(h, p["ln_f.w"], p["ln_f.b"])
    logits = lin(p, "head", h) / temperature
    logp = torch.log_softmax(logits, dim=-1)
    return torch.gather(logp, -1, targets.unsqueeze(-1)).squeeze(-1)


# ------------------------------------------------------------------ image: conv U-Net velocity net

@dataclass
class UNetConfig:
    vocab: int
    channels: int = 3
    size: int = 16
    c0: int = 32
    c1: int = 64
    c2: int = 128
    emb: int = 128
    heads: int = 4
    max_pos: int = 48
    groups: int = 8
    # CoordConv: two fixed channels (x and y, -1 at the left/top edge to 1 at the right/bottom)
    # concatenated to the input, so the network need not infer where a pixel is from the
    # convolutions' zero padding (on in the shipped model since version 2)
    coords: bool = False
    # a learned embedding per position added to the attention layers' normalised features
    # (queries, and the self-attention's keys and values), zero at initialisation
    attn_pos: bool = False
    # attention blocks of the image model's own text encoder (the shipped model: 1); the blocks
    # past the first are named enc.b1, enc.b2, ... and come last in the parameter order
    enc_layers: int = 1

    def to_dict(self):
        return asdict(self)


def coord_channels(x):
    """[B, 2, H, W]: the x and y coordinate of every pixel in [-1, 1] (channel 0: x)."""
    B, _, H, W = x.shape
    ys = torch.linspace(-1.0, 1.0, H, dtype=x.dtype)
    xs = torch.linspace(-1.0, 1.0, W, dtype=x.dtype)
    grid = torch.stack([xs[None, :].expand(H, W), ys[:, None].expand(H, W)])
    return grid.unsqueeze(0).expand(B, 2, H, W)


def _resblock_init(g, name, cin, cout, emb, p):
    _norm(name + ".gn1", cin, p)
    _conv(g, name + ".conv1", cin, cout, 3, p)
    _lin(g, name + ".film", emb, 2 * cout, p, scale=0.1)
    _norm(name + ".gn2", cout, p)
    _conv(g, name + ".conv2", cout, cout, 3, p, scale=0.1)
    if cin != cout:
        _conv(g, name + ".skip", cin, cout, 1, p)


def _xattn_init(g, name, c, d, p, positions=0):
    _norm(name + ".gn", c, p)
    if positions:
        p[name + ".pos"] = torch.zeros(positions, c)
    _lin(g, name + ".q", c, d, p)
    _lin(g, name + ".kv", d, 2 * d, p)
    _lin(g, name + ".o", d, c, p, scale=0.1)


def unet_init(cfg: UNetConfig, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    p = {"enc.tok_emb": torch.randn(cfg.vocab, cfg.emb, generator=g) * 0.3,
         "enc.pos_emb": torch.randn(cfg.max_pos, cfg.emb, generator=g) * 0.3}
    e = cfg.emb
    # shallow text encoder: one attention layer over token + position embeddings
    _norm("enc.ln1", e, p)
    _lin(g, "enc.qkv", e, 3 * e, p)
    _lin(g, "enc.o", e, e, p, scale=0.5)
    _norm("enc.ln2", e, p)
    _lin(g, "enc.ff1", e, 2 * e, p)
    _lin(g, "enc.ff2", 2 * e, e, p, scale=0.5)
    _norm("enc.ln_f", e, p)
    p["enc.pool_q"] = torch.randn(1, e, generator=g) * 0.3
    _lin(g, "enc.pool_kv", e, 2 * e, p)
    _lin(g, "temb1", e, e, p)
    _lin(g, "temb2", e, e, p)
    _conv(g, "conv_in", cfg.channels + (2 if cfg.coords else 0), cfg.c0, 3, p)
    _resblock_init(g, "d0", cfg.c0, cfg.c0, e, p)
    _conv(g, "down0", cfg.c0, cfg.c1, 3, p)
    _resblock_init(g, "d1", cfg.c1, cfg.c1, e, p)
    n1, n2 = ((cfg.size // 2) ** 2, (cfg.size // 4) ** 2) if cfg.attn_pos else (0, 0)
    _xattn_init(g, "x1", cfg.c1, e, p, n1)
    _conv(g, "down1", cfg.c1, cfg.c2, 3, p)
    _resblock_init(g, "m0", cfg.c2, cfg.c2, e, p)
    _xattn_init(g, "sa", cfg.c2, cfg.c2, p, n2)  # self-attention at the bottleneck (kv from itself)
    _xattn_init(g, "x2", cfg.c2, e, p, n2)
    _resblock_init(g, "m1", cfg.c2, cfg.c2, e, p)
    _resblock_init(g, "u1", cfg.c2 + cfg.c1, cfg.c1, e, p)
    _xattn_init(g, "x3", cfg.c1, e, p, n1)
    _resblock_init(g, "u0", cfg.c1 + cfg.c0, cfg.c0, e, p)
    _norm("gn_out", cfg.c0, p)
    _conv(g, "conv_out", cfg.c0, cfg.channels, 3, p, scale=0.1)
    for i in range(1, cfg.enc_layers):  # drawn last: the default network's draws stay as they are
        _enc_block_init(g, f"enc.b{i}", e, p)
    return p


def _enc_block_init(g, name, e, p):
    _norm(name + ".ln1", e, p)
    _lin(g, name + ".qkv", e, 3 * e, p)
    _lin(g, name + ".o", e, e, p, scale=0.5)
    _norm(name + ".ln2", e, p)
    _lin(g, name + ".ff1", e, 2 * e, p)
    _lin(g, name + ".ff2", 2 * e, e, p, scale=0.5)


def enc_layers_of(names) -> int:
    """The encoder depth of a set of image-parameter names (without the "image." prefix)."""
    return 1 + sum(1 for k in names if k.startswith("enc.b") and k.endswith(".ln1.w"))


def enc_block_outputs(name):
    """The parameters of an encoder block whose zero makes the block the identity (its residual
    branches' output projections): a block added to a trained model starts there."""
    return [name + s for s in (".o.w", ".o.b", ".ff2.w", ".ff2.b")]


def _enc_block(p, name, h, bias, nheads):
    x = layer_norm(h, p[name + ".ln1.w"], p[name + ".ln1.b"])
    q, k, v = lin(p, name + ".qkv", x).chunk(3, dim=-1)
    h = h + lin(p, name + ".o", merge(attention(heads(q, nheads), heads(k, nheads), heads(v, nheads), bias)))
    x = layer_norm(h, p[name + ".ln2.w"], p[name + ".ln2.b"])
    return h + lin(p, name + ".ff2", silu(lin(p, name + ".ff1", x)))


def resblock(p, name, x, emb, groups):
    h = conv(p, name + ".conv1", silu(group_norm(x, groups, p[name + ".gn1.w"], p[name + ".gn1.b"])))
    scale, shift = lin(p, name + ".film", emb).chunk(2, dim=-1)
    h = group_norm(h, groups, p[name + ".gn2.w"], p[name + ".gn2.b"])
    h = h * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
    h = conv(p, name + ".conv2", silu(h))
    skip = conv(p, name + ".skip", x) if (name + ".skip.w") in p else x
    return skip + h


def xattn(p, name, x, ctx, bias, groups, nheads):
    """Cross-attention from image positions to ctx [B, L, d] (bias [B,1,1,L]); ctx=None: self-attention."""
    B, C, H, W = x.shape
    h = group_norm(x, groups, p[name + ".gn.w"], p[name + ".gn.b"]).reshape(B, C, H * W).transpose(1, 2)
    if name + ".pos" in p:
        h = h + p[name + ".pos"]
    q = lin(p, name + ".q", h)
    k, v = lin(p, name + ".kv", h if ctx is None else ctx).chunk(2, dim=-1)
    o = attention(heads(q, nheads), heads(k, nheads), heads(v, nheads), 0.0 if ctx is None else bias)
    o = lin(p, name + ".o", merge(o))
    return x + o.transpose(1, 2).reshape(B, C, H, W)


def upsample2(x):
    B, C, H, W = x.shape
    return x[:, :, :, None, :, None].expand(B, C, H, 2, W, 2).reshape(B, C, 2 * H, 2 * W)


def text_encoder(p, cfg: UNetConfig, cond_ids, cond_mask):
    """Shallow encoding of the conditioning tokens: embeddings + cfg.enc_layers attention blocks."""
    pos = (torch.cumsum(cond_mask, dim=1) - 1).clamp(min=0)
    h = p["enc.tok_emb"][cond_ids] + p["enc.pos_emb"][pos]
    bias = ((cond_mask <= 0).to(torch.float32) * NEG)[:, None, None, :]
    h = _enc_block(p, "enc", h, bias, cfg.heads)
    for i in range(1, cfg.enc_layers):
        h = _enc_block(p, f"enc.b{i}", h, bias, cfg.heads)
    ctx = layer_norm(h, p["enc.ln_f.w"], p["enc.ln_f.b"])
    k, v = lin(p, "enc.pool_kv", ctx).chunk(2, dim=-1)
    B = ctx.shape[0]
    q = p["enc.pool_q"].unsqueeze(0).expand(B, 1, cfg.emb)
    pooled = attention(heads(q, cfg.heads), heads(k, cfg.heads), heads(v, cfg.heads), bias)
    return ctx, merge(pooled)[:, 0], bias


def unet_velocity(p, cfg: UNetConfig, x, t, cond_ids, cond_mask):
    """Velocity v(x_t, t | context tokens): x [B, C, S, S], t [B] in [0, 1]."""
    ctx, pooled, bias = text_encoder(p, cfg, cond_ids, cond_mask)
    emb = lin(p, "temb2", silu(lin(p, "temb1", timestep_embedding(t, cfg.emb)))) + pooled
    emb = silu(emb)
    G, nh = cfg.groups, cfg.heads
    xin = torch.cat([x, coord_channels(x)], dim=1) if cfg.coords else x
    h0 = resblock(p, "d0", conv(p, "conv_in", xin), emb, G)
    h1 = xattn(p, "x1", resblock(p, "d1", conv(p, "down0", h0, stride=2), emb, G), ctx, bias, G, nh)
    h = resblock(p, "m0", conv(p, "down1", h1, stride=2), emb, G)
    h = xattn(p, "sa", h, None, None, G, nh)
    h = xattn(p, "x2", h, ctx, bias, G, nh)
    h = resblock(p, "m1", h, emb, G)
    h = resblock(p, "u1", torch.cat([upsample2(h), h1], dim=1), emb, G)
    h = xattn(p, "x3", h, ctx, bias, G, nh)
    h = resblock(p, "u0", torch.cat([upsample2(h), h0], dim=1), emb, G)
    return conv(p, "conv_out", silu(group_norm(h, G, p["gn_out.w"], p["gn_out.b"])))


def pixel_decoder(x):
    """Pixel-space decoder: [B, 3, S, S] in [-1, 1] -> RGB8 [B, S, S, 3] (round half up, saturate)."""
    y = torch.clamp(torch.floor((x + 1.0) * 127.5 + 0.5), 0.0, 255.0)
    return y.permute(0, 2, 3, 1).to(torch.uint8)
