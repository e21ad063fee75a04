"""`Front`, the ASGI application a web worker serves: forge deliveries on the event
loop, every other route in Flask.

A delivery (`POST /webhook`, `POST /webhook/<forge>`) runs the steps of
`webhook.intake` on the loop (`Front.open`, `Front.run`, `Front.conclude`) and sends
its submission through the worker's one Redis link (`webhook.redislink`), grouped with
the deliveries waiting at the same time (`webhook.groupcommit`). The fast path
(`webhook.protocol.FrontProtocol`) calls those steps from the parser's callbacks;
`Front.deliver` runs them for the deliveries it leaves to uvicorn (a chunked body,
`Expect: 100-continue`, a pipelined request). `Front` also owns the counts of refused
and ignored deliveries (added up, written every `COUNT_FLUSH_SECONDS`, and the last of
them when the worker stops: `Front.last_counts`), the Flask bridge (`a2wsgi`, a small
thread pool, the body read on the loop first within the same deadline as a delivery's)
with its access line (its path escaped: `loggable`), and the worker's lifespan.
Reading the request is left to `webhook.wire`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from a2wsgi import WSGIMiddleware
from flask import Flask
from redis.exceptions import RedisError

from webhook import errors
from webhook.app import REDIS_CONNECT_TIMEOUT, REDIS_SOCKET_TIMEOUT
from webhook.context import EXTENSION, Web
from webhook.forges import Forge
from webhook.groupcommit import GroupCommit
from webhook.intake import (
    Answer,
    Outcome,
    Pending,
    answer,
    log_delivery,
    open_delivery,
    read_pushes,
    refuse,
)
from webhook.redislink import Link, open_link
from webhook.wire import (
    CLOSE,
    DISCARD_MAX,
    Body,
    Headers,
    Message,
    Receive,
    Scope,
    Send,
    awaits_continue,
    content_length,
    send_answer,
    unread,
    webhook_route,
)
from worker import metrics, submission
from worker.api import redis_unavailable

log = logging.getLogger("bluegreen.web")
access = logging.getLogger("bluegreen.access")  # `Worker` gives it gunicorn's access handlers
BRIDGE_THREADS = 8             # Flask requests at once per worker (gthread had 4 threads)
BODY_TIMEOUT_SECONDS = 30.0     # a delivery's body must arrive within this (gthread's timeout)
LOG_ESCAPES = {'"': "\\x22", "\\": "\\\\"}  # the access line quotes the path
COUNT_FLUSH_SECONDS = 0.05       # refused/ignored deliveries reach the metrics this late
COUNT_RETRY_SECONDS = 1.0
# A stopping worker tries this long to write its last counts (gunicorn's graceful_timeout
# is 20 s), every COUNT_LAST_RETRY_SECONDS, then drops them with an error line.
COUNT_LAST_SECONDS = 5.0
COUNT_LAST_RETRY_SECONDS = 0.2


def loggable(path: str) -> str:
    """`path` fit for one quoted field of an access line: the path is percent-decoded,
    so `%0a` in a URL is a newline that would start a forged line. Control and other
    non-printable characters, quotes and backslashes become escapes (`\\n`, `\\x22`,
    `\\u2028`), as nginx and Apache escape theirs; printable text stays as it reads."""
    return "".join(map(_log_char, path))


def _log_char(ch: str) -> str:
    if ch in LOG_ESCAPES:
        return LOG_ESCAPES[ch]
    return ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")


class Front:
    """The ASGI application the web process serves; see the module's docstring."""

    def __init__(self, app: Flask, *, bridge_threads: int = BRIDGE_THREADS,
                 body_timeout: float = BODY_TIMEOUT_SECONDS) -> None:
        web = app.extensions[EXTENSION]
        assert isinstance(web, Web)
        self.web = web
        self.body_timeout = body_timeout
        self.limit = int(app.config["MAX_CONTENT_LENGTH"])
        self.flask = WSGIMiddleware(app, workers=bridge_threads)  # type: ignore[arg-type]
        self._link: Link | None = None
        self._group: GroupCommit | None = None
        self._counts: Counter[str] = Counter()  # deliveries not yet added to the metrics
        self._count_timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self._stopping = False  # `last_counts` has taken over the writing of the counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            is_webhook, forge_name = webhook_route(scope["path"])
            if is_webhook and scope["method"] == "POST":
                await self.deliver(forge_name, scope, receive, send)
            else:
                await self.bridge(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        else:  # websockets: nothing here speaks them
            await send({"type": "websocket.close", "code": 1000})

    def _linked(self) -> Link:
        """This worker's link to Redis (made in the worker, on its loop, at first use)."""
        if self._link is None:
            self._link = open_link(self.web.settings.redis_url,
                                   connect_timeout=REDIS_CONNECT_TIMEOUT,
                                   reply_timeout=REDIS_SOCKET_TIMEOUT,
                                   poll=self.web.settings.web_redis_poll_us / 1e6)
        return self._link

    def _committer(self) -> GroupCommit:
        if self._group is None:
            self._group = GroupCommit(self._linked(), submission.SUBMIT)
        return self._group

    async def deliver(self, forge_name: str | None, scope: Scope, receive: Receive,
                      send: Send) -> None:
        """One forge delivery through ASGI: any the protocol did not answer itself
        (`FrontProtocol`), such as a chunked body or one sent after `Expect: 100-continue`."""
        headers = Headers(scope["headers"])
        body = Body(receive)
        outcome = Outcome()
        opened = self.open(forge_name, headers, outcome)
        if isinstance(opened, Answer):
            result = opened
        else:
            forge, length = opened
            try:
                raw = await self._read_in_time(body, length)
            except Exception as error:
                result = refuse(error, outcome)
            else:
                answered: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
                self.run(forge, headers, raw, outcome, answered.set_result)
                result = await answered
        try:
            if isinstance(opened, Answer) and awaits_continue(headers):
                result = unread(result)
            else:
                with contextlib.suppress(errors.BadRequest):
                    await body.discard(DISCARD_MAX)
            await send_answer(send, result)
        finally:
            self.conclude(outcome, result)

    def open(self, forge_name: str | None, headers: Headers, outcome: Outcome
             ) -> tuple[Forge, int | None] | Answer:
        """The delivery's forge and declared length, or the answer refusing it at once
        (before its body is read: unknown forge, too large, no secret configured)."""
        try:
            length = content_length(headers)
            return open_delivery(forge_name, headers, length, self.web.settings, self.limit,
                                 outcome), length
        except Exception as error:  # every error is answered so it is logged once
            return refuse(error, outcome)

    def run(self, forge: Forge, headers: Headers, raw: bytes, outcome: Outcome,
            respond: Callable[[Answer], None]) -> None:
        """Verify, parse, match and submit a delivery whose body is in; `respond` gets
        its answer once: at once, or when Redis has answered the submission."""
        try:
            result = read_pushes(forge, headers, headers.get("content-type"), raw,
                                 self.web.settings, outcome)
            if isinstance(result, Pending):
                with redis_unavailable():
                    planned = self.web.engine.plan(result.events, count_as=forge.name)
                if planned is not None:
                    self._committer().submit(planned, functools.partial(
                        self._submitted, result, planned, outcome, respond))
                    return
                result = answer(result, [], outcome)
        except Exception as error:
            result = refuse(error, outcome)
        respond(result)

    @staticmethod
    def _submitted(pending: Pending, planned: submission.Plan, outcome: Outcome,
                   respond: Callable[[Answer], None], reply: Any) -> None:
        try:
            with redis_unavailable():
                if isinstance(reply, Exception):
                    raise reply
                result = answer(pending, submission.answers(planned, reply), outcome)
        except Exception as error:
            result = refuse(error, outcome)
        respond(result)

    def conclude(self, outcome: Outcome, result: Answer) -> None:
        """The delivery's log line, and its count if the submission did not count it.
        Both paths run it once the answer is written (or could not be): the client
        needs only the answer, and with one connection a forge's next delivery is on
        its way while the line is written."""
        log_delivery(outcome, result.status)
        if not outcome.counted:
            self._count(outcome)

    async def _read_in_time(self, body: Body, length: int | None) -> bytes:
        """The body, or 408 if it takes longer than `body_timeout` to arrive (a client
        trickling a body must not hold a connection, and its memory, for ever)."""
        try:
            async with asyncio.timeout(self.body_timeout):
                return await body.read(length, self.limit)
        except TimeoutError as e:
            body.finished = True  # nothing more is read; the connection closes after the answer
            raise self.late_body() from e

    def late_body(self) -> errors.RequestTimeout:
        return errors.RequestTimeout(f"the body did not arrive within {self.body_timeout:g} s",
                                     headers={"Connection": "close"})

    def _count(self, outcome: Outcome) -> None:
        """Count a delivery the submission did not (refused or ignored). Counts are added
        up here and written every `COUNT_FLUSH_SECONDS`, one HINCRBY per distinct field:
        a per-delivery write, even grouped, was the largest cost of a refusal, and its
        waiting tasks piled up in a worker that could not keep pace."""
        self._counts[metrics.webhook_field(outcome.forge, outcome.result)] += 1
        self._schedule_flush(COUNT_FLUSH_SECONDS)

    def _schedule_flush(self, delay: float) -> None:
        if self._count_timer is None and not self._stopping:
            self._count_timer = asyncio.get_running_loop().call_later(delay, self._start_flush)

    def _start_flush(self) -> None:
        self._count_timer = None
        task = asyncio.get_running_loop().create_task(self.flush_counts())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def flush_counts(self) -> None:
        """Add the deliveries counted so far to the metrics in Redis. If Redis refuses,
        they are kept and tried again a second later, and a stopping worker waits a few
        seconds for Redis to take them (`last_counts`): only a crash, or Redis away for
        all of a graceful stop, loses counts (never a delivery)."""
        error = await self._write_counts()
        if error is not None:
            log.warning("could not record %d delivery counts yet: %s", self._counts.total(),
                        error)
            self._schedule_flush(COUNT_RETRY_SECONDS)

    async def _write_counts(self) -> RedisError | None:
        """Write the counts; if Redis refuses (or the write is cancelled) they are put
        back, to be written with the next."""
        counts, self._counts = self._counts, Counter()
        if not counts:
            return None
        written = False
        try:
            await self._linked().execute(*[("HINCRBY", metrics.WEBHOOKS_KEY, field, n)
                                           for field, n in counts.items()])
            written = True
        except RedisError as e:
            return e
        finally:
            if not written:
                self._counts.update(counts)
        return None

    async def last_counts(self, within: float = COUNT_LAST_SECONDS) -> None:
        """At shutdown: the writes under way are waited for and what is left is written,
        retried until Redis takes it or `within` seconds are up; then what could not be
        written is dropped, and the log says how much. (A retry left to the timer would
        be scheduled on a loop about to stop.)"""
        self._stopping = True
        if self._count_timer is not None:
            self._count_timer.cancel()
            self._count_timer = None
        error: RedisError | None = None  # why the last write of ours failed
        try:
            async with asyncio.timeout(within):
                while self._flushes or self._counts:
                    if self._flushes:  # a failed one puts its counts back
                        await asyncio.wait(set(self._flushes))
                    elif (error := await self._write_counts()) is not None:
                        await asyncio.sleep(COUNT_LAST_RETRY_SECONDS)
        except TimeoutError:
            for task in self._flushes:
                task.cancel()
            if self._flushes:
                await asyncio.wait(set(self._flushes))
            log.error("gave up on %d delivery counts: Redis did not confirm them within "
                      "%g s of the worker stopping (last error: %s)", self._counts.total(),
                      within, error or "none, no answer yet")

    async def bridge(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Any other request, to Flask; one access line after it."""
        started = time.perf_counter()
        status, size, closing = 0, 0, False

        async def observed(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if closing:
                    message = {**message, "headers": [*message.get("headers", ()), CLOSE]}
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            buffered = await self._buffered(scope, receive)
            if isinstance(buffered, Answer):
                await send_answer(observed, buffered)
            else:
                closing = buffered is _held_back
                await self.flask(scope, buffered, observed)  # type: ignore[arg-type]
        finally:
            client = scope.get("client") or ("-", 0)
            access.info('%s "%s %s HTTP/%s" %s %s %dms', client[0], scope["method"],
                        loggable(scope["path"]), scope.get("http_version", "1.1"),
                        status or "-", size, (time.perf_counter() - started) * 1000)

    async def _buffered(self, scope: Scope, receive: Receive) -> Receive | Answer:
        """The request's body read here, on the loop, within `body_timeout` and up to the
        limit, then replayed to Flask: the bridge's threads read the body they are given,
        so a client trickling one holds no thread (408 when it is late, and the
        connection closes). A body declared over the limit is left to Flask's 413; if
        its client waits for `100 Continue`, Flask gets none of it (`_held_back`)."""
        headers = Headers(scope["headers"])
        try:
            length = content_length(headers)
            if length is not None and length > self.limit:
                return _held_back if awaits_continue(headers) else receive
            raw = await self._read_in_time(Body(receive), length)
        except Exception as error:
            return refuse(error, Outcome())
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:  # after the body: what the client does next (a disconnect)
                return await receive()
            replayed = True
            return {"type": "http.request", "body": raw, "more_body": False}

        return replay

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.last_counts()
                if self._link is not None:
                    await self._link.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _held_back() -> Message:
    """The body Flask gets of a request over the limit whose client waits for `100
    Continue`: none (Flask answers 413 from the declared length without reading, or
    refuses the request before)."""
    return {"type": "http.request", "body": b"", "more_body": False}
