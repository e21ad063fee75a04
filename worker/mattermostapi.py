"""Our side of Mattermost's REST API: a post on the wire, the client, and its failures.

`Post` is what a release's post says (`message`, `props`); its `digest()` changes
exactly when what people see or click changes. `MattermostClient` creates
(`POST /api/v4/posts`, with a `pending_post_id`), updates (`PUT
/api/v4/posts/{id}/patch`) and finds (`GET /api/v4/channels/{id}/posts?since=`, by
`props.bluegreen_release`) posts with the bot token (urllib, 5 s timeout; the token is
never logged). Every way a call can fail is a `worker.chatretry.ChatFailure` that is
safe to log, with `status` 0 when no answer came (`permanent` for a 400, 401 or 403);
`may_have_worked` says whether the call may have done its work all the same. When to
create, retry or look is `worker.mattermost`'s call.

An update changes the post's message and props and nothing else. `PUT
/api/v4/posts/{id}` would replace the whole post: what it is not sent is blank, so it
unpins a pinned post and sets `has_reactions` false, after which the server serves
the post without its reactions. `/patch` changes only the fields sent, but `props`,
sent, are replaced whole (the server's `Post.Patch`) under either endpoint, so the
props the server itself put on the post at create (`SERVER_PROPS`: `from_bot`) come
back with the create's answer (`Posted.server_props`) and are sent with every update.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from worker import chatretry
from worker.chatretry import ChatFailure

TIMEOUT = 5
PERMANENT_STATUSES = frozenset({400, 401, 403})
RELEASE_PROP = "bluegreen_release"   # the post's prop naming its release: how it is found
# Props the server sets on a post at create (`from_bot`: its author is a bot; clients
# hide "Forward" for it and other integrations skip bots' posts by it) and does not set
# again when an update replaces the props.
SERVER_PROPS = ("from_bot",)


@dataclass(frozen=True)
class Post:
    """A Mattermost post: `message` and `props` (attachments with actions)."""

    message: str
    props: dict[str, Any]

    def digest(self) -> str:
        """Changes exactly when what people would see (or click) changes."""
        body = json.dumps([self.message, self.props], sort_keys=True).encode()
        return hashlib.sha256(body).hexdigest()[:32]


@dataclass(frozen=True)
class Posted:
    """A post the server holds: its id, and the props of `SERVER_PROPS` it has."""

    id: str
    server_props: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_answer(cls, post: Any) -> Posted:
        """The post as the server answered it (a create, or one of a list)."""
        post_id = post.get("id") if isinstance(post, dict) else None
        if not isinstance(post_id, str) or not post_id:
            raise ChatFailure("Mattermost answered a post without an id")
        props = post.get("props")
        props = props if isinstance(props, dict) else {}
        return cls(post_id, {k: props[k] for k in SERVER_PROPS if k in props})


class MattermostClient:
    """Creates, updates and finds posts with the bot token (never logged)."""

    def __init__(self, base_url: str, token: str, *, timeout: float = TIMEOUT) -> None:
        self.base = base_url.rstrip("/") + "/api/v4"
        self._token = token
        self.timeout = timeout

    def create(self, channel: str, post: Post, *, pending_post_id: str) -> Posted:
        """Post to `channel`; the post (the first one, when the server has already created
        a post with this `pending_post_id` in the last 30 s)."""
        return Posted.from_answer(self._call("POST", "/posts", {
            "channel_id": channel, "message": post.message, "props": post.props,
            "pending_post_id": pending_post_id}))

    def update(self, post_id: str, post: Post, *, server_props: Mapping[str, Any]) -> None:
        """Change the post's message and props, and nothing else (its pin, reactions and
        files stay); the props go whole, with the server's own (`server_props`) kept."""
        self._call("PUT", f"/posts/{post_id}/patch",
                   {"message": post.message, "props": {**server_props, **post.props}})

    def exists(self, post_id: str) -> bool:
        """Whether the post is there and not deleted (`GET /posts/<id>`: 404 if not)."""
        try:
            self._call("GET", f"/posts/{urllib.parse.quote(post_id, safe='')}")
        except ChatFailure as failure:
            if failure.status == 404:
                return False
            raise
        return True

    def find(self, channel: str, release_id: str, *, since: float) -> Posted | None:
        """The post in `channel` whose props name `release_id`, created or changed after
        `since` (epoch seconds); the oldest if there are several, None if none."""
        channel = urllib.parse.quote(channel, safe="")
        posts = self._call("GET", f"/channels/{channel}/posts?since={int(since * 1000)}"
                           ).get("posts")
        found = [p for p in (posts.values() if isinstance(posts, dict) else [])
                 if is_about(p, release_id)]
        return Posted.from_answer(min(found, key=_created_at)) if found else None

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None
              ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(  # noqa: S310 - MATTERMOST_URL is checked http(s)
            self.base + path, method=method, headers=headers,
            data=json.dumps(body).encode() if body is not None else None)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as e:
            retry = (chatretry.retry_after_seconds(e.headers.get("Retry-After"))
                     if e.code == 429 else None)
            raise ChatFailure(f"Mattermost answered HTTP {e.code}", status=e.code,
                              retry_after=retry, permanent=e.code in PERMANENT_STATUSES
                              ) from None
        except (OSError, ValueError) as e:  # URLError, timeouts, refused connections
            raise ChatFailure(f"Mattermost is unreachable ({type(e).__name__})") from None
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise ChatFailure("Mattermost answered something that is not JSON") from None
        return data if isinstance(data, dict) else {}


def is_about(post: Any, release_id: str) -> bool:
    """Whether a post from the API is the (not deleted) one about `release_id`. A list of
    posts "since" a time holds deleted ones too, so that clients can drop them."""
    props = post.get("props") if isinstance(post, dict) else None
    return (isinstance(props, dict) and props.get(RELEASE_PROP) == release_id
            and isinstance(post.get("id"), str) and not post.get("delete_at"))


def _created_at(post: dict[str, Any]) -> int:
    created = post.get("create_at")
    return created if isinstance(created, int) else 0
