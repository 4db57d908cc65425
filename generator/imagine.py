"""`janus-bot imagine`: prompts in, pictures out, all in one batch through the engine.

`--no TEXT` is a negative prompt for every prompt of the call; `--image FILE` starts every picture from that
one, regenerating only the cells `--region` covers (the bottom half unless told).
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from generator.cli import UsageError, command, output_file, writable_dir
from generator.protocol import (
    DEFAULT_REGION,
    add_quantize_argument,
    check_negative,
    check_options,
    check_prompt,
    parse_region,
)

if TYPE_CHECKING:
    from PIL import Image


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompts", nargs="+", metavar="PROMPT", help="one or more prompts, generated together")
    parser.add_argument("--model", help="hub id or checkpoint directory (default: the built-in model)")
    parser.add_argument("-n", "--count", type=int, default=4, help="images per prompt, 1-16 (default 4)")
    parser.add_argument("--cfg", type=float, default=5.0, help="guidance weight, 1-10 (default 5)")
    parser.add_argument("--temperature", type=float, default=1.0, help="0-1.5; 0 is greedy (default 1)")
    parser.add_argument("--seed", type=int, help="random seed (default: random); prompt i uses seed+i")
    parser.add_argument("--no", dest="negative", metavar="TEXT",
                        help="negative prompt, for every prompt: what guidance steers away from")
    parser.add_argument("--image", metavar="FILE",
                        help="start from this picture (PNG, JPEG, WebP or GIF): only --region is regenerated")
    parser.add_argument("--region", metavar="X0,Y0,X1,Y1",
                        help="with --image, the part regenerated, in fractions of width and height "
                             "(default 0,0.5,1,1: the bottom half)")
    parser.add_argument("-o", "--output", help="grid of all images, .png, .jpg or .webp (default imagine.png, unless "
                                               "--out-dir is given)")
    parser.add_argument("--out-dir", help="write each image as <prompt>-<image>.png")
    parser.add_argument("--upscale", type=int, metavar="PX", help="Lanczos-upscale each image to PX pixels")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    parser.add_argument("--dtype", help="auto, bf16, fp16 or fp32 (default: bf16 on CUDA, fp32 on CPU)")
    add_quantize_argument(parser)


@command
def run(args: argparse.Namespace) -> int:
    prompts = [check_prompt(p) for p in args.prompts]
    check_options(args.count, args.cfg, args.temperature, args.seed)
    negative = check_negative(args.negative)
    if args.region is not None and args.image is None:
        raise UsageError("--region goes with --image: it says which part of that picture to regenerate.")
    region = parse_region(args.region) if args.region is not None else DEFAULT_REGION
    picture = read_picture(args.image) if args.image is not None else None
    if args.upscale is not None and not 16 <= args.upscale <= 4096:
        raise UsageError(f"--upscale must be between 16 and 4096 pixels; you gave {args.upscale}.")
    output = args.output
    if output is None and args.out_dir is None:
        output = "imagine.png"
    if output is not None:
        output = output_file(output)
    if args.out_dir is not None:
        writable_dir(args.out_dir)

    from generator.checkpoint import load_from_args

    checkpoint = load_from_args(args)
    from tqdm import tqdm  # after the model: the libraries are quieted as it loads

    from generator.codec import decode_tokens, encode_pictures, make_grid, region_cells, save_image, upscale
    from generator.engine import Request, RequestError, StepReport, generate

    forced = keep = None
    if picture is not None:
        forced, keep = encode_pictures(checkpoint, [picture])[0], ~region_cells(checkpoint.grid_size, region)
    seed = args.seed if args.seed is not None else secrets.randbits(31)
    requests = [
        Request(p, num_images=args.count, cfg=args.cfg, temperature=args.temperature, seed=seed + i,
                negative=negative, forced=forced, keep=keep)
        for i, p in enumerate(prompts)
    ]
    bar = tqdm(total=checkpoint.num_image_tokens, desc="generating", unit="tok", file=sys.stderr,
               disable=None)
    first = requests[0].id

    def on_progress(report: StepReport) -> None:
        if report.request.id == first:
            bar.update(report.step - bar.n)

    started = time.perf_counter()
    try:
        results = generate(checkpoint, requests, on_progress=on_progress)
    except RequestError as err:
        raise UsageError(str(err)) from None
    finally:
        bar.close()
    images_by_prompt = [decode_tokens(checkpoint, r.tokens) for r in results]
    elapsed = time.perf_counter() - started

    if args.upscale:
        images_by_prompt = [[upscale(im, args.upscale) for im in images] for images in images_by_prompt]
    written = []
    try:  # checked before the work; a disk that fills up meanwhile is still one sentence
        if args.out_dir:
            for p, images in enumerate(images_by_prompt):
                for i, image in enumerate(images):
                    written.append(save_image(image, Path(args.out_dir) / f"{p}-{i}.png"))
        if output:
            written.append(save_image(make_grid([im for images in images_by_prompt for im in images]), output))
    except OSError as err:
        raise UsageError(f"Cannot write {err.filename or 'the pictures'}: {err.strerror or err}.") from None
    total = sum(len(images) for images in images_by_prompt)
    print(f"{total} images from {len(prompts)} prompt(s) in {elapsed:.1f}s, seed {seed}, model {checkpoint.name}")
    for path in written:
        print(path)
    return 0


def read_picture(name: str, label: str | None = None) -> Image.Image:
    """The picture in a file, read and checked before any model work; UsageError in one sentence that names it as
    `label` (`--image 'name'` unless told)."""
    from generator.codec import PictureError, load_picture
    from generator.protocol import MAX_IMAGE_BYTES

    path = Path(name).expanduser()
    label = f"--image {name!r}" if label is None else label
    try:
        if path.is_dir():
            raise UsageError(f"{label} is a directory, not a picture file.")
        if path.stat().st_size > MAX_IMAGE_BYTES:
            raise UsageError(f"{label} is {path.stat().st_size / 2**20:.1f} MB; use a picture of at most "
                             f"{MAX_IMAGE_BYTES / 2**20:g} MB.")
        data = path.read_bytes()
    except OSError as err:
        raise UsageError(f"Cannot read {label}: {err.strerror or err}.") from None
    try:
        return load_picture(data)
    except PictureError as err:
        raise UsageError(f"{label}: {err}") from None
