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
        # --no as Midjourney spells it: the words up to the next flag, wherever it comes.
        ("a garden --no plants, people", ImagineCommand("a garden", negative="plants, people")),
        ("a garden --no plants, people --count 2", ImagineCommand("a garden", count=2, negative="plants, people")),
        ("--no=blurry, text \u2014seed 3 a cat", ImagineCommand("a cat", seed=3, negative="blurry, text")),
        ("a cat \u2014no dogs \u2014 wolves, --cfg 3", ImagineCommand("a cat", cfg=3.0, negative="dogs \u2014 wolves")),
        ("a cat --negative -ish blur", ImagineCommand("a cat", negative="-ish blur")),
        ("a cat --seed 9223372036854775807", ImagineCommand("a cat", seed=2**63 - 1)),  # exact, past a float's 2^53
        ("a cat --seed 1e3", ImagineCommand("a cat", seed=1000)),
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
        ("a cat --no", "--no needs a value."),
        ("a cat --no --count 2", "--no needs a value."),
        ("a cat --no dogs --no cats", "--no is given twice; keep one."),
        ("a cat --no dogs --steps 20", "--steps is not an option."),
        ("--no dogs, cats", "Say what to draw."),
    ],
)
def test_errors_say_what_to_fix_then_the_usage(text: str, sentence: str) -> None:
    with pytest.raises(CommandError) as caught:
        parse_imagine(text)
    assert str(caught.value) == f"{sentence}\n{USAGE}"
