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


if __name__ == "__main__":
    unittest.main()
