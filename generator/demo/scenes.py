"""Synthetic scenes (a background colour and one or two shapes) with varied captions, deterministic by seed.

The canvas is a 3x3 grid of cells (2x2 VQ tokens each); a shape sits centred in one cell. Held-out combinations,
never in training and used by the evaluation:
- every (colour, shape) pair has one of the nine positions held out: (colour + 3 * kind + cell) % 9 == 0;
- "two <colour> <shape>s" is held out for the (colour, kind) pairs with (colour + kind) % 4 == 0.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

IMAGE_SIZE = 48
CELLS = 3
CELL = IMAGE_SIZE // CELLS
SIZES = {"small": 9, "large": 14}  # side of a shape in pixels

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (245, 215, 40),
    "green": (40, 160, 60),
    "blue": (40, 90, 220),
    "purple": (140, 60, 190),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLOURS = list(PALETTE)
KINDS = ["circle", "square", "triangle"]

_KIND_WORDS = {"circle": ["circle", "circle", "disc", "round dot"], "square": ["square", "square", "box"],
               "triangle": ["triangle"]}
_KIND_PLURALS = {"circle": ["circles", "discs"], "square": ["squares", "boxes"], "triangle": ["triangles"]}
_SIZE_WORDS = {"small": ["small", "tiny", "little"], "large": ["large", "big"]}
_POSITIONS: dict[tuple[int, int], list[str]] = {
    (0, 0): ["in the top left", "in the top left corner", "at the upper left"],
    (0, 1): ["at the top", "in the top middle", "at the top center"],
    (0, 2): ["in the top right", "in the top right corner", "at the upper right"],
    (1, 0): ["on the left", "at the left", "in the middle left"],
    (1, 1): ["in the center", "in the middle", "in the centre"],
    (1, 2): ["on the right", "at the right", "in the middle right"],
    (2, 0): ["in the bottom left", "in the bottom left corner", "at the lower left"],
    (2, 1): ["at the bottom", "in the bottom middle", "at the bottom center"],
    (2, 2): ["in the bottom right", "in the bottom right corner", "at the lower right"],
}
POSITION_NAMES = {cell: words[0].split(" ", 1)[1] for cell, words in _POSITIONS.items()}  # "top left", ...


@dataclass(frozen=True)
class Shape:
    """One shape: colour and kind names, size name, and its cell (row, column)."""

    colour: str
    kind: str
    size: str
    cell: tuple[int, int]


@dataclass(frozen=True)
class Scene:
    """A background and its shapes; `positioned` says whether the caption names where they are."""

    background: str
    shapes: tuple[Shape, ...]
    positioned: bool = True


def held_out_shape(shape: Shape) -> bool:
    """Whether this (colour, kind, position) combination is kept out of training."""
    cell = shape.cell[0] * CELLS + shape.cell[1]
    return (COLOURS.index(shape.colour) + 3 * KINDS.index(shape.kind) + cell) % 9 == 0


def held_out_pair(colour: str, kind: str) -> bool:
    """Whether "two <colour> <kind>s" is kept out of training."""
    return (COLOURS.index(colour) + KINDS.index(kind)) % 4 == 0


def is_held_out(scene: Scene) -> bool:
    """A scene containing any held-out combination."""
    if any(held_out_shape(s) for s in scene.shapes):
        return True
    return not scene.positioned and held_out_pair(scene.shapes[0].colour, scene.shapes[0].kind)


# -- drawing ----------------------------------------------------------------------------------------


def box(shape: Shape) -> tuple[int, int, int, int]:
    """The pixels a shape is drawn in, centred in its cell: (x0, y0, x1, y1), inclusive."""
    side = SIZES[shape.size]
    x0 = shape.cell[1] * CELL + (CELL - side) // 2
    y0 = shape.cell[0] * CELL + (CELL - side) // 2
    return x0, y0, x0 + side - 1, y0 + side - 1


def render(scene: Scene) -> Image.Image:
    """The scene as a 48x48 RGB picture, hard edges, each shape centred in its cell."""
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), PALETTE[scene.background])
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        x0, y0, x1, y1 = box(shape)
        colour = PALETTE[shape.colour]
        if shape.kind == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif shape.kind == "square":
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=colour)
    return image


# -- captions ---------------------------------------------------------------------------------------


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _describe(shape: Shape, rng: random.Random) -> str:
    words = [shape.colour, rng.choice(_KIND_WORDS[shape.kind])]
    if rng.random() < 0.6:
        words.insert(0, rng.choice(_SIZE_WORDS[shape.size]))
    return " ".join(words)


def caption(scene: Scene, rng: random.Random) -> str:
    """One of many natural phrasings of the scene."""
    bg = scene.background
    if not scene.positioned:
        first = scene.shapes[0]
        size = rng.choice(_SIZE_WORDS[first.size]) + " " if rng.random() < 0.5 else ""
        things = f"two {size}{first.colour} {rng.choice(_KIND_PLURALS[first.kind])}"
    else:
        parts = [f"{_a(_describe(s, rng))} {rng.choice(_POSITIONS[s.cell])}" for s in scene.shapes]
        things = " and ".join(parts)
    template = rng.choice([
        "{things} on {a_bg} background",
        "{things} on {a_bg} background",
        "{things}, {bg} background",
        "{things} against {a_bg} background",
        "{a_bg} background with {things}",
        "a picture of {things} on {bg}",
        "draw {things} on {a_bg} background",
    ])
    return template.format(things=things, bg=bg, a_bg=_a(bg))


# -- sampling ---------------------------------------------------------------------------------------


def _cells(rng: random.Random, n: int) -> list[tuple[int, int]]:
    return [divmod(i, CELLS) for i in rng.sample(range(CELLS * CELLS), n)]


def _neighbours(rng: random.Random) -> list[tuple[int, int]]:
    row, col = divmod(rng.randrange(CELLS * CELLS), CELLS)
    beside = [(row + dy, col + dx) for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))
              if 0 <= row + dy < CELLS and 0 <= col + dx < CELLS]
    return [(row, col), rng.choice(beside)]


def random_scene(rng: random.Random, *, neighbours: bool = False) -> Scene:
    """One scene: a single shape (half the time), two different shapes, or two alike (count).

    With `neighbours`, always two shapes (different ones 60% of the time), in neighbouring cells.
    """
    background = rng.choice(COLOURS)
    others = [c for c in COLOURS if c != background]
    roll = 0.5 + rng.random() / 2 if neighbours else rng.random()
    if roll < 0.5:
        shape = Shape(rng.choice(others), rng.choice(KINDS), rng.choice(list(SIZES)), _cells(rng, 1)[0])
        return Scene(background, (shape,))
    cells = _neighbours(rng) if neighbours else _cells(rng, 2)
    if roll < 0.8:
        shapes = tuple(Shape(rng.choice(others), rng.choice(KINDS), rng.choice(list(SIZES)), c) for c in cells)
        return Scene(background, shapes)
    colour, kind, size = rng.choice(others), rng.choice(KINDS), rng.choice(list(SIZES))
    return Scene(background, tuple(Shape(colour, kind, size, c) for c in cells), positioned=False)


def sample(n: int, seed: int, *, held_out: bool = False, neighbours: bool = False) -> list[tuple[Scene, str]]:
    """`n` (scene, caption) pairs: training scenes, or with `held_out` only held-out ones; `neighbours`
    as for `random_scene`."""
    rng = random.Random(seed)
    out: list[tuple[Scene, str]] = []
    while len(out) < n:
        scene = random_scene(rng, neighbours=neighbours)
        if is_held_out(scene) == held_out:
            out.append((scene, caption(scene, rng)))
    return out


def held_out_scenes(n: int, seed: int = 0) -> list[tuple[Scene, str]]:
    """Evaluation prompts: half single held-out shapes, a quarter pairs with one, a quarter held-out counts."""
    rng = random.Random(seed)
    out: list[tuple[Scene, str]] = []
    kinds = ["single", "single", "pair", "count"]
    while len(out) < n:
        want = kinds[len(out) % len(kinds)]
        scene = random_scene(rng)
        got = "count" if not scene.positioned else "single" if len(scene.shapes) == 1 else "pair"
        count_held = not scene.positioned and held_out_pair(scene.shapes[0].colour, scene.shapes[0].kind)
        if got == want and (count_held if want == "count" else is_held_out(scene)):
            out.append((scene, caption(scene, rng)))
    return out
