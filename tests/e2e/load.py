"""Steady default traffic through the ingress, and a timeline of where the default route pointed.

`Load` sends GET / without the test cookie from a few threads, each on its own
keep-alive connection, at a fixed total rate, and records each request's send and
answer times, status and the colour and version that answered. `RouteTimeline` reads
the VirtualService's default route from the API server in a tight loop and records
each read's start and end time and the subset it named. `allowed_colors(reads, sent,
answered)` says which colours could rightly have answered a request, from the reads
that bracket it (see its docstring).
"""

from __future__ import annotations

import bisect
import http.client
import itertools
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from invariants import http_json


@dataclass(frozen=True)
class Hit:
    """One request through the ingress."""

    sent: float
    answered: float
    status: int
    color: str | None
    version: str | None


@dataclass(frozen=True)
class Read:
    """One read of the default route: it held `subset` at some instant in [start, end]."""

    start: float
    end: float
    subset: str | None


class Load:
    """`threads` threads sending GET / at `rate` requests a second in all, until stopped."""

    def __init__(self, ingress: str, *, rate: float = 60.0, threads: int = 8) -> None:
        self.url, self.rate, self.threads = ingress.rstrip("/") + "/", rate, threads
        self.hits: list[Hit] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers = [threading.Thread(target=self._run, daemon=True, name=f"load-{i}")
                         for i in range(threads)]
        self.started = self.stopped = 0.0

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(10)
        self.stopped = time.monotonic()

    @property
    def achieved_rate(self) -> float:
        return len(self.hits) / max(self.stopped - self.started, 1e-9)

    def _run(self) -> None:
        """One keep-alive connection per thread, as a browser or a load balancer keeps one."""
        interval = self.threads / self.rate
        next_at = time.monotonic()
        address = urllib.parse.urlsplit(self.url)
        conn = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=5)
        while not self._stop.is_set():
            sent = time.monotonic()
            status, body = get(conn, address.path or "/")
            answered = time.monotonic()
            hit = Hit(sent, answered, status, body.get("color"), body.get("version"))
            with self._lock:
                self.hits.append(hit)
            next_at = max(next_at + interval, answered)  # behind schedule: go on, no burst
            self._stop.wait(max(0.0, next_at - time.monotonic()))
        conn.close()


def get(conn: http.client.HTTPConnection, path: str) -> tuple[int, dict[str, Any]]:
    """GET `path` on `conn`: (status, JSON object or {}); (0, {}) and a closed conn on error."""
    try:
        conn.request("GET", path, headers={"User-Agent": "e2e-load"})
        response = conn.getresponse()
        raw = response.read()
    except (OSError, http.client.HTTPException):
        conn.close()  # the next request opens a new connection
        return 0, {}
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        body = {}
    return response.status, body if isinstance(body, dict) else {}


class RouteTimeline:
    """Reads the default route of `app`'s VirtualService until stopped."""

    def __init__(self, api: str, app: str, namespace: str = "default") -> None:
        self.url = (f"{api.rstrip('/')}/apis/networking.istio.io/v1/namespaces/{namespace}/"
                    f"virtualservices/{app}-blue-green")
        self.reads: list[Read] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="route-timeline")

    def __enter__(self) -> RouteTimeline:
        self._thread.start()
        while not self.reads:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.1)  # one more read after the last request was answered
        self._stop.set()
        self._thread.join(10)

    def switches(self) -> int:
        subsets = [r.subset for r in self.reads]
        return sum(1 for a, b in itertools.pairwise(subsets) if a != b)

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            status, vs = http_json(self.url, timeout=5.0)
            end = time.monotonic()
            if status in (200, 404):
                self.reads.append(Read(start, end, default_subset(vs if status == 200 else None)))
            self._stop.wait(0.02)


def default_subset(vs: object) -> str | None:
    """`.spec.http[-1].route[0].destination.subset`, None when the last route has a match."""
    routes = ((vs if isinstance(vs, dict) else {}).get("spec") or {}).get("http") or []
    if not routes or routes[-1].get("match"):
        return None
    return ((routes[-1].get("route") or [{}])[0].get("destination") or {}).get("subset")


def allowed_colors(reads: list[Read], sent: float, answered: float) -> set[str | None] | None:
    """The colours that may rightly answer a request sent at `sent` and answered at `answered`.

    The ingress picked a colour at some instant r in [sent, answered], from the route as
    it was at r. Take the last read that ended before `sent` and the first read that
    started after `answered`: r lies between them, so the route at r is one that some
    read from the first to the last of these saw, provided the route did not change
    twice between two consecutive reads (reads are ~20 ms apart, switches seconds apart).
    A request that met no switch thus has exactly one right colour; one that overlapped
    a switch may come from the colour live just before or just after it. None: the
    timeline does not bracket the request, so it cannot be judged.
    """
    ends = [r.end for r in reads]
    first = bisect.bisect_right(ends, sent) - 1          # last read ended by `sent`
    starts = [r.start for r in reads]
    last = bisect.bisect_left(starts, answered)          # first read started after `answered`
    if first < 0 or last >= len(reads):
        return None
    return {r.subset for r in reads[first:last + 1]}
