"""Tests of the export tooling (needs the export venv: see docs/exporting.md).

    PYTHONPATH=models python -m unittest discover -s models/tests -v
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "models"))

from unigrpo_export import make_data, shapes_world  # noqa: E402


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class WorldTest(unittest.TestCase):
    def test_committed_prompts_and_fixtures_are_reproduced(self):
        with tempfile.TemporaryDirectory() as d:
            make_data.write_prompts(d)
            for split in ("train", "test"):
                self.assertEqual(sha(os.path.join(d, "prompts", f"{split}.txt")),
                                 sha(os.path.join(ROOT, "models/tiny-shapes/prompts", f"{split}.txt")), split)
            make_data.fixtures(os.path.join(d, "f.json"))
            self.assertEqual(sha(os.path.join(d, "f.json")), sha(os.path.join(ROOT, "tests/data/shapes_fixtures.json")))

    def test_test_split_holds_out_knowledge_shape_pairs(self):
        train, test = shapes_world.splits()
        pairs = lambda ps: {(p.text.split(" the colour of ")[1], p.readings[0].groups[0].shape)
                            for p in ps if p.kind == "knowledge"}
        self.assertTrue(pairs(test))
        self.assertFalse(pairs(test) & pairs(train))
        self.assertFalse({p.text for p in train} & {p.text for p in test})

    def test_open_prompts_have_several_readings(self):
        for p in shapes_world.all_prompts():
            if p.kind == "open":
                self.assertGreater(len(p.readings), 1, p.text)
            else:
                self.assertEqual(len(p.readings), 1, p.text)


class DecompositionTest(unittest.TestCase):
    def test_conv_backward_matches_autograd(self):
        import torch
        import torch.nn.functional as F
        from unigrpo_export.graphs import _conv_backward
        torch.manual_seed(0)
        # (in, out, kernel, stride, padding, size): stride 1 takes the flipped-kernel path, stride 2
        # the transposed convolution; every case takes the GEMM weight gradient
        for ci, co, k, st, pad, size in [(5, 7, 3, 1, 1, 16), (5, 7, 3, 2, 1, 16), (4, 6, 1, 1, 0, 8),
                                         (3, 4, 3, 2, 1, 9), (2, 3, 3, 1, 0, 7)]:
            x = torch.randn(3, ci, size, size, dtype=torch.float64, requires_grad=True)
            w = torch.randn(co, ci, k, k, dtype=torch.float64, requires_grad=True)
            y = F.conv2d(x, w, None, st, pad)
            g = torch.randn_like(y)
            gx, gw = torch.autograd.grad(y, [x, w], g)
            a, b, c = _conv_backward(g, x, w, None, [st, st], [pad, pad], [1, 1], False, [0, 0], 1,
                                     [True, True, True])
            self.assertLess((a - gx).abs().max().item(), 1e-10)
            self.assertLess((b - gw).abs().max().item(), 1e-10)
            self.assertLess((c - g.sum((0, 2, 3))).abs().max().item(), 1e-10)


class CoordsTest(unittest.TestCase):
    def test_coordinate_channels_run_left_to_right_and_top_to_bottom(self):
        import torch
        from unigrpo_export import nets
        c = nets.coord_channels(torch.zeros(2, 3, 4, 5))
        self.assertEqual(tuple(c.shape), (2, 2, 4, 5))
        self.assertEqual(c[1, 0, 2].tolist(), [-1.0, -0.5, 0.0, 0.5, 1.0])  # x along a row
        for got, want in zip(c[0, 1, :, 3].tolist(), [-1.0, -1.0 / 3, 1.0 / 3, 1.0]):  # y down a column
            self.assertAlmostEqual(got, want, places=6)

    def test_zero_coordinate_weights_leave_the_function_without_them(self):
        import torch
        from unigrpo_export import nets
        img, vocab = shipped_image_params()
        self.assertEqual(img["conv_in.w"].shape[1], 5, "the shipped model (version 2) reads coordinates")
        w = img["conv_in.w"]
        plain = dict(img, **{"conv_in.w": w[:, :3].contiguous()})
        zeroed = dict(img, **{"conv_in.w": torch.cat([w[:, :3], torch.zeros(w.shape[0], 2, 3, 3)], 1)})
        x, t, ids, mask = velocity_inputs(vocab)
        a = nets.unet_velocity(plain, nets.UNetConfig(vocab=vocab), x, t, ids, mask)
        b = nets.unet_velocity(zeroed, nets.UNetConfig(vocab=vocab, coords=True), x, t, ids, mask)
        self.assertEqual((a - b).abs().max().item(), 0.0)
        # zero attention position embeddings leave it too
        cfg = nets.UNetConfig(vocab=vocab, coords=True, attn_pos=True)
        new = {k: torch.zeros_like(v) for k, v in nets.unet_init(cfg, 0).items() if k.endswith(".pos")}
        self.assertEqual(sorted(new), ["sa.pos", "x1.pos", "x2.pos", "x3.pos"])
        d = nets.unet_velocity(dict(zeroed, **new), cfg, x, t, ids, mask)
        self.assertEqual((a - d).abs().max().item(), 0.0)
        # and the shipped model's trained coordinate weights change it where the picture is
        c = nets.unet_velocity(img, nets.UNetConfig(vocab=vocab, coords=True), x, t, ids, mask)
        self.assertGreater((a - c).abs().max().item(), 1e-3)


def shipped_image_params():
    from safetensors.torch import load_file
    p = load_file(os.path.join(ROOT, "models/tiny-shapes/params.safetensors"))
    img = {k[len("image."):]: v for k, v in p.items() if k.startswith("image.")}
    return img, img["enc.tok_emb"].shape[0]


def velocity_inputs(vocab, n=3, L=6):
    import torch
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(n, 3, 16, 16, generator=g), torch.rand(n, generator=g)
    ids = torch.randint(0, vocab, (n, L), generator=g)
    mask = torch.ones(n, L, dtype=torch.int64)
    mask[0, :2] = 0  # left padding, as the package format has it
    return x, t, ids, mask


class EncoderLayersTest(unittest.TestCase):
    def test_added_encoder_blocks_start_as_the_identity_and_then_learn(self):
        import torch
        from unigrpo_export import nets
        img, vocab = shipped_image_params()
        cfg1 = nets.UNetConfig(vocab=vocab, coords=True)
        cfg3 = nets.UNetConfig(vocab=vocab, coords=True, enc_layers=3)
        fresh = nets.unet_init(cfg3, 0)
        added = sorted(k for k in fresh if k not in img)
        self.assertEqual(added, sorted(f"enc.b{i}.{n}.{w}" for i in (1, 2) for n in
                                       ("ln1", "qkv", "o", "ln2", "ff1", "ff2") for w in ("w", "b")))
        # the default network draws exactly what it drew before the option existed
        self.assertEqual(list(nets.unet_init(cfg1, 0)), [k for k in fresh if not k.startswith("enc.b")])
        for k, v in nets.unet_init(cfg1, 0).items():
            self.assertTrue(torch.equal(v, fresh[k]), k)
        zero = {n for i in (1, 2) for n in nets.enc_block_outputs(f"enc.b{i}")}
        deep = dict(img, **{k: (torch.zeros_like(fresh[k]) if k in zero else fresh[k]) for k in added})
        x, t, ids, mask = velocity_inputs(vocab)
        a = nets.unet_velocity(img, cfg1, x, t, ids, mask)
        b = nets.unet_velocity(deep, cfg3, x, t, ids, mask)
        self.assertEqual((a - b).abs().max().item(), 0.0)
        # the zero output projections still get a gradient (the block can learn from there)
        w = deep["enc.b1.o.w"].clone().requires_grad_(True)
        nets.unet_velocity(dict(deep, **{"enc.b1.o.w": w}), cfg3, x, t, ids, mask).square().sum().backward()
        self.assertGreater(w.grad.abs().max().item(), 0.0)
        # and a non-zero one changes the velocity (a random one: a constant shift of every
        # feature would vanish in the final layer norm)
        deep["enc.b2.ff2.w"] = 0.05 * torch.randn(deep["enc.b2.ff2.w"].shape, generator=torch.Generator().manual_seed(1))
        c = nets.unet_velocity(deep, cfg3, x, t, ids, mask)
        self.assertGreater((a - c).abs().max().item(), 1e-3)

    def test_reexport_reads_the_encoder_depth_off_the_parameters(self):
        import torch
        from unigrpo_export import nets, reexport
        with open(os.path.join(ROOT, "models/tiny-shapes/unigrpo.json")) as f:
            man = json.load(f)
        img, vocab = shipped_image_params()
        params = {"text.l0.ff1.w": torch.zeros(128, 512), "text.pos_emb": torch.zeros(48, 128),
                  **{"image." + k: v for k, v in img.items()}}
        self.assertEqual(reexport.configs(man, params)[1].enc_layers, 1)
        cfg3 = nets.UNetConfig(vocab=vocab, coords=True, enc_layers=3)
        params.update({"image." + k: v for k, v in nets.unet_init(cfg3, 0).items() if k.startswith("enc.b")})
        un = reexport.configs(man, params)[1]
        self.assertEqual((un.enc_layers, un.coords, un.attn_pos), (3, True, False))


class DataMixTest(unittest.TestCase):
    def test_kind_weights_change_the_image_draw_only(self):
        import random
        from tokenizers import Tokenizer
        from unigrpo_export import train_tiny_shapes as tts
        tok = Tokenizer.from_file(os.path.join(ROOT, "models/tiny-shapes/tokenizer.json"))
        # without weights, the draw is the shipped model's: rng.choice over the kinds
        d, rng = tts.Data(tok, 7), random.Random(7)
        for _ in range(50):
            p, _ = d.example(weighted=True)
            self.assertEqual(tts.subkind(p), rng.choice(tts.KINDS))
            rng.choice(d.by_kind[tts.subkind(p)])
            rng.choice(p.readings)
        # relation at weight 4 among six kinds at 1: 4/10 of the image draws, 1/7 of the text draws
        d = tts.Data(tok, 7, {"relation": 4.0})
        n = 4000
        img = sum(tts.subkind(d.example(weighted=True)[0]) == "relation" for _ in range(n)) / n
        txt = sum(tts.subkind(d.example()[0]) == "relation" for _ in range(n)) / n
        self.assertAlmostEqual(img, 0.4, delta=0.025)
        self.assertAlmostEqual(txt, 1 / 7, delta=0.02)


class ExportTest(unittest.TestCase):
    def test_tiny_shared_export_reproduces_the_committed_package(self):
        committed = os.path.join(ROOT, "models/tiny-shared")
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "pkg")
            subprocess.run([sys.executable, "-m", "unigrpo_export.package", "tiny-shared", "--tokenizer",
                            os.path.join(committed, "tokenizer.json"), "--out", out], check=True,
                           env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "models")},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            m = json.load(open(os.path.join(out, "unigrpo.json")))
            want = json.load(open(os.path.join(committed, "unigrpo.json")))
            for name, entry in want["files"].items():
                self.assertEqual(m["files"][name]["sha256"], entry["sha256"], name)
            for graph, checks in m["export"]["checks"].items():
                for c in checks:
                    self.assertLess(c["forward_rel_err"], 1e-4, graph)
                    self.assertLess(c.get("vjp_rel_err", 0.0), 1e-3, graph)

    def test_tiny_shapes_reexport_reproduces_the_committed_graphs(self):
        """The image graphs of the shipped model from its own parameters with this exporter: the
        same computation as the committed files (nothing replaced), within tolerance."""
        import shutil
        committed = os.path.join(ROOT, "models/tiny-shapes")
        with tempfile.TemporaryDirectory() as d:
            pkg = os.path.join(d, "pkg")
            shutil.copytree(committed, pkg)
            out = subprocess.run([sys.executable, "-m", "unigrpo_export.reexport", pkg], check=True,
                                 env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "models")},
                                 capture_output=True, text=True).stdout
            self.assertIn('{"replaced": []}', out)
            m = json.load(open(os.path.join(pkg, "unigrpo.json")))
            want = json.load(open(os.path.join(committed, "unigrpo.json")))
            self.assertEqual(m["files"], want["files"])
            for c in m["export"]["checks"]["velocity"]:
                self.assertLess(c["forward_rel_err"], 1e-4)
                self.assertLess(c["vjp_rel_err"], 1e-3)


if __name__ == "__main__":
    unittest.main()
