"""Test hooks of the API server: injected faults and the log of requests it answered.

Owns the fault rules posted to `POST /sandbox/faults` (match a path regex and
optionally a method; answer an error status, add latency, or drop the
connection; for the next N matching requests) and the request log served by
`GET /sandbox/requests?since=N`. The product never uses these; tests do, to see
how the product copes with a failing or slow cluster and what it asked for.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from sandbox.resources import ApiError

_REASONS = {
    400: ("BadRequest", "the server rejected our request for an unknown reason"),
    403: ("Forbidden", "forbidden: injected fault"),
    404: ("NotFound", "the server could not find the requested resource"),
    409: ("Conflict", "the server reported a conflict"),
    429: ("TooManyRequests", "Too many requests: injected fault"),
    500: ("InternalError", "Internal error occurred: injected fault"),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    504: ("Timeout", "Timeout: injected fault"),
}


@dataclass
class Fault:
    """One rule: requests matching `path` (and `method`) get this treatment `count` times."""

    path: re.Pattern[str]
    method: str | None
    status: int | None
    count: int | None  # None: for ever
    latency: float
    refuse: bool

    @classmethod
    def from_json(cls, body: Any) -> Fault:
        if not isinstance(body, dict) or not isinstance(body.get("path", ".*"), str):
            raise ApiError(400, "BadRequest", "a fault is a JSON object with a `path` regex")
        try:
            pattern = re.compile(body.get("path") or ".*")
        except re.error as e:
            raise ApiError(400, "BadRequest", f"invalid path regex: {e}") from None
        method = body.get("method")
        count = body.get("count")
        return cls(path=pattern, method=method.upper() if method else None,
                   status=int(body["status"]) if body.get("status") else None,
                   count=int(count) if count is not None else None,
                   latency=float(body.get("latency") or 0), refuse=bool(body.get("refuse")))

    def matches(self, method: str, path: str) -> bool:
        if self.count is not None and self.count <= 0:
            return False
        return (self.method is None or self.method == method) and bool(self.path.search(path))

    def error(self) -> ApiError:
        """The Status this fault answers with, worded as the real server words it."""
        code = self.status or 500
        reason, message = _REASONS.get(code, ("InternalError" if code >= 500 else "BadRequest",
                                              f"injected fault {code}"))
        details: dict[str, Any] = {}
        headers: dict[str, str] = {}
        if code in (429, 503, 504):
            details["retryAfterSeconds"] = 1
            headers["Retry-After"] = "1"
        if code >= 500 and code not in (503, 504):
            details["causes"] = [{"message": "injected fault"}]
        return ApiError(code, reason, message, details or None, headers)


class Faults:
    """The active fault rules and the request log, shared by all handler threads."""

    def __init__(self, *, log_size: int = 20000) -> None:
        self._lock = threading.Lock()
        self._rules: list[Fault] = []
        self._log: deque[dict[str, Any]] = deque(maxlen=log_size)
        self._seq = 0

    def add(self, body: Any) -> Fault:
        fault = Fault.from_json(body)
        with self._lock:
            self._rules.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def take(self, method: str, path: str) -> Fault | None:
        """The first rule matching this request, using up one of its count."""
        with self._lock:
            for fault in self._rules:
                if fault.matches(method, path):
                    if fault.count is not None:
                        fault.count -= 1
                    return fault
        return None

    def record(self, *, method: str, path: str, query: str, status: int | None,
               user_agent: str | None, received: float) -> dict[str, Any]:
        """Log a request: `received` when it came in, its time now (`completed` sets it
        again at the end)."""
        with self._lock:
            self._seq += 1
            entry = {"seq": self._seq, "time": time.time(), "received": received,
                     "method": method, "path": path, "query": query, "status": status,
                     "user_agent": user_agent}
            self._log.append(entry)
            return entry

    def completed(self, entry: dict[str, Any]) -> None:
        """The request of `entry` has been answered in full: its time is now."""
        with self._lock:
            entry["time"] = time.time()

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._log if r["seq"] > since]
