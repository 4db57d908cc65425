"""`janus-bot`: one command line for the generator's tools and the bot; each command imported only when used.

A command is one line of COMMANDS: the module (or "module:object") that owns it, with `add_arguments(parser)`
and `run(args) -> int`, or, marked `parses_itself`, `main(argv, prog) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from generator.cli import Parser


@dataclass(frozen=True)
class Command:
    target: str  # "package.module" or "package.module:object"
    help: str
    parses_itself: bool = False


COMMANDS: dict[str, Command] = {
    "imagine": Command("generator.imagine", "generate images from prompts, all in one batch"),
    "describe": Command("generator.describe_command", "write prompts that would draw the given pictures"),
    "make-model": Command("generator.presets", "save a random-weight checkpoint of a preset architecture"),
    "bench": Command("generator.bench", "measure the engine against the reference loop and transformers"),
    "plan": Command("generator.plan", "what a model needs on a GPU and how many images fit, per weight mode"),
    "run": Command("bot.app", "run the bot (Discord, Slack, the web page) until SIGTERM or Ctrl-C"),
    "worker": Command("bot.worker", "run a GPU worker of the Redis pool: janus-bot worker --redis URL [--model ...]",
                      parses_itself=True),
    "pool": Command("bot.pool", "show the Redis pool: waiting jobs and each worker's health"),
    "train-demo": Command("generator.demo.train", "train the built-in demo model on synthetic scenes (CPU, under "
                                                  "an hour)"),
    "eval-demo": Command("generator.demo.evaluate", "score prompt adherence on held-out scenes, cfg 1 vs --cfg"),
}


def _overview() -> argparse.ArgumentParser:
    """The parser of `janus-bot -h` and of a missing or unknown command: it lists the commands."""
    parser = argparse.ArgumentParser(
        prog="janus-bot",
        description="A self-hosted Discord, Slack and web image bot on DeepSeek's Janus / Janus-Pro models.",
        epilog="Start with `janus-bot run` (the web page at http://127.0.0.1:8080/ on the built-in demo model) or "
               "`janus-bot imagine \"a large red circle on a blue background\"`; `janus-bot COMMAND -h` for a "
               "command's options.",
    )
    parser.add_argument("--version", action="version", version=f"janus-bot {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        commands.add_parser(name, help=command.help, add_help=False)
    return parser


def _load(target: str) -> Any:
    module, _, name = target.partition(":")
    loaded = importlib.import_module(module)
    return getattr(loaded, name) if name else loaded


def _version() -> str:
    try:
        return importlib.metadata.version("janus-bot")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:  # the commands, rather than an error about a missing one
        _overview().print_help()
        return 0
    command = COMMANDS.get(argv[0])
    if command is None:
        _overview().parse_args(argv)  # help, or a usage error: both exit
        raise AssertionError(argv)
    target, prog = _load(command.target), f"janus-bot {argv[0]}"
    if command.parses_itself:
        return target.main(argv[1:], prog=prog)
    parser = Parser(prog=prog, description=command.help)
    target.add_arguments(parser)
    return target.run(parser.parse_args(argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
