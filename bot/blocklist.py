"""The prompt blocklist: whole words, and regular expressions matched in time linear in the prompt (RE2).

An admin's pattern such as `(a+)+$` takes Python's backtracking `re` hours on a 40-character prompt, and
matching runs on the event loop every bot shares; RE2 never backtracks. What RE2 cannot do (backreferences,
lookaround) is refused with a sentence when the pattern is added. Words are literals between word edges,
which Python's `re` matches in linear time too, and with Unicode word characters.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

import re2  # type: ignore[import-untyped]

_OPTIONS = re2.Options()
_OPTIONS.case_sensitive = False
_OPTIONS.log_errors = False  # a refused pattern is one sentence to its admin, not a line on stderr


class PatternError(ValueError):
    """A blocklist pattern that cannot be used; the message says why."""


def compile_pattern(pattern: str) -> re2._Regexp:
    """A case-insensitive RE2 pattern, or PatternError: not a regular expression RE2 takes, or one that
    matches an empty text (it would block every prompt)."""
    try:
        compiled = re2.compile(pattern, _OPTIONS)
    except re2.error as error:
        why = error.args[0].decode(errors="replace") if error.args and isinstance(error.args[0], bytes) else error
        raise PatternError(f"{pattern!r} is not a regular expression the blocklist can use ({why}; patterns are "
                           f"RE2: no backreferences or lookaround)") from None
    if compiled.search("") is not None:
        raise PatternError(f"{pattern!r} matches an empty text, so it would block every prompt")
    return compiled


def pattern_problem(pattern: str) -> str | None:
    """Why a blocklist pattern cannot be used, or None."""
    try:
        compile_pattern(pattern)
    except PatternError as error:
        return str(error)
    return None


class Blocklist:
    """Words (whole words) and regular expressions, matched case-insensitively."""

    def __init__(self, words: Iterable[str] = (), patterns: Iterable[str] = ()) -> None:
        self._words = [
            re.compile(rf"(?<!\w){re.escape(word.strip())}(?!\w)", re.IGNORECASE) for word in words if word.strip()
        ]
        self._patterns = [compile_pattern(pattern) for pattern in patterns]

    def match(self, prompt: str) -> str | None:
        """The first blocked text found in the prompt, if any."""
        for check in [*self._words, *self._patterns]:
            found = check.search(prompt)
            if found:
                return str(found.group(0))
        return None


@functools.lru_cache(maxsize=256)
def blocklist(words: tuple[str, ...], patterns: tuple[str, ...]) -> Blocklist:
    """The compiled blocklist of these entries, compiled once while servers keep them."""
    return Blocklist(words, patterns)
