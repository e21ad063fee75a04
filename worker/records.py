"""A release and its audit entries as values: `Release`, `AuditEntry`, release ids.

What a release record and an audit entry hold, and how each is written to and read
from Redis (a hash; a JSON list item), with the shape of release ids. Where they live
in Redis and how they change is `worker.releases`, which re-exports all of this.
"""

from __future__ import annotations

import operator
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, NewType, TypeGuard

import orjson

from worker.colors import Color
from worker.machine import ReleaseState
from worker.redistext import as_text

__all__ = ["AUDIT_FIELDS", "NEW_RECORD_FIELDS", "RELEASE_FIELDS", "AuditEntry", "Release",
           "ReleaseId", "ReleaseNotFound", "Route", "is_release_id", "new_release_id"]

ReleaseId = NewType("ReleaseId", str)
Route = dict[str, Any]

MAX_ID_LENGTH = 63
NOT_IN_IDS = re.compile(r"[^a-z0-9]+")
# What `new_release_id` makes (an app name is a DNS label): the shape any id must have.
RELEASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}")  # 62: MAX_ID_LENGTH - 1


class ReleaseNotFound(LookupError):
    """No release has this id."""


def new_release_id(app: str, tag: str) -> ReleaseId:
    """`myapp-v2-0-green-1a2b3c4d`: letters, digits and '-' only, as rq job ids need.

    At most 63 characters, so it is also a valid Kubernetes label value (`release:`).
    """
    room = max(1, MAX_ID_LENGTH - len(app) - 10)
    slug = NOT_IN_IDS.sub("-", tag.lower()).strip("-")[:room].strip("-") or "tag"
    return ReleaseId(f"{app}-{slug}-{secrets.token_hex(4)}")


def is_release_id(value: object) -> TypeGuard[str]:
    """Whether `value` has the shape of a release id (letters, digits, '-'; at most 63).

    Ids from requests become Redis keys: `<id>:audit` would name a release's audit
    list, so anything else is no release at all, refused before Redis is asked.
    """
    return isinstance(value, str) and RELEASE_ID.fullmatch(value) is not None


@dataclass(frozen=True)
class AuditEntry:
    """One line of a release's history: who did what, and the route before and after."""

    at: float
    actor: str
    step: str
    state_from: str | None
    state_to: str | None
    route_before: Route | None
    route_after: Route | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return dict(zip(AUDIT_FIELDS, _audit_values(self), strict=True))

    def encoded(self) -> bytes:
        """The entry as its release's audit list holds it: JSON, written by orjson (a
        fifth of `json.dumps`' time, which a new release's first entry paid at intake;
        `json.loads` reads both)."""
        return orjson.dumps(self.to_json(), option=orjson.OPT_NON_STR_KEYS)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AuditEntry:
        def route(name: str) -> Route | None:
            value = data.get(name)
            return value if isinstance(value, dict) else None
        return cls(at=float(data["at"]), actor=str(data.get("actor", "")),
                   step=str(data.get("step", "")), state_from=data.get("state_from"),
                   state_to=data.get("state_to"), route_before=route("route_before"),
                   route_after=route("route_after"), message=str(data.get("message", "")))


@dataclass(frozen=True)
class Release:
    """A release of one tag of one app into one colour."""

    id: str
    app: str
    color: Color
    tag: str
    version: str
    commit: str
    forge: str
    delivery_id: str
    repository: str
    state: ReleaseState
    created_at: float
    updated_at: float
    step: str | None = None
    error: str | None = None
    actor: str = ""

    def to_json(self) -> dict[str, Any]:
        data = dict(zip(RELEASE_FIELDS, _release_values(self), strict=True))
        data["color"], data["state"] = self.color.value, self.state.value
        return data

    def to_hash(self) -> dict[Any, Any]:
        """The record as its Redis hash holds it: times as text, unset fields left out."""
        data = self.to_json()
        data["created_at"], data["updated_at"] = str(self.created_at), str(self.updated_at)
        return {k: v for k, v in data.items() if v is not None}

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> Release:
        data = {as_text(k): as_text(v) for k, v in raw.items()}
        known = set(RELEASE_FIELDS)
        values: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        values.update(color=Color(data["color"]), state=ReleaseState(data["state"]),
                      created_at=float(data["created_at"]), updated_at=float(data["updated_at"]))
        return cls(**values)


# Field names and getters, made once: `dataclasses.fields` and a `getattr` per field are
# slow for the intake's per-request path.
AUDIT_FIELDS = tuple(f.name for f in fields(AuditEntry))
RELEASE_FIELDS = tuple(f.name for f in fields(Release))
# The fields a new release's record holds (`to_hash` leaves out what is not set yet).
NEW_RECORD_FIELDS = tuple(f for f in RELEASE_FIELDS if f not in ("step", "error"))
_audit_values = operator.attrgetter(*AUDIT_FIELDS)
_release_values = operator.attrgetter(*RELEASE_FIELDS)
