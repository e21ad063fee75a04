"""Redis's replies as text, whichever way the client was made.

The worker's clients read bytes (rq needs them), some callers hand in clients made with
`decode_responses=True`, and tests use both: a key, a field or a value read back is
`as_text` before it is compared or shown.
"""

from __future__ import annotations


def as_text(value: bytes | str) -> str:
    """`value` as str: bytes decoded as UTF-8, a str as it is."""
    return value.decode() if isinstance(value, bytes) else value
