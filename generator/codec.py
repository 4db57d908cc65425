"""The VQ codec: token grids to pictures (VQ decode, [-1, 1] -> uint8), grids, previews, upscaling, files."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from generator.checkpoint import Checkpoint

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
PREVIEW_FILL = (40, 40, 46)


def to_uint8(decoded: torch.Tensor) -> np.ndarray:
    """clip((x + 1) / 2 * 255) as uint8, channels last.  # [n, 3, H, W] -> [n, H, W, 3]"""
    x = decoded.detach().float().permute(0, 2, 3, 1).cpu().numpy()
    return np.clip((x + 1) / 2 * 255, 0, 255).astype(np.uint8)


@torch.inference_mode()
def decode_tokens(checkpoint: Checkpoint, tokens: torch.Tensor, *, chunk: int = 1) -> list[Image.Image]:
    """VQ-decode full token grids; one image at a time by default, so pixels never depend on neighbours."""
    vq = checkpoint.model.model.vqmodel
    images: list[Image.Image] = []
    for part in tokens.split(chunk):
        decoded = vq.decode(part.to(checkpoint.device))
        images += [Image.fromarray(a) for a in to_uint8(decoded)]
    return images


def preview_tokens(checkpoint: Checkpoint, tokens: torch.Tensor) -> torch.Tensor:
    """Full grids for partial ones: unfinished rows repeat the last complete row, so the decoder sees plausible
    neighbours.  # [n, k] -> [n, num_image_tokens]"""
    n, k = tokens.shape
    grid, total = checkpoint.grid_size, checkpoint.num_image_tokens
    if k >= total:
        return tokens[:, :total]
    rows_done = k // grid
    full = torch.zeros(n, total, dtype=torch.long)
    full[:, :k] = tokens
    if rows_done:
        last = tokens[:, (rows_done - 1) * grid : rows_done * grid]
        for r in range(rows_done, grid):
            full[:, r * grid : (r + 1) * grid] = last
    return full


def blank_unfinished(checkpoint: Checkpoint, images: list[Image.Image], k: int) -> list[Image.Image]:
    """Preview pictures of grids with `k` tokens sampled: the rows not yet complete painted over, in place."""
    if k < checkpoint.num_image_tokens:
        cut = k // checkpoint.grid_size * checkpoint.image_size // checkpoint.grid_size
        for image in images:
            image.paste(PREVIEW_FILL, (0, cut, image.width, image.height))
    return images


def decode_preview(checkpoint: Checkpoint, tokens: torch.Tensor) -> list[Image.Image]:
    """Pictures of partial grids: the token rows sampled so far, the rest left blank.  # tokens [n, k]"""
    images = decode_tokens(checkpoint, preview_tokens(checkpoint, tokens))
    return blank_unfinished(checkpoint, images, tokens.shape[1])


def grid_shape(n: int) -> tuple[int, int]:
    """Columns and rows for n pictures: 4 -> 2x2, 6 -> 3x2, 16 -> 4x4."""
    if n < 1:
        raise ValueError("a grid needs at least one image")
    cols = math.ceil(math.sqrt(n))
    return cols, math.ceil(n / cols)


def make_grid(images: list[Image.Image], *, gap: int = 0, background: tuple[int, int, int] = (0, 0, 0)
              ) -> Image.Image:
    """All pictures (same size) in one image, row by row."""
    cols, rows = grid_shape(len(images))
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w + (cols - 1) * gap, rows * h + (rows - 1) * gap), background)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        grid.paste(image, (c * (w + gap), r * (h + gap)))
    return grid


def upscale(image: Image.Image, size: int) -> Image.Image:
    """Lanczos resize so the longer side is `size` pixels."""
    scale = size / max(image.size)
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)


def image_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    try:
        return FORMATS[suffix]
    except KeyError:
        raise ValueError(f"Unknown image type {suffix or '(none)'!r}; use .png, .jpg or .webp.") from None


def encode_image(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    return buffer.getvalue()


def save_image(image: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    fmt = image_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_image(image, fmt))
    return path
