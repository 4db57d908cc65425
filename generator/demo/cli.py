"""`janus-bot train-demo` and `janus-bot eval-demo`."""

from __future__ import annotations

import argparse
import sys
import time

from generator.cli import UsageError, _quiet_transformers, writable_dir


def run(args: argparse.Namespace) -> int:
    try:
        if args.command == "train-demo":
            return train_demo(args)
        return eval_demo(args)
    except UsageError as err:
        print(f"janus-bot: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("janus-bot: interrupted", file=sys.stderr)
        return 130


def train_demo(args: argparse.Namespace) -> int:
    writable_dir(args.out_dir)  # before the half hour of training, not after
    _quiet_transformers()
    from generator.demo.card import write_card
    from generator.demo.train import train

    started = time.perf_counter()
    stats = train(args.out_dir, seed=args.seed, threads=args.threads, report=lambda line: print(line, flush=True))
    print(f"trained in {time.perf_counter() - started:.0f}s; scoring on held-out prompts", flush=True)
    lines = write_card(args.out_dir, stats)
    print("\n".join(lines))
    print(f"saved the demo model to {args.out_dir}")
    return 0


def eval_demo(args: argparse.Namespace) -> int:
    if args.n is not None and args.n < 1:
        raise UsageError(f"--n must be at least 1; you gave {args.n}.")
    if args.cfg is not None and not 0 <= args.cfg <= 10:
        raise UsageError(f"--cfg must be between 0 and 10; you gave {args.cfg:g}.")
    _quiet_transformers()
    from generator.checkpoint import CheckpointError, load_checkpoint, resolve_model
    from generator.demo.evaluate import PROMPTS, evaluate, table

    try:
        checkpoint = load_checkpoint(resolve_model(args.model), device="cpu")
    except CheckpointError as err:
        raise UsageError(str(err)) from None
    started = time.perf_counter()
    prompts = args.n or PROMPTS
    results = evaluate(checkpoint, prompts=prompts, num_images=args.images, cfg=args.cfg, seed=args.seed)
    print(f"{prompts} held-out prompts x {args.images} images, model {checkpoint.name}, "
          f"{time.perf_counter() - started:.1f}s")
    print("\n".join(table(results)))
    return 0
