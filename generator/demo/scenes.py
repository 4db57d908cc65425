"""Synthetic scenes (a background colour and one or two shapes) and captions that name all or part of them.

The canvas is a 3x3 grid of cells (2x2 VQ tokens each); a shape sits centred in one cell. A caption names some of
a scene's attributes (a `Naming`): what it leaves open was drawn at random, so a model trained on these pairs learns
to vary it. Held-out combinations, never in training (pictures or captions) and used by the evaluation:
- every (colour, shape) pair has one of the nine positions held out: (colour + 3 * kind + cell) % 9 == 0;
- two alike shapes of the (colour, kind) pairs with (colour + kind) % 4 == 0 ("two green squares").
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
SHAPE_ATTRIBUTES = ("colour", "kind", "size", "position")  # what a caption may name of each shape

# The caption vocabulary: the first word of each list is the canonical one (full captions, `describe`).
KIND_WORDS = {"circle": ["circle", "circle", "disc", "round dot"], "square": ["square", "square", "box"],
              "triangle": ["triangle"]}
KIND_PLURALS = {"circle": ["circles", "discs"], "square": ["squares", "boxes"], "triangle": ["triangles"]}
GENERIC_NOUNS = ["shape", "shape", "thing", "object"]  # a shape whose kind the caption leaves open
GENERIC_PLURALS = ["shapes", "shapes", "things", "objects"]
SIZE_WORDS = {"small": ["small", "tiny", "little"], "large": ["large", "big"]}
POSITIONS: dict[tuple[int, int], list[str]] = {
    (0, 0): ["in the top left", "in the top left corner", "at the upper left", "at the top left"],
    (0, 1): ["at the top", "in the top middle", "at the top center", "at the top centre"],
    (0, 2): ["in the top right", "in the top right corner", "at the upper right", "at the top right"],
    (1, 0): ["on the left", "at the left", "in the middle left", "on the left side"],
    (1, 1): ["in the center", "in the middle", "in the centre", "at the center"],
    (1, 2): ["on the right", "at the right", "in the middle right", "on the right side"],
    (2, 0): ["in the bottom left", "in the bottom left corner", "at the lower left", "at the bottom left"],
    (2, 1): ["at the bottom", "in the bottom middle", "at the bottom center", "at the bottom centre"],
    (2, 2): ["in the bottom right", "in the bottom right corner", "at the lower right", "at the bottom right"],
}
POSITION_NAMES = {cell: words[0].split(" ", 1)[1] for cell, words in POSITIONS.items()}  # "the top left", ...

# Sentence frames of training captions: {things} is the shapes, {bg} / {a_bg} the background colour.
FRAMES_BOTH = [
    "{things} on {a_bg} background", "{things} on {a_bg} background", "{things}, {bg} background",
    "{things} against {a_bg} background", "{a_bg} background with {things}", "a picture of {things} on {bg}",
    "draw {things} on {a_bg} background", "{things} on {bg}", "{bg} background, {things}",
    "{things} with {a_bg} background", "{things}. background: {bg}", "{things}; the background is {bg}",
    "on {a_bg} background, {things}", "{things} in front of {a_bg} background", "an image of {things} against {bg}",
    "paint {things} on {a_bg} background", "{bg} background and {things}", "{a_bg} background, with {things}",
    "{things} plus {a_bg} background", "{things} and also {a_bg} background", "{things} and {a_bg} backdrop",
    "{things} on {a_bg} backdrop", "{things}, and the background is {bg}", "{things} and a background of {bg}",
    "{a_bg} background featuring {things}", "over {a_bg} background: {things}", "{bg} backdrop, {things}",
]
FRAMES_THINGS = ["{things}", "{things}", "{things}", "a picture of {things}", "draw {things}", "an image of {things}",
                 "paint {things}", "a drawing of {things}"]
FRAMES_BACKGROUND = ["{a_bg} background", "{bg} background", "shapes on {a_bg} background",
                     "something on {a_bg} background", "anything on {bg}", "a picture with {a_bg} background"]
# What describe answers in: every attribute, canonical words.
FRAMES_FULL = ["{things} on {a_bg} background", "{a_bg} background with {things}", "{things}, {bg} background",
               "{things} against {a_bg} background"]

# Frames of the last training stage only (`train.tune`): after a joiner, words that name no shape, then the
# background or the shapes ("a red circle, everything on a blue background", "a blue background, and in front of that
# a red circle"). In the other frames a joiner is always followed by a shape or the background, and a model trained on
# them alone reads any other word after one as a second shape ("a blue background, and on it a red circle"). Each is
# drawn twice as often as another frame (docs/benchmarks.md: what once and twice scored).
FRAMES_LINKED = ["{things}, {setting} on {a_bg} background", "{things} {setting} on {a_bg} background",
                 "{a_bg} background, and {lead} {things}", "{a_bg} background; {lead} {things}"]
LEADS = ["then", "in front of that", "over that", "there is", "we see", "next", "in front", "now", "after that",
         "we have", "then also", "in the front"]  # also between two shapes: "a red circle and then a blue square"
SETTINGS = ["everything", "the whole scene", "together", "both", "each", "resting", "lying", "drawn", "shown", "set",
            "standing", "then", "everything set", "the lot"]

# Words around a prompt that say nothing about the picture (people write them): the model learns to ignore them.
# None is a word of the vocabulary above.
STYLE = ["digital art", "flat colours", "minimal", "simple", "high quality", "4k", "vector art", "clean style",
         "flat design", "pixel art", "sharp", "bold", "icon", "minimalist", "geometric", "trending", "detailed"]
PREFIXES = ["please", "please draw", "i would like", "can you make", "make", "create", "generate", "render",
            "a photo of", "an illustration of", "here is", "quick sketch:"]
FILLER = ("very nice pretty lovely cute plain clean neat calm quiet happy soft bright clear just only some "
          "really quite the this that my your our new old cool fun good great modern classic abstract tidy "
          "sweet cheerful elegant painted drawn solid flat smooth shiny "
          "glossy matte vivid pastel dark light deep pale warm cold").split()


@dataclass(frozen=True)
class Shape:
    """One shape: colour and kind names, size name, and its cell (row, column)."""

    colour: str
    kind: str
    size: str
    cell: tuple[int, int]


@dataclass(frozen=True)
class Scene:
    """A background and its shapes; `positioned` is False for two alike shapes captioned as a count ("two ...")."""

    background: str
    shapes: tuple[Shape, ...]
    positioned: bool = True


@dataclass(frozen=True)
class Naming:
    """What a caption names of its scene: the background or not, and per shape which of SHAPE_ATTRIBUTES.

    `shapes` is empty when the caption names no shape, not even how many ("a blue background"); `together`
    names two shapes as one count ("two red circles"), which name the same attributes and never positions.
    """

    background: bool
    shapes: tuple[frozenset[str], ...]
    together: bool = False

    @staticmethod
    def of(scene: Scene, *, size: bool = False) -> Naming:
        """Everything the checker checks of a scene (positions only where placed), and size if asked."""
        named = {"colour", "kind"} | ({"position"} if scene.positioned else set()) | ({"size"} if size else set())
        return Naming(True, tuple(frozenset(named) for _ in scene.shapes), together=not scene.positioned)

    @staticmethod
    def every(scene: Scene) -> Naming:
        """Every attribute of every shape, positions included: what describe answers."""
        return Naming(True, tuple(frozenset(SHAPE_ATTRIBUTES) for _ in scene.shapes))

    def open(self, scene: Scene) -> list[str]:
        """The attributes a picture of this caption may vary: background, count, and shape attributes."""
        out = [] if self.background else ["background"]
        if not self.shapes:
            return out + ["count", *SHAPE_ATTRIBUTES]
        return out + [a for a in SHAPE_ATTRIBUTES if any(a not in named for named in self.shapes)]


@dataclass(frozen=True)
class Caption:
    """A scene, what its caption names of it, and the caption."""

    scene: Scene
    naming: Naming
    text: str


def held_out_shape(shape: Shape) -> bool:
    """Whether this (colour, kind, position) combination is kept out of training."""
    cell = shape.cell[0] * CELLS + shape.cell[1]
    return (COLOURS.index(shape.colour) + 3 * KINDS.index(shape.kind) + cell) % 9 == 0


def held_out_pair(colour: str, kind: str) -> bool:
    """Whether two alike <colour> <kind>s ("two green squares") are kept out of training."""
    return (COLOURS.index(colour) + KINDS.index(kind)) % 4 == 0


def is_held_out(scene: Scene) -> bool:
    """A scene containing any held-out combination."""
    if any(held_out_shape(s) for s in scene.shapes):
        return True
    alike = len(scene.shapes) == 2 and len({(s.colour, s.kind) for s in scene.shapes}) == 1
    return alike and held_out_pair(scene.shapes[0].colour, scene.shapes[0].kind)


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


def _pick(words: list[str], rng: random.Random | None) -> str:
    return rng.choice(words) if rng is not None else words[0]


def _noun_phrase(shape: Shape, named: frozenset[str], rng: random.Random | None) -> str:
    """One shape, without its position: "a small red circle", "a red shape", "a circle in red", "something red"."""
    if "kind" not in named and "size" not in named and "colour" in named and rng and rng.random() < 0.2:
        return f"something {shape.colour}"
    noun = _pick(KIND_WORDS[shape.kind], rng) if "kind" in named else _pick(GENERIC_NOUNS, rng)
    size = [_pick(SIZE_WORDS[shape.size], rng)] if "size" in named else []
    if "colour" in named and rng and rng.random() < 0.08:
        return f"{_a(' '.join([*size, noun]))} in {shape.colour}"
    adjectives = size + ([shape.colour] if "colour" in named else [])
    if len(adjectives) == 2 and rng and rng.random() < 0.08:
        adjectives.reverse()  # "a red small circle": people do not keep to one order
    words = " ".join([*adjectives, noun])
    if rng is None:
        return _a(words)
    roll = rng.random()
    return f"one {words}" if roll < 0.08 else words if roll < 0.16 else _a(words)


def _count_phrase(shape: Shape, named: frozenset[str], rng: random.Random | None) -> str:
    """Two shapes that share what is named: "two small red circles", "a pair of squares", "2 green shapes"."""
    noun = _pick(KIND_PLURALS[shape.kind], rng) if "kind" in named else _pick(GENERIC_PLURALS, rng)
    words = ([_pick(SIZE_WORDS[shape.size], rng)] if "size" in named else []) + (
        [shape.colour] if "colour" in named else []) + [noun]
    roll = rng.random() if rng else 1.0
    lead = "a pair of" if roll < 0.12 else "2" if roll < 0.2 else "two"
    return " ".join([lead, *words])


def _things(scene: Scene, naming: Naming, rng: random.Random | None, linked: bool = False) -> str:
    if naming.together:
        return _count_phrase(scene.shapes[0], naming.shapes[0], rng)
    parts = []
    for shape, named in zip(scene.shapes, naming.shapes):
        noun = _noun_phrase(shape, named, rng)
        if "position" not in named:
            parts.append(noun)
        elif len(scene.shapes) == 1 and rng and rng.random() < 0.1:
            parts.append(f"{_pick(POSITIONS[shape.cell], rng)}, {noun}")
        else:
            parts.append(f"{noun} {_pick(POSITIONS[shape.cell], rng)}")
    joint = rng.choice([" and ", " and ", " and ", ", ", " and also "]) if rng else " and "
    if linked and rng and len(parts) == 2 and rng.random() < 0.1:
        joint += f"{rng.choice(LEADS)} "
    return joint.join(parts)


def phrase(scene: Scene, naming: Naming, rng: random.Random | None, frames: dict[str, list[str]] | None = None,
           *, fillers: bool = True, linked: bool = False) -> str:
    """The caption naming what `naming` says, in one of `frames` (by kind: "both", "things", "background"; the
    training frames by default, with `linked` FRAMES_LINKED too). Without `rng`: the first frame and the canonical
    words, nothing added."""
    frames = frames or {"both": FRAMES_BOTH + (FRAMES_LINKED * 2 if linked else []), "things": FRAMES_THINGS,
                        "background": FRAMES_BACKGROUND}
    kind = "both" if naming.background and naming.shapes else "things" if naming.shapes else "background"
    template = _pick(frames[kind], rng)
    bg = scene.background
    things = _things(scene, naming, rng, linked) if naming.shapes else ""
    links = {key: _pick(words, rng) for key, words in (("lead", LEADS), ("setting", SETTINGS))
             if f"{{{key}}}" in template}
    text = template.format(things=things, bg=bg, a_bg=_a(bg), **links)
    if rng is None or not fillers:
        return text
    return _decorate(text, rng)


def _decorate(text: str, rng: random.Random) -> str:
    """Words that say nothing about the picture, capitals and punctuation, as people write prompts."""
    words = text.split(" ")
    articles = [i for i, word in enumerate(words) if word in ("a", "an", "one")]
    if articles and rng.random() < 0.1:
        at = rng.choice(articles)
        filler = rng.choice(FILLER)
        words.insert(at + 1, filler)  # "a nice red circle"
        if words[at] != "one":
            words[at] = _a(filler).split()[0]
    text = " ".join(words)
    if rng.random() < 0.12:
        text = f"{rng.choice(PREFIXES)} {text}"
    if rng.random() < 0.12:
        text = f"{text}, {rng.choice(STYLE)}"
    roll = rng.random()
    if roll < 0.3:
        text = text[0].upper() + text[1:]
    elif roll < 0.34:
        text = text.title()
    roll = rng.random()
    return f"{text}." if roll < 0.15 else f"{text}!" if roll < 0.18 else text


def random_naming(scene: Scene, rng: random.Random) -> Naming:
    """What a training caption names of a scene, drawn at random: often all, often part ("a red circle", "two
    squares", "a blue background")."""
    background = rng.random() < 0.75
    if rng.random() < 0.06:
        return Naming(True, ())  # only the background
    first = scene.shapes[0]
    alike = [a for a in ("colour", "kind", "size") if all(getattr(s, a) == getattr(first, a) for s in scene.shapes)]
    if len(scene.shapes) == 2 and (not scene.positioned or (alike and rng.random() < 0.15)):
        shared = frozenset(a for a in alike if rng.random() < {"colour": 0.8, "kind": 0.8, "size": 0.35}[a])
        return Naming(background, (shared, shared), together=True)
    chance = {"colour": 0.85, "kind": 0.85, "size": 0.45, "position": 0.7}
    return Naming(background, tuple(frozenset(a for a in SHAPE_ATTRIBUTES if rng.random() < chance[a])
                                    for _ in scene.shapes))


def caption(scene: Scene, rng: random.Random, *, linked: bool = False) -> str:
    """One training caption of the scene: a random naming in a random phrasing (`linked` as for `phrase`)."""
    return phrase(scene, random_naming(scene, rng), rng, linked=linked)


def full_caption(scene: Scene, rng: random.Random | None = None) -> str:
    """Every attribute of the scene in canonical words, shapes in raster order: what describe answers. With
    `rng`, one of a few frames; without, the first."""
    ordered = Scene(scene.background, tuple(sorted(scene.shapes, key=lambda s: s.cell)))
    frame = _pick(FRAMES_FULL, rng)
    return phrase(ordered, Naming.every(ordered), None, {"both": [frame]})


# -- sampling ---------------------------------------------------------------------------------------

TRAINING_SINGLE = 1 / 3  # share of training scenes with one shape; eval-demo's prompts keep half


def _cells(rng: random.Random, n: int) -> list[tuple[int, int]]:
    return [divmod(i, CELLS) for i in rng.sample(range(CELLS * CELLS), n)]


def _neighbours(rng: random.Random) -> list[tuple[int, int]]:
    row, col = divmod(rng.randrange(CELLS * CELLS), CELLS)
    beside = [(row + dy, col + dx) for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))
              if 0 <= row + dy < CELLS and 0 <= col + dx < CELLS]
    return [(row, col), rng.choice(beside)]


def random_scene(rng: random.Random, *, neighbours: bool = False, single: float = 0.5) -> Scene:
    """One scene: a single shape (a `single` share), two different shapes, or two alike (count), 3:2.

    With `neighbours`, always two shapes, in neighbouring cells.
    """
    background = rng.choice(COLOURS)
    others = [c for c in COLOURS if c != background]
    roll = rng.random()
    if not neighbours and roll < single:
        shape = Shape(rng.choice(others), rng.choice(KINDS), rng.choice(list(SIZES)), _cells(rng, 1)[0])
        return Scene(background, (shape,))
    cells = _neighbours(rng) if neighbours else _cells(rng, 2)
    if (roll if neighbours else (roll - single) / (1 - single)) < 0.6:  # two different shapes, else two alike
        shapes = tuple(Shape(rng.choice(others), rng.choice(KINDS), rng.choice(list(SIZES)), c) for c in cells)
        return Scene(background, shapes)
    colour, kind, size = rng.choice(others), rng.choice(KINDS), rng.choice(list(SIZES))
    return Scene(background, tuple(Shape(colour, kind, size, c) for c in cells), positioned=False)


def sample_captions(n: int, seed: int, *, held_out: bool = False, neighbours: bool = False, linked: bool = False
                    ) -> list[Caption]:
    """`n` training captions (random namings and phrasings), or with `held_out` only of held-out scenes;
    `neighbours` as for `random_scene`, `linked` as for `phrase`. A third of the scenes hold one shape: the model
    draws those right long before it binds each of two shapes to its own words."""
    rng = random.Random(seed)
    out: list[Caption] = []
    while len(out) < n:
        scene = random_scene(rng, neighbours=neighbours, single=TRAINING_SINGLE)
        if is_held_out(scene) == held_out:
            naming = random_naming(scene, rng)
            out.append(Caption(scene, naming, phrase(scene, naming, rng, linked=linked)))
    return out


def sample(n: int, seed: int, *, held_out: bool = False, neighbours: bool = False) -> list[tuple[Scene, str]]:
    """`n` (scene, caption) pairs, as `sample_captions`."""
    return [(c.scene, c.text) for c in sample_captions(n, seed, held_out=held_out, neighbours=neighbours)]


def held_out_captions(n: int, seed: int = 0) -> list[Caption]:
    """Evaluation prompts in the training phrasings naming everything the checker checks (size 60% of the time):
    half single held-out shapes, a quarter pairs with one, a quarter held-out counts ("two green squares")."""
    rng = random.Random(seed)
    out: list[Caption] = []
    kinds = ["single", "single", "pair", "count"]
    while len(out) < n:
        want = kinds[len(out) % len(kinds)]
        scene = random_scene(rng)
        got = "count" if not scene.positioned else "single" if len(scene.shapes) == 1 else "pair"
        count_held = not scene.positioned and held_out_pair(scene.shapes[0].colour, scene.shapes[0].kind)
        if got == want and (count_held if want == "count" else is_held_out(scene)):
            naming = Naming.of(scene, size=rng.random() < 0.6)
            out.append(Caption(scene, Naming.of(scene), phrase(scene, naming, rng, fillers=False)))
    return out


def held_out_scenes(n: int, seed: int = 0) -> list[tuple[Scene, str]]:
    """`held_out_captions` as (scene, caption) pairs."""
    return [(c.scene, c.text) for c in held_out_captions(n, seed)]
