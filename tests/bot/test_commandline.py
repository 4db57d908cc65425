"""The shared /imagine command line: flags anywhere, lenient spellings, a usage line on every error."""

from __future__ import annotations

import pytest

from bot.commandline import USAGE, CommandError, ImagineCommand, parse_imagine


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a lighthouse at dusk", ImagineCommand("a lighthouse at dusk")),
        ("  a cat  ", ImagineCommand("a cat")),
        (
            "a cat --count 2 --cfg 7.5 --temperature 0.8 --seed 42",
            ImagineCommand("a cat", count=2, cfg=7.5, temperature=0.8, seed=42),
        ),
        ("--seed=7 a cat --count=1", ImagineCommand("a cat", count=1, seed=7)),
        ("a cat \u2014count 2 \u2013seed 3", ImagineCommand("a cat", count=2, seed=3)),  # what Slack makes of "--"
        ("a cat -n 2 --temp 0 --CFG 3", ImagineCommand("a cat", count=2, cfg=3.0, temperature=0.0)),
        ("a cat --count 4.0", ImagineCommand("a cat", count=4)),
        ("a blue-ish -ish cat \u2014 at night", ImagineCommand("a blue-ish -ish cat \u2014 at night")),
    ],
)
def test_parses(text: str, expected: ImagineCommand) -> None:
    assert parse_imagine(text) == expected


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ("", "Say what to draw."),
        ("--count 2", "Say what to draw."),
        ("a cat --count", "--count needs a value."),
        ("a cat --count two", '--count needs a whole number, not "two".'),
        ("a cat --count 2.5", '--count needs a whole number, not "2.5".'),
        ("a cat --cfg high", '--cfg needs a number, not "high".'),
        ("a cat --steps 20", "--steps is not an option."),
        ("a cat --seed 1 --seed 2", "--seed is given twice; keep one."),
    ],
)
def test_errors_say_what_to_fix_then_the_usage(text: str, sentence: str) -> None:
    with pytest.raises(CommandError) as caught:
        parse_imagine(text)
    assert str(caught.value) == f"{sentence}\n{USAGE}"
