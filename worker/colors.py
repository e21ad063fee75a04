"""The two colours of a blue-green pair, and how a Git tag names one of them.

Owns `Color` and the pure tag rules: which colour a tag asks for (given the
app's two patterns) and the version a tag carries. Which patterns an app uses
is configuration (`worker.config`); this module only applies them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum


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
    matches = [color for color, pattern in patterns.items() if pattern.search(tag)]
    return matches[0] if len(matches) == 1 else None


_SUFFIX_SEPARATORS = "-_./"


def version_for_tag(patterns: Mapping[Color, re.Pattern[str]], tag: str) -> str:
    """The version a tag carries: the tag minus its colour suffix (`v2.0-green` → `v2.0`).

    A pattern may say exactly where the version is with a named group
    `(?P<version>...)`; otherwise a trailing `-blue`/`-green` (or `_`, `.`, `/`
    separated) is removed. A tag without such a suffix is its own version.
    """
    color = color_for_tag(patterns, tag)
    if color is not None:
        match = patterns[color].search(tag)
        if match is not None and "version" in match.re.groupindex and match.group("version"):
            return match.group("version")
    for candidate in Color:
        suffix = candidate.value
        if tag.lower().endswith(suffix) and len(tag) > len(suffix):
            head = tag[: -len(suffix)]
            if head[-1] in _SUFFIX_SEPARATORS and len(head) > 1:
                return head[:-1]
    return tag
