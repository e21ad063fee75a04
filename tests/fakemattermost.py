"""A local stand-in for Mattermost's REST API: creating, updating and listing posts.

`FakeMattermost` is a real HTTP server on a free port (`MATTERMOST_URL` = `fake.url`).
`POST /api/v4/posts` keeps the post and answers 201 with it (a new `id`), with the
props the server adds for a bot's post (`from_bot: "true"`). The two updates answer
200 with the post, or 404 for an unknown id, and do what the server does
(`App.UpdatePost`, `App.PatchPost`, `Post.Patch`):
- `PUT /api/v4/posts/<id>` replaces the post: its message, its props (what the server
  added at create too), and `is_pinned` and `has_reactions`, which it is not sent are
  blank (false): the post is unpinned and its reactions are no longer served; only
  `file_ids` left out are kept. The body's `id` must be the URL's;
- `PUT /api/v4/posts/<id>/patch` changes only the fields it is sent (`message`,
  `props`, `is_pinned`, `file_ids`, `has_reactions`); `props`, when sent, are
  replaced whole, as by `PUT`.
Either answers 403 (`api.context.permissions.app_error`) for a post that is not there
or was deleted, as the server does (`updatePost` / `patchPost` turn the failed lookup
into a permission error); `GET /api/v4/posts/<id>` answers 404 for those.
Either sets `edit_at` when the message or the attachments change. What people do to
a post: `delete(id)` (`DELETE /posts/<id>`: `delete_at` set, the post kept), `pin(id)`
(`POST /posts/<id>/pin`) and `react(id, user, emoji)` (`POST /reactions`, which sets
`has_reactions`). `GET /api/v4/posts/<id>` and `GET
/api/v4/channels/<id>/posts?since=<ms>` (the channel's posts changed after that time,
as a post list: `order`, newest first, and `posts`) serve posts as clients get them:
`metadata.reactions` only when `has_reactions` is set (`getEmojisAndReactionsForPost`);
`served(id)` is that view.
Every request is recorded with its `Authorization` header; a wrong bot token is
answered 401. `fail_next(n)` answers the next n requests with 500 (nothing done);
`refuse_reads` answers every GET with 403, as for a bot that cannot read the channel.

A create's `pending_post_id` is deduplicated as the server does it (MM-10856,
`app.deduplicateCreatePost`): the id is remembered for `DEDUPE_SECONDS` (by
`fake.clock`, which a test may move on) from when a create carrying it starts, and
again from when its post is saved. A create that repeats a remembered id is answered
201 with the first post, and no post is made; while the first create is still being
saved, 500 `api.post.deduplicate_create_post.pending`. The memory is keyed by the id
alone, across users and channels. Timing faults for the next create:
`answer_late_next(delay)` saves the post and answers `delay` seconds later (the answer
is slow); `save_slowly_next(delay)` saves it and answers only after `delay` (the
server is slow), so a create repeated meanwhile meets the first one still in flight.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

from jsonserver import JsonServer

BOT_TOKEN = "mm-bot-token-123"
BOT_USER_ID = "botuser00000000000000000001"
DEDUPE_SECONDS = 30.0   # the server's pendingPostIDsCacheTTL
POSTS = "/api/v4/posts"
PATCHABLE = ("message", "props", "is_pinned", "file_ids", "has_reactions")  # model.PostPatch


@dataclass
class Request:
    method: str
    path: str
    body: dict[str, Any]
    status: int
    authorization: str | None


@dataclass
class FakeMattermost(JsonServer):
    """See the module docstring."""

    token: str = BOT_TOKEN
    requests: list[Request] = field(default_factory=list)
    posts: dict[str, dict[str, Any]] = field(default_factory=dict)
    reactions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # post id → them
    failures: int = 0
    refuse_reads: bool = False
    clock: Callable[[], float] = time.time
    seen: dict[str, tuple[str, float]] = field(default_factory=dict)  # pending id → post, when
    late: deque[float] = field(default_factory=deque)
    slow: deque[float] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None
    made: int = 0  # posts made, saved or still being saved
    saving: int = 0  # creates still being saved

    def fail_next(self, count: int) -> None:
        with self.lock:
            self.failures = count

    def answer_late_next(self, delay: float) -> None:
        with self.lock:
            self.late.append(delay)

    def save_slowly_next(self, delay: float) -> None:
        with self.lock:
            self.slow.append(delay)

    # -- the API -------------------------------------------------------------------------------

    def respond(self, method: str, path: str, headers: dict[str, str],
                raw: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
        status, body = self.handle(method, path, headers.get("Authorization"), raw)
        return status, {}, body

    def handle(self, method: str, path: str, authorization: str | None, raw: bytes
               ) -> tuple[int, dict[str, Any]]:
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        with self.lock:
            status, answer, unsaved = self._answer(method, path, authorization, body)
            self.requests.append(Request(method, path, body, status, authorization))
            slow = self.slow.popleft() if unsaved and self.slow else 0.0
            late = self.late.popleft() if unsaved and self.late else 0.0
            if unsaved and not slow:
                answer = self._save(unsaved, body)
            self.saving += 1 if slow else 0
        if slow:  # the create is in flight: a repeat of its pending_post_id meets it so
            time.sleep(slow)
            with self.lock:
                answer = self._save(unsaved, body)
                self.saving -= 1
        time.sleep(late)  # done already; only the answer is late
        return status, answer

    def _answer(self, method: str, path: str, authorization: str | None, body: dict[str, Any]
                ) -> tuple[int, dict[str, Any], dict[str, Any] | None]:
        """The status and answer to a request, and a new post still to be saved."""
        if self.failures:
            self.failures -= 1
            return 500, {"id": "app.fake.error", "status_code": 500}, None
        if authorization != f"Bearer {self.token}":
            return 401, {"id": "api.context.session_expired.app_error", "status_code": 401}, None
        url = urllib.parse.urlsplit(path)
        if method == "POST" and url.path == POSTS:
            return self._create(body)
        parts = url.path.split("/")
        if method == "PUT" and parts[:4] == ["", "api", "v4", "posts"] and len(parts) == 5:
            return (*self._update(parts[4], body), None)
        if method == "PUT" and parts[:4] == ["", "api", "v4", "posts"] and \
                parts[5:] == ["patch"]:
            return (*self._patch(parts[4], body), None)
        if method == "GET" and parts[:4] == ["", "api", "v4", "posts"] and len(parts) == 5:
            return (*self._get(parts[4]), None)
        if method == "GET" and parts[:4] == ["", "api", "v4", "channels"] and \
                parts[5:] == ["posts"]:
            return (*self._since(parts[4], urllib.parse.parse_qs(url.query)), None)
        return 404, {"id": "api.context.404.app_error", "status_code": 404}, None

    def _create(self, body: dict[str, Any]
                ) -> tuple[int, dict[str, Any], dict[str, Any] | None]:
        pending = str(body.get("pending_post_id") or "")
        if pending:
            post_id, since = self.seen.get(pending, ("", -DEDUPE_SECONDS))
            if self.clock() - since < DEDUPE_SECONDS:
                if not post_id:
                    return 500, {"id": "api.post.deduplicate_create_post.pending",
                                 "status_code": 500}, None
                return 201, self._served(self.posts[post_id]), None
            self.seen[pending] = ("", self.clock())
        now = int(self.clock() * 1000)
        self.made += 1
        post = {"id": f"p{self.made:025d}", "channel_id": body.get("channel_id"),
                "user_id": BOT_USER_ID, "message": body.get("message", ""),
                "props": {**(body.get("props") or {}), "from_bot": "true"},  # a bot's post
                "create_at": now, "update_at": now, "edit_at": 0, "delete_at": 0,
                "is_pinned": False, "has_reactions": False, "file_ids": [], "edits": 0}
        return 201, post, post

    def _save(self, post: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        self.posts[post["id"]] = post
        if body.get("pending_post_id"):
            self.seen[str(body["pending_post_id"])] = (post["id"], self.clock())
        return self._served(post)

    def _update(self, post_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """`PUT /posts/<id>`: the post as sent; what it is not sent is blank."""
        if body.get("id") != post_id:
            return 400, {"id": "api.context.invalid_body_param.app_error", "status_code": 400}
        post = self._live(post_id)
        if post is None:
            return 403, {"id": "api.context.permissions.app_error", "status_code": 403}
        files = body.get("file_ids")
        return 200, self._change(post, {
            "message": body.get("message", ""), "props": body.get("props") or {},
            "is_pinned": bool(body.get("is_pinned")),
            "has_reactions": bool(body.get("has_reactions")),
            "file_ids": post["file_ids"] if files is None else files})

    def _patch(self, post_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """`PUT /posts/<id>/patch`: only the fields sent (props, if sent, whole)."""
        post = self._live(post_id)
        if post is None:
            return 403, {"id": "api.context.permissions.app_error", "status_code": 403}
        return 200, self._change(post, {k: body[k] for k in PATCHABLE
                                        if body.get(k) is not None})

    def _change(self, post: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
        now = int(self.clock() * 1000)
        before = attachments_of(post), post["message"]
        post.update(fields, edits=post["edits"] + 1, update_at=now)
        if (attachments_of(post), post["message"]) != before:
            post["edit_at"] = now
        return self._served(post)

    def _live(self, post_id: str) -> dict[str, Any] | None:
        """The post, unless it is not there or was deleted (`GetSinglePost`)."""
        post = self.posts.get(post_id)
        return post if post is not None and not post["delete_at"] else None

    def _get(self, post_id: str) -> tuple[int, dict[str, Any]]:
        post = self._live(post_id)
        if post is None:
            return 404, {"id": "app.post.get.app_error", "status_code": 404}
        return 200, self._served(post)

    def _served(self, post: dict[str, Any]) -> dict[str, Any]:
        """The post as clients get it: its reactions only when `has_reactions` is set."""
        reactions = self.reactions.get(post["id"], []) if post["has_reactions"] else []
        return json.loads(json.dumps({**post, "metadata": {"reactions": reactions}}))

    # -- what people do ------------------------------------------------------------------------

    def delete(self, post_id: str) -> None:
        with self.lock:
            self.posts[post_id].update(delete_at=int(self.clock() * 1000))

    def pin(self, post_id: str) -> None:
        with self.lock:
            self.posts[post_id]["is_pinned"] = True

    def react(self, post_id: str, user_id: str, emoji: str) -> None:
        with self.lock:
            self.reactions.setdefault(post_id, []).append(
                {"user_id": user_id, "post_id": post_id, "emoji_name": emoji})
            self.posts[post_id]["has_reactions"] = True

    def served(self, post_id: str) -> dict[str, Any]:
        """The post as a client (a person's) gets it now."""
        with self.lock:
            return self._served(self.posts[post_id])

    def _since(self, channel: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        """The channel's posts changed after `since` (ms), deleted ones too, as the server
        lists them (`GetPostsSince`)."""
        if self.refuse_reads:
            return 403, {"id": "api.context.permissions.app_error", "status_code": 403}
        since = int((query.get("since") or ["0"])[0])
        shown = sorted((p for p in self.posts.values()
                        if p["channel_id"] == channel and p["update_at"] > since),
                       key=lambda p: p["create_at"], reverse=True)
        return 200, {"order": [p["id"] for p in shown],
                     "posts": {p["id"]: self._served(p) for p in shown},
                     "next_post_id": "", "prev_post_id": "", "has_next": False}

    # -- reading -------------------------------------------------------------------------------

    def calls(self, method: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.method == method]

    def post_for(self, release_id: str) -> dict[str, Any] | None:
        """The post whose text names `release_id` (each post shows its release id)."""
        found = self.posts_for(release_id)
        return found[0] if found else None

    def posts_for(self, release_id: str) -> list[dict[str, Any]]:
        """Every post whose text names `release_id`, oldest first (deleted ones left out,
        as people no longer see them)."""
        with self.lock:
            return [json.loads(json.dumps(post)) for post in self.posts.values()
                    if release_id in attachment(post).get("text", "") and not post["delete_at"]]

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 30.0,
                 what: str = "the condition") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; posts: {self.posts}")


def attachments_of(post: dict[str, Any]) -> Any:
    return (post.get("props") or {}).get("attachments")


def attachment(post: dict[str, Any] | None) -> dict[str, Any]:
    if post is None:
        return {}
    attachments = post.get("props", {}).get("attachments") or [{}]
    return dict(attachments[0])


def action_names(post: dict[str, Any] | None) -> list[str]:
    return [a["name"] for a in attachment(post).get("actions", [])]


def action(post: dict[str, Any] | None, name: str) -> dict[str, Any]:
    for candidate in attachment(post).get("actions", []):
        if candidate["name"] == name:
            return dict(candidate)
    raise AssertionError(f"no action {name!r} in {action_names(post)}")
