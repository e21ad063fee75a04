"""GitHub webhook payloads: which deliveries are tag creations, and their commit.

Pure: `parse(headers, body)` reads the `X-GitHub-Event` header and the decoded JSON
body and returns the tags created or why the delivery is ignored. Signature checks
happen before this (see `webhook.signatures`); matching apps happens after it.
Gitea and Forgejo send GitHub-shaped push bodies, so `webhook.forges.gitea` reuses
`parse_push` and `parse_create` with its own headers.
"""

from __future__ import annotations

from collections.abc import Mapping

from webhook.forges.payload import (
    HeaderMap,
    Ignored,
    MalformedPayload,
    Parsed,
    TagPush,
    as_object,
    first_string,
    flag,
    header,
    is_zero_sha,
    optional_object,
    optional_string,
    string,
)

NAME = "github"
EVENT_HEADER = "X-GitHub-Event"
DELIVERY_HEADERS = ("X-GitHub-Delivery",)
TAG_PREFIX = "refs/tags/"
BRANCH_PREFIX = "refs/heads/"


def parse(headers: HeaderMap, body: object) -> Parsed:
    """The tags a GitHub delivery created, or why it is ignored."""
    event = header(headers, EVENT_HEADER) or ""
    delivery = header(headers, *DELIVERY_HEADERS) or ""
    if event == "ping":
        return Ignored("ping: the webhook is reachable and its signature checks out")
    if event == "push":
        return parse_push(NAME, delivery, body)
    if event == "create":
        return parse_create(body)
    return Ignored(f"event {event!r} is not a tag push")


def parse_push(forge: str, delivery: str, body: object) -> Parsed:
    """A GitHub-shaped `push` body: created tags only; branches and deletions are ignored."""
    payload = as_object(body, "body")
    ref = string(payload, "ref", "body")
    if not ref.startswith(TAG_PREFIX):
        kind = "branch push" if ref.startswith(BRANCH_PREFIX) else "push"
        return Ignored(f"{kind} to {ref}, not a tag")
    tag = ref.removeprefix(TAG_PREFIX)
    if not tag:
        raise MalformedPayload("body.ref names no tag")
    after = optional_string(payload, "after", "body")
    if flag(payload, "deleted", "body") or (after is not None and is_zero_sha(after)):
        return Ignored(f"tag {tag} was deleted")
    return (TagPush(
        forge=forge,
        repository=repository_name(payload),
        tag=tag,
        commit=commit_of(payload, after),
        delivery_id=delivery,
        pusher=pusher_of(payload),
    ),)


def parse_create(body: object) -> Ignored:
    """A `create` event never starts a release: the tag's `push` delivery does.

    GitHub sends both for one new tag, and `create` carries no commit, so acting on
    it would either duplicate the push's release or record one without a commit.
    """
    payload = as_object(body, "body")
    ref_type = optional_string(payload, "ref_type", "body") or "ref"
    ref = optional_string(payload, "ref", "body") or "?"
    return Ignored(f"create event for {ref_type} {ref}: the push event for it is the release")


def commit_of(payload: Mapping[str, object], after: str | None) -> str:
    """The commit a tag points at: `head_commit.id` (annotated tags), else `after`."""
    head = optional_object(payload, "head_commit", "body")
    commit = optional_string(head, "id", "body.head_commit") if head else None
    commit = commit or after
    if not commit:
        raise MalformedPayload("body has neither head_commit.id nor after")
    return commit


def repository_name(payload: Mapping[str, object]) -> str:
    """`repository.full_name`, e.g. `acme/myapp`."""
    repository = as_object(payload.get("repository"), "body.repository")
    return string(repository, "full_name", "body.repository")


def pusher_of(payload: Mapping[str, object]) -> str:
    """Who pushed, for the audit trail: pusher name, else sender login, else `unknown`."""
    pusher = optional_object(payload, "pusher", "body")
    sender = optional_object(payload, "sender", "body")
    return (first_string(pusher, ("name", "username", "login"))
            or first_string(sender, ("login", "username"))
            or "unknown")
