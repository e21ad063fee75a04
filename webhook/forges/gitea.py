"""Gitea and Forgejo webhook payloads (GitHub-shaped bodies, their own headers).

Pure: `parse_gitea` / `parse_forgejo` read the forge's event and delivery headers and
hand the body to the GitHub-shaped readers in `webhook.forges.github`. Forgejo also
sends the `X-Gitea-*` headers, and both send `X-GitHub-*` ones, which is why forge
detection (`webhook.forges.detect`) asks about Forgejo first, then Gitea, then GitHub.
"""

from __future__ import annotations

from webhook.forges import github
from webhook.forges.payload import HeaderMap, Ignored, Parsed, header

GITEA = "gitea"
FORGEJO = "forgejo"
GITEA_EVENT_HEADER = "X-Gitea-Event"
FORGEJO_EVENT_HEADER = "X-Forgejo-Event"
GITEA_DELIVERY_HEADERS = ("X-Gitea-Delivery",)
FORGEJO_DELIVERY_HEADERS = ("X-Forgejo-Delivery", "X-Gitea-Delivery")


def parse_gitea(headers: HeaderMap, body: object) -> Parsed:
    """The tags a Gitea delivery created, or why it is ignored."""
    return _parse(GITEA, header(headers, GITEA_EVENT_HEADER),
                  header(headers, *GITEA_DELIVERY_HEADERS), body)


def parse_forgejo(headers: HeaderMap, body: object) -> Parsed:
    """The tags a Forgejo delivery created, or why it is ignored."""
    return _parse(FORGEJO, header(headers, FORGEJO_EVENT_HEADER, GITEA_EVENT_HEADER),
                  header(headers, *FORGEJO_DELIVERY_HEADERS), body)


def _parse(forge: str, event: str | None, delivery: str | None, body: object) -> Parsed:
    if event == "push":
        return github.parse_push(forge, delivery or "", body)
    if event == "create":
        return github.parse_create(body)
    return Ignored(f"event {event or ''!r} is not a tag push")
