"""Constant-time checks that a delivery came from a forge holding one of our secrets.

Owns HMAC-SHA256 signatures over the raw request body (GitHub, Gitea, Forgejo,
Bitbucket) and shared-token comparison (GitLab, the operator API). Several secrets
may be configured at once so they can be rotated: any one may match, and every one
is compared, so timing reveals neither which matched nor how much of a value did.
Which header and which secrets belong to a forge is `webhook.forges`' business.

A token from a header is compared as the bytes the client sent (`header_bytes`): servers
hand header values over as Latin-1 text, so a token with a non-ASCII character arrives
as its bytes read one per character. Those bytes match the configured token's UTF-8
(GitLab, curl, our CLI) or its Latin-1 (a browser's `fetch` and Python's http.client
encode header text so, as the board does); HTTP names no charset for header fields.
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


def header_bytes(value: str | None) -> bytes | None:
    """A header's value as the bytes on the wire: WSGI (PEP 3333) and the asyncio front
    decode them as Latin-1, so encoding back restores them. A value no server decoded
    (a code point past U+00FF, from a test client, say) is taken as text: its UTF-8."""
    if value is None:
        return None
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return _bytes(value)


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


def matching_token(given: str | bytes | None, tokens: Iterable[str]) -> str | None:
    """The configured token equal to `given` (compared in constant time), else None.

    `given` is text (a query parameter), or a header's raw bytes (`header_bytes`), which
    match the token's UTF-8 or Latin-1 form."""
    if not given:
        return None
    found: str | None = None
    for token in tokens:
        if token and _is_token(given, token):
            found = token
    return found


def _is_token(given: str | bytes, token: str) -> bool:
    """Text is compared as text; bytes with every form `token` may take on the wire."""
    if isinstance(given, str):
        return hmac.compare_digest(_bytes(given), _bytes(token))
    matched = False
    for form in _wire_forms(token):
        matched |= hmac.compare_digest(form, given)
    return matched


def _wire_forms(token: str) -> tuple[bytes, ...]:
    """`token` in UTF-8 and, when it has one, in Latin-1 (see the module's docstring)."""
    try:
        return _bytes(token), token.encode("latin-1")
    except UnicodeEncodeError:
        return (_bytes(token),)


def is_valid_token(given: str | bytes | None, tokens: Iterable[str]) -> bool:
    """True when `given` equals any of `tokens` (compared in constant time)."""
    return matching_token(given, tokens) is not None
