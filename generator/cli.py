"""What the generator's commands share: bad input as one sentence, output directories checked first, quiet logs.

Each command (`generator.imagine`, `generator.describe_command`, `generator.presets` for make-model,
`generator.bench`, `generator.demo.train`, `generator.demo.evaluate`) owns its options in `add_arguments(parser)`
and its work in `run(args)`; `janus_bot.cli` lists them.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from generator.protocol import SAVE_FORMATS, OptionError


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """A command's parser: a mistake is one line naming it and where the options are listed, exit code 2 (not
    argparse's usage block, which buries the sentence that matters)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} ({self.prog} -h lists the options)\n")


def command(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A command's `run`: bad input ends it with one line and exit code 2, Ctrl-C with exit code 130."""

    @functools.wraps(run)
    def checked(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except (UsageError, OptionError) as err:
            print(f"janus-bot: error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("janus-bot: interrupted", file=sys.stderr)
            return 130

    return checked


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
    try:  # root passes os.access everywhere; /proc and read-only mounts still refuse a file
        tempfile.TemporaryFile(dir=path).close()
    except OSError as err:
        raise UsageError(f"Cannot write files in {str(path)!r} ({err.strerror or err}); "
                         f"pick another directory.") from None
    return path


def output_file(name: str, option: str = "-o") -> Path:
    """A picture file to write (.png, .jpg or .webp) in a directory this process may write in, checked first."""
    path = Path(name).expanduser()
    if path.is_dir():
        raise UsageError(f"{option} {name!r} is a directory; give a file name, such as {str(path / 'imagine.png')!r}.")
    if path.suffix.lower() not in SAVE_FORMATS:
        raise UsageError(f"{option} {name!r} needs a picture file name ending in .png, .jpg or .webp.")
    writable_dir(path.parent)
    return path


def quiet_transformers() -> None:
    """Warnings only from the libraries, but a first download's progress."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("generator.download").setLevel(logging.INFO)

