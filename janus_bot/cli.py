"""`janus-bot`: one command line for the generator's tools and the bot; imports each side only when used."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="janus-bot", description="Janus / Janus-Pro image generation bot.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    imagine = commands.add_parser("imagine", help="generate images from prompts, all in one batch")
    imagine.add_argument("prompts", nargs="+", metavar="PROMPT", help="one or more prompts, generated together")
    imagine.add_argument("--model", help="hub id or checkpoint directory (default: the built-in model)")
    imagine.add_argument("-n", "--count", type=int, default=4, help="images per prompt, 1-16 (default 4)")
    imagine.add_argument("--cfg", type=float, default=5.0, help="guidance weight, 1-10 (default 5)")
    imagine.add_argument("--temperature", type=float, default=1.0, help="0-1.5; 0 is greedy (default 1)")
    imagine.add_argument("--seed", type=int, help="random seed (default: random); prompt i uses seed+i")
    imagine.add_argument("-o", "--output", help="grid of all images (.png, .jpg or .webp)")
    imagine.add_argument("--out-dir", help="write each image as <prompt>-<image>.png")
    imagine.add_argument("--upscale", type=int, metavar="PX", help="Lanczos-upscale each image to PX pixels")
    imagine.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    imagine.add_argument("--dtype", help="auto, bf16, fp16 or fp32 (default: bf16 on CUDA, fp32 on CPU)")

    make = commands.add_parser("make-model", help="save a random-weight checkpoint of a preset architecture")
    make.add_argument("out_dir", metavar="OUT_DIR")
    make.add_argument("--preset", default="tiny", help="tiny, small, janus-pro-1b or janus-pro-7b (default tiny)")
    make.add_argument("--seed", type=int, default=0)

    run = commands.add_parser("run", help="run the bot until SIGTERM or Ctrl-C")
    run.add_argument("-c", "--config", help="TOML settings file (default: config.toml if present, else defaults)")
    return parser


def _run_bot(config: str | None) -> int:
    import asyncio
    import logging
    from pathlib import Path

    from bot import app
    from bot.config import ConfigError, load_settings
    from bot.generator_client import GeneratorStartError

    path = Path(config) if config else Path("config.toml")
    try:
        settings = load_settings(path if config or path.exists() else None)
    except ConfigError as error:
        print(f"janus-bot: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(app.run(settings))
    except GeneratorStartError as error:
        print(f"janus-bot: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("imagine", "make-model"):
        from generator import cli

        return cli.run(args)
    if args.command == "run":
        return _run_bot(args.config)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
