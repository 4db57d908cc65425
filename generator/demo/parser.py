"""Captions of the demo's language read back into what they name: the background, each shape's colour, kind, size
and place. It reads what `scenes.phrase` writes (every training phrasing, and describe's answers); words it does
not know are skipped, as the model learns to skip them.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from generator.demo.scenes import COLOURS, KIND_PLURALS, KIND_WORDS, POSITIONS, SIZE_WORDS, Naming, Scene, Shape

_KINDS = {word.split()[-1]: kind for kind, words in KIND_WORDS.items() for word in words}  # "dot" of "round dot"
_PLURALS = {word: kind for kind, words in KIND_PLURALS.items() for word in words} | {"dots": "circle"}
_GENERIC = {"shape", "thing", "object", "something"}
_GENERIC_PLURALS = {"shapes", "things", "objects"}
_SIZES = {word: size for size, words in SIZE_WORDS.items() for word in words}
_PLACES = sorted({tuple(phrase.split()[2:] if phrase.split()[1] == "the" else phrase.split()[1:]): cell
                  for cell, phrases in POSITIONS.items() for phrase in phrases}.items(),
                 key=lambda item: -len(item[0]))  # ("top", "left", "corner") before ("top",)
_NOUNS = set(_KINDS) | set(_PLURALS) | _GENERIC | _GENERIC_PLURALS
_LINKS = {":", "is", "should", "be", "colour", "color"}  # "background: blue", "the background is blue"


@dataclass(frozen=True)
class Read:
    """One shape as a caption names it; None where it does not say."""

    colour: str | None = None
    kind: str | None = None
    size: str | None = None
    cell: tuple[int, int] | None = None


@dataclass(frozen=True)
class Parsed:
    """A caption's background (None: not named) and shapes (empty: not even how many)."""

    background: str | None
    shapes: tuple[Read, ...]


def words(text: str) -> list[str]:
    """Lower-case words, numbers and punctuation marks of a text."""
    return re.findall(r"[a-z]+|\d+|[,.;:!?]", text.lower().replace("-", " "))


def _place(tokens: list[str], i: int) -> tuple[tuple[int, int], int] | None:
    for phrase, cell in _PLACES:
        if tuple(tokens[i: i + len(phrase)]) == phrase:
            return cell, len(phrase)
    return None


def parse(text: str) -> Parsed:
    """What a caption names."""
    tokens = words(text)
    shapes: list[dict[str, object]] = []
    pending: dict[str, object] = {}
    place: tuple[int, int] | None = None  # named before its shape: "in the top left, a red circle"
    background: str | None = None
    i = 0
    while i < len(tokens):
        word = tokens[i]
        found = _place(tokens, i)
        if found:
            cell, length = found
            if shapes and shapes[-1]["cell"] is None and not pending:
                shapes[-1]["cell"] = cell
            else:
                place = cell
            i += length
            continue
        following = tokens[i + 1] if i + 1 < len(tokens) else None
        if word == "background":
            if "colour" in pending and background is None:
                background = str(pending.pop("colour"))
            else:
                j = i + 1
                while j < len(tokens) and tokens[j] in _LINKS:
                    j += 1
                if j < len(tokens) and tokens[j] in COLOURS and (j + 1 == len(tokens) or tokens[j + 1] not in _NOUNS):
                    background, i = tokens[j], j
        elif word in COLOURS:
            follows_noun = shapes and shapes[-1]["colour"] is None and (
                i >= 2 and tokens[i - 1] == "in" and tokens[i - 2] in _NOUNS or tokens[i - 1] == "something")
            if follows_noun and following not in _NOUNS and following != "background":
                for shape in shapes[-2 if shapes[-1]["twin"] else -1:]:
                    shape["colour"] = word
            elif "colour" in pending and background is None:
                background = str(pending.pop("colour"))  # "on blue, a red circle"
                pending["colour"] = word
            else:
                pending["colour"] = word
        elif word in _SIZES:
            pending["size"] = _SIZES[word]
        elif word in ("two", "2", "pair"):
            pending["count"] = 2
        elif word in _NOUNS:
            kind = _KINDS.get(word) or _PLURALS.get(word)
            count = 2 if word in _PLURALS or word in _GENERIC_PLURALS else 1
            count = int(pending.get("count", count)) if count == 2 else 1
            for n in range(count):
                shapes.append({"colour": pending.get("colour"), "kind": kind, "size": pending.get("size"),
                               "cell": place if count == 1 else None, "twin": n == 1})
            pending, place = {}, None
        elif word in ",.;!?" and "colour" in pending and background is None:
            background = str(pending.pop("colour"))  # "... on blue, ..."
        i += 1
    if "colour" in pending and background is None:
        background = str(pending["colour"])  # "a red circle on blue"
    return Parsed(background, tuple(Read(s["colour"], s["kind"], s["size"], s["cell"])  # type: ignore[arg-type]
                                    for s in shapes))


def agrees(parsed: Parsed, scene: Scene, naming: Naming) -> bool:
    """Whether a parsed caption says what `naming` names of the scene, and nothing else about those attributes."""
    if naming.background and parsed.background != scene.background:
        return False
    if not naming.shapes:
        return True
    if len(parsed.shapes) != len(scene.shapes):
        return False
    fields = {"colour": "colour", "kind": "kind", "size": "size", "position": "cell"}
    for order in itertools.permutations(parsed.shapes):
        if all(getattr(read, fields[a]) == getattr(shape, fields[a])
               for read, shape, named in zip(order, scene.shapes, naming.shapes) for a in named):
            return True
    return False


def as_scene(parsed: Parsed) -> Scene | None:
    """The scene a caption names in full (background, and every shape's colour, kind, size and place), or None."""
    if parsed.background is None or not parsed.shapes:
        return None
    if any(None in (s.colour, s.kind, s.size, s.cell) for s in parsed.shapes):
        return None
    return Scene(parsed.background, tuple(Shape(s.colour, s.kind, s.size, s.cell)  # type: ignore[arg-type]
                                          for s in parsed.shapes))


def named(parsed: Parsed) -> tuple[Scene, Naming]:
    """The scene a caption asks for and what of it it names, for the checker: what it leaves open takes a
    placeholder value the naming never checks."""
    fields = {"colour": "colour", "kind": "kind", "size": "size", "position": "cell"}
    placeholder = Shape(COLOURS[0], "circle", "small", (1, 1))
    shapes = tuple(Shape(s.colour or placeholder.colour, s.kind or placeholder.kind, s.size or placeholder.size,
                         s.cell or placeholder.cell) for s in parsed.shapes)
    naming = tuple(frozenset(a for a, f in fields.items() if getattr(s, f) is not None) for s in parsed.shapes)
    return Scene(parsed.background or COLOURS[0], shapes), Naming(parsed.background is not None, naming)
