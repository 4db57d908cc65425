"""The `/imagine` command line every chat adapter shares: a prompt with optional flags, parsed leniently."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

USAGE = "Usage: /imagine <prompt> [--count N] [--cfg W] [--temperature T] [--seed S] [--no TEXT]"

# Flag spellings people type, each mapped to the option it sets.
_FLAGS = {
    "count": "count", "n": "count", "c": "count",
    "cfg": "cfg", "guidance": "cfg", "g": "cfg",
    "temperature": "temperature", "temp": "temperature", "t": "temperature",
    "seed": "seed", "s": "seed",
    "no": "negative", "negative": "negative",
}  # fmt: skip
# "--", and the dashes chat clients and phones turn it into (em dash, en dash, minus sign).
_DASHES = re.compile(r"^(?:--|-|\u2014|\u2013|\u2212)(?=[A-Za-z])")
_INTEGER = {"count", "seed"}


class CommandError(ValueError):
    """A command line that cannot be read; the message is a sentence followed by the usage line."""


@dataclass(frozen=True)
class ImagineCommand:
    """What `/imagine` asked for; None means the server's default."""

    prompt: str
    count: int | None = None
    cfg: float | None = None
    temperature: float | None = None
    seed: int | None = None
    negative: str | None = None  # --no: what to keep out of the pictures


def _error(sentence: str) -> CommandError:
    return CommandError(f"{sentence}\n{USAGE}")


def _number(option: str, flag: str, text: str) -> int | float:
    cleaned = text.strip().rstrip(",;")
    try:
        if option in _INTEGER:
            if cleaned.isdigit():
                return int(cleaned)  # exactly: seeds go to 2^63 - 1, past what a float holds
            value = float(cleaned)
            if not value.is_integer():
                raise ValueError(cleaned)
            return int(value)
        return float(cleaned)
    except ValueError:
        kind = "a whole number" if option in _INTEGER else "a number"
        raise _error(f'{flag} needs {kind}, not "{text}".') from None


def parse_imagine(text: str) -> ImagineCommand:
    """Split `/imagine` text into the prompt and its options; CommandError says what to fix.

    Flags may come anywhere, as `--count 4` or `--count=4`, with one or two dashes or the dashes chat
    clients turn `--` into; words that are not flags are the prompt. `--no` (Midjourney's negative prompt)
    takes all the words up to the next flag.
    """
    words = text.split()
    prompt: list[str] = []
    values: dict[str, int | float | str] = {}
    i = 0
    while i < len(words):
        word = words[i]
        flagged = _flag(word)
        if flagged is None:
            prompt.append(word)  # a word such as "-ish" or an em-dashed aside is not a flag either
            i += 1
            continue
        name, option, inline = flagged
        flag = f"--{name}"
        if option is None:
            raise _error(f"{flag} is not an option.")
        if option in values:
            raise _error(f"{flag} is given twice; keep one.")
        if option == "negative":
            taken = [inline] if inline else []
            i += 1
            while i < len(words) and _flag(words[i]) is None:
                taken.append(words[i])
                i += 1
            values[option] = " ".join(taken).rstrip(",;")
            if not values[option]:
                raise _error(f"{flag} needs a value.")
            continue
        if inline:
            raw = inline
            i += 1
        elif i + 1 < len(words):
            raw = words[i + 1]
            i += 2
        else:
            raise _error(f"{flag} needs a value.")
        values[option] = _number(option, flag, raw)
    if not prompt:
        raise _error("Say what to draw.")
    return ImagineCommand(
        " ".join(prompt),
        count=int(values["count"]) if "count" in values else None,
        cfg=float(values["cfg"]) if "cfg" in values else None,
        temperature=float(values["temperature"]) if "temperature" in values else None,
        seed=int(values["seed"]) if "seed" in values else None,
        negative=str(values["negative"]) if "negative" in values else None,
    )


def _flag(word: str) -> tuple[str, str | None, str] | None:
    """A word that is a flag: its name, the option it sets (None: not an option) and any `=value`; None for a
    word of the prompt."""
    dash = _DASHES.match(word)
    if dash is None:
        return None
    name, _, inline = word[dash.end() :].partition("=")
    option = _FLAGS.get(name.lower())
    if option is None and dash.group() != "--":
        return None
    return name, option, inline


def setting_value(text: str) -> Any:
    """An admin's setting value as typed: "default" (or nothing) removes the override; true/false, a number,
    or the text itself."""
    lowered = text.strip().lower()
    if lowered in ("default", "none", ""):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()
