"""The forges we take webhooks from: how to recognise, verify and parse each one.

`FORGES` maps a forge name to a `Forge`: its event header, the header carrying its
signature or token and how to check it, and its pure `parse(headers, body)`.
`detect(headers)` picks the forge from the headers, asking Forgejo, then Gitea, then
GitHub (both Gitea and Forgejo also send GitHub's headers), then GitLab, then
Bitbucket. Secrets live in `worker.config.Settings`; checking them is
`webhook.signatures`'s job; acting on a `TagPush` is `webhook.intake`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from webhook.forges import bitbucket, gitea, github, gitlab
from webhook.forges.payload import HeaderMap, Ignored, MalformedPayload, Parsed, TagPush

__all__ = ["FORGES", "Forge", "Ignored", "MalformedPayload", "Parsed", "Scheme", "TagPush",
           "detect"]


class Scheme(Enum):
    """How a forge proves a delivery is its own."""

    PREFIXED_HMAC = "prefixed_hmac"  # "sha256=<hex HMAC-SHA256(secret, raw body)>"
    HEX_HMAC = "hex_hmac"            # "<hex HMAC-SHA256(secret, raw body)>"
    PLAIN = "plain"                  # the shared secret itself, sent as is


@dataclass(frozen=True)
class Forge:
    """One forge's wire facts (see docs/protocols.md)."""

    name: str
    event_header: str
    delivery_headers: tuple[str, ...]
    signature_header: str
    scheme: Scheme
    secret_setting: str  # the Settings attribute holding its secrets
    parse: Callable[[HeaderMap, object], Parsed]


FORGES: dict[str, Forge] = {forge.name: forge for forge in (
    Forge(gitea.FORGEJO, gitea.FORGEJO_EVENT_HEADER, gitea.FORGEJO_DELIVERY_HEADERS,
          "X-Forgejo-Signature", Scheme.HEX_HMAC, "gitea_secrets", gitea.parse_forgejo),
    Forge(gitea.GITEA, gitea.GITEA_EVENT_HEADER, gitea.GITEA_DELIVERY_HEADERS,
          "X-Gitea-Signature", Scheme.HEX_HMAC, "gitea_secrets", gitea.parse_gitea),
    Forge(github.NAME, github.EVENT_HEADER, github.DELIVERY_HEADERS,
          "X-Hub-Signature-256", Scheme.PREFIXED_HMAC, "github_secrets", github.parse),
    Forge(gitlab.NAME, gitlab.EVENT_HEADER, gitlab.DELIVERY_HEADERS,
          "X-Gitlab-Token", Scheme.PLAIN, "gitlab_tokens", gitlab.parse),
    Forge(bitbucket.NAME, bitbucket.EVENT_HEADER, bitbucket.DELIVERY_HEADERS,
          "X-Hub-Signature", Scheme.PREFIXED_HMAC, "bitbucket_secrets", bitbucket.parse),
)}


def detect(headers: HeaderMap) -> Forge | None:
    """The forge that sent a request, from its event headers (in `FORGES` order)."""
    for forge in FORGES.values():
        if headers.get(forge.event_header):
            return forge
    return None
