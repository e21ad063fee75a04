"""Bitbucket Cloud webhook payloads: the tags one `repo:push` delivery created.

Pure: `parse(headers, body)` walks `push.changes[]`; a change counts when its `new`
side is a tag (`new: null` is a deletion, `type: branch` a branch push). One push may
create several tags; each becomes one `TagPush` sharing the delivery id.
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
    header,
    member,
    optional_object,
    string,
)

NAME = "bitbucket"
EVENT_HEADER = "X-Event-Key"
DELIVERY_HEADERS = ("X-Request-UUID",)


def parse(headers: HeaderMap, body: object) -> Parsed:
    """The tags a Bitbucket delivery created, or why it is ignored."""
    event = header(headers, EVENT_HEADER) or ""
    if event != "repo:push":
        return Ignored(f"event {event!r} is not a tag push")
    payload = as_object(body, "body")
    push = as_object(member(payload, "push", "body"), "body.push")
    changes = member(push, "changes", "body.push")
    if not isinstance(changes, list):
        raise MalformedPayload("body.push.changes must be a list")
    repository = string(as_object(member(payload, "repository", "body"), "body.repository"),
                        "full_name", "body.repository")
    pusher = first_string(optional_object(payload, "actor", "body"),
                          ("nickname", "display_name", "username")) or "unknown"
    delivery = header(headers, *DELIVERY_HEADERS) or ""
    pushes = []
    for index, change in enumerate(changes):
        created = created_tag(as_object(change, f"body.push.changes[{index}]"), index)
        if created is not None:
            tag, commit = created
            pushes.append(TagPush(forge=NAME, repository=repository, tag=tag, commit=commit,
                                  delivery_id=delivery, pusher=pusher))
    if not pushes:
        return Ignored("push created no tag (branch pushes and deleted tags are ignored)")
    return tuple(pushes)


def created_tag(change: Mapping[str, object], index: int) -> tuple[str, str] | None:
    """(tag, commit) when this change created or moved a tag, else None."""
    where = f"body.push.changes[{index}].new"
    new = optional_object(change, "new", f"body.push.changes[{index}]")
    if new is None or new.get("type") != "tag":
        return None
    target = as_object(member(new, "target", where), f"{where}.target")
    return string(new, "name", where), string(target, "hash", f"{where}.target")
