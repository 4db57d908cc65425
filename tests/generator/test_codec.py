from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from generator.codec import (
    PREVIEW_FILL,
    decode_preview,
    decode_tokens,
    grid_shape,
    make_grid,
    save_image,
    to_uint8,
    upscale,
)


@pytest.mark.parametrize(
    ("n", "shape"), [(1, (1, 1)), (2, (2, 1)), (3, (2, 2)), (4, (2, 2)), (6, (3, 2)), (9, (3, 3)), (16, (4, 4))]
)
def test_grid_shape(n, shape):
    assert grid_shape(n) == shape


def test_grid_of_four_is_two_by_two():
    images = [Image.new("RGB", (96, 96), (i * 60, 0, 0)) for i in range(4)]
    grid = make_grid(images)
    assert grid.size == (192, 192)
    assert grid.getpixel((100, 100)) == (180, 0, 0)


def test_to_uint8_maps_minus_one_to_one_onto_bytes():
    x = torch.tensor([-1.5, -1.0, 0.0, 1.0, 2.0]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    assert to_uint8(x)[0, 0, :, 0].tolist() == [0, 0, 127, 255, 255]


def test_decode_gives_rgb_images_of_model_size(tiny):
    tokens = torch.randint(0, 256, (5, tiny.num_image_tokens))
    images = decode_tokens(tiny, tokens)
    assert len(images) == 5 and all(im.size == (96, 96) and im.mode == "RGB" for im in images)
    assert images[0].tobytes() == decode_tokens(tiny, tokens[:1])[0].tobytes()


def test_preview_fills_in_top_down(tiny):
    tokens = torch.randint(0, 256, (1, 2 * tiny.grid_size + 3))  # two full rows and a bit
    [image] = decode_preview(tiny, tokens)
    cut = 2 * 96 // tiny.grid_size
    assert image.getpixel((50, cut + 5)) == PREVIEW_FILL
    assert image.getpixel((50, 95)) == PREVIEW_FILL
    assert image.crop((0, 0, 96, cut)).getcolors(96 * 96) != [(96 * cut, PREVIEW_FILL)]


def test_upscale_uses_lanczos_to_the_asked_size():
    assert upscale(Image.new("RGB", (96, 96)), 384).size == (384, 384)


@pytest.mark.parametrize(("suffix", "fmt"), [(".png", "PNG"), (".jpg", "JPEG"), (".webp", "WEBP")])
def test_save_formats(tmp_path, suffix, fmt):
    path = save_image(Image.new("RGB", (8, 8), (10, 200, 30)), tmp_path / f"x{suffix}")
    assert Image.open(io.BytesIO(path.read_bytes())).format == fmt


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="use .png, .jpg or .webp"):
        save_image(Image.new("RGB", (8, 8)), tmp_path / "x.gif")
