"""Answers to Slack's `response_url`, sent after the request has been acknowledged.

Slack wants its 200 within 3 s; a POST to `response_url` ("⏳ promoting…" replacing the
clicked message, or an ephemeral refusal) must not spend that time, so `send()` hands
it to a small thread pool of the web process and returns at once. A lost answer is
cosmetic: the worker's notifier brings the release's message up to date anyway. A
late one is not, by itself: it may land after the notifier's update of the outcome, so
`send(..., then=...)` runs `then` once Slack has answered the POST or it has failed (the
caller has the message sent again).

A `response_url` is a secret (it lets anyone post into the conversation for 30
minutes): it is never logged, and only URLs on Slack's hosts — or on the host of the
configured `SLACK_API_URL`, for proxies and tests — are posted to.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger("bluegreen.chatops")

TIMEOUT = 5.0
SLACK_HOSTS = ("slack.com",)
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def is_allowed(url: object, api_url: str) -> bool:
    """True for an https URL on Slack's hosts, or on the configured Slack API's host."""
    if not isinstance(url, str):
        return False
    target = urllib.parse.urlsplit(url)
    api = urllib.parse.urlsplit(api_url)
    host = (target.hostname or "").lower()
    on_slack = target.scheme == "https" and any(
        host == h or host.endswith("." + h) for h in SLACK_HOSTS)
    return on_slack or (target.scheme, target.netloc) == (api.scheme, api.netloc)


def send(url: str, body: dict[str, Any], *, then: Callable[[], None] | None = None) -> None:
    """POST `body` as JSON to `url` in the background (the caller checked `is_allowed`);
    then, answered or failed, call `then` (in the background too; it must not raise)."""
    _executor().submit(_post_then, url, body, then)


def _post_then(url: str, body: dict[str, Any], then: Callable[[], None] | None) -> None:
    try:
        _post(url, body)
    finally:
        if then is not None:
            then()


def _post(url: str, body: dict[str, Any]) -> None:
    # is_allowed() let only http(s) URLs on Slack's (or the configured API's) host through
    request = urllib.request.Request(url, data=json.dumps(body).encode(),  # noqa: S310
                                     method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:  # noqa: S310
            answer.read()
    except urllib.error.HTTPError as e:
        log.warning("chat reply not delivered: Slack answered HTTP %s", e.code)
    except (OSError, ValueError) as e:
        log.warning("chat reply not delivered: %s", type(e).__name__)


def _executor() -> ThreadPoolExecutor:
    """One pool per process, made on first use (gunicorn forks workers after import)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bluegreen-reply")
        return _pool
