"""The web process's asyncio front (`webhook.asgi`), in process and through gunicorn.

The front answers deliveries itself and hands every other route to Flask; the Flask
view stays what the test client and any WSGI server run. Both must give the same
answer to the same delivery, record the same things, and count it the same way, on
either of the front's paths: ASGI (`Front.deliver`, called directly here) and the
protocol's own (`FrontProtocol`, through a uvicorn server in a thread of the test).
Deliveries waiting on Redis together go in one script call (group commit): checked
by counting the calls Redis saw, and by sending one delivery many times at once
(exactly one release). The request-head limits and the drained oversized body are
checked through gunicorn, where they live.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis as redis_lib
import uvicorn
import yaml
from procs import wait_until
from proctools import free_port
from web import (
    API_TOKEN,
    CONFIG_YAML,
    SECRET_ENV,
    Delivery,
    Gunicorn,
    delivery,
    http,
    signed,
    with_delivery_id,
)

from webhook import create_app
from webhook.asgi import Front, FrontProtocol, Worker
from webhook.redislink import RedisLink
from worker import metrics
from worker.api import Engine, TagEvent
from worker.config import parse_settings

RELEASE_ID = re.compile(r"(myapp|website)-[a-z0-9-]+-[0-9a-f]{8}")


def settings_for(redis_url: str) -> Any:
    return parse_settings(yaml.safe_load(CONFIG_YAML), {**SECRET_ENV, "REDIS_URL": redis_url})


async def asgi_post(front: Front, path: str, d: Delivery,
                    chunks: list[bytes] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request through the ASGI front, in process: status, headers, body."""
    headers = [(k.lower().encode(), v.encode()) for k, v in d.headers.items()]
    if chunks is None:
        headers.append((b"content-length", str(len(d.body)).encode()))
        chunks = [d.body]
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                for i, c in enumerate(chunks)]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": headers,
             "http_version": "1.1", "client": ("127.0.0.1", 1)}
    await front(scope, receive, send)
    start, *bodies = sent
    return (start["status"], {k.decode(): v.decode() for k, v in start["headers"]},
            b"".join(b.get("body", b"") for b in bodies))


def corpus() -> list[tuple[str, Delivery]]:
    """Deliveries covering every row of the webhook table, in an order that makes
    duplicates (the second copy of a push)."""
    push = signed(delivery("github", "push__tag_lightweight"))
    form = signed(push.with_headers(Content_Type="application/x-www-form-urlencoded"))
    return [
        ("/webhook", push),
        ("/webhook", push),  # same delivery id: duplicate
        ("/webhook", signed(with_delivery_id(push, "another-delivery"))),  # same commit
        ("/webhook", signed(delivery("gitlab", "tag_push__annotated"))),
        ("/webhook/gitea", signed(delivery("gitea", "push__tag"))),
        ("/webhook", signed(delivery("bitbucket", "repo_push__tag"))),
        ("/webhook", signed(delivery("github", "ping__hook"))),
        ("/webhook", signed(delivery("github", "push__branch"))),
        ("/webhook", signed(delivery("github", "push__tag_nonmatching"))),
        ("/webhook", signed(delivery("github", "push__unknown_repo"))),
        ("/webhook", signed(delivery("gitlab", "tag_push__deleted"))),
        ("/webhook", signed(delivery("github", "push__tag_lightweight"), "wrong-secret")),
        ("/webhook", signed(push.with_body(b"{not json"))),
        ("/webhook", form),
        ("/webhook", signed(push.with_headers(Content_Type="text/plain"))),
        ("/webhook", Delivery("github", {"Content-Type": "application/json"}, b"{}")),
        ("/webhook/nosuchforge", push),
        ("/webhook", signed(delivery("github", "push__malformed_no_repository"))),
        ("/webhook", signed(with_delivery_id(push.with_body(  # a pusher that is not text
            push.body.replace(b'"name": "octocat"', b'"name": "\\udc80"', 1)), "surrogate"))),
        ("/webhook", signed(push.with_body(b'{"pad": "' + b"x" * (1024 * 1024) + b'"}'))),
    ]


def normalised(status: int, body: bytes) -> tuple[int, Any]:
    return status, json.loads(RELEASE_ID.sub("<release>", body.decode()))


def recorded(redis: redis_lib.Redis) -> dict[str, Any]:
    """What the deliveries left in Redis, without the random parts of release ids."""
    keys = sorted(RELEASE_ID.sub("<release>", k.decode()) for k in redis.keys("*"))
    webhooks = redis.hgetall("bluegreen:metrics:webhooks")
    return {"keys": keys, "queue": redis.llen("rq:queue:deploy"),
            "metrics": {k.decode(): int(v) for k, v in webhooks.items()}}


def through_flask_view(redis_url: str, redis: redis_lib.Redis
                       ) -> tuple[list[tuple[int, Any]], dict[str, Any]]:
    """The corpus's answers from the Flask view, and what it left in Redis (emptied
    again for the front's turn)."""
    client = create_app(settings_for(redis_url), redis).test_client()
    answers = []
    for path, d in corpus():
        answer = client.post(path, data=d.body, headers=d.headers)
        answers.append(normalised(answer.status_code, answer.data))
    state = recorded(redis)
    redis.flushall()
    return answers, state


def test_front_and_flask_view_answer_record_and_count_alike(
        redis_url: str, redis: redis_lib.Redis) -> None:
    by_flask, flask_state = through_flask_view(redis_url, redis)

    async def run() -> list[tuple[int, Any]]:
        front = Front(create_app(settings_for(redis_url), redis))
        answers = []
        for path, d in corpus():
            status, headers, body = await asgi_post(front, path, d)
            assert headers["content-type"] == "application/json"
            answers.append(normalised(status, body))
        await asyncio.sleep(0.2)  # refused and ignored deliveries are counted every 50 ms
        return answers

    by_front = asyncio.run(run())
    assert by_front == by_flask
    assert recorded(redis) == flask_state
    assert [s for s, _ in by_front][:6] == [202, 200, 200, 202, 200, 200]  # same commit
    assert {s for s, _ in by_front[6:]} == {200, 401, 400, 415, 404, 413}
    assert flask_state["queue"] == 2


def test_counts_of_refused_deliveries_wait_out_a_redis_outage(
        redis_url: str, redis: redis_lib.Redis) -> None:
    """Refused and ignored deliveries are counted in the worker and written every 50 ms;
    while Redis refuses the write the counts are kept, and they land once it works."""
    bad = signed(delivery("github", "push__tag_lightweight"), "wrong-secret")
    ping = signed(delivery("github", "ping__hook"))

    async def run() -> None:
        front = Front(create_app(settings_for(redis_url), redis))
        for d in (bad, bad, ping):
            await asgi_post(front, "/webhook", d)
        redis.execute_command("ACL", "SETUSER", "default", "-hincrby")  # Redis refuses the count
        try:
            await asyncio.sleep(0.3)
            assert redis.hgetall(metrics.WEBHOOKS_KEY) == {}
        finally:
            redis.execute_command("ACL", "SETUSER", "default", "+hincrby")
        await front.flush_counts()

    asyncio.run(run())
    counted = {k.decode(): int(v) for k, v in redis.hgetall(metrics.WEBHOOKS_KEY).items()}
    assert counted == {metrics.webhook_field("github", "error"): 2,
                       metrics.webhook_field("github", "ignored"): 1}


def test_a_chunked_body_over_the_limit_is_413_and_records_nothing(
        redis_url: str, redis: redis_lib.Redis) -> None:
    push = signed(delivery("github", "push__tag_lightweight"))

    async def both() -> list[tuple[int, dict[str, str], bytes]]:
        front = Front(create_app(settings_for(redis_url), redis))
        return [await asgi_post(front, "/webhook", push, chunks=[b"x" * 400_000] * 3),
                await asgi_post(front, "/webhook", push,
                                chunks=[push.body[:100], push.body[100:]])]

    (status, _, body), (accepted, _, _) = asyncio.run(both())
    assert (status, json.loads(body)["code"]) == (413, "payload_too_large")
    assert accepted == 202
    assert redis.llen("rq:queue:deploy") == 1


def test_a_body_that_does_not_arrive_in_time_is_408_and_closes(
        redis_url: str, redis: redis_lib.Redis) -> None:
    push = signed(delivery("github", "push__tag_lightweight"))
    headers = [(k.lower().encode(), v.encode()) for k, v in push.headers.items()]
    headers.append((b"content-length", str(len(push.body)).encode()))
    sent: list[dict[str, Any]] = []
    first = [{"type": "http.request", "body": push.body[:100], "more_body": True}]

    async def receive() -> dict[str, Any]:
        if first:
            return first.pop()
        await asyncio.Event().wait()  # the rest never comes
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> None:
        front = Front(create_app(settings_for(redis_url), redis), body_timeout=0.2)
        scope = {"type": "http", "method": "POST", "path": "/webhook", "headers": headers,
                 "http_version": "1.1", "client": ("127.0.0.1", 1)}
        await asyncio.wait_for(front(scope, receive, send), 5)

    asyncio.run(run())
    start, body = sent
    assert start["status"] == 408 and (b"connection", b"close") in start["headers"]
    assert json.loads(body["body"])["code"] == "request_timeout"
    assert redis.keys("bluegreen:release*") == [] and redis.keys("rq:*") == []


def test_deliveries_waiting_together_share_script_calls(
        redis_url: str, redis: redis_lib.Redis) -> None:
    template = signed(delivery("github", "push__tag_lightweight"))
    pushes = []
    for i in range(60):
        body = template.body.replace(b"6dcb09b5b57875f334f61aebed695e2e4193db5e",
                                     f"{i + 1:040x}".encode())
        pushes.append(signed(with_delivery_id(template.with_body(body), f"burst-{i}")))
    redis.config_resetstat()

    async def burst() -> list[tuple[int, dict[str, str], bytes]]:
        front = Front(create_app(settings_for(redis_url), redis))
        return await asyncio.gather(*[asgi_post(front, "/webhook", d) for d in pushes])

    answers = asyncio.run(burst())
    assert [status for status, _, _ in answers] == [202] * 60
    positions = sorted(json.loads(body)["releases"][0]["position"] for _, _, body in answers)
    assert positions == list(range(1, 61))  # each its own place: none lost, none twice
    assert redis.llen("rq:queue:deploy") == 60
    calls = redis.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    assert 1 <= calls < 60, calls  # fewer calls than deliveries: they were grouped


def test_one_delivery_sent_many_times_at_once_makes_one_release(
        redis_url: str, redis: redis_lib.Redis) -> None:
    push = signed(delivery("github", "push__tag_lightweight"))

    async def burst() -> list[tuple[int, dict[str, str], bytes]]:
        front = Front(create_app(settings_for(redis_url), redis))
        return await asyncio.gather(*[asgi_post(front, "/webhook", push) for _ in range(30)])

    answers = asyncio.run(burst())
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [200] * 29 + [202]
    named = {json.loads(body).get("release") or json.loads(body)["releases"][0]["id"]
             for _, _, body in answers}
    assert len(named) == 1
    assert redis.llen("rq:queue:deploy") == 1


def test_a_refused_script_call_fails_every_delivery_in_it_and_writes_nothing(
        redis: redis_lib.Redis, redis_url: str) -> None:
    redis.acl_setuser("norqueue", enabled=True, passwords=["+pw"], commands=["+@all"],
                      keys=["bluegreen:*", "rq:job:*", "rq:queues"], reset_keys=True)
    try:
        refusing = redis_url.replace("redis://", "redis://norqueue:pw@")
        pushes = [signed(with_delivery_id(delivery("github", "push__tag_lightweight"), f"r{i}"))
                  for i in range(5)]

        async def burst() -> list[tuple[int, dict[str, str], bytes]]:
            front = Front(create_app(settings_for(refusing), redis))
            return await asyncio.gather(*[asgi_post(front, "/webhook", d) for d in pushes])

        answers = asyncio.run(burst())
    finally:
        redis.acl_deluser("norqueue")
    assert [(status, json.loads(body)["code"]) for status, _, body in answers] == [
        (503, "redis_unavailable")] * 5
    assert redis.keys("bluegreen:release*") == [] and redis.keys("rq:*") == []


def test_planning_a_submission_talks_to_no_redis() -> None:
    """The asyncio front plans on its event loop: a blocking call there (rq reads the
    server's version on its enqueue path) would stall every request of the worker
    while Redis is slow or away. Planning against an address nothing listens on works."""
    unreachable = redis_lib.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=5)
    settings = settings_for("redis://127.0.0.1:1/0")
    push = TagEvent(forge="github", delivery_id="d", repository="acme/myapp",
                    tag="v3.0-green", commit="c" * 40, pusher="someone")
    planned = Engine(settings, unreachable).plan([push], count_as="github")
    assert planned is not None and [r.tag for r in planned.candidates] == ["v3.0-green"]


@pytest.mark.parametrize(("value", "seconds"), [(None, 0.0005), ("0", 0.0), ("250", 0.00025)])
def test_the_fronts_redis_link_polls_as_the_settings_say(value: str | None,
                                                         seconds: float) -> None:
    """`WEB_REDIS_POLL_US` reaches the link (what polling does is tested with the link,
    in tests/test_redislink.py). Nothing connects: the link opens at first use."""
    environ = {**SECRET_ENV, "REDIS_URL": "redis://127.0.0.1:1/0"}
    if value is not None:
        environ["WEB_REDIS_POLL_US"] = value
    front = Front(create_app(parse_settings(yaml.safe_load(CONFIG_YAML), environ)))
    link = front._linked()
    assert isinstance(link, RedisLink) and link.poll == pytest.approx(seconds)


def raw_request(web: Gunicorn, head: bytes, *, reads: int = 1) -> bytes:
    """Send `head` on a fresh connection, in `reads` pieces far enough apart for the
    server to read each alone, and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", web.port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        size = -(-len(head) // reads)
        try:
            for start in range(0, len(head), size):
                sock.sendall(head[start:start + size])
                if reads > 1:
                    time.sleep(0.05)
        except OSError:
            pass  # the server may close before taking it all; its answer is what counts
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def refusal(answer: bytes) -> tuple[int, str]:
    """A refused head's status and error code, checking it is SPEC's JSON error shape
    and says the connection closes."""
    head, body = answer.split(b"\r\n\r\n", 1)
    fields = head.lower().split(b"\r\n")[1:]
    assert b"content-type: application/json" in fields and fields.count(b"connection: close") == 1
    error = json.loads(body)
    assert error["result"] == "error" and error["message"], error
    return status_of(answer), error["code"]


def test_request_heads_over_the_limits_are_refused(web: Gunicorn) -> None:
    """414 for the request line, 431 for the header fields, as gunicorn (whose limits
    these are), Apache and Node answer them, in SPEC's JSON error shape."""
    long_line = b"GET /healthz?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    many = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-%d: y\r\n" % i for i in range(150)) + b"\r\n"
    huge = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 200_000 + b"\r\n\r\n"
    assert refusal(raw_request(web, long_line)) == (414, "uri_too_long")
    for head in (many, huge):
        assert refusal(raw_request(web, head)) == (431, "request_header_fields_too_large")
    ok = raw_request(web, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("reads", [1, 3, 20])
def test_a_head_over_64_kib_is_refused_however_it_arrives(web: Gunicorn, reads: int) -> None:
    """In one read the head is parsed whole before a read could be counted; across reads
    httptools buffers it: both are refused. A head under the limit, in pieces, is served."""
    over = (b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: "
            + b"b" * 150_000 + b"\r\n\r\n")
    assert refusal(raw_request(web, over, reads=reads)) == (431,
                                                            "request_header_fields_too_large")
    under = (b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
             + b"".join(b"X-%d: %s\r\n" % (i, b"u" * 1000) for i in range(60)) + b"\r\n")
    assert raw_request(web, under, reads=reads).startswith(b"HTTP/1.1 200 ")


def send_all_then_read(sock: socket.socket, data: bytes, *, pause: float) -> bytes:
    """Send `data` in 64 KiB writes `pause` s apart, as a client that does not wait for an
    answer; then half-close and read everything the server sends back."""
    for start in range(0, len(data), 64 * 1024):
        sock.sendall(data[start:start + 64 * 1024])
        time.sleep(pause)
    sock.shutdown(socket.SHUT_WR)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def waiting_head(path: str, length: int) -> bytes:
    """A delivery's head from a client that waits for `100 Continue` before its body."""
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
            "Expect: 100-continue\r\n\r\n").encode()


@pytest.mark.parametrize(("path", "length", "status"), [
    ("/webhook", 20 * 1024 * 1024, 413),           # declared over the limit
    ("/webhook/nosuchforge", 100, 404),            # refused from its head
    ("/api/apps/myapp/promote", 20 * 1024 * 1024, 401),  # Flask refuses it unread
])
def test_a_refusal_is_the_final_status_instead_of_100_continue(
        web: Gunicorn, path: str, length: int, status: int) -> None:
    """RFC 9110 §10.1.1: a client waiting for `100 Continue` whose request is refused from
    its head gets the final status at once, is never asked for its body, and the
    connection closes (`raw_request` reads until it does)."""
    answer = raw_request(web, waiting_head(path, length))
    assert status_of(answer) == status and b" 100 " not in answer
    assert b"connection: close" in answer.lower()
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["result"] == "error"


def test_a_body_sent_without_waiting_for_100_continue_does_not_reset_the_refusal(
        web: Gunicorn) -> None:
    """A client may send its body without waiting (RFC 9110 §10.1.1): what arrives after
    the refusal is read and dropped until the client is done, so every write succeeds."""
    body = b"x" * (3 * 1024 * 1024)
    with socket.create_connection(("127.0.0.1", web.port), timeout=10) as sock:
        sock.sendall(waiting_head("/webhook", len(body) + 1))  # over the 1 MiB limit
        answer = send_all_then_read(sock, body, pause=0.001)
    assert status_of(answer) == 413 and b" 100 " not in answer


def test_garbage_after_a_refused_head_is_dropped_quietly(web: Gunicorn) -> None:
    """A request the parser refuses at once, followed in the same read by more than the
    head limit: one 400, the rest drained, and nothing in the log but the refusal."""
    answer = raw_request(web, b"NOT HTTP AT ALL\r\n" + b"x" * 100_000)
    assert refusal(answer) == (400, "bad_request") and answer.count(b"HTTP/1.1") == 1
    assert raw_request(web, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                       ).startswith(b"HTTP/1.1 200 ")
    log = web.log.read_text()
    assert "Traceback" not in log and "Fatal error" not in log, log[-2000:]


def test_an_oversized_body_gets_its_413_not_a_reset(web: Gunicorn,
                                                    redis: redis_lib.Redis) -> None:
    push = signed(delivery("github", "push__tag_lightweight"))
    big = push.with_body(b'{"pad": "' + b"x" * (2 * 1024 * 1024) + b'"}')
    statuses = [http("POST", f"{web.url}/webhook", big.body, big.headers).status
                for _ in range(25)]
    assert statuses == [413] * 25
    field = metrics.webhook_field("github", "error")
    # Counts are written up to 50 ms after the answers (left late, they would land in
    # the next test's Redis).
    wait_until(lambda: redis.hget(metrics.WEBHOOKS_KEY, field) == b"25", 5, "25 counted")


def test_other_routes_reach_flask_through_the_front(web: Gunicorn) -> None:
    assert http("GET", f"{web.url}/healthz").status == 200
    answer = http("GET", f"{web.url}/webhook")
    assert answer.status == 405 and "POST" in answer.headers["Allow"]
    assert http("GET", f"{web.url}/nowhere").status == 404
    board = http("GET", f"{web.url}/")
    assert board.status == 200 and b"<html" in board.body.lower()


def test_a_path_cannot_forge_an_access_line(web: Gunicorn) -> None:
    """The access line names the percent-decoded path: a `%0a` in the URL must not end
    the line and start one the client wrote."""
    fake = '10.6.6.6 "GET /admin HTTP/1.1" 200 0 0ms'
    forged = "/forged%0A" + fake.replace(" ", "%20").replace('"', "%22") + "%5C%E2%80%A8"
    head = f"GET {forged} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert raw_request(web, head.encode()).startswith(b"HTTP/1.1 404 ")
    wait_until(lambda: "/forged" in web.log.read_text(), 5, "the access line")
    lines = web.log.read_text().splitlines()
    assert not [line for line in lines if line.startswith("10.6.6.6")]
    (line,) = [line for line in lines if "/forged" in line]
    assert ('"GET /forged\\n10.6.6.6 \\x22GET /admin HTTP/1.1\\x22 200 0 0ms\\\\\\u2028 '
            'HTTP/1.1" 404 ') in line


@contextmanager
def served(front: Front) -> Iterator[str]:
    """`front` behind uvicorn with `FrontProtocol`, as a web worker serves it, in a
    thread of this process (so the test can read what the front did); its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(front, host="127.0.0.1", port=port,
                                           log_level="warning", **Worker.CONFIG_KWARGS))
    assert Worker.CONFIG_KWARGS["http"] is FrontProtocol
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), 10, "uvicorn to start")
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def asgi_deliveries(front: Front) -> list[str]:
    """Paths of the deliveries that reach `Front.deliver` (the ASGI path) from now on."""
    seen: list[str] = []
    deliver = front.deliver

    async def counted(forge_name: str | None, scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["path"])
        await deliver(forge_name, scope, receive, send)

    front.deliver = counted  # type: ignore[method-assign]
    return seen


def exchange(url: str, data: bytes, answers: int, timeout: float = 10) -> list[bytes]:
    """Send `data` on one connection and read `answers` responses (each head + body by
    its Content-Length) or until the server closes."""
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        buffer, responses = b"", []
        while len(responses) < answers:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end >= 0:
                length = int(re.search(rb"content-length: (\d+)", buffer[:head_end],
                                       re.I).group(1))  # type: ignore[union-attr]
                end = head_end + 4 + length
                if len(buffer) >= end:
                    responses.append(buffer[:end])
                    buffer = buffer[end:]
                    continue
            chunk = sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
    return responses


def request_bytes(d: Delivery, path: str = "/webhook", **extra: str) -> bytes:
    headers = {**d.headers, "Host": "x", "Content-Length": str(len(d.body)), **extra}
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + d.body


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_the_protocol_answers_records_and_counts_as_the_flask_view(
        redis_url: str, redis: redis_lib.Redis) -> None:
    by_flask, flask_state = through_flask_view(redis_url, redis)

    front = Front(create_app(settings_for(redis_url), redis))
    through_asgi = asgi_deliveries(front)
    by_protocol = []
    with served(front) as url:
        for path, d in corpus():
            answer = http("POST", url + path, d.body, d.headers)
            assert answer.headers["content-type"] == "application/json"
            by_protocol.append(normalised(answer.status, answer.body))
        assert by_protocol == by_flask
        # refused and ignored deliveries are counted every 50 ms
        wait_until(lambda: recorded(redis) == flask_state, 5, "the Flask view's records")
    # Only the body declared over the limit went through ASGI (its 413 drains the body).
    assert through_asgi == ["/webhook"]
    assert by_protocol[-1][0] == 413


def test_pipelined_requests_are_answered_in_order(redis_url: str, redis: redis_lib.Redis
                                                  ) -> None:
    first = signed(with_delivery_id(delivery("github", "push__tag_lightweight"), "pipe-1"))
    second = signed(delivery("gitlab", "tag_push__annotated"))
    refused = signed(delivery("github", "push__tag_lightweight"), "wrong-secret")
    health = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    front = Front(create_app(settings_for(redis_url), redis))
    with served(front) as url:
        answers = exchange(url, request_bytes(first) + request_bytes(refused) + health
                           + request_bytes(second) + request_bytes(first), answers=5)
    assert [status_of(a) for a in answers] == [202, 401, 200, 202, 200]
    bodies = [json.loads(a.split(b"\r\n\r\n", 1)[1]) for a in answers]
    assert bodies[0]["releases"][0]["tag"] == "v2.0-green"
    assert bodies[3]["releases"][0]["tag"] == "v2.1-blue"
    assert bodies[4]["result"] == "duplicate"
    assert bodies[4]["release"] == bodies[0]["releases"][0]["id"]
    assert redis.llen("rq:queue:deploy") == 2


def test_a_trickled_body_is_408_and_closes_and_records_nothing(
        redis_url: str, redis: redis_lib.Redis) -> None:
    push = signed(delivery("github", "push__tag_lightweight"))
    front = Front(create_app(settings_for(redis_url), redis), body_timeout=0.3)
    with served(front) as url:
        started = time.monotonic()
        (answer,) = exchange(url, request_bytes(push)[:-100], answers=1)
        waited = time.monotonic() - started
        assert status_of(answer) == 408 and answer.lower().count(b"connection: close") == 1
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["code"] == "request_timeout"
        assert 0.3 <= waited < 5
        assert http("GET", url + "/healthz").status == 200  # the server carries on
    assert redis.keys("bluegreen:release*") == [] and redis.keys("rq:*") == []


def test_a_late_body_still_coming_gets_its_408_not_a_reset(
        redis_url: str, redis: redis_lib.Redis) -> None:
    """A delivery's body that misses the deadline but keeps coming after the 408: the
    connection closes as any answer before its body is all in does (lingering), so the
    client's writes succeed and it reads the 408 instead of a reset."""
    push = signed(delivery("github", "push__tag_lightweight"))
    padded = push.with_body(push.body[:-1] + b', "pad": "' + b"x" * 600_000 + b'"}')
    front = Front(create_app(settings_for(redis_url), redis), body_timeout=0.3)
    through_asgi = asgi_deliveries(front)
    data = request_bytes(padded)
    with served(front) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(data[:len(data) - 500_000])
            time.sleep(0.6)  # the 408 is written meanwhile
            answer = send_all_then_read(sock, data[len(data) - 500_000:], pause=0.002)
    assert status_of(answer) == 408 and answer.lower().count(b"connection: close") == 1
    assert through_asgi == []  # the fast path's 408
    assert redis.keys("bluegreen:release*") == [] and redis.keys("rq:*") == []


def test_a_client_gone_mid_body_records_nothing_and_is_counted(
        redis_url: str, redis: redis_lib.Redis) -> None:
    push = signed(delivery("github", "push__tag_lightweight"))
    front = Front(create_app(settings_for(redis_url), redis))
    with served(front) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(request_bytes(push)[:-100])
        wait_until(lambda: redis.hgetall(metrics.WEBHOOKS_KEY), 5, "the delivery counted")
    assert {k.decode(): int(v) for k, v in redis.hgetall(metrics.WEBHOOKS_KEY).items()} == {
        metrics.webhook_field("github", "error"): 1}
    assert redis.keys("bluegreen:release*") == [] and redis.keys("rq:*") == []


def test_http_1_0_and_expect_continue_deliveries_are_answered(
        redis_url: str, redis: redis_lib.Redis) -> None:
    old = signed(with_delivery_id(delivery("github", "push__tag_lightweight"), "old"))
    waiting = signed(delivery("gitlab", "tag_push__annotated"))
    front = Front(create_app(settings_for(redis_url), redis))
    through_asgi = asgi_deliveries(front)
    with served(front) as url:
        one_oh = request_bytes(old).replace(b"HTTP/1.1", b"HTTP/1.0", 1)
        (answer,) = exchange(url, one_oh, answers=2)  # the server closes after one
        assert status_of(answer) == 202 and answer.lower().count(b"connection: close") == 1
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            head, body = request_bytes(waiting, Expect="100-continue").split(b"\r\n\r\n", 1)
            sock.sendall(head + b"\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 100 ")
            sock.sendall(body)
            assert status_of(sock.recv(65536)) == 202
    assert through_asgi == ["/webhook"]  # the one that asked to continue
    assert redis.llen("rq:queue:deploy") == 2


def test_other_routes_get_their_body_in_time_or_408(redis_url: str,
                                                    redis: redis_lib.Redis) -> None:
    """The bridge's threads read bodies the loop has read already: a trickled body to
    any route is 408 at the deadline and closes, and holds no thread; whole ones reach
    Flask as sent."""
    front = Front(create_app(settings_for(redis_url), redis), body_timeout=0.3)
    body = json.dumps({"release": "nope"}).encode()
    head = (b"POST /api/apps/myapp/promote HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + API_TOKEN.encode() + b"\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    with served(front) as url:
        started = time.monotonic()
        (late,) = exchange(url, head + body[:5], answers=1)
        assert status_of(late) == 408 and b"connection: close" in late.lower()
        assert 0.3 <= time.monotonic() - started < 5
        (whole,) = exchange(url, head + body, answers=1)
        assert status_of(whole) == 404  # Flask read the body: no release "nope"
        assert b"nope" in whole
        chunked = (b"POST /api/apps/myapp/promote HTTP/1.1\r\nHost: x\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n"
                   + b"100000\r\n" + b"x" * 0x100000 + b"\r\n" + b"10\r\n" + b"y" * 16
                   + b"\r\n0\r\n\r\n")
        (too_big,) = exchange(url, chunked, answers=1)
        assert status_of(too_big) == 413

