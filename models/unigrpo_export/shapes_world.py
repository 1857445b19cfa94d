"""The tiny-shapes world: scenes, rendering, prompts and their explicit reasoning.

Pure Python + numpy (no torch): the prompt lists, the training data and the reward fixtures are
all generated from here. The Rust `shapes` reward (src/reward/shapes/) parses the same grammar;
keep the two in step (the fixtures test in tests/ checks that they agree).
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import numpy as np

SIZE = 16
BACKGROUND = (0, 0, 0)
COLOURS = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 170, 60),
    "blue": (40, 90, 230),
    "purple": (150, 50, 200),
}
WARM = ["red", "orange", "yellow"]
COLD = ["green", "blue", "purple"]
SHAPES = ["circle", "square", "triangle"]
NUMBERS = {1: "one", 2: "two", 3: "three"}
POSITIONS = ["left", "right", "top", "bottom", "centre"]
WHERE = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
         "centre": "in the centre"}
RELATIONS = ["left of", "right of", "above", "below"]
# world knowledge: two items per colour
KNOWLEDGE = {
    "the sky": "blue", "the sea": "blue",
    "grass": "green", "a leaf": "green",
    "a banana": "yellow", "the sun": "yellow",
    "a tomato": "red", "a strawberry": "red",
    "a carrot": "orange", "a pumpkin": "orange",
    "a grape": "purple", "lavender": "purple",
}
ARITHMETIC = {
    "two minus one": 1, "three minus two": 1,
    "one plus one": 2, "three minus one": 2,
    "one plus two": 3, "a triangle has corners": 3,
}
DESCRIPTIONS = {
    "shape with three corners": "triangle",
    "shape with four corners": "square",
    "round shape": "circle",
    "shape with no corners": "circle",
}


def plural(shape: str, n: int) -> str:
    return shape if n == 1 else shape + "s"


@dataclass(frozen=True)
class Group:
    """n objects of one colour and one shape."""
    n: int
    colour: str
    shape: str


@dataclass(frozen=True)
class Scene:
    """An explicit scene: one group; or one object with a position; or two single objects in a relation."""
    groups: tuple
    position: str | None = None
    relation: str | None = None

    def describe(self) -> str:
        """The reasoning text: the explicit scene description."""
        g0 = self.groups[0]
        text = f"{NUMBERS[g0.n]} {g0.colour} {plural(g0.shape, g0.n)}"
        if self.position:
            text += " " + WHERE[self.position]
        if self.relation:
            g1 = self.groups[1]
            text += f" {self.relation} one {g1.colour} {g1.shape}"
        return text


@dataclass(frozen=True)
class Prompt:
    text: str
    kind: str  # explicit | knowledge | arithmetic | description | open
    readings: tuple  # the valid explicit scenes (one for non-open prompts)


def _a(n: int) -> str:
    return "a" if n == 1 else NUMBERS[n]


def all_prompts() -> list[Prompt]:
    """Every prompt of the world's grammar, with its valid readings."""
    out: list[Prompt] = []
    for c, s in itertools.product(COLOURS, SHAPES):
        for n in (1, 2, 3):
            out.append(Prompt(f"{_a(n)} {c} {plural(s, n)}", "explicit", (Scene((Group(n, c, s),)),)))
        for p in POSITIONS:
            out.append(Prompt(f"a {c} {s} {WHERE[p]}", "explicit", (Scene((Group(1, c, s),), position=p),)))
    for (c1, s1), (c2, s2) in itertools.permutations(itertools.product(COLOURS, SHAPES), 2):
        if c1 == c2:
            continue  # objects are told apart by colour
        for r in RELATIONS:
            out.append(Prompt(f"a {c1} {s1} {r} a {c2} {s2}", "explicit",
                              (Scene((Group(1, c1, s1), Group(1, c2, s2)), relation=r),)))
    for item, c in KNOWLEDGE.items():
        for s in SHAPES:
            for n in (1, 2, 3):
                out.append(Prompt(f"{_a(n)} {plural(s, n)} the colour of {item}", "knowledge",
                                  (Scene((Group(n, c, s),)),)))
    for phrase, n in ARITHMETIC.items():
        for c, s in itertools.product(COLOURS, SHAPES):
            out.append(Prompt(f"as many {c} {s}s as {phrase}", "arithmetic", (Scene((Group(n, c, s),)),)))
    for desc, s in DESCRIPTIONS.items():
        for c in COLOURS:
            out.append(Prompt(f"a {c} {desc}", "description", (Scene((Group(1, c, s),)),)))
    temps = {"warm": WARM, "cold": COLD}
    for t, cs in temps.items():
        out.append(Prompt(f"a few {t}-coloured shapes", "open",
                          tuple(Scene((Group(n, c, s),)) for n in (2, 3) for c in cs for s in SHAPES)))
        out.append(Prompt(f"something round in a {t} colour", "open",
                          tuple(Scene((Group(1, c, "circle"),)) for c in cs)))
        out.append(Prompt(f"something with corners in a {t} colour", "open",
                          tuple(Scene((Group(1, c, s),)) for c in cs for s in ("square", "triangle"))))
        for s in SHAPES:
            out.append(Prompt(f"some {s}s in a {t} colour", "open",
                              tuple(Scene((Group(n, c, s),)) for n in (2, 3) for c in cs)))
    for c in COLOURS:
        out.append(Prompt(f"a {c} shape", "open", tuple(Scene((Group(1, c, s),)) for s in SHAPES)))
        out.append(Prompt(f"one or two {c} shapes", "open",
                          tuple(Scene((Group(n, c, s),)) for n in (1, 2) for s in SHAPES)))
    return out


def _held_out(p: Prompt) -> bool:
    """The test split: whole held-out combinations, not only new wordings."""
    g = p.readings[0].groups[0]
    if p.kind == "knowledge":  # knowledge item x shape pairs
        item = p.text.split(" the colour of ")[1]
        return (list(KNOWLEDGE).index(item) + SHAPES.index(g.shape)) % 4 == 0
    if p.kind == "arithmetic":  # arithmetic phrase x colour pairs
        phrase = p.text.split(" as ", 1)[1]
        return (list(ARITHMETIC).index(phrase) + list(COLOURS).index(g.colour)) % 4 == 0
    if p.kind == "description":  # description x colour pairs
        return (list(DESCRIPTIONS).index(p.text.split(" ", 2)[2]) + list(COLOURS).index(g.colour)) % 4 == 1
    if p.kind == "open":
        return p.text in ("something with corners in a cold colour", "some circles in a warm colour",
                          "a purple shape", "one or two orange shapes")
    # explicit: colour x shape x (count | position) triples and relation quintuples, by a fixed hash
    return (zlib_hash(p.text) % 5) == 0


def zlib_hash(s: str) -> int:
    import zlib
    return zlib.crc32(s.encode())


def splits() -> tuple[list[Prompt], list[Prompt]]:
    train, test = [], []
    for p in all_prompts():
        (test if _held_out(p) else train).append(p)
    return train, test


# ---------------------------------------------------------------- rendering

def _mask(shape: str, size: int) -> np.ndarray:
    c = (np.arange(size) + 0.5)
    yy, xx = np.meshgrid(c, c, indexing="ij")
    if shape == "square":
        return np.ones((size, size), bool)
    if shape == "circle":
        r = size / 2
        return (xx - r) ** 2 + (yy - r) ** 2 <= r * r
    # triangle: apex up, base at the bottom
    half = yy / size * (size / 2)
    return np.abs(xx - size / 2) <= half + 1e-6


def _region(pos: str | None, size: int, rng: random.Random) -> tuple[int, int]:
    lo, hi = 0, SIZE - size
    third = SIZE // 3
    def pick(a, b):
        return rng.randint(max(lo, a), min(hi, b))
    if pos == "left":
        return pick(0, third - size // 2), pick(lo, hi)
    if pos == "right":
        return pick(SIZE - third - size // 2, hi), pick(lo, hi)
    if pos == "top":
        return pick(lo, hi), pick(0, third - size // 2)
    if pos == "bottom":
        return pick(lo, hi), pick(SIZE - third - size // 2, hi)
    if pos == "centre":
        m = (SIZE - size) // 2
        return pick(m - 1, m + 1), pick(m - 1, m + 1)
    return pick(lo, hi), pick(lo, hi)


def _free(boxes, x, y, s) -> bool:
    return all(x + s + 1 <= bx or bx + bs + 1 <= x or y + s + 1 <= by or by + bs + 1 <= y
               for bx, by, bs in boxes)


def render(scene: Scene, rng: random.Random) -> np.ndarray:
    """A random image [SIZE, SIZE, 3] uint8 of the scene (retries placement until it fits)."""
    for _ in range(1000):
        img = np.zeros((SIZE, SIZE, 3), np.uint8)
        img[:] = BACKGROUND
        boxes = []
        objs = [(g.colour, g.shape) for g in scene.groups for _ in range(g.n)]
        single = len(objs) == 1
        ok = True
        for k, (colour, shape) in enumerate(objs):
            s = rng.randint(6, 9) if single else rng.randint(5, 6)
            for _ in range(200):
                x, y = _region(scene.position, s, rng)
                if _free(boxes, x, y, s):
                    break
            else:
                ok = False
                break
            boxes.append((x, y, s))
        if not ok:
            continue
        if scene.relation:
            (x0, y0, s0), (x1, y1, s1) = boxes
            c0 = (x0 + s0 / 2, y0 + s0 / 2)
            c1 = (x1 + s1 / 2, y1 + s1 / 2)
            need = {"left of": c1[0] - c0[0], "right of": c0[0] - c1[0],
                    "above": c1[1] - c0[1], "below": c0[1] - c1[1]}[scene.relation]
            if need < 3:
                continue
        for (colour, shape), (x, y, s) in zip(objs, boxes):
            m = _mask(shape, s)
            img[y:y + s, x:x + s][m] = COLOURS[colour]
        return img
    raise RuntimeError(f"could not place {scene}")


def perturb(scene: Scene, what: str, rng: random.Random) -> Scene:
    """A scene that violates exactly one constraint kind of `scene` (for the reward tests)."""
    g = scene.groups[0]
    if what == "colour":
        other = rng.choice([c for c in COLOURS if c not in {x.colour for x in scene.groups}])
        return Scene((Group(g.n, other, g.shape),) + scene.groups[1:], scene.position, scene.relation)
    if what == "shape":
        other = rng.choice([s for s in SHAPES if s != g.shape])
        return Scene((Group(g.n, g.colour, other),) + scene.groups[1:], scene.position, scene.relation)
    if what == "count":
        other = rng.choice([n for n in (1, 2, 3) if n != g.n])
        return Scene((Group(other, g.colour, g.shape),) + scene.groups[1:])
    if what == "position":
        opposite = {"left": "right", "right": "left", "top": "bottom", "bottom": "top", "centre": "left"}
        return Scene(scene.groups, opposite[scene.position], None)
    if what == "relation":
        opposite = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
        return Scene(scene.groups, None, opposite[scene.relation])
    raise ValueError(what)
