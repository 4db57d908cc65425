"""Pixels the bot itself makes or checks: result grids, upscales, and the pictures users start from."""

from __future__ import annotations

import io
import math

from PIL import Image


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)  # much faster than the default level, files barely larger
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


UPLOAD_FORMATS = {"PNG", "JPEG", "WEBP", "GIF"}
UPLOAD_SIDE = 2048  # a kept picture's longer side: the generator sees at most the model's resolution anyway


class NotAPicture(ValueError):
    """An upload that is not a picture the bot takes; the message says what to send instead."""


def checked_upload(data: bytes, max_bytes: int, max_pixels: int) -> bytes:
    """A picture a user sent, told by its content, as a plain PNG (RGB, its first frame, metadata dropped, its
    longer side at most UPLOAD_SIDE); NotAPicture says why not."""
    if len(data) > max_bytes:
        raise NotAPicture(f"That file is {len(data) / 2**20:.1f} MB; send a picture of at most "
                          f"{max_bytes / 2**20:g} MB.")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            kind, size = probe.format, probe.size
            probe.verify()
    except Exception:  # Pillow raises many kinds for what is not an image
        raise NotAPicture("That file is not a picture; send a PNG, JPEG, WebP or GIF.") from None
    if kind not in UPLOAD_FORMATS:
        raise NotAPicture(f"That is a {kind} file; send a PNG, JPEG, WebP or GIF.")
    if size[0] * size[1] > max_pixels:  # checked before decoding: a decompression bomb never unpacks
        raise NotAPicture(f"That picture is {size[0]}x{size[1]} pixels; send one of at most "
                          f"{max_pixels / 1e6:g} megapixels.")
    try:
        with Image.open(io.BytesIO(data)) as picture:
            picture.seek(0)
            image = picture.convert("RGB")
    except Exception:
        raise NotAPicture("That picture could not be read; send another PNG, JPEG, WebP or GIF.") from None
    if max(image.size) > UPLOAD_SIDE:
        scale = UPLOAD_SIDE / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.LANCZOS)
    return _png(image)


def upscale(png: bytes, size: int) -> bytes:
    """The image resized with Lanczos so its longer side is `size` pixels, as a PNG."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    scale = size / max(image.size)
    target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return _png(image.resize(target, Image.Resampling.LANCZOS))
