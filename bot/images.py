"""Pixels the bot itself makes from the generator's PNGs: result grids and upscales."""

from __future__ import annotations

import io
import math

from PIL import Image


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)  # 2-4x faster than the default, files barely larger
    return out.getvalue()


GUTTER = (255, 255, 255)


def gutter(width: int) -> int:
    """The gap between a grid's tiles: thin, so that tiles with the same background read as separate pictures."""
    return max(2, round(width / 48))


def grid(pngs: list[bytes]) -> bytes:
    """The images side by side, as square as possible (4 -> 2x2, 6 -> 3x2, 16 -> 4x4), with a thin white gutter
    between them, as one PNG."""
    images = [Image.open(io.BytesIO(png)).convert("RGB") for png in pngs]
    columns = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    width, height = images[0].size
    gap = gutter(width)
    sheet = Image.new("RGB", (columns * width + (columns - 1) * gap, rows * height + (rows - 1) * gap), GUTTER)
    for i, image in enumerate(images):
        sheet.paste(image, ((i % columns) * (width + gap), (i // columns) * (height + gap)))
    return _png(sheet)


def upscale(png: bytes, size: int) -> bytes:
    """The image resized with Lanczos so its longer side is `size` pixels, as a PNG."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    scale = size / max(image.size)
    target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return _png(image.resize(target, Image.Resampling.LANCZOS))
