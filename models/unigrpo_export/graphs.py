"""Export one network as a FORWARD graph and its VJP graph, and check both in ONNX Runtime.

A `GraphSpec` describes a functional network `fn(params, *inputs) -> tuple of outputs`. Trainable
parameters become graph inputs (named as the parameters); frozen parameters become initializers.
The VJP graph takes the trainables, the inputs and one cotangent per output (`d_<output>`), and
returns the outputs followed by `grad.<param>` for every trainable.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch._decomp import core_aten_decompositions
from torch.export import Dim
from torch.fx.experimental.proxy_tensor import make_fx

aten = torch.ops.aten


@dataclass
class GraphSpec:
    name: str
    fn: Callable  # fn(params: dict, *inputs) -> tuple[Tensor, ...]
    trainable: dict  # name -> tensor (graph inputs)
    frozen: dict  # name -> tensor (initializers)
    input_names: list
    output_names: list
    make_inputs: Callable  # make_inputs(rng, **dims) -> list of tensors
    dims: dict  # dim name -> (min, max)
    input_dims: list  # per input: tuple of dim names or ints (for dynamic_shapes)
    example: dict  # dims used for the export example
    checks: list = field(default_factory=list)  # list of dicts of dims to verify on
    differentiable_outputs: list | None = None  # outputs that get a cotangent (default: all outputs)
    output_dims: dict = field(default_factory=dict)  # output name -> dim names (for the cotangent inputs)


def _conv_weight_grad(grad_out, inp, weight, stride, padding, dilation):
    """Weight gradient as one matrix product over unfolded input patches (im2col by slicing).

    The textbook export, a convolution of the transposed input with the transposed output
    gradient as its kernel, becomes a Conv node with a kernel as large as the image, which
    ONNX Runtime's CPU kernels run several times slower than the equivalent GEMM.
    """
    co, ci, kh, kw = weight.shape
    oh, ow = grad_out.shape[2], grad_out.shape[3]
    x = inp.transpose(0, 1)  # [Ci, N, H, W]: patches then flatten without another transpose
    for axis, pad in ((2, padding[0]), (3, padding[1])):
        if pad:  # zero padding by concatenation: F.pad fixes the symbolic batch size when traced
            z = torch.zeros_like(x.narrow(axis, 0, pad))
            x = torch.cat([z, x, z], axis)
    cols = []
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dilation[0], j * dilation[1]
            cols.append(x[:, :, r0:r0 + (oh - 1) * stride[0] + 1:stride[0],
                          c0:c0 + (ow - 1) * stride[1] + 1:stride[1]])
    patches = torch.stack(cols, 1).flatten(2).flatten(0, 1)  # [Ci*K, N*OH*OW]
    g = grad_out.transpose(0, 1).flatten(1)  # [Co, N*OH*OW]
    return (g @ patches.t()).reshape(co, ci, kh, kw)


def _pow_scalar(x, exponent):
    """x ** 1 and x ** 2 (the derivative of a square is 2 * x ** 1) as plain products."""
    if exponent == 1:
        return x.clone()
    if exponent == 2:
        return x * x
    return aten.pow.Tensor_Scalar(x, exponent)


def _conv_backward(grad_out, inp, weight, bias_sizes, stride, padding, dilation, transposed, output_padding,
                   groups, output_mask):
    """aten.convolution_backward expressed with exportable ops that ONNX Runtime runs fast on CPU:
    the input gradient of a stride-1 convolution as a convolution with the flipped kernel (of a
    strided one as a transposed convolution), the weight gradient as a GEMM over patches."""
    assert not transposed and groups == 1, "only plain 2-D convolutions are supported"
    gi = gw = gb = None
    if output_mask[0]:
        kh, kw = weight.shape[2], weight.shape[3]
        if list(stride) == [1, 1] and list(dilation) == [1, 1] and all(
                padding[i] <= weight.shape[2 + i] - 1 for i in range(2)):
            w = weight.flip(2, 3).transpose(0, 1)
            gi = F.conv2d(grad_out, w, None, 1, (kh - 1 - padding[0], kw - 1 - padding[1]))
        else:
            op = [inp.shape[2 + i] - ((grad_out.shape[2 + i] - 1) * stride[i] - 2 * padding[i]
                                       + dilation[i] * (weight.shape[2 + i] - 1) + 1) for i in range(2)]
            gi = F.conv_transpose2d(grad_out, weight, None, stride, padding, op, groups, dilation)
    if output_mask[1]:
        gw = _conv_weight_grad(grad_out, inp, weight, stride, padding, dilation)
    if output_mask[2]:
        gb = grad_out.sum((0, 2, 3))
    return gi, gw, gb


def decompositions():
    table = dict(core_aten_decompositions())
    table[aten.empty_like.default] = lambda x, **kw: torch.zeros_like(x)
    table[aten.empty_permuted.default] = lambda size, perm, **kw: torch.zeros(size, dtype=kw.get("dtype"))
    table[aten.convolution_backward.default] = _conv_backward
    table[aten.pow.Tensor_Scalar] = _pow_scalar
    return table


def _safe(name: str) -> str:
    return name.replace(".", "__")


class _Forward(torch.nn.Module):
    def __init__(self, spec: GraphSpec):
        super().__init__()
        self.spec = spec
        self.tnames = list(spec.trainable)
        self.fnames = list(spec.frozen)
        for k, v in spec.frozen.items():
            self.register_buffer(_safe(k), v.detach().clone())

    def forward(self, *args):
        n = len(self.tnames)
        p = dict(zip(self.tnames, args[:n]))
        for k in self.fnames:
            p[k] = getattr(self, _safe(k))
        return tuple(self.spec.fn(p, *args[n:]))


class _Vjp(torch.nn.Module):
    def __init__(self, spec: GraphSpec, gm, n_frozen_order):
        super().__init__()
        self.gm = gm
        self.n_train = len(spec.trainable)
        self.n_inputs = len(spec.input_names)
        self.fnames = n_frozen_order
        for k in n_frozen_order:
            self.register_buffer(_safe(k), spec.frozen[k].detach().clone())

    def forward(self, *args):
        frozen = [getattr(self, _safe(k)) for k in self.fnames]
        n = self.n_train + self.n_inputs
        return tuple(self.gm(*args[:n], *frozen, *args[n:]))


def _dynamic(spec: GraphSpec, n_lead: int, extra: list):
    dims = {k: Dim(k, min=lo, max=hi) for k, (lo, hi) in spec.dims.items()}
    specs = [None] * n_lead
    for d in spec.input_dims + extra:
        specs.append({i: dims[x] for i, x in enumerate(d) if isinstance(x, str)} or None)
    return {"args": tuple(specs)}


def diff_outputs(spec):
    return spec.differentiable_outputs or spec.output_names


def _save(prog, path: str):
    """Write the graph without the exporter's per-node debug metadata (source stack traces, FX
    node text): it holds line numbers of this tooling, so every edit here would change the bytes
    of graphs whose computation did not change."""
    prog.save(path, external_data=False)
    m = onnx.load(path)
    for node in m.graph.node:
        del node.metadata_props[:]
    onnx.save(m, path)


def export_forward(spec: GraphSpec, path: str):
    args = list(spec.trainable.values()) + spec.make_inputs(np.random.default_rng(0), **spec.example)
    prog = torch.onnx.export(_Forward(spec), tuple(args), dynamo=True, opset_version=18, external_data=False,
                             input_names=list(spec.trainable) + spec.input_names, output_names=spec.output_names,
                             dynamic_shapes=_dynamic(spec, len(spec.trainable), []), verbose=False)
    _save(prog, path)


def _vjp_callable(spec: GraphSpec):
    tnames, fnames = list(spec.trainable), list(spec.frozen)
    n_t, n_i, n_f = len(tnames), len(spec.input_names), len(fnames)
    diff = diff_outputs(spec)
    didx = [spec.output_names.index(o) for o in diff]

    def run(*args):
        train, inputs = args[:n_t], args[n_t:n_t + n_i]
        frozen = args[n_t + n_i:n_t + n_i + n_f]
        cots = args[n_t + n_i + n_f:]

        def f(*tr):
            p = dict(zip(tnames, tr))
            p.update(zip(fnames, frozen))
            outs = spec.fn(p, *inputs)
            return tuple(outs[i] for i in didx)

        outs, pull = torch.func.vjp(f, *train)
        grads = pull(tuple(cots))
        return (*outs, *grads)

    return run


def _fake_inputs(args, dyn_dims):
    """Fake tensors whose named dims are symbolic and the rest static.

    Each named dim of each tensor gets its own symbol; dims that the computation relates (the
    batch of `x` and of its cotangent, say) are unified by the ops that combine them. An op that
    needs two unrelated symbols equal, or a concrete value (tracing `F.pad` did), specialises them
    to the example's sizes, and the exported graph then rejects other sizes: the export-time
    verification at several sizes catches that.

    Tracing with every dim symbolic (make_fx's "symbolic" mode) makes sympy reason about channel
    and spatial sizes too, which takes minutes for a conv net; static sizes keep it fast.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv, StatelessSymbolicContext

    mode = FakeTensorMode(shape_env=ShapeEnv())
    out = []
    for a, dims in zip(args, dyn_dims):
        dyn = [DimDynamic.DYNAMIC if (dims is not None and i < len(dims) and isinstance(dims[i], str))
               else DimDynamic.STATIC for i in range(a.dim())]
        out.append(mode.from_tensor(a, symbolic_context=StatelessSymbolicContext(dynamic_sizes=dyn)))
    return mode, out


def export_vjp(spec: GraphSpec, path: str):
    rng = np.random.default_rng(0)
    inputs = spec.make_inputs(rng, **spec.example)
    with torch.no_grad():
        outs = _Forward(spec)(*spec.trainable.values(), *inputs)
    diff = diff_outputs(spec)
    cots = [torch.randn_like(outs[spec.output_names.index(o)]) for o in diff]
    args = list(spec.trainable.values()) + inputs + list(spec.frozen.values()) + cots
    out_dims = [_out_dims(spec, o) for o in diff]
    dyn = [None] * len(spec.trainable) + list(spec.input_dims) + [None] * len(spec.frozen) + out_dims
    mode, fakes = _fake_inputs(args, dyn)
    with mode:
        gm = make_fx(_vjp_callable(spec), tracing_mode="fake", decomposition_table=decompositions())(*fakes)
    module = _Vjp(spec, gm, list(spec.frozen))
    eargs = list(spec.trainable.values()) + inputs + cots
    prog = torch.onnx.export(module, tuple(eargs), dynamo=True, opset_version=18, external_data=False,
                             input_names=list(spec.trainable) + spec.input_names + [f"d_{o}" for o in diff],
                             output_names=diff + [f"grad.{k}" for k in spec.trainable],
                             dynamic_shapes=_dynamic(spec, len(spec.trainable), out_dims), verbose=False)
    _save(prog, path)


def _out_dims(spec, name):
    return spec.output_dims[name]


def _ort(path):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-8))


def verify(spec: GraphSpec, fwd_path: str, vjp_path: str | None, tol_fwd=1e-4, tol_vjp=1e-3):
    """Run the exported graphs in ONNX Runtime against PyTorch / autograd; raise beyond tolerance."""
    sf = _ort(fwd_path)
    sv = _ort(vjp_path) if vjp_path else None
    rng = np.random.default_rng(1)
    report = []
    tnames = list(spec.trainable)
    diff = diff_outputs(spec)
    for dims in spec.checks:
        inputs = spec.make_inputs(rng, **dims)
        feed = {k: v.detach().numpy() for k, v in spec.trainable.items()}
        feed.update({k: v.numpy() for k, v in zip(spec.input_names, inputs)})
        got = sf.run(spec.output_names, feed)
        params = {k: v.detach().clone().requires_grad_(True) for k, v in spec.trainable.items()}
        full = dict(params)
        full.update(spec.frozen)
        want = spec.fn(full, *inputs)
        worst = 0.0
        for name, g, w in zip(spec.output_names, got, want):
            w = w.detach().numpy()
            if g.shape != w.shape:
                raise AssertionError(f"{spec.name} {name}: shape {g.shape} != PyTorch {w.shape} at {dims}")
            if w.dtype == np.uint8:
                err = float(np.max(np.abs(g.astype(np.int32) - w.astype(np.int32))))
                if err > 1:
                    raise AssertionError(f"{spec.name} {name}: uint8 outputs differ by {err} at {dims}")
                continue
            err = _rel(g, w)
            worst = max(worst, err)
            if not err <= tol_fwd:
                raise AssertionError(f"{spec.name} FORWARD {name}: relative error {err:.2e} > {tol_fwd} at {dims}")
        line = {"graph": spec.name, "dims": dims, "forward_rel_err": worst}
        if sv is not None:
            cots = [torch.from_numpy(rng.standard_normal(want[spec.output_names.index(o)].shape).astype(np.float32))
                    for o in diff]
            outs = [want[spec.output_names.index(o)] for o in diff]
            grads = torch.autograd.grad(outs, [params[k] for k in tnames], cots, allow_unused=True)
            vfeed = dict(feed)
            vfeed.update({f"d_{o}": c.numpy() for o, c in zip(diff, cots)})
            vgot = sv.run([f"grad.{k}" for k in tnames], vfeed)
            gworst = 0.0
            for k, g, w in zip(tnames, vgot, grads):
                w = np.zeros_like(g) if w is None else w.numpy()
                err = _rel(g, w)
                gworst = max(gworst, err)
                if not err <= tol_vjp:
                    raise AssertionError(f"{spec.name} VJP grad.{k}: relative error {err:.2e} > {tol_vjp} at {dims}")
            line["vjp_rel_err"] = gworst
        report.append(line)
    return report


def export_and_verify(spec: GraphSpec, out_dir: str, vjp: bool, log=print):
    import os
    t0 = time.time()
    fwd = os.path.join(out_dir, spec.name + ".onnx")
    export_forward(spec, fwd)
    vjp_path = None
    if vjp:
        vjp_path = os.path.join(out_dir, spec.name + "_vjp.onnx")
        export_vjp(spec, vjp_path)
    for p in [fwd] + ([vjp_path] if vjp_path else []):
        onnx.checker.check_model(onnx.load(p))
    report = verify(spec, fwd, vjp_path)
    log({"graph": spec.name, "export_seconds": round(time.time() - t0, 1), "checks": report})
    return report
