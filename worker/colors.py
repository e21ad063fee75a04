"""The two colours of a blue-green pair, and how a Git tag names one of them.

Owns `Color` and the pure tag rules: which colour a tag asks for (given the
app's two patterns) and the version a tag carries. Which patterns an app uses
is configuration (`worker.config`); this module only applies them, and only to
names Git allows for a tag (`worker.refnames`): any other names no colour.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum

from worker.refnames import is_tag_name


class Color(StrEnum):
    """A deployment colour; the value is what labels, subsets and Redis hold."""

    BLUE = "blue"
    GREEN = "green"

    def other(self) -> Color:
        """The opposite colour: blue for green, green for blue."""
        return Color.GREEN if self is Color.BLUE else Color.BLUE

    @classmethod
    def parse(cls, value: str) -> Color:
        """`Color("blue")` with a message a person can act on when it is neither."""
        try:
            return cls(value.strip().lower())
        except ValueError:
            raise ValueError(f"not a colour: {value!r} (expected blue or green)") from None


def color_for_tag(patterns: Mapping[Color, re.Pattern[str]], tag: str) -> Color | None:
    """The colour whose pattern matches `tag`; None when neither or both match.

    A tag that matches both patterns is ambiguous, and deploying into a guessed
    colour could hit the live one, so it is treated like a tag that is not ours.
    """
    found = _match(patterns, tag)
    return found[0] if found is not None else None


_SUFFIX_SEPARATORS = "-_./"
_SUFFIXES = tuple(color.value for color in Color)  # read once: enum lookups are slow


def version_for_tag(patterns: Mapping[Color, re.Pattern[str]], tag: str) -> str:
    """The version a tag carries: the tag minus its colour suffix (`v2.0-green` → `v2.0`).

    A pattern may say exactly where the version is with a named group
    `(?P<version>...)`; otherwise a trailing `-blue`/`-green` (or `_`, `.`, `/`
    separated) is removed. A tag without such a suffix is its own version.
    """
    found = _match(patterns, tag)
    return _version(tag, None if found is None else found[1])


def read_tag(patterns: Mapping[Color, re.Pattern[str]], tag: str) -> tuple[Color, str] | None:
    """`tag`'s colour and version, from one search of the patterns (the intake wants
    both for every push); None when it names no single colour."""
    found = _match(patterns, tag)
    return None if found is None else (found[0], _version(tag, found[1]))


def _match(patterns: Mapping[Color, re.Pattern[str]],
           tag: str) -> tuple[Color, re.Match[str]] | None:
    """The one colour whose pattern matches `tag`, with the match."""
    if not is_tag_name(tag):  # `$` in a pattern matches before a final newline
        return None
    matches = [(color, match) for color, pattern in patterns.items()
               if (match := pattern.search(tag)) is not None]
    return matches[0] if len(matches) == 1 else None


def _version(tag: str, match: re.Match[str] | None) -> str:
    """`version_for_tag`, given the colour's match (None: the tag names no single colour)."""
    if match is not None and "version" in match.re.groupindex and match.group("version"):
        return match.group("version")
    lowered = tag.lower()
    for suffix in _SUFFIXES:
        if lowered.endswith(suffix) and len(tag) > len(suffix):
            head = tag[: -len(suffix)]
            if head[-1] in _SUFFIX_SEPARATORS and len(head) > 1:
                return head[:-1]
    return tag
