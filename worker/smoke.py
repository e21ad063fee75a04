"""HTTP smoke checks through the ingress, as the seed's `curl --cookie 'test=true' $URL/ready`.

Owns one check: request a path through the ingress with the test cookie (so the test
route sends it to the colour being released), expect a status and, optionally, JSON
that contains the expected keys and values. A fresh route can take a moment to reach
every ingress, so a check is retried briefly before it fails; the failure message
shows what came back. Which checks an app has, and exec checks, are `worker.steps`'.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TEST_COOKIE = "test=true"
EXCERPT = 200


class SmokeFailed(Exception):
    """A smoke check did not get the answer it expects; the message shows what it got."""


@dataclass(frozen=True)
class Answer:
    """What one request got back (status 0: no HTTP answer at all)."""

    status: int
    body: bytes

    def excerpt(self) -> str:
        text = self.body.decode("utf-8", "replace").strip()
        return text if len(text) <= EXCERPT else text[:EXCERPT] + "..."


def fetch(url: str, *, cookie: str | None = TEST_COOKIE, host: str | None = None,
          timeout: float = 5.0) -> Answer:
    """GET url (with the cookie, and `Host: host` when the app has a host name of its own);
    never raises for an HTTP or connection failure."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    if cookie:
        request.add_header("Cookie", cookie)
    if host and "*" not in host:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return Answer(int(response.status), response.read())
    except urllib.error.HTTPError as e:
        return Answer(int(e.code), e.read())
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        return Answer(0, f"no answer: {reason}".encode())


def contains(actual: Any, expected: Any) -> bool:
    """True when every key/value of `expected` is in `actual` (recursively for objects)."""
    if isinstance(expected, Mapping):
        return isinstance(actual, Mapping) and all(
            key in actual and contains(actual[key], value) for key, value in expected.items())
    return bool(actual == expected) and type(actual) is type(expected)


def is_expected(answer: Answer, *, status: int, expect_json: Mapping[str, Any] | None) -> bool:
    if answer.status != status:
        return False
    if expect_json is None:
        return True
    try:
        return contains(json.loads(answer.body), expect_json)
    except ValueError:
        return False


def check_http(base_url: str, *, path: str, status: int = 200,
               expect_json: Mapping[str, Any] | None = None, cookie: str | None = TEST_COOKIE,
               host: str | None = None, within: float = 10.0, interval: float = 0.5) -> Answer:
    """Request base_url+path until it answers as expected, for up to `within` seconds."""
    url = base_url.rstrip("/") + "/" + path.lstrip("/")
    deadline, attempts = time.monotonic() + within, 0
    while True:
        attempts += 1
        answer = fetch(url, cookie=cookie, host=host, timeout=max(1.0, min(5.0, within)))
        if is_expected(answer, status=status, expect_json=expect_json):
            return answer
        if time.monotonic() + interval > deadline:
            break
        time.sleep(interval)
    wanted = f"{status}" + (f" with JSON containing {json.dumps(expect_json)}"
                            if expect_json is not None else "")
    got = f"{answer.status or 'no answer'}: {answer.excerpt() or '(empty body)'}"
    raise SmokeFailed(f"GET {url} with Cookie {cookie!r}: expected {wanted}, got {got} "
                      f"({attempts} attempts over {within:g}s)")
