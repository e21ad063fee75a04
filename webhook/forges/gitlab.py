"""GitLab webhook payloads: `Tag Push Hook` deliveries and the commit they name.

Pure: `parse(headers, body)` returns the created tag or why the delivery is ignored.
Every event we do not act on is ignored, never refused: GitLab disables a hook for
good after a 4xx. The token check (`X-Gitlab-Token`) happens before this.
"""

from __future__ import annotations

from collections.abc import Mapping

from webhook.forges.payload import (
    HeaderMap,
    Ignored,
    Parsed,
    TagPush,
    as_object,
    first_string,
    header,
    is_zero_sha,
    optional_object,
    optional_string,
    string,
)

NAME = "gitlab"
EVENT_HEADER = "X-Gitlab-Event"
# Idempotency-Key stays the same across GitLab's retries of one delivery.
DELIVERY_HEADERS = ("Idempotency-Key", "X-Gitlab-Event-UUID")
TAG_PREFIX = "refs/tags/"


def parse(headers: HeaderMap, body: object) -> Parsed:
    """The tag a GitLab delivery created, or why it is ignored."""
    event = header(headers, EVENT_HEADER) or ""
    if event == "Push Hook":
        return Ignored("branch push, not a tag")
    if event != "Tag Push Hook":
        return Ignored(f"event {event!r} is not a tag push")
    payload = as_object(body, "body")
    ref = string(payload, "ref", "body")
    tag = ref.removeprefix(TAG_PREFIX)
    if tag == ref or not tag:
        return Ignored(f"push to {ref}, not a tag")
    commit = optional_string(payload, "checkout_sha", "body")
    after = optional_string(payload, "after", "body")
    if commit is None or is_zero_sha(commit) or (after is not None and is_zero_sha(after)):
        return Ignored(f"tag {tag} was deleted")
    return (TagPush(
        forge=NAME,
        repository=repository_name(payload),
        tag=tag,
        commit=commit,
        delivery_id=header(headers, *DELIVERY_HEADERS) or "",
        pusher=first_string(payload, ("user_username", "user_name")) or "unknown",
    ),)


def repository_name(payload: Mapping[str, object]) -> str:
    """`project.path_with_namespace`, e.g. `acme/myapp` (older hooks: `project_path`)."""
    project = optional_object(payload, "project", "body")
    if project is not None and "path_with_namespace" in project:
        return string(project, "path_with_namespace", "body.project")
    return string(payload, "project_path", "body")
