"""A local stand-in for Mattermost's REST API: creating and updating posts.

`FakeMattermost` is a real HTTP server on a free port (`MATTERMOST_URL` = `fake.url`).
`POST /api/v4/posts` keeps the post and answers 201 with it (a new `id`);
`PUT /api/v4/posts/<id>` replaces its message and props and answers 200, or 404 for
an unknown id. Every request is recorded with its `Authorization` header; a wrong bot
token is answered 401. `fail_next(n)` answers the next n requests with 500.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

from jsonserver import JsonServer

BOT_TOKEN = "mm-bot-token-123"


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
    failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def fail_next(self, count: int) -> None:
        with self.lock:
            self.failures = count

    # -- the API -------------------------------------------------------------------------------

    def respond(self, method: str, path: str, headers: dict[str, str],
                raw: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
        status, body = self.handle(method, path, headers.get("Authorization"), raw)
        return status, {}, body

    def handle(self, method: str, path: str, authorization: str | None, raw: bytes
               ) -> tuple[int, dict[str, Any]]:
        with self.lock:
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {}
            status, answer = self._answer(method, path, authorization, body)
            self.requests.append(Request(method, path, body, status, authorization))
            return status, answer

    def _answer(self, method: str, path: str, authorization: str | None,
                body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.failures:
            self.failures -= 1
            return 500, {"id": "app.fake.error", "status_code": 500}
        if authorization != f"Bearer {self.token}":
            return 401, {"id": "api.context.session_expired.app_error", "status_code": 401}
        if method == "POST" and path == "/api/v4/posts":
            post_id = f"p{len(self.posts) + 1:025d}"
            post = {"id": post_id, "channel_id": body.get("channel_id"),
                    "message": body.get("message", ""), "props": body.get("props", {}),
                    "create_at": int(time.time() * 1000), "edits": 0}
            self.posts[post_id] = post
            return 201, post
        prefix = "/api/v4/posts/"
        if method == "PUT" and path.startswith(prefix):
            post_id = path.removeprefix(prefix)
            post = self.posts.get(post_id)
            if post is None or body.get("id") != post_id:
                return 404, {"id": "app.post.get.app_error", "status_code": 404}
            post.update(message=body.get("message", ""), props=body.get("props", {}),
                        edits=post["edits"] + 1)
            return 200, post
        return 404, {"id": "api.context.404.app_error", "status_code": 404}

    # -- reading -------------------------------------------------------------------------------

    def calls(self, method: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.method == method]

    def post_for(self, release_id: str) -> dict[str, Any] | None:
        """The post whose text names `release_id` (each post shows its release id)."""
        with self.lock:
            for post in self.posts.values():
                if release_id in attachment(post).get("text", ""):
                    return json.loads(json.dumps(post))
        return None

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 30.0,
                 what: str = "the condition") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; posts: {self.posts}")


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
