"""The VQ codec: token grids to pictures (VQ decode, [-1, 1] -> uint8) and pictures to token grids (VQ encode),
the cells a region covers, grids, previews, upscaling, files."""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from generator.checkpoint import Checkpoint
from generator.protocol import IMAGE_FORMATS, MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, SAVE_FORMATS

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


def preview_tokens(checkpoint: Checkpoint, tokens: torch.Tensor, kept: torch.Tensor | None = None) -> torch.Tensor:
    """Full grids for partial ones: unfinished rows repeat the last complete row, so the decoder sees plausible
    neighbours; kept cells (codes >= 0 in `kept`) hold their code from the start.  # [n, k] -> [n, num_image_tokens]"""
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
    if kept is not None:
        full = torch.where(kept >= 0, kept, full)
    return full


def blank_unfinished(checkpoint: Checkpoint, images: list[Image.Image], k: int, kept: torch.Tensor | None = None
                     ) -> list[Image.Image]:
    """Preview pictures of grids with `k` tokens sampled: the rows not yet complete painted over, in place, except
    the kept cells (codes >= 0 in `kept`, [n, num_image_tokens])."""
    grid, total = checkpoint.grid_size, checkpoint.num_image_tokens
    if k >= total:
        return images
    rows_done = k // grid
    if kept is None:
        cut = rows_done * checkpoint.image_size // grid
        for image in images:
            image.paste(PREVIEW_FILL, (0, cut, image.width, image.height))
        return images
    for image, cells in zip(images, kept.tolist()):
        for index in range(rows_done * grid, total):
            if cells[index] < 0:
                r, c = divmod(index, grid)
                left, top, right, bottom = (round(v * image.width / grid) for v in (c, r, c + 1, r + 1))
                image.paste(PREVIEW_FILL, (left, top, right, bottom))
    return images


def decode_preview(checkpoint: Checkpoint, tokens: torch.Tensor, kept: torch.Tensor | None = None
                   ) -> list[Image.Image]:
    """Pictures of partial grids: the token rows sampled so far and the kept cells, the rest left blank."""
    images = decode_tokens(checkpoint, preview_tokens(checkpoint, tokens, kept))
    return blank_unfinished(checkpoint, images, tokens.shape[1], kept)


# -- pictures to codes ------------------------------------------------------------------------------


class PictureError(ValueError):
    """A picture that cannot be used; the message is a sentence saying what to send instead."""


FORMAT_NAMES = "PNG, JPEG, WebP or GIF"  # IMAGE_FORMATS, as people write them


def load_picture(data: bytes) -> Image.Image:
    """A picture file's first frame as RGB, told by its content; PictureError says why not.

    Only the formats in IMAGE_FORMATS are tried (Pillow's others include ones that run external programs). The
    pixel count is checked from the header, before anything is decoded. Transparency is laid on white, and a
    camera's orientation tag is applied.
    """
    if len(data) > MAX_IMAGE_BYTES:
        raise PictureError(f"The picture is {len(data) / 2**20:.1f} MB; use one of at most "
                           f"{MAX_IMAGE_BYTES / 2**20:g} MB.")
    too_many = f"use one of at most {MAX_IMAGE_PIXELS / 1e6:g} megapixels."
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, in a sentence
            picture = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError:
        raise PictureError(f"The picture has too many pixels; {too_many}") from None
    except Exception:  # Pillow raises many kinds for what is not a picture
        raise PictureError(f"The file is not a picture; use a {FORMAT_NAMES}.") from None
    with picture:
        width, height = picture.size
        if width * height > MAX_IMAGE_PIXELS:
            raise PictureError(f"The picture is {width}x{height} pixels; {too_many}")
        try:
            picture.seek(0)  # an animation's first frame; the others are never decoded
            image = ImageOps.exif_transpose(picture)
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                rgba = image.convert("RGBA")
                image = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image.alpha_composite(rgba)
            return image.convert("RGB")
        except Exception as err:  # a truncated or corrupt file
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise PictureError(f"The picture could not be read ({reason}); try another one.") from None


def square_picture(image: Image.Image, size: int) -> Image.Image:
    """The centre square of an RGB picture, Lanczos-resized to `size` pixels when it is not that size already."""
    side = min(image.size)
    if image.size != (side, side):
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    return image if side == size else image.resize((size, size), Image.Resampling.LANCZOS)


@torch.inference_mode()
def encode_pictures(checkpoint: Checkpoint, images: Sequence[Image.Image]) -> torch.Tensor:
    """Each RGB picture's token grid: made square at the model's size, x / 127.5 - 1, the VQ encoder, nearest codes.

    The nearest code is the one of largest cosine similarity, as Janus's own quantizer finds it (LlamaGen's
    `VectorQuantizer` with `codebook_l2_norm`; `vqmodel.decode` reads the same normalised codebook).
    transformers' `vqmodel.encode` measures distances to the codebook as stored, unnormalised: the same codes
    where the stored rows are unit vectors (the demo model's are), others where they are not.  # [n, T]
    """
    vq = checkpoint.model.model.vqmodel
    pixels = np.stack([np.asarray(square_picture(image, checkpoint.image_size), dtype=np.float32) for image in images])
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2) / 127.5 - 1  # [n, 3, H, W]
    latents = vq.quant_conv(vq.encoder(x.to(checkpoint.device, checkpoint.dtype)))  # [n, D, g, g]
    z = F.normalize(latents.float().permute(0, 2, 3, 1).flatten(1, 2), dim=-1)  # [n, g*g, D]
    book = F.normalize(vq.quantize.embedding.weight.float(), dim=-1)  # [K, D]
    return (z @ book.T).argmax(dim=-1).cpu()


def region_cells(grid: int, region: Sequence[float]) -> torch.Tensor:
    """The cells of a grid x grid token grid whose square overlaps the region [x0, y0, x1, y1] (fractions of width
    and height) with positive area: the cells regenerated.  # [grid * grid] bool, row-major"""
    x0, y0, x1, y1 = region
    index = torch.arange(grid)
    columns = (index < x1 * grid) & (index + 1 > x0 * grid)
    rows = (index < y1 * grid) & (index + 1 > y0 * grid)
    return (rows[:, None] & columns[None, :]).flatten()


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
        return SAVE_FORMATS[suffix]
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
