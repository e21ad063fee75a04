"""The web front's link to Redis (`webhook.redislink`), against a real redis-server.

Replies come back in order, error replies raise as redis-py's would (and reach a
`call`'s callback as the exception), the URL's user, password and database are used, a
dropped connection or a Redis that stops answering costs one retry and no more, on
either path, and the submission script still runs after Redis forgot it
(`GroupCommit` falls back to EVAL). A quiet `GroupCommit` sends a delivery at once, a
busy one gathers a turn's deliveries into one call (counted by Redis). A link that
polls for a due reply gets the same replies, and polls only while a reply is due and
for no longer than it is told (counted in the CPU time the process spends), on
asyncio's loop and on uvloop (the web worker's).
"""

from __future__ import annotations

import asyncio
import functools
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis as redis_lib
import uvloop
from proctools import free_port
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import ConnectionError, DataError, ResponseError, TimeoutError

from webhook.groupcommit import GroupCommit
from webhook.redislink import ClientLink, Link, RedisLink, open_link
from worker import submission
from worker.api import TagEvent
from worker.config import DEFAULT_WEB_REDIS_POLL_US, parse_settings


def run(body: Callable[[], Awaitable[Any]], loop: str = "asyncio") -> Any:
    """`body()` run to its end on asyncio's own loop, or on uvloop (the web worker's)."""
    factory = uvloop.new_event_loop if loop == "uvloop" else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(body())


def link_to(url: str, reply_timeout: float = 5.0, poll: float = 0.0) -> Link:
    return open_link(url, connect_timeout=2.0, reply_timeout=reply_timeout, poll=poll)


def link_of(kind: str, url: str, reply_timeout: float = 5.0) -> Link:
    """Ours (`redis-link`), ours polling for due replies as the web worker's does
    (`polling-link`), or redis-py's client behind the same interface (`client-link`, as
    for TLS URLs; it keeps redis-py's own timeouts)."""
    if kind == "redis-link":
        return link_to(url, reply_timeout)
    if kind == "polling-link":
        return link_to(url, reply_timeout, poll=DEFAULT_WEB_REDIS_POLL_US / 1e6)
    return ClientLink(AsyncRedis.from_url(url))


KINDS = ["redis-link", "polling-link", "client-link"]


@pytest.mark.parametrize("kind", KINDS)
def test_replies_come_back_in_order_and_errors_raise(redis_url: str, kind: str) -> None:
    async def body() -> None:
        link = link_of(kind, redis_url)
        assert isinstance(link, ClientLink if kind == "client-link" else RedisLink)
        try:
            replies = await link.execute(("SET", "k", "v"), ("INCRBY", "n", 3), ("GET", "k"))
            assert replies == [True, 3, b"v"] if kind == "client-link" else [b"OK", 3, b"v"]
            with pytest.raises(ResponseError, match="WRONGTYPE"):
                await link.execute(("INCR", "n"), ("LPUSH", "k", "x"))
            assert await link.execute(("GET", "n")) == [b"4"]  # the first of the two ran
        finally:
            await link.close()

    run(body)


def called(link: Link, *commands: tuple[Any, ...]) -> asyncio.Future[list[Any]]:
    """`Link.call` for each command, written one after the other without waiting; the
    future of what each command's own callback got, in the commands' order (a
    `ClientLink` runs each call in its own task, so the callbacks may come in any)."""
    got: dict[int, Any] = {}
    future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

    def callback(index: int, reply: Any) -> None:
        if index in got:  # raised here, the link would only log it
            if not future.done():
                future.set_exception(AssertionError(f"command {index} answered twice"))
            return
        got[index] = reply
        if len(got) == len(commands) and not future.done():
            future.set_result([got[i] for i in range(len(commands))])

    for index, command in enumerate(commands):
        link.call(command, functools.partial(callback, index))
    return future


@pytest.mark.parametrize("kind", KINDS)
def test_calls_hand_their_replies_and_error_replies_to_callbacks(redis_url: str,
                                                                 kind: str) -> None:
    async def body() -> None:
        link = link_of(kind, redis_url)
        try:
            # The first goes through `execute` (nothing is connected yet), the rest
            # are written at once on the connection it opened.
            await called(link, ("SET", "k", "v"))
            replies = await called(link, ("INCRBY", "n", 3), ("LPUSH", "k", "x"), ("GET", "k"))
            assert replies[0] == 3 and replies[2] == b"v"
            assert isinstance(replies[1], ResponseError) and "WRONGTYPE" in str(replies[1])
        finally:
            await link.close()

    run(body)


@pytest.mark.parametrize("kind", KINDS)
def test_a_command_that_cannot_be_sent_fails_alone(redis_url: str, kind: str) -> None:
    """A command with a value RESP has no form for (None) fails, through `execute` and
    through `call`'s callback (never raised from `call`), and the replies of the
    commands after it still reach their own callers."""
    async def body() -> None:
        # A reply timeout longer than the test waits: a reply handed to the wrong caller
        # would leave the right one waiting, not be papered over by the retry.
        link = link_of(kind, redis_url, reply_timeout=30)
        try:
            await link.execute(("SET", "k", "v"))  # connected: `call` writes at once
            with pytest.raises((TypeError, DataError)):
                await link.execute(("SET", "k", None))
            assert await asyncio.wait_for(link.execute(("GET", "k")), 5) == [b"v"]
            replies = await asyncio.wait_for(
                called(link, ("SET", "k", None), ("INCRBY", "n", 2), ("GET", "k")), 5)
            assert isinstance(replies[0], (TypeError, DataError))
            assert replies[1:] == [2, b"v"]
        finally:
            await link.close()

    run(body)


def test_tls_urls_go_through_redis_py() -> None:
    assert isinstance(link_to("rediss://127.0.0.1:1/0"), ClientLink)
    assert isinstance(link_to("unix:///nowhere.sock"), RedisLink)


def test_the_urls_user_password_and_database_are_used(redis: redis_lib.Redis,
                                                      redis_url: str) -> None:
    redis.acl_setuser("linker", enabled=True, passwords=["+s3cret"], commands=["+@all"],
                      keys=["*"])
    try:
        base = redis_url.rsplit("/", 1)[0].replace("redis://", "redis://linker:s3cret@")

        async def body() -> None:
            link = link_to(base + "/3")
            await link.execute(("SET", "where", "three"))
            assert await link.execute(("ACL", "WHOAMI")) == [b"linker"]
            await link.close()
            wrong = link_to(base.replace("s3cret", "wrong") + "/3")
            with pytest.raises(ConnectionError):
                await wrong.execute(("PING",))

        run(body)
    finally:
        redis.acl_deluser("linker")
    assert redis_lib.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/3").get("where") == b"three"
    assert redis.get("where") is None


def test_a_dropped_connection_is_retried_once(redis: redis_lib.Redis, redis_url: str) -> None:
    async def body() -> None:
        link = link_to(redis_url)
        await link.execute(("CLIENT", "SETNAME", "front-link"))
        killed = redis.client_kill_filter(_type="normal", skipme=True)
        assert killed >= 1
        # The first attempt meets the closed socket; the retry connects again.
        assert await link.execute(("INCR", "after")) == [1]
        await link.close()

    run(body)


def test_a_call_on_a_dropped_connection_is_retried_once(redis: redis_lib.Redis,
                                                       redis_url: str) -> None:
    async def body() -> list[Any]:
        link = link_to(redis_url)
        await link.execute(("CLIENT", "SETNAME", "front-link"))
        assert redis.client_kill_filter(_type="normal", skipme=True) >= 1
        # Written at once on the closed socket; the retry connects again.
        replies = await called(link, ("INCR", "after"))
        await link.close()
        return replies

    assert run(body) == [1]
    assert redis.get("after") == b"1"


@contextmanager
def hanging_redis(*, answer_first: bool) -> Iterator[tuple[str, list[socket.socket]]]:
    """A TCP server that accepts connections and never answers (a hung Redis); with
    `answer_first`, it answers the first command of its first connection (+PONG) and
    then nothing, on that connection or any other (a Redis that hangs once a connection
    is open). Its URL, and the connections it accepted."""
    listener = socket.create_server(("127.0.0.1", free_port()))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn = listener.accept()[0]
            except OSError:
                return
            accepted.append(conn)
            if answer_first and len(accepted) == 1:
                conn.recv(1024)
                conn.sendall(b"+PONG\r\n")

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0", accepted
    finally:
        listener.close()
        for conn in accepted:
            conn.close()


@pytest.fixture
def silent_server() -> Iterator[tuple[str, list[socket.socket]]]:
    with hanging_redis(answer_first=False) as server:
        yield server


@pytest.fixture
def answers_once() -> Iterator[tuple[str, list[socket.socket]]]:
    with hanging_redis(answer_first=True) as server:
        yield server


def test_a_redis_that_does_not_answer_times_out_after_one_retry(
        silent_server: tuple[str, list[socket.socket]]) -> None:
    url, accepted = silent_server

    async def body() -> float:
        link = link_to(url, reply_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"did not answer within 0\.3 s"):
            await link.execute(("PING",))
        return time.monotonic() - started

    waited = run(body)
    assert 0.6 <= waited < 3
    assert len(accepted) == 2  # the timed-out connection was dropped, the retry reconnected


def test_a_call_that_gets_no_answer_times_out_after_one_retry(
        answers_once: tuple[str, list[socket.socket]]) -> None:
    url, accepted = answers_once

    async def body() -> tuple[list[Any], float]:
        link = link_to(url, reply_timeout=0.3)
        assert await link.execute(("PING",)) == [b"PONG"]  # the connection is open
        started = time.monotonic()
        replies = await called(link, ("PING",))
        return replies, time.monotonic() - started

    (reply,), waited = run(body)
    assert isinstance(reply, TimeoutError) and "did not answer within 0.3 s" in str(reply)
    assert 0.6 <= waited < 3
    assert len(accepted) == 2  # the timed-out connection was dropped, the retry reconnected


async def cpu_spent(awaitable: Awaitable[Any]) -> tuple[Any, float]:
    """What `awaitable` gave, and the CPU time this process spent meanwhile."""
    started = time.process_time()
    return await awaitable, time.process_time() - started


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("poll", [0.05, 0.0])
def test_a_link_polls_only_while_a_reply_is_due_and_only_as_long_as_told(
        answers_once: tuple[str, list[socket.socket]], loop: str, poll: float) -> None:
    """Told to poll 50 ms after a write, the link spends CPU on a reply that never comes
    (up to 50 ms after each of its two writes, the command and its retry), and none
    once its replies are in; told 0, it spends none either way. The reply waited for
    takes 0.8 s (a 0.4 s timeout and one retry): a link that polled until the reply
    came, or for good once it had polled, would spend most of that."""
    url, _ = answers_once

    async def body() -> tuple[float, float]:
        link = link_to(url, reply_timeout=0.4, poll=poll)
        try:
            assert await link.execute(("PING",)) == [b"PONG"]  # answered: nothing is due
            _, idle = await cpu_spent(asyncio.sleep(0.3))
            (reply,), waiting = await cpu_spent(called(link, ("PING",)))
            assert isinstance(reply, TimeoutError)
            return idle, waiting
        finally:
            await link.close()

    idle, waiting = run(body, loop)
    assert idle < 0.03
    if poll:
        assert 0.01 < waiting < 0.4
    else:
        assert waiting < 0.03


def test_nothing_listening_is_a_connection_error() -> None:
    async def body() -> None:
        with pytest.raises(ConnectionError, match="could not connect"):
            await link_to(f"redis://127.0.0.1:{free_port()}/0").execute(("PING",))

    run(body)


SETTINGS = parse_settings({"apps": {"myapp": {"repository": "acme/myapp"}}}, {})


def planned(i: int) -> submission.Plan:
    """A delivery of a new tag push for myapp, planned."""
    event = TagEvent(forge="github", delivery_id=f"d{i}", repository="acme/myapp",
                     tag="v1.0-green", commit=f"{i:040x}", pusher="someone")
    plan = submission.plan(SETTINGS, [event], clock=time.time)
    assert plan is not None
    return plan


def submitted(group: GroupCommit, plan: submission.Plan) -> asyncio.Future[Any]:
    """The future of what `group.submit` hands the delivery's callback."""
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    group.submit(plan, future.set_result)
    return future


def test_the_submission_runs_after_redis_forgot_the_script(redis: redis_lib.Redis,
                                                           redis_url: str) -> None:
    async def body() -> list[Any]:
        group = GroupCommit(link_to(redis_url), submission.SUBMIT)
        first = await submitted(group, planned(1))
        redis.script_flush()
        return [first, await submitted(group, planned(2))]

    replies = run(body)
    assert [reply[0][0] for reply in replies] == [1, 1]  # both recorded as new releases
    assert redis.llen("rq:queue:deploy") == 2


def test_a_delivery_whose_call_cannot_be_sent_fails_alone(redis: redis_lib.Redis,
                                                          redis_url: str) -> None:
    """A planned delivery Redis cannot be sent (a None among its values) gets the error;
    the group commit is not left waiting on it, and the next delivery is recorded."""
    async def body() -> list[Any]:
        group = GroupCommit(link_to(redis_url), submission.SUBMIT)
        first = await submitted(group, planned(1))
        broken = planned(2)
        broken.args[-1] = None
        failed = await asyncio.wait_for(submitted(group, broken), 5)
        last = await asyncio.wait_for(submitted(group, planned(3)), 5)
        return [first, failed, last]

    first, failed, last = run(body)
    assert isinstance(failed, TypeError)
    assert (first[0][0], last[0][0]) == (1, 1)  # both recorded as new releases
    assert redis.llen("rq:queue:deploy") == 2


def test_a_quiet_worker_sends_at_once_and_a_busy_one_gathers_its_turn(
        redis: redis_lib.Redis, redis_url: str) -> None:
    """A delivery that finds the link idle goes at once after a call of one delivery;
    after a call of several, the deliveries of one turn of the loop share the next."""
    def script_calls() -> int:
        stats = redis.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))

    async def body() -> list[int]:
        group = GroupCommit(link_to(redis_url), submission.SUBMIT)
        await submitted(group, planned(0))  # connected, the script known, the last call of one
        calls = [script_calls()]
        # One turn: the first goes at once, alone; the two after it wait for its reply.
        await asyncio.gather(*(submitted(group, planned(i)) for i in (1, 2, 3)))
        calls.append(script_calls())
        # After that call of two, one turn's three share one call.
        await asyncio.gather(*(submitted(group, planned(i)) for i in (4, 5, 6)))
        calls.append(script_calls())
        return calls

    first, after_quiet, after_busy = run(body)
    assert (after_quiet - first, after_busy - after_quiet) == (2, 1)
    assert redis.llen("rq:queue:deploy") == 7
