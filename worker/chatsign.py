"""Signed button contexts for Mattermost, which (unlike Slack) does not sign its requests.

A Mattermost interactive button posts its `context` back to our integration URL as
it was written into the message. So that only buttons we made can act, the context
carries `sig`: a hex HMAC-SHA256, keyed with our secret (`MATTERMOST_TOKEN`, the
settings' `mattermost_secret`), over the app, action, release, colour and channel the
button was made for. `verify()` compares in constant time and refuses a context whose
fields were changed, added to the signature's coverage or dropped. The web side
(`webhook.chatops.mattermost`) decides what to answer; posting messages is not here.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

SIGNED_FIELDS = ("app", "action", "release", "color", "channel")
DOMAIN = "bluegreen-mattermost-button-v1"   # a signature here means nothing elsewhere


def signature(secret: str, fields: Mapping[str, Any]) -> str:
    """The hex HMAC of the signed fields (absent ones count as empty)."""
    parts = [DOMAIN, *(_field(fields.get(name)) for name in SIGNED_FIELDS)]
    message = "\n".join(parts).encode("utf-8", "surrogatepass")
    return hmac.new(secret.encode("utf-8", "surrogatepass"), message, hashlib.sha256).hexdigest()


def sign(secret: str, *, app: str, action: str, release: str, color: str | None = None,
         channel: str | None = None) -> dict[str, str]:
    """A button context for Mattermost: the fields and their `sig`."""
    context = {"app": app, "action": action, "release": release}
    if color:
        context["color"] = color
    if channel:
        context["channel"] = channel
    context["sig"] = signature(secret, context)
    return context


def verify(secret: str | None, context: object) -> bool:
    """True when `context` is exactly what `sign(secret, ...)` made (constant-time compare)."""
    if not secret or not isinstance(context, Mapping):
        return False
    given = context.get("sig")
    if not isinstance(given, str) or not all(
            isinstance(context.get(name), str | None) for name in SIGNED_FIELDS):
        return False
    expected = signature(secret, context)
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def _field(value: Any) -> str:
    """One field as signed: newlines cannot shift a value into the next field."""
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("\n", "\\n")
