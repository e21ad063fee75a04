"""Our side of Mattermost's REST API: a post on the wire, the client, and its failures.

`Post` is what a release's post says (`message`, `props`); its `digest()` changes
exactly when what people see or click changes. `MattermostClient` creates
(`POST /api/v4/posts`) and updates (`PUT /api/v4/posts/{id}`) posts with the bot token
(urllib, 5 s timeout; the token is never logged). Every way a call can fail is a
`PostFailure` that is safe to log, with `status` 0 when no answer came. When to
create, update or retry is `worker.mattermost`'s call.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from worker import chatretry

TIMEOUT = 5
PERMANENT_STATUSES = frozenset({400, 401, 403})


@dataclass(frozen=True)
class Post:
    """A Mattermost post: `message` and `props` (attachments with actions)."""

    message: str
    props: dict[str, Any]

    def digest(self) -> str:
        """Changes exactly when what people would see (or click) changes."""
        body = json.dumps([self.message, self.props], sort_keys=True).encode()
        return hashlib.sha256(body).hexdigest()[:32]


class PostFailure(Exception):
    """A Mattermost call that did not work; `reason` is safe to log and to note."""

    def __init__(self, reason: str, *, status: int = 0, retry_after: float | None = None
                 ) -> None:
        super().__init__(reason)
        self.reason, self.status, self.retry_after = reason, status, retry_after

    @property
    def permanent(self) -> bool:
        return self.status in PERMANENT_STATUSES


class MattermostClient:
    """Creates and updates posts with the bot token (never logged)."""

    def __init__(self, base_url: str, token: str, *, timeout: float = TIMEOUT) -> None:
        self.base = base_url.rstrip("/") + "/api/v4"
        self._token = token
        self.timeout = timeout

    def create(self, channel: str, post: Post) -> str:
        """Post to `channel`; the new post's id."""
        answer = self._call("POST", "/posts", {"channel_id": channel, "message": post.message,
                                               "props": post.props})
        post_id = answer.get("id")
        if not isinstance(post_id, str) or not post_id:
            raise PostFailure("Mattermost answered a create without a post id")
        return post_id

    def update(self, post_id: str, post: Post) -> None:
        self._call("PUT", f"/posts/{post_id}", {"id": post_id, "message": post.message,
                                                "props": post.props})

    def _call(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310 - MATTERMOST_URL is checked http(s)
            self.base + path, data=json.dumps(body).encode(), method=method,
            headers={"Authorization": f"Bearer {self._token}",
                     "Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as e:
            retry = (chatretry.retry_after_seconds(e.headers.get("Retry-After"))
                     if e.code == 429 else None)
            raise PostFailure(f"Mattermost answered HTTP {e.code}", status=e.code,
                              retry_after=retry) from None
        except (OSError, ValueError) as e:  # URLError, timeouts, refused connections
            raise PostFailure(f"Mattermost is unreachable ({type(e).__name__})") from None
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise PostFailure("Mattermost answered something that is not JSON") from None
        return data if isinstance(data, dict) else {}
