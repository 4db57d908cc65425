"""The prompt blocklist: whole words, and RE2 patterns no prompt can make slow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.blocklist import Blocklist, PatternError


def test_blocklist_words_are_whole_and_case_insensitive_patterns_are_regexes() -> None:
    blocklist = Blocklist(words=["gore", "red panda", " "], patterns=[r"\bnud(e|ity)\b"])
    assert blocklist.match("So much Gore!") == "Gore"
    assert blocklist.match("a gorgeous gorey scene") is None
    assert blocklist.match("a RED  panda") is None and blocklist.match("a Red Panda") == "Red Panda"
    assert blocklist.match("NUDITY") == "NUDITY"
    assert blocklist.match("a nudibranch") is None
    assert Blocklist().match("anything") is None
    with pytest.raises(PatternError, match=r"^'\(unclosed' is not a regular expression the blocklist can use "):
        Blocklist(patterns=["(unclosed"])
    with pytest.raises(PatternError, match="^'x\\|' matches an empty text, so it would block every prompt"):
        Blocklist(patterns=["x|"])


def test_a_pattern_that_backtracks_for_hours_in_python_matches_at_once() -> None:
    # With Python's re, this search takes hours; the child process would be killed at the timeout.
    script = "from bot.blocklist import Blocklist; print(Blocklist(patterns=['(a+)+$']).match('a' * 40 + '!'))"
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[2], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0 and done.stdout == "None\n"


@pytest.mark.parametrize(("pattern", "why"), [
    (r"(a)\1", r"invalid escape sequence: \1"),
    (r"(?<=x)y", "invalid perl operator: (?<="),
    (r"(?!x)y", "invalid perl operator: (?!"),
])
def test_what_re2_cannot_do_is_refused_with_a_sentence(pattern: str, why: str) -> None:
    with pytest.raises(PatternError) as refused:
        Blocklist(patterns=[pattern])
    assert str(refused.value) == (f"{pattern!r} is not a regular expression the blocklist can use ({why}; "
                                  f"patterns are RE2: no backreferences or lookaround)")
