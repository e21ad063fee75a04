"""The web process as the Procfile runs it: Redis going away, logs, gunicorn settings,
tokens with non-ASCII characters (in the header bytes each kind of client sends), the
last delivery counts of a stopping worker.

Redis is stopped mid-test: deliveries get 503 with nothing half-written, /readyz
says not ready, and once Redis is back the next delivery is queued; a worker stopped
while Redis is away writes its counts if Redis is back within a few seconds. The log
gets one structured line per delivery and never a secret, signature or query string.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import runpy
import signal
import time
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path

import pytest
import redis as redis_lib
from click.testing import CliRunner
from conftest import RedisServer
from proctools import free_port
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue
from web import SECRET_ENV, SECRETS, Gunicorn, delivery, hmac_hex, http, signed, start_web

from webhook.front import COUNT_LAST_SECONDS
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


@pytest.mark.parametrize(("cores", "workers"), [(1, 2), (2, 2), (4, 4), (16, 8)])
def test_gunicorn_runs_one_worker_per_core_at_least_two_at_most_eight(
        monkeypatch: pytest.MonkeyPatch, cores: int, workers: int) -> None:
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    monkeypatch.setattr(multiprocessing, "cpu_count", lambda: cores)  # the machine's cores
    assert runpy.run_path(str(ROOT / "webhook" / "gunicorn_conf.py"))["workers"] == workers
    monkeypatch.setenv("WEB_CONCURRENCY", "zero")  # not a count: the default, not a crash
    assert runpy.run_path(str(ROOT / "webhook" / "gunicorn_conf.py"))["workers"] == workers


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


def delivery_counts(web: Gunicorn) -> dict[str, float]:
    """`bluegreen_webhook_deliveries_total` by result, as GET /metrics reports it."""
    text = http("GET", f"{web.url}/metrics").body.decode()
    return {s.labels["result"]: s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == "bluegreen_webhook_deliveries_total"}


REFUSED = [signed(delivery("github", "push__tag_lightweight"), "wrong-secret")] * 3
IGNORED = [signed(delivery("github", "ping__hook"))] * 2


def refuse_and_ignore(web: Gunicorn) -> None:
    """Three refused deliveries and two ignored ones: counts Redis has yet to get."""
    assert [web.post("/webhook", d).status for d in REFUSED + IGNORED] == [401] * 3 + [200] * 2


def counts_in_a_new_web_process(redis: RedisServer, tmp_path: Path) -> dict[str, float]:
    """The delivery counts a freshly started web process reads back from `redis`."""
    again = start_web(redis.url, tmp_path)
    try:
        return delivery_counts(again)
    finally:
        again.stop()


def test_a_stopping_web_process_writes_its_last_counts_once_redis_is_back(
        own_redis: RedisServer, web: Gunicorn, tmp_path: Path) -> None:
    """Refused and ignored deliveries are counted in memory and written to Redis in the
    background. A worker told to stop while Redis is down keeps trying for a few seconds:
    Redis back within them, the metric misses none of them."""
    own_redis.stop()
    refuse_and_ignore(web)
    assert web.proc is not None
    web.proc.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    own_redis.start(appendonly=True)
    assert web.proc.wait(15) == 0
    assert counts_in_a_new_web_process(own_redis, tmp_path) == {"error": 3, "ignored": 2}


def test_a_stopping_web_process_waits_for_a_count_write_under_way(
        own_redis: RedisServer, web: Gunicorn, tmp_path: Path) -> None:
    """A write of the counts that Redis has not answered yet when the worker is told to
    stop is waited for (here Redis holds writes back for a second and a half)."""
    conn = redis_lib.Redis.from_url(own_redis.url)
    conn.execute_command("CLIENT", "PAUSE", 1500, "WRITE")
    refuse_and_ignore(web)
    time.sleep(0.3)  # the counts are written 50 ms after a delivery: that write now waits
    web.stop()
    assert counts_in_a_new_web_process(own_redis, tmp_path) == {"error": 3, "ignored": 2}


def test_a_stopping_web_process_gives_up_on_its_counts_after_a_few_seconds(
        own_redis: RedisServer, web: Gunicorn) -> None:
    """With Redis away for good, a stopping worker waits no more than a few seconds for
    it, and says in the log how many counts it gave up on."""
    own_redis.stop()
    refuse_and_ignore(web)
    assert web.proc is not None
    started = time.monotonic()
    web.proc.send_signal(signal.SIGTERM)
    assert web.proc.wait(15) == 0
    assert time.monotonic() - started < COUNT_LAST_SECONDS + 3
    given_up = re.findall(r"gave up on (\d+) delivery counts: Redis did not confirm them "
                          rf"within {COUNT_LAST_SECONDS:g} s of the worker stopping "
                          r"\(last error: could not connect to Redis", web.log.read_text())
    assert sum(map(int, given_up)) == 5
