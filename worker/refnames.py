"""Which names Git allows for a tag: the rules of `git check-ref-format`.

Owns `why_not_a_tag(name)`. A forge reports the tag a push created, but its payload is
text anyone holding the secret can write, and a tag pattern is a regular expression
(`^v.*-green$` also matches `v2.0-green\n`: `$` matches before a final newline). A
name Git would refuse was never pushed, so it is no release: the intake ignores it,
and `worker.colors` reads no colour from it. Whether a valid tag is ours is left to the
app's patterns.
"""

from __future__ import annotations

import re

# Anywhere in a ref name: control characters, space, ~ ^ : ? * [ \, "..", "@{", "//".
FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")


def why_not_a_tag(name: str) -> str | None:
    """Why Git would not allow `refs/tags/<name>`, for a person to read; None if it would."""
    if not name:
        return "it is empty"
    forbidden = FORBIDDEN.search(name)
    if forbidden is not None:
        return f"it contains {forbidden.group()!r}"
    if name.startswith("/") or name.endswith("/"):
        return "it begins or ends with '/'"
    if name.endswith("."):
        return "it ends with '.'"
    for part in name.split("/"):
        if part.startswith("."):
            return f"its part {part!r} begins with '.'"
        if part.endswith(".lock"):
            return f"its part {part!r} ends with '.lock'"
    return None


def is_tag_name(name: str) -> bool:
    """Whether Git allows `name` as a tag's name."""
    return why_not_a_tag(name) is None
