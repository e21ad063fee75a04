"""The web process as the Procfile runs it: Redis going away, logs, gunicorn settings,
tokens with non-ASCII characters (in the header bytes each kind of client sends).

Redis is stopped mid-test: deliveries get 503 with nothing half-written, /readyz
says not ready, and once Redis is back the next delivery is queued. The log gets one
structured line per delivery and never a secret, signature or query string.
"""

from __future__ import annotations

import json
import runpy
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path

import pytest
import redis as redis_lib
from click.testing import CliRunner
from conftest import RedisServer
from proctools import free_port
from rq import Queue
from web import SECRET_ENV, SECRETS, Gunicorn, delivery, hmac_hex, http, signed, start_web

from worker.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own (persisting to an append-only file, so it keeps its data
    across a restart), so stopping it disturbs no other test."""
    server = RedisServer(port=free_port(), dir=tmp_path)
    server.start(appendonly=True)
    yield server
    server.stop()


@pytest.fixture
def web(own_redis: RedisServer, tmp_path: Path) -> Iterator[Gunicorn]:
    server = start_web(own_redis.url, tmp_path)
    yield server
    server.stop()


def test_redis_down_is_503_and_the_next_delivery_after_restart_works(
        own_redis: RedisServer, web: Gunicorn) -> None:
    before = web.post("/webhook", signed(delivery("github", "push__tag_lightweight")))
    assert before.status == 202
    d = signed(delivery("gitlab", "tag_push__annotated"))
    own_redis.stop()
    down = web.post("/webhook", d)
    assert (down.status, down.json["code"]) == (503, "redis_unavailable")
    assert http("GET", f"{web.url}/readyz").status == 503
    assert http("GET", f"{web.url}/healthz").status == 200
    own_redis.start(appendonly=True)
    listed = http("GET", f"{web.url}/api/releases").json["releases"]
    assert [r["tag"] for r in listed] == ["v2.0-green"]  # the refused delivery left nothing
    up = web.post("/webhook", d)
    assert (up.status, up.json["result"]) == (202, "queued"), up.body
    assert up.json["releases"][0]["tag"] == "v2.1-blue"
    assert http("GET", f"{web.url}/readyz").status == 200


def test_one_log_line_per_delivery_and_no_secrets(web: Gunicorn) -> None:
    deliveries = [signed(delivery("github", "push__tag_lightweight")),
                  signed(delivery("gitlab", "tag_push__deleted")),
                  signed(delivery("bitbucket", "repo_push__tag"), "wrong-secret"),
                  signed(delivery("gitea", "push__tag").with_body(b"{not json"))]
    for d in deliveries:
        web.post("/webhook", d)
    http("GET", f"{web.url}/api/releases?app=myapp&token=query-secret-value")
    web.stop()  # flushes and closes the log
    log = web.log.read_text()
    lines = [json.loads(line[line.index("{"):]) for line in log.splitlines()
             if '"event": "webhook"' in line]
    assert [(entry["forge"], entry["result"], entry["status"]) for entry in lines] == [
        ("github", "queued", 202), ("gitlab", "ignored", 200),
        ("bitbucket", "error", 401), ("gitea", "error", 400)]
    assert lines[0]["tags"] == ["v2.0-green"] and lines[0]["repository"] == "acme/myapp"
    assert lines[0]["delivery"] == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert "deleted" in lines[1]["reason"]
    forbidden = [*SECRETS.values(), *SECRET_ENV.values(), "query-secret-value",
                 *(hmac_hex(s, d.body) for d in deliveries
                   for s in [*SECRETS.values(), "wrong-secret"])]
    assert not [value for value in forbidden if value in log]
    assert '"GET /api/releases HTTP/1.1" 200' in log


def test_gunicorn_settings_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9123")
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    conf = runpy.run_path(str(ROOT / "webhook" / "gunicorn_conf.py"))
    assert conf["bind"] == "0.0.0.0:9123"
    assert conf["workers"] == 3
    assert 0 < conf["timeout"] <= 30
    assert "%(U)s" in conf["access_log_format"] and "%(r)s" not in conf["access_log_format"]
    assert "%(q)s" not in conf["access_log_format"] and "%({" not in conf["access_log_format"]
    monkeypatch.delenv("PORT")
    monkeypatch.delenv("WEB_CONCURRENCY")
    conf = runpy.run_path(str(ROOT / "webhook" / "gunicorn_conf.py"))
    assert conf["bind"] == "0.0.0.0:8000"
    assert conf["workers"] >= 1


def test_a_web_process_told_not_to_poll_queues_as_one_that_polls(
        redis: redis_lib.Redis, redis_url: str, tmp_path: Path) -> None:
    """`WEB_REDIS_POLL_US=0` (never poll for Redis's reply) changes how a worker waits,
    not what it answers: the delivery is queued (every other web test polls, the
    default)."""
    web = start_web(redis_url, tmp_path, WEB_REDIS_POLL_US="0")
    try:
        answer = web.post("/webhook", signed(delivery("github", "push__tag_lightweight")))
        assert answer.status == 202, answer.body
        (release,) = answer.json["releases"]
        assert answer.json["result"] == "queued" and release["position"] == 1
        assert Queue("deploy", connection=redis).job_ids == [release["id"]]
    finally:
        web.stop()


def test_a_poll_setting_that_is_not_microseconds_stops_the_web_process(
        redis_url: str, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="gunicorn exited") as stopped:
        start_web(redis_url, tmp_path, WEB_REDIS_POLL_US="500us")
    assert ("WEB_REDIS_POLL_US: must be a whole number from 0 to 10000, got '500us'"
            in str(stopped.value))


def send(web: Gunicorn, method: str, path: str, headers: dict[str, bytes],
         body: bytes | None = None) -> int:
    """One request whose header values go out as exactly these bytes; its status."""
    connection = HTTPConnection("127.0.0.1", web.port, timeout=10)
    try:
        connection.request(method, path, body, headers)
        return connection.getresponse().status
    finally:
        connection.close()


def test_tokens_with_non_ascii_characters_match_as_clients_send_them(
        redis: redis_lib.Redis, redis_url: str, tmp_path: Path) -> None:
    """GitLab and curl send a token's UTF-8; a browser's fetch (the board) sends Latin-1."""
    web = start_web(redis_url, tmp_path, GITLAB_WEBHOOK_TOKEN="jeton-été-€",
                    BLUEGREEN_API_TOKEN="clé-€-🔑", BLUEGREEN_STATUS_TOKEN="état")
    try:
        d = delivery("gitlab", "tag_push__annotated")
        headers = {k: v.encode() for k, v in d.headers.items()}
        for token, status in (("jeton-ete-€", 401), ("jeton-été-€", 202)):
            headers["X-Gitlab-Token"] = token.encode()
            assert send(web, "POST", "/webhook", headers, d.body) == status
        for sent in ("état".encode(), "état".encode("latin-1"), "clé-€-🔑".encode()):
            assert send(web, "GET", "/status", {"Authorization": b"Bearer " + sent}) == 200
        assert send(web, "GET", "/status", {"Authorization": b"Bearer etat"}) == 401
        cli = CliRunner().invoke(main, ["abort", "myapp"], catch_exceptions=False, env={
            "BLUEGREEN_URL": web.url, "BLUEGREEN_API_TOKEN": "clé-€-🔑"})
        assert cli.exit_code == 0 and "queued abort of myapp-v2-1-blue-" in cli.output
    finally:
        web.stop()
