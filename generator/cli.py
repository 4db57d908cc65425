"""The generator's command-line tools: `imagine` and `make-model`."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
import time
from pathlib import Path

from generator.protocol import OptionError, check_options, check_prompt


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit code 2."""


def run(args: argparse.Namespace) -> int:
    try:
        if args.command == "imagine":
            return imagine(args)
        if args.command == "bench":
            return bench(args)
        return make_model(args)
    except (UsageError, OptionError) as err:
        print(f"janus-bot: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("janus-bot: interrupted", file=sys.stderr)
        return 130


def writable_dir(path: str | Path) -> Path:
    """`path` as a directory this process may write in, made if missing; checked before any long work."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"{str(path)!r} is a file, not a directory.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"Cannot make the directory {str(path)!r}: {err.strerror or err}.") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"Cannot write in {str(path)!r}: permission denied.")
    return path


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("generator.download").setLevel(logging.INFO)  # a first download's progress


def make_model(args: argparse.Namespace) -> int:
    import torch

    from generator.presets import PRESETS, build_memory_problem
    from generator.presets import make_model as build

    if args.preset not in PRESETS:
        raise UsageError(f"Unknown preset {args.preset!r}; choose one of: {', '.join(PRESETS)}.")
    problem = build_memory_problem(args.preset, torch.device("cpu"))
    if problem:
        raise UsageError(problem)
    _quiet_transformers()
    out = build(writable_dir(args.out_dir), args.preset, seed=args.seed)
    print(f"saved a random {args.preset} checkpoint to {out}")
    return 0


def bench(args: argparse.Namespace) -> int:
    from generator import bench
    from generator.checkpoint import CheckpointError

    problem = bench.check_arguments(args)
    if problem:
        raise UsageError(problem)
    _quiet_transformers()
    try:
        return bench.bench(args)
    except CheckpointError as err:  # a device or dtype this machine cannot use
        raise UsageError(str(err)) from None


def imagine(args: argparse.Namespace) -> int:
    prompts = [check_prompt(p) for p in args.prompts]
    check_options(args.count, args.cfg, args.temperature, args.seed)
    if args.upscale is not None and not 16 <= args.upscale <= 4096:
        raise UsageError(f"--upscale must be between 16 and 4096 pixels; you gave {args.upscale}.")
    output = args.output
    if output is None and args.out_dir is None:
        output = "imagine.png"
    if output is not None:
        from generator.decode import image_format

        try:
            image_format(output)
        except ValueError as err:
            raise UsageError(str(err)) from None
        writable_dir(Path(output).parent)
    if args.out_dir is not None:
        writable_dir(args.out_dir)

    _quiet_transformers()
    from tqdm import tqdm

    from generator.checkpoint import CheckpointError, first_line, load_checkpoint, resolve_model
    from generator.decode import decode_tokens, make_grid, save_image, upscale
    from generator.engine import Progress, Request, RequestError, generate

    try:
        checkpoint = load_checkpoint(resolve_model(args.model), device=args.device, dtype=args.dtype)
    except CheckpointError as err:
        raise UsageError(str(err)) from None
    except RuntimeError as err:  # the device failed while the model moved there
        raise UsageError(f"Cannot use device {args.device!r}: {first_line(err)}") from None

    seed = args.seed if args.seed is not None else secrets.randbits(31)
    requests = [
        Request(p, num_images=args.count, cfg=args.cfg, temperature=args.temperature, seed=seed + i)
        for i, p in enumerate(prompts)
    ]
    bar = tqdm(total=checkpoint.num_image_tokens, desc="generating", unit="tok", file=sys.stderr,
               disable=None)
    first = requests[0].id

    def on_progress(event: Progress) -> None:
        if event.request.id == first:
            bar.update(event.step - bar.n)

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
    if args.out_dir:
        for p, images in enumerate(images_by_prompt):
            for i, image in enumerate(images):
                written.append(save_image(image, Path(args.out_dir) / f"{p}-{i}.png"))
    if output:
        written.append(save_image(make_grid([im for images in images_by_prompt for im in images]), output))
    total = sum(len(images) for images in images_by_prompt)
    print(f"{total} images from {len(prompts)} prompt(s) in {elapsed:.1f}s, seed {seed}, model {checkpoint.name}")
    for path in written:
        print(path)
    return 0
