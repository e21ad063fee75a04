"""Signature and token checks: GitHub's documented test vector, each scheme, rotation,
and tokens with non-ASCII characters as a server hands their header over (Latin-1 text)."""

from __future__ import annotations

import pytest

from webhook.signatures import (
    header_bytes,
    hmac_sha256_hex,
    is_valid_hex_hmac,
    is_valid_prefixed_hmac,
    is_valid_token,
    matching_token,
)

# docs/protocols.md: GitHub's documented test vector.
VECTOR_SECRET = "It's a Secret to Everybody"
VECTOR_BODY = b"Hello, World!"
VECTOR_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_github_documented_test_vector() -> None:
    assert is_valid_prefixed_hmac(VECTOR_BODY, VECTOR_SIGNATURE, [VECTOR_SECRET])
    assert "sha256=" + hmac_sha256_hex(VECTOR_SECRET, VECTOR_BODY) == VECTOR_SIGNATURE


@pytest.mark.parametrize("signature", [
    None, "", "sha256=", VECTOR_SIGNATURE[:-1], VECTOR_SIGNATURE[:-1] + "0",
    VECTOR_SIGNATURE.removeprefix("sha256="), "sha1=" + VECTOR_SIGNATURE[7:],
    "sha256=\udcff", "sha256=é" * 3,
])
def test_prefixed_hmac_refuses_anything_else(signature: str | None) -> None:
    assert not is_valid_prefixed_hmac(VECTOR_BODY, signature, [VECTOR_SECRET])


def test_prefixed_hmac_is_over_the_exact_raw_body() -> None:
    assert not is_valid_prefixed_hmac(VECTOR_BODY + b"\n", VECTOR_SIGNATURE, [VECTOR_SECRET])


def test_hex_hmac_for_gitea_and_forgejo() -> None:
    digest = VECTOR_SIGNATURE.removeprefix("sha256=")
    assert is_valid_hex_hmac(VECTOR_BODY, digest, [VECTOR_SECRET])
    assert is_valid_hex_hmac(VECTOR_BODY, digest.upper(), [VECTOR_SECRET])
    assert not is_valid_hex_hmac(VECTOR_BODY, VECTOR_SIGNATURE, [VECTOR_SECRET])


def test_rotation_any_configured_secret_may_match() -> None:
    old, new = "old-secret", "new-secret"
    for secret in (old, new):
        signature = "sha256=" + hmac_sha256_hex(secret, b"{}")
        assert is_valid_prefixed_hmac(b"{}", signature, [old, new])
    signature = "sha256=" + hmac_sha256_hex("retired", b"{}")
    assert not is_valid_prefixed_hmac(b"{}", signature, [old, new])


def test_no_secret_configured_refuses_everything() -> None:
    signature = "sha256=" + hmac_sha256_hex("", b"{}")
    assert not is_valid_prefixed_hmac(b"{}", signature, [])
    assert not is_valid_prefixed_hmac(b"{}", signature, [""])
    assert not is_valid_token("", [""])


def test_plain_tokens_for_gitlab_and_the_api() -> None:
    tokens = ("first-token", "second-token")
    assert matching_token("second-token", tokens) == "second-token"
    assert is_valid_token("first-token", tokens)
    for wrong in (None, "", "first-toke", "first-token ", "FIRST-TOKEN", "\udcff", "ü"):
        assert not is_valid_token(wrong, tokens)


def as_served(sent: bytes) -> str:
    """A header value as WSGI servers and the asyncio front hand it over: Latin-1 text."""
    return sent.decode("latin-1")


@pytest.mark.parametrize("token", ["jeton-été", "clé-€-🔑", "ascii-token"])
def test_a_header_token_matches_in_utf8_or_latin1(token: str) -> None:
    tokens = ("other-token", token)
    assert matching_token(header_bytes(as_served(token.encode())), tokens) == token
    if token.isascii() or token == "jeton-été":  # what a browser's fetch sends for it
        assert matching_token(header_bytes(as_served(token.encode("latin-1"))), tokens) == token
    for wrong in ("jeton-ete", "clé-€-🔑 ", "ascii-tokeN"):
        assert matching_token(header_bytes(as_served(wrong.encode())), tokens) is None


def test_text_that_no_server_decoded_is_compared_as_text() -> None:
    assert header_bytes(None) is None
    assert header_bytes("clé-€") == "clé-€".encode()  # past U+00FF: not Latin-1 text
    assert matching_token("clé-€", ["clé-€"]) == "clé-€"  # a query parameter
