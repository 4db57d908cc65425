"""Pixels the bot itself makes from the generator's PNGs: result grids and upscales."""

from __future__ import annotations

import io
import math

from PIL import Image


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)  # 2-4x faster than the default, files barely larger
    return out.getvalue()


def grid(pngs: list[bytes]) -> bytes:
    """The images side by side, as square as possible (4 -> 2x2, 6 -> 3x2, 16 -> 4x4), as one PNG."""
    images = [Image.open(io.BytesIO(png)).convert("RGB") for png in pngs]
    columns = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    width, height = images[0].size
    sheet = Image.new("RGB", (columns * width, rows * height), "white")
    for i, image in enumerate(images):
        sheet.paste(image, ((i % columns) * width, (i // columns) * height))
    return _png(sheet)


def upscale(png: bytes, size: int) -> bytes:
    """The image resized with Lanczos so its longer side is `size` pixels, as a PNG."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    scale = size / max(image.size)
    target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return _png(image.resize(target, Image.Resampling.LANCZOS))
