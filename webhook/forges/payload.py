"""What a forge parser returns, and typed access to an untrusted JSON payload.

Owns the value types every forge module shares (`TagPush`, `Ignored`), the one error
a malformed payload raises (`MalformedPayload`), and small readers that turn a
missing key or a wrong type into that error instead of a `KeyError` or `TypeError`.
Deciding which app or colour a tag means is left to the engine's configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

ZERO_SHA = "0" * 40


class MalformedPayload(ValueError):
    """A forge event we handle arrived with a body we cannot read."""


@dataclass(frozen=True)
class TagPush:
    """One tag that a forge says was created, pointing at one commit."""

    forge: str
    repository: str
    tag: str
    commit: str
    delivery_id: str
    pusher: str

    def __post_init__(self) -> None:
        # JSON can escape a lone surrogate ("\udc80"), which the stdlib decoder reads
        # and no forge sends. It is not text: the release record, its log line and its
        # chat message could not hold it, so the push is refused as malformed here.
        if not (self.repository + self.tag + self.commit + self.delivery_id
                + self.pusher).isascii():
            for name in ("repository", "tag", "commit", "delivery_id", "pusher"):
                try:
                    getattr(self, name).encode()
                except UnicodeEncodeError:
                    raise MalformedPayload(f"the push's {name.replace('_', ' ')} is not "
                                           "UTF-8 text (it holds a lone surrogate)") from None


@dataclass(frozen=True)
class Ignored:
    """A valid event that is not a tag creation (ping, branch push, deleted tag, ...)."""

    reason: str


Parsed = tuple[TagPush, ...] | Ignored


class HeaderMap(Protocol):
    """Request headers with case-insensitive lookup (e.g. Werkzeug's `Headers`)."""

    def get(self, key: str) -> str | None: ...


def as_object(value: object, where: str) -> Mapping[str, object]:
    """`value` as a JSON object, or MalformedPayload naming `where`."""
    if type(value) is dict:  # what JSON decodes to; the ABC check costs six times as much
        return value
    if not isinstance(value, Mapping):
        raise MalformedPayload(f"{where} must be a JSON object")
    return value


def member(body: Mapping[str, object], key: str, where: str) -> object:
    """`body[key]`, or MalformedPayload when the key is missing."""
    if key not in body:
        raise MalformedPayload(f"{where} has no {key!r}")
    return body[key]


def string(body: Mapping[str, object], key: str, where: str) -> str:
    """A required, non-empty string member."""
    value = member(body, key, where)
    if not isinstance(value, str) or not value:
        raise MalformedPayload(f"{where}.{key} must be a non-empty string")
    return value


def optional_string(body: Mapping[str, object], key: str, where: str) -> str | None:
    """A string member that may be missing or null (an empty string counts as missing)."""
    value = body.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MalformedPayload(f"{where}.{key} must be a string or null")
    return value


def optional_object(body: Mapping[str, object], key: str,
                    where: str) -> Mapping[str, object] | None:
    """An object member that may be missing or null."""
    value = body.get(key)
    if value is None:
        return None
    return as_object(value, f"{where}.{key}")


def flag(body: Mapping[str, object], key: str, where: str) -> bool:
    """A boolean member; missing or null reads as false."""
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise MalformedPayload(f"{where}.{key} must be a boolean")
    return value


def first_string(body: Mapping[str, object] | None, keys: tuple[str, ...]) -> str | None:
    """The first of `keys` whose value is a non-empty string, for optional display fields."""
    if body is None:
        return None
    for key in keys:
        value = body.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def is_zero_sha(sha: str) -> bool:
    """True for the all-zero sha forges send for a deleted ref."""
    return sha != "" and not sha.strip("0")


def header(headers: HeaderMap, *names: str) -> str | None:
    """The first present, non-empty header among `names` (lookups are case-insensitive)."""
    for name in names:
        value = headers.get(name)
        if value:
            return value
    return None
