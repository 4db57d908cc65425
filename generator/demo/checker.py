"""A plain image-analysis checker: what a picture shows, and how much of a scene's description it gets right.

Pixels are classified to the nearest palette colour; the most common class is the background; the rest
splits into 4-connected blobs. A blob's colour is its most common class, its kind comes from how much of
its bounding box it fills (square ~1, circle ~0.8, triangle ~0.5), its size from the box's longer side, its
position from its centroid's third of the picture. Nothing here knows how the pictures were drawn or generated.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass

import numpy as np
from PIL import Image

from generator.demo.scenes import CELLS, COLOURS, IMAGE_SIZE, PALETTE, SIZES, Naming, Scene, Shape

ATTRIBUTES = ("background", "colour", "kind", "position", "count")  # what eval-demo's combination score checks
MIN_PIXELS = 12  # smaller blobs are noise
LARGE = sum(SIZES.values()) / 2  # a box side from which a shape is large
_RGB = np.array([PALETTE[c] for c in COLOURS], dtype=np.float32)  # [C, 3]


@dataclass(frozen=True)
class Blob:
    """One detected shape."""

    colour: str
    kind: str
    cell: tuple[int, int]
    pixels: int
    size: str = "small"


@dataclass(frozen=True)
class Reading:
    """What the checker sees in a picture."""

    background: str
    blobs: tuple[Blob, ...]


def classify(image: Image.Image) -> np.ndarray:
    """Nearest palette colour of every pixel, at the demo's resolution.  # [H, W] int"""
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)  # [H, W, 3]
    distance = ((pixels[:, :, None, :] - _RGB[None, None]) ** 2).sum(-1)  # [H, W, C]
    return distance.argmin(-1)


def _components(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    seen = np.zeros_like(mask, dtype=bool)
    h, w = mask.shape
    out = []
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        seen[y, x] = True
        queue, blob = deque([(y, x)]), []
        while queue:
            cy, cx = queue.popleft()
            blob.append((cy, cx))
            for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        out.append(blob)
    return out


def _kind(ys: np.ndarray, xs: np.ndarray) -> str:
    fill = len(ys) / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
    return "square" if fill >= 0.9 else "circle" if fill >= 0.66 else "triangle"


def read(image: Image.Image) -> Reading:
    """Background colour and the shapes in a picture."""
    classes = classify(image)
    background = int(np.bincount(classes.ravel(), minlength=len(COLOURS)).argmax())
    blobs = []
    for blob in _components(classes != background):
        if len(blob) < MIN_PIXELS:
            continue
        ys, xs = np.array(blob).T
        colour = int(np.bincount(classes[ys, xs], minlength=len(COLOURS)).argmax())
        third = IMAGE_SIZE / CELLS
        cell = (min(int(ys.mean() + 0.5) // third, CELLS - 1), min(int(xs.mean() + 0.5) // third, CELLS - 1))
        side = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
        blobs.append(Blob(COLOURS[colour], _kind(ys, xs), (int(cell[0]), int(cell[1])), len(blob),
                          "large" if side >= LARGE else "small"))
    return Reading(COLOURS[background], tuple(blobs))


_CHECKS = {"colour": "colour", "kind": "kind", "size": "size", "position": "cell"}  # named attribute -> Blob field


def _shape_checks(want: Shape, got: Blob | None, named: frozenset[str]) -> dict[str, bool]:
    return {a: got is not None and getattr(got, _CHECKS[a]) == getattr(want, _CHECKS[a]) for a in named}


def score(scene: Scene, image: Image.Image, naming: Naming | None = None) -> dict[str, list[bool]]:
    """Each named attribute's checks for one picture: background, count, and per shape colour, kind, position
    (and size where named). Without `naming`: what `Naming.of(scene)` names (size aside)."""
    naming = naming or Naming.of(scene)
    reading = read(image)
    best: list[dict[str, bool]] = []
    blobs: list[Blob | None] = list(reading.blobs) + [None] * len(naming.shapes)
    # The pairing of described and detected shapes that gets the most right.
    for order in itertools.permutations(range(len(blobs)), len(naming.shapes)):
        checks = [_shape_checks(s, blobs[i], named) for s, i, named in zip(scene.shapes, order, naming.shapes)]
        if not best or sum(sum(c.values()) for c in checks) > sum(sum(c.values()) for c in best):
            best = checks
    result: dict[str, list[bool]] = {name: [] for name in (*ATTRIBUTES, "size")}
    if naming.background:
        result["background"].append(reading.background == scene.background)
    if naming.shapes:
        result["count"].append(len(reading.blobs) == len(scene.shapes))
    for checks in best:
        for name, ok in checks.items():
            result[name].append(ok)
    return result


def right(scene: Scene, image: Image.Image, naming: Naming | None = None) -> bool:
    """Whether every named attribute of the scene is right in the picture."""
    return all(all(oks) for oks in score(scene, image, naming).values())
