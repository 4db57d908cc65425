"""Held-out phrasings for eval-demo: sentence frames that no training caption uses, and the prompts made from them.

Training captions come from `scenes.FRAMES_*` (with `scenes.PREFIXES` before and `scenes.STYLE` after); none of the
frames here is one of those, nor one of those with a prefix or style words added (tests/generator/test_demo.py
checks). The shapes inside a frame ({things}) are worded as in training: the frames are what is new.
"""

from __future__ import annotations

import random

from generator.demo.scenes import (
    COLOURS,
    KINDS,
    SIZES,
    Caption,
    Naming,
    Scene,
    Shape,
    is_held_out,
    phrase,
    random_naming,
    random_scene,
)

FRAMES = {
    "both": [
        "show me {things} over {a_bg} background",
        "i need {things} sitting on {a_bg} background",
        "{things}, all on {a_bg} background",
        "could you paint {things}? use {a_bg} background",
        "{things} placed on {a_bg} background",
        "my idea: {things} and {a_bg} background",
        "{a_bg} background, and on it {things}",
        "put {things} on {a_bg} background please",
        "{things} -- {bg} background",
        "{things} upon {a_bg} background",
    ],
    "things": [
        "show me {things}",
        "{things}, please",
        "just {things}",
        "i need {things}",
        "could you paint {things}?",
        "{things} only",
    ],
    "background": [
        "show me {a_bg} background",
        "just {a_bg} background with whatever on it",
        "{a_bg} background, anything goes",
    ],
}


def phrasing_prompts(n: int, seed: int = 0) -> list[Caption]:
    """`n` prompts in held-out frames: scenes and namings drawn as for training (all, or part, of a scene named),
    none of a held-out combination; a fixed share (a quarter each) of frames of each kind where the naming allows."""
    rng = random.Random(seed)
    out: list[Caption] = []
    while len(out) < n:
        scene = random_scene(rng)
        if is_held_out(scene):
            continue
        naming = random_naming(scene, rng)
        out.append(Caption(scene, naming, phrase(scene, naming, rng, FRAMES, fillers=False)))
    return out


def variety_prompts(seed: int = 0) -> list[Caption]:
    """Prompts that leave attributes open, in held-out frames: each names one attribute (a kind, a colour, a
    background, a place, a size, a count of two), then a few name two ("a red circle", "a square on blue")."""
    rng = random.Random(seed)
    prompts: list[tuple[Scene, Naming]] = []
    one = Shape(COLOURS[0], KINDS[0], "small", (1, 1))  # the scene's open attributes are never read
    for kind in KINDS:
        prompts.append((Scene("white", (Shape("red", kind, "small", (1, 1)),)), Naming(False, (frozenset({"kind"}),))))
    for colour in ("red", "blue", "yellow"):
        scene = Scene("black" if colour != "black" else "white", (Shape(colour, "circle", "small", (1, 1)),))
        prompts.append((scene, Naming(False, (frozenset({"colour"}),))))
    for background in ("green", "purple", "white"):
        prompts.append((Scene(background, (one,)), Naming(True, ())))
    for cell in ((0, 0), (1, 1), (2, 2)):
        prompts.append((Scene("white", (Shape("red", "circle", "small", cell),)),
                        Naming(False, (frozenset({"position"}),))))
    for size in SIZES:
        prompts.append((Scene("white", (Shape("red", "circle", size, (1, 1)),)), Naming(False, (frozenset({"size"}),))))
    two = Scene("white", (Shape("red", "circle", "small", (0, 0)), Shape("red", "circle", "small", (2, 2))),
                positioned=False)
    prompts.append((two, Naming(False, (frozenset(), frozenset()), together=True)))
    for colour, kind, background in (("red", "circle", None), ("green", "square", None), ("yellow", "triangle", None),
                                      (None, "square", "blue"), ("orange", None, "black")):
        named = frozenset(a for a, v in (("colour", colour), ("kind", kind)) if v)
        shape = Shape(colour or "red", kind or "circle", "small", (1, 1))
        prompts.append((Scene(background or "white", (shape,)), Naming(background is not None, (named,))))
    return [Caption(scene, naming, phrase(scene, naming, rng, FRAMES, fillers=False)) for scene, naming in prompts]
