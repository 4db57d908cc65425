"""`janus-bot`: one command line for the generator's tools and the bot; each command imported only when used.

A command is one line of COMMANDS: the module (or "module:object") that owns it, with `add_arguments(parser)`
and `run(args) -> int`, or, marked `parses_itself`, `main(argv, prog) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any


@dataclass(frozen=True)
class Command:
    target: str  # "package.module" or "package.module:object"
    help: str
    parses_itself: bool = False


COMMANDS: dict[str, Command] = {
    "imagine": Command("generator.imagine", "generate images from prompts, all in one batch"),
    "make-model": Command("generator.presets", "save a random-weight checkpoint of a preset architecture"),
    "bench": Command("generator.bench", "measure the engine against the reference loop and transformers"),
    "run": Command("janus_bot.cli:RUN", "run the bot until SIGTERM or Ctrl-C"),
    "worker": Command("bot.worker", "run a GPU worker of the Redis pool: janus-bot worker --redis URL [--model ...]",
                      parses_itself=True),
    "pool": Command("janus_bot.cli:POOL", "show the Redis pool: waiting jobs and each worker's health"),
    "train-demo": Command("generator.demo.train", "train the built-in demo model on synthetic scenes (CPU, minutes)"),
    "eval-demo": Command("generator.demo.evaluate", "score prompt adherence on held-out scenes, cfg 1 vs --cfg"),
}


def _overview() -> argparse.ArgumentParser:
    """The parser of `janus-bot -h` and of a missing or unknown command: it lists the commands."""
    parser = argparse.ArgumentParser(prog="janus-bot", description="Janus / Janus-Pro image generation bot.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        commands.add_parser(name, help=command.help, add_help=False)
    return parser


def _load(target: str) -> Any:
    module, _, name = target.partition(":")
    loaded = importlib.import_module(module)
    return getattr(loaded, name) if name else loaded


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = COMMANDS.get(argv[0]) if argv else None
    if command is None:
        _overview().parse_args(argv)  # help, or a usage error: both exit
        raise AssertionError(argv)
    target, prog = _load(command.target), f"janus-bot {argv[0]}"
    if command.parses_itself:
        return target.main(argv[1:], prog=prog)
    parser = argparse.ArgumentParser(prog=prog, description=command.help)
    target.add_arguments(parser)
    return target.run(parser.parse_args(argv[1:]))


# -- the bot's commands, until they live in bot/ -------------------------------------------------------


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", help="TOML settings file (default: config.toml if present, else defaults)")
    parser.add_argument("--model", help="hub id or checkpoint directory (overrides [model] name)")
    parser.add_argument("--data-dir", help="database and images directory (overrides [bot] data_dir)")
    parser.add_argument("--web-port", type=int, metavar="N",
                        help="serve the web playground and API on port N (0: any free port), chat platforms or not")
    parser.add_argument("--redis", metavar="URL",
                        help='share the job queue in Redis with other bots and GPU workers ([queue] backend = "redis")')
    parser.add_argument("--instance", help="this bot's name in the Redis pool, one per platform or shard")


def _run_bot(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    from pathlib import Path

    from bot import app
    from bot.adapters import PlatformUnreachable
    from bot.config import ConfigError, load_settings
    from bot.generator_client import GeneratorStartError

    path = Path(args.config) if args.config else Path("config.toml")
    try:
        settings = load_settings(path if args.config or path.exists() else None)
        if args.web_port is not None and not 0 <= args.web_port <= 65535:
            raise ConfigError(f"--web-port: {args.web_port} is not a port; give 0 to 65535")
    except ConfigError as error:
        print(f"janus-bot: {error}", file=sys.stderr)
        return 2
    # Flags override the file.
    if args.model is not None:
        settings = settings.model_copy(update={"model": settings.model.model_copy(update={"name": args.model})})
    if args.data_dir is not None:
        bot = settings.bot.model_copy(update={"data_dir": Path(args.data_dir)})
        settings = settings.model_copy(update={"bot": bot})
    if args.web_port is not None:
        web = settings.web.model_copy(update={"enabled": True, "port": args.web_port})
        settings = settings.model_copy(update={"web": web})
    if args.redis is not None or args.instance is not None:
        queue = settings.queue.model_copy(update={"backend": "redis"} if args.redis is None else
                                          {"backend": "redis", "redis_url": args.redis})
        if args.instance is not None:
            queue = queue.model_copy(update={"instance": args.instance})
        settings = settings.model_copy(update={"queue": queue})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(app.run(settings))
    except ConfigError as error:
        print(f"janus-bot: {error}", file=sys.stderr)
        return 2
    except (GeneratorStartError, PlatformUnreachable) as error:
        print(f"janus-bot: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before start-up finished (after it, Ctrl-C is a graceful shutdown)
        print("janus-bot: interrupted while starting", file=sys.stderr)
        return 130
    return 0


def _add_pool_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis", required=True, metavar="URL", help="the pool's Redis, redis://host:6379/0")
    parser.add_argument("--prefix", default="janus", help="Redis key prefix shared by the pool (default janus)")


def _show_pool(args: argparse.Namespace) -> int:
    import asyncio

    from bot.redis_queue import REDIS_DOWN, describe_pool

    try:
        print(asyncio.run(describe_pool(args.redis, args.prefix)))
    except REDIS_DOWN as error:
        print(f"janus-bot: Redis cannot be reached ({error})", file=sys.stderr)
        return 1
    return 0


RUN = SimpleNamespace(add_arguments=_add_run_arguments, run=_run_bot)
POOL = SimpleNamespace(add_arguments=_add_pool_arguments, run=_show_pool)


if __name__ == "__main__":
    sys.exit(main())
