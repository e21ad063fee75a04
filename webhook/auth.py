"""Bearer-token authentication for the operator API, and who to record as the actor.

`require_operator(settings, authorization)` checks an `Authorization: Bearer <token>`
header against every configured API token in constant time and returns the actor
to record, `api:<fingerprint>`: a short hash that tells tokens apart in the audit
trail without revealing them. Which routes need it is `webhook.operator_api`'s call.
"""

from __future__ import annotations

import hashlib

from webhook.errors import Unauthorized
from webhook.signatures import header_bytes, matching_token
from worker.config import Settings

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="bluegreen"'}


def fingerprint(token: str) -> str:
    """A stable, non-reversible label for a token (8 hex digits of its SHA-256)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def bearer_token(authorization: str | None) -> bytes | None:
    """The token in an `Authorization: Bearer <token>` header as the bytes the client
    sent (`signatures.header_bytes`: what `matching_token` compares), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return header_bytes(token.strip()) or None


def require_operator(settings: Settings, authorization: str | None) -> str:
    """The actor (`api:<fingerprint>`) for a valid bearer token, else raise 401."""
    if not settings.api_tokens:
        raise Unauthorized("the operator API is disabled: no BLUEGREEN_API_TOKEN is configured",
                           headers=CHALLENGE)
    token = matching_token(bearer_token(authorization), settings.api_tokens)
    if token is None:
        raise Unauthorized("send a valid token as 'Authorization: Bearer <token>'",
                           headers=CHALLENGE)
    return f"api:{fingerprint(token)}"
