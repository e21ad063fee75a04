"""Bad input at volume: thousands of bad requests mixed with good ones, into the real stack.

About 3,000 requests from eight threads in random (seeded) order against gunicorn:
unsigned, wrongly signed and tampered deliveries from several forges, signed bodies
that are not JSON or not a push, the wrong content type, bodies over the size cap,
wrong methods, no forge headers at all, events that must be ignored, operator API
calls without a token or with nonsense, and among them ten valid tag pushes, each
also replayed many times. Each request must get its documented answer — never a
5xx, never a dropped connection — nothing may be recorded or queued for any
invalid one, and every valid push becomes exactly one release that the worker runs
to a settled state, with the invariant monitor watching the cluster throughout. The
counts are printed with the test's result.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import time
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from stack import Stack, app_config, running, tag_push_body, wait_until
from web import API_TOKEN, Delivery, Response, delivery, http, signed

pytestmark = pytest.mark.slow

APPS = {"myapp": app_config("acme/myapp")}
VALID_TAGS = [f"v9.{i}-{'green' if i % 2 else 'blue'}" for i in range(10)]
IGNORED = [("github", "ping__hook"), ("github", "push__branch"), ("github", "push__tag_deleted"),
           ("github", "push__tag_nonmatching"), ("github", "push__unknown_repo"),
           ("github", "issues__opened"), ("gitlab", "push__branch"), ("gitlab", "note__comment"),
           ("gitea", "push__branch"), ("bitbucket", "repo_push__branch")]
MALFORMED = [("github", "push__malformed_no_repository"), ("github", "push__malformed_ref_number"),
             ("gitlab", "tag_push__malformed_no_project"),
             ("bitbucket", "repo_push__malformed_no_target")]


@dataclass(frozen=True)
class Request:
    """One request of the corpus and the answers it may get."""

    kind: str
    method: str
    path: str
    body: bytes | None
    headers: dict[str, str]
    statuses: frozenset[int]
    tag: str | None = None  # valid pushes and their replays


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running(tmp_path_factory.mktemp("bad-input"), APPS) as started:
        yield started


def push(tag: str, number: int) -> Delivery:
    body = tag_push_body(tag, "acme/myapp", f"{number + 1:040x}")
    d = signed(delivery("github", "push__tag_lightweight").with_body(body))
    return d.with_headers(X_GitHub_Delivery=f"bad-input-{number}")


def webhook(kind: str, d: Delivery, *statuses: int, method: str = "POST") -> Request:
    return Request(kind, method, "/webhook", d.body, d.headers, frozenset(statuses))


def refusals(rnd: random.Random) -> dict[str, Callable[[], Request]]:
    """Builders of one bad webhook request each, by kind."""
    def base() -> Delivery:
        return push(rnd.choice(VALID_TAGS), rnd.randrange(10_000, 99_999))

    def fixture(pairs: list[tuple[str, str]]) -> Delivery:
        return signed(delivery(*rnd.choice(pairs)))

    def wrong_secret() -> Delivery:
        forge, name = rnd.choice([("github", "push__tag_lightweight"),
                                  ("gitlab", "tag_push__lightweight"), ("gitea", "push__tag"),
                                  ("bitbucket", "repo_push__tag")])
        return signed(delivery(forge, name), secret=f"guess-{rnd.random()}")

    return {
        "unsigned": lambda: webhook("unsigned", delivery("github", "push__tag_lightweight"), 401),
        "wrong secret": lambda: webhook("wrong secret", wrong_secret(), 401),
        "tampered": lambda: webhook("tampered", base().with_body(
            base().body.replace(b"acme/myapp", b"evil/myapp")), 401),
        "not json": lambda: webhook("not json", signed(base().with_body(
            rnd.randbytes(rnd.randrange(1, 400)))), 400),
        "not a push": lambda: webhook("not a push", fixture(MALFORMED), 400),
        "json, wrong shape": lambda: webhook("json, wrong shape", signed(base().with_body(
            rnd.choice([b"[]", b"null", b"42", b'"x"', b'{"ref": []}']))), 400),
        "wrong content type": lambda: webhook("wrong content type", signed(base().with_headers(
            Content_Type=rnd.choice(["text/plain", "application/x-www-form-urlencoded"]))), 415),
        "oversized": lambda: webhook("oversized", signed(base().with_body(
            b'{"pad": "' + b"x" * (1024 * 1024 + 100) + b'"}')), 413),
        "wrong method": lambda: webhook("wrong method", base(), 405,
                                        method=rnd.choice(["GET", "PUT", "DELETE"])),
        "no forge headers": lambda: webhook("no forge headers", Delivery(
            "github", {"Content-Type": "application/json"}, base().body), 400),
        "ignored event": lambda: webhook("ignored event", fixture(IGNORED), 200),
    }


def api_abuse(rnd: random.Random) -> Request:
    """An operator API call that must be refused."""
    token = {"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"}
    kind, path, headers, body, status = rnd.choice([
        ("api: no token", "/api/apps/myapp/promote", {}, b'{"release": "x"}', 401),
        ("api: wrong token", "/api/apps/myapp/rollback",
         {"Authorization": "Bearer nope"}, b'{"release": "x"}', 401),
        ("api: not json", "/api/apps/myapp/abort", token, rnd.randbytes(50), 400),
        ("api: unknown release", "/api/apps/myapp/promote", token,
         json.dumps({"release": f"myapp-nope-{rnd.randrange(1000)}"}).encode(), 404),
        ("api: unknown app", "/api/apps/nope/promote", token, b'{"release": "x"}', 404),
        ("api: no colour", "/api/apps/myapp/decommission", token, b"{}", 400),
    ])
    return Request(kind, "POST", path, body, headers, frozenset({status}))


def corpus(seed: int = 7) -> list[Request]:
    rnd = random.Random(seed)
    builders = refusals(rnd)
    counts = {kind: 60 if kind == "oversized" else 240 for kind in builders}
    requests = [builders[kind]() for kind, n in counts.items() for _ in range(n)]
    requests += [api_abuse(rnd) for _ in range(300)]
    for number, tag in enumerate(VALID_TAGS):
        d = push(tag, number)
        requests += [Request("valid or replay", "POST", "/webhook", d.body, d.headers,
                             frozenset({200, 202}), tag) for _ in range(25)]
    rnd.shuffle(requests)
    return requests


def send(url: str, request: Request) -> Response:
    if request.kind == "oversized":
        return send_early_answered(url, request)
    try:
        return http(request.method, url + request.path, request.body, request.headers,
                    timeout=30)
    except OSError as e:
        return Response(0, {}, str(e).encode())


def send_early_answered(url: str, request: Request) -> Response:
    """Send as curl does: the server may answer 413 from Content-Length and close before
    the body is all sent (a broken pipe here), so the answer is read whatever happens."""
    host, port = urllib.parse.urlsplit(url).hostname, urllib.parse.urlsplit(url).port
    head = [f"{request.method} {request.path} HTTP/1.1", f"Host: {host}:{port}",
            f"Content-Length: {len(request.body or b'')}", "Connection: close",
            *(f"{k}: {v}" for k, v in request.headers.items()
              if k.lower() not in ("content-length", "host", "connection"))]
    with socket.create_connection((host or "127.0.0.1", port or 80), timeout=30) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + (request.body or b""))
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    parts = status_line.split()
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return Response(status, {}, rest.partition(b"\r\n\r\n")[2] or answer[:200])


def test_thousands_of_bad_requests_change_nothing_and_good_ones_all_run(
        stack: Stack, figures: Callable[[str], None]) -> None:
    requests = corpus()
    started = time.monotonic()
    with stack.monitor("myapp", traffic=False) as monitor:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda r: send(stack.url, r), requests))
        took = time.monotonic() - started
        check_valid_ones(stack, requests, answers)
    assert monitor.violations == []
    by_kind: dict[str, Counter[int]] = defaultdict(Counter)
    for request, answer in zip(requests, answers, strict=True):
        by_kind[request.kind][answer.status] += 1
    figures(f"bad input: {len(requests)} requests in {took:.1f} s "
            f"({len(requests) / took:.0f}/s); answers by kind: "
            f"{ {k: dict(v) for k, v in sorted(by_kind.items())} }")
    wrong = [(r.kind, a.status, a.body[:200]) for r, a in zip(requests, answers, strict=True)
             if a.status not in r.statuses]
    assert wrong == [], f"{len(wrong)} unexpected answers, first: {wrong[:5]}"
    assert "Traceback" not in (stack.tmp / "web.log").read_text()


def check_valid_ones(stack: Stack, requests: list[Request], answers: list[Response]) -> None:
    """Per valid tag one 202 and the rest duplicates; only they were recorded; all settle."""
    queued: dict[str, str] = {}
    for request, answer in zip(requests, answers, strict=True):
        if request.tag is None:
            continue
        if answer.status == 202:
            assert request.tag not in queued, f"{request.tag} queued twice"
            queued[request.tag] = answer.json["releases"][0]["id"]
        else:
            assert answer.json["result"] == "duplicate", answer.body
    assert sorted(queued) == sorted(VALID_TAGS)
    releases = stack.releases("myapp")
    assert sorted(r["id"] for r in releases) == sorted(queued.values())  # nothing else
    wait_until(lambda: all(stack.state(rid) in ("awaiting_promotion", "superseded")
                           for rid in queued.values()), 90, "the valid releases to settle", 0.2)
