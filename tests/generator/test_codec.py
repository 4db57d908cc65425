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


# -- pictures to codes ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo():
    from generator.checkpoint import load_checkpoint, resolve_model

    return load_checkpoint(resolve_model(None), device="cpu")


def _mean_abs(a: Image.Image, b: Image.Image) -> float:
    import numpy as np

    return float(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).mean())


def test_decoded_codes_encode_back_on_the_demo_model(demo):
    from generator.codec import encode_pictures
    from generator.demo import scenes
    from generator.demo.train import code_attributes, scene_codes

    codes = torch.tensor([scene_codes(scene) for scene, _ in scenes.sample(32, seed=1)])  # [32, 36]
    pictures = decode_tokens(demo, codes)
    back = encode_pictures(demo, pictures)
    same = back == codes
    background = torch.tensor([[len(code_attributes(int(c))) == 1 for c in row] for row in codes])
    # The demo's encoder finds background codes; a shape's quarter it often reads as another kind's
    # (docs/benchmarks.md).
    assert same[background].float().mean() >= 0.99 and same.float().mean() >= 0.8
    again = decode_tokens(demo, back)
    assert sum(_mean_abs(a, b) for a, b in zip(again, pictures)) / len(pictures) < 8  # of 255: measured 4.9


def test_the_encoder_finds_the_codes_transformers_encode_finds_on_a_unit_codebook(demo):
    import copy

    import numpy as np

    from generator.codec import encode_pictures
    from generator.demo import scenes

    vq = demo.model.model.vqmodel
    norms = vq.quantize.embedding.weight.norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=0.01)  # the demo's codebook rows are unit vectors
    # up to bf16 rounding, which can flip a near tie in transformers' unnormalised distances: make them exact
    unit = copy.deepcopy(vq)
    with torch.no_grad():
        unit.quantize.embedding.weight.copy_(torch.nn.functional.normalize(vq.quantize.embedding.weight, dim=-1))
    pictures = [scenes.render(scene) for scene, _ in scenes.sample(8, seed=2)]
    x = torch.from_numpy(np.stack([np.asarray(p, dtype=np.float32) for p in pictures])).permute(0, 3, 1, 2)
    with torch.inference_mode():
        theirs = unit.encode(x / 127.5 - 1).image_tokens.view(len(pictures), -1)
    assert torch.equal(encode_pictures(demo, pictures), theirs)


def test_a_picture_is_center_cropped_and_resized_before_encoding(demo):
    from generator.codec import encode_pictures, square_picture

    square = Image.new("RGB", (48, 48), (200, 30, 30))
    square.paste((30, 30, 200), (0, 24, 48, 48))  # red over blue
    wide = Image.new("RGB", (160, 96), (255, 255, 0))
    wide.paste(square.resize((96, 96), Image.Resampling.NEAREST), (32, 0))  # yellow bars left and right
    tall = Image.new("RGB", (48, 100), (0, 255, 0))
    tall.paste(square, (0, 26))  # green bars above and below
    assert square_picture(wide, 48).size == (48, 48)
    assert _mean_abs(square_picture(wide, 48), square) < 3 and square_picture(tall, 48).tobytes() == square.tobytes()
    codes = encode_pictures(demo, [square, wide, tall])
    assert torch.equal(codes[2], codes[0]) and (codes[1] == codes[0]).float().mean() >= 0.9


def _file(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_load_picture_reads_formats_by_content_and_makes_them_rgb():
    from generator.codec import load_picture

    rgb = Image.new("RGB", (30, 20), (10, 200, 30))
    for fmt in ("PNG", "JPEG", "WEBP", "GIF"):
        picture = load_picture(_file(rgb, fmt))
        assert picture.mode == "RGB" and picture.size == (30, 20), fmt
    clear = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert load_picture(_file(clear, "PNG")).getpixel((0, 0)) == (255, 255, 255)  # transparency on white
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    animated = _file(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert load_picture(animated).getpixel((4, 4)) == (255, 0, 0)  # the first frame


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "The file is not a picture; use a PNG, JPEG, WebP or GIF."),
        (b"%PDF-1.4 not a picture", "The file is not a picture; use a PNG, JPEG, WebP or GIF."),
        ("bmp", "The file is not a picture; use a PNG, JPEG, WebP or GIF."),
        ("truncated", "The picture could not be read ("),
        ("bomb", "The picture is 9000x8000 pixels; use one of at most 64 megapixels."),
        ("huge bomb", "The picture has too many pixels; use one of at most 64 megapixels."),
    ],
)
def test_load_picture_refuses_what_it_cannot_use_in_one_sentence(data, message):
    from generator.codec import PictureError, load_picture

    if data == "bmp":
        data = _file(Image.new("RGB", (8, 8)), "BMP")
    elif data == "truncated":
        data = _file(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG")[:400]
    elif data in ("bomb", "huge bomb"):  # a few kilobytes that would unpack to tens or hundreds of megapixels
        side = (9000, 8000) if data == "bomb" else (20000, 20000)
        data = _file(Image.new("1", side), "PNG")
        assert len(data) < 1 << 20
    with pytest.raises(PictureError) as caught:
        load_picture(data)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_load_picture_refuses_a_file_over_the_byte_limit():
    from generator.codec import PictureError, load_picture
    from generator.protocol import MAX_IMAGE_BYTES

    with pytest.raises(PictureError, match=r"The picture is 32\.0 MB; use one of at most 32 MB\."):
        load_picture(b"\0" * (MAX_IMAGE_BYTES + 1))


@pytest.mark.parametrize(
    ("region", "rows", "columns"),
    [((0.0, 0.5, 1.0, 1.0), range(3, 6), range(6)), ((0.25, 0.25, 0.75, 0.75), range(1, 5), range(1, 5)),
     ((0.5, 0.0, 0.67, 1.0), range(6), range(3, 5)), ((0.0, 0.0, 1.0, 1.0), range(6), range(6)),
     ((0.0, 0.0, 0.01, 0.01), range(1), range(1)), ((0.5, 0.5, 0.5001, 0.5001), range(3, 4), range(3, 4))],
)
def test_a_region_regenerates_the_cells_it_overlaps_with_positive_area(region, rows, columns):
    from generator.codec import region_cells

    cells = region_cells(6, region).view(6, 6)
    want = torch.zeros(6, 6, dtype=torch.bool)
    want[list(rows)[0] : list(rows)[-1] + 1, list(columns)[0] : list(columns)[-1] + 1] = True
    assert torch.equal(cells, want)


def test_previews_of_kept_cells_show_them_and_blank_only_the_cells_still_to_sample(tiny):
    from generator.codec import region_cells

    grid, side = tiny.grid_size, 96 // tiny.grid_size
    source = torch.randint(0, 256, (tiny.num_image_tokens,), generator=torch.Generator().manual_seed(1))
    keep = ~region_cells(grid, (0.0, 0.0, 0.5, 1.0))  # the left half regenerated
    kept = torch.where(keep, source, -1)[None]
    [first] = decode_preview(tiny, source[None, :1], kept)  # one cell sampled: no row complete yet
    for r in range(grid):
        for c in range(grid):
            centre = (c * side + side // 2, r * side + side // 2)
            assert (first.getpixel(centre) == PREVIEW_FILL) == (c < grid // 2), (r, c)
    [later] = decode_preview(tiny, source[None, : 2 * grid + 1], kept)  # two rows done: they show in full
    assert later.getpixel((side // 2, side // 2)) != PREVIEW_FILL and later.getpixel((side // 2, 95)) == PREVIEW_FILL
