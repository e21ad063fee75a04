"""Constant-time checks that a delivery came from a forge holding one of our secrets.

Owns HMAC-SHA256 signatures over the raw request body (GitHub, Gitea, Forgejo,
Bitbucket) and shared-token comparison (GitLab, the operator API). Several secrets
may be configured at once so they can be rotated: any one may match, and every one
is compared, so timing reveals neither which matched nor how much of a value did.
Which header and which secrets belong to a forge is `webhook.forges`' business.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Iterable

SHA256_PREFIX = "sha256="


def _bytes(text: str) -> bytes:
    # Headers arrive as str; any code point must encode, or a crafted header is a 500.
    return text.encode("utf-8", "surrogatepass")


def hmac_sha256_hex(secret: str, body: bytes) -> str:
    """The lowercase hex HMAC-SHA256 of `body` keyed by `secret`."""
    mac = _keyed(secret).copy()
    mac.update(body)
    return mac.hexdigest()


@functools.lru_cache(maxsize=64)
def _keyed(secret: str) -> hmac.HMAC:
    """An HMAC-SHA256 keyed with `secret`, copied for each body: keying one anew costs
    a sixth of checking a 2 KiB delivery (and `hmac.digest` keys anew too)."""
    return hmac.new(_bytes(secret), digestmod=hashlib.sha256)


def is_valid_hex_hmac(body: bytes, signature: str | None, secrets: Iterable[str]) -> bool:
    """True when `signature` is the bare hex HMAC-SHA256 of `body` under any of `secrets`."""
    if not signature:
        return False
    given = _bytes(signature.strip().lower())
    matched = False
    for secret in secrets:
        if not secret:
            continue
        expected = _bytes(hmac_sha256_hex(secret, body))
        matched |= hmac.compare_digest(expected, given)
    return matched


def is_valid_prefixed_hmac(body: bytes, signature: str | None, secrets: Iterable[str],
                           prefix: str = SHA256_PREFIX) -> bool:
    """True when `signature` is `sha256=<hex HMAC-SHA256>` of `body` under any of `secrets`."""
    if not signature or not signature.startswith(prefix):
        return False
    return is_valid_hex_hmac(body, signature.removeprefix(prefix), secrets)


def matching_token(given: str | None, tokens: Iterable[str]) -> str | None:
    """The configured token equal to `given` (compared in constant time), else None."""
    if not given:
        return None
    given_bytes = _bytes(given)
    found: str | None = None
    for token in tokens:
        if token and hmac.compare_digest(_bytes(token), given_bytes):
            found = token
    return found


def is_valid_token(given: str | None, tokens: Iterable[str]) -> bool:
    """True when `given` equals any of `tokens` (compared in constant time)."""
    return matching_token(given, tokens) is not None
